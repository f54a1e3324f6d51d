"""Property-based checks of NIfTI I/O and thick-axis resampling over random geometry.

Affines are random rotations (oblique, or axis-aligned with any permutation) times
random flips and voxel sizes, plus a translation: the cases that break code which
assumes RAS-aligned, positive-diagonal affines.
"""

import numpy as np
from hypothesis import given
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from clade_jax.data import volume as volume_lib
from clade_jax.data.volume import Volume

SETTINGS = settings(max_examples=30, deadline=None)

finite = dict(allow_nan=False, allow_infinity=False)


@st.composite
def rotations(draw):
  """A 3x3 rotation or reflection: oblique (QR of a random matrix) or axis-aligned."""
  if draw(st.booleans()):
    m = np.array(draw(st.lists(st.floats(-1, 1, **finite), min_size=9, max_size=9)))
    m = m.reshape(3, 3) + np.eye(3) * draw(st.floats(0.1, 1.0))  # keep it invertible
    q, r = np.linalg.qr(m)
    return q * np.sign(np.diag(r))  # a unique, well-spread orthogonal matrix
  permutation = draw(st.permutations(range(3)))
  return np.eye(3)[list(permutation)]


@st.composite
def affines(draw, spacing=None):
  """A voxel-to-world matrix: rotation @ flips @ diag(spacing), plus a translation."""
  if spacing is None:
    spacing = draw(st.lists(st.floats(0.5, 6.0, **finite), min_size=3, max_size=3))
  flips = np.diag(draw(st.lists(st.sampled_from([-1.0, 1.0]), min_size=3, max_size=3)))
  affine = np.eye(4)
  affine[:3, :3] = draw(rotations()) @ flips @ np.diag(spacing)
  affine[:3, 3] = draw(st.lists(st.floats(-150, 150, **finite), min_size=3, max_size=3))
  return affine


shapes = st.tuples(*[st.integers(2, 7)] * 3)


@SETTINGS
@given(data=shapes.flatmap(lambda shape: hnp.arrays(
    np.float32, shape, elements=st.floats(-1e4, 1e4, width=32, **finite))),
       affine=affines())
def test_nifti_round_trip_keeps_data_and_affine(tmp_path_factory, data, affine):
  path = tmp_path_factory.mktemp("rt") / "v.nii.gz"
  volume_lib.save_volume(path, data, affine)
  vol = volume_lib.load_volume(path)
  np.testing.assert_array_equal(vol.data, data)
  # The sform is stored as float32: translations up to 150 mm keep ~1e-5 mm.
  np.testing.assert_allclose(vol.affine, affine, atol=1e-5, rtol=0)
  np.testing.assert_allclose(vol.spacing, volume_lib.voxel_spacing(affine), rtol=1e-6)


@st.composite
def thick_slice_volumes(draw, integer_ratio=False):
  """(Volume, thick axis, target spacing) with one axis at least 1.5x the others."""
  thick_axis = draw(st.integers(0, 2))
  in_plane = draw(st.lists(st.floats(0.5, 2.0, **finite), min_size=2, max_size=2))
  target = min(in_plane)
  ratio = draw(st.integers(2, 5) if integer_ratio else st.floats(1.5, 6.0, **finite))
  spacing = list(in_plane)
  spacing.insert(thick_axis, ratio * target)
  shape = [draw(st.integers(2, 6)) for _ in range(3)]
  shape[thick_axis] = draw(st.integers(2, 9))
  data = draw(hnp.arrays(np.float32, tuple(shape), elements=st.floats(-100, 100, width=32,
                                                                        **finite)))
  return Volume(data, draw(affines(spacing=spacing))), thick_axis, target


def _index(axis, along, others=(1, 1)):
  """A homogeneous voxel index with `along` on `axis` and `others` on the other two."""
  index = list(others)
  index.insert(axis, along)
  return np.array(index + [1.0])


@SETTINGS
@given(case=thick_slice_volumes())
def test_every_acquired_sample_keeps_its_world_position(case):
  vol, axis, target = case
  shape, new_affine, positions = volume_lib.isotropic_geometry(vol.data.shape, vol.affine,
                                                              axis)
  old_spacing = vol.spacing[axis]
  new_spacing = volume_lib.voxel_spacing(new_affine)
  np.testing.assert_allclose(new_spacing[axis], target, rtol=1e-12)
  np.testing.assert_allclose(np.delete(new_spacing, axis), np.delete(vol.spacing, axis))
  for k in range(vol.data.shape[axis]):
    for others in [(0, 0), (1, 0), (0, 1)]:
      old_world = vol.affine @ _index(axis, k, others)
      new_world = new_affine @ _index(axis, k * old_spacing / target, others)
      np.testing.assert_allclose(new_world, old_world, atol=1e-9)
  # The new grid starts on the first sample and never extrapolates past the last.
  assert positions[0] == 0 and positions[-1] <= vol.data.shape[axis] - 1 + 1e-9
  assert shape[axis] == len(positions)


@SETTINGS
@given(case=thick_slice_volumes(integer_ratio=True))
def test_resampled_values_equal_the_acquired_samples_where_they_land_on_the_grid(case):
  vol, axis, target = case
  ratio = int(round(vol.spacing[axis] / target))
  iso = volume_lib.resample_thick_axis(vol, axis)
  n = vol.data.shape[axis]
  assert iso.data.shape[axis] == (n - 1) * ratio + 1  # The last sample is on the grid.
  landed = np.take(iso.data, np.arange(n) * ratio, axis=axis)
  np.testing.assert_allclose(landed, vol.data, atol=1e-3, rtol=1e-5)
  for k in (0, n - 1):
    np.testing.assert_allclose(iso.affine @ _index(axis, k * ratio), vol.affine @ _index(axis, k),
                               atol=1e-9)
