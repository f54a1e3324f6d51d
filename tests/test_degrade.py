"""Tests of the thick-slice acquisition simulator."""

import math

import numpy as np
import pytest

from clade_jax.data import degrade as degrade_lib
from clade_jax.data.volume import Volume, VolumeError, isotropic_geometry, load_volume


def _volume(data, spacing=(1.0, 1.0, 1.0), origin=(-20.0, -30.0, 5.0)):
  affine = np.diag(list(spacing) + [1.0])
  affine[:3, 3] = origin
  return Volume(np.asarray(data, np.float32), affine)


def _oblique_volume(shape=(12, 40, 10)):
  """A rotated, shifted grid: the geometry checks must not rely on a diagonal affine."""
  c, s = math.cos(0.3), math.sin(0.3)
  affine = np.eye(4)
  affine[:3, :3] = np.array([[c, -s, 0], [s, c, 0], [0, 0, 1]]) @ np.diag([0.9, 0.5, 1.1])
  affine[:3, 3] = [3.0, -7.0, 11.0]
  data = np.random.default_rng(0).random(shape)
  return Volume(data.astype(np.float32), affine)


def _world(affine, index):
  return (affine @ np.append(np.asarray(index, np.float64), 1.0))[:3]


@pytest.mark.parametrize("offset", [None, 0, 3])
def test_slice_spacing_and_affine_put_slices_on_truth_voxels(offset):
  truth = _oblique_volume()
  lr = degrade_lib.degrade(truth, thick_axis=1, spacing_mm=3.0, offset_vox=offset)
  step = 6  # 3 mm / 0.5 mm
  first = ((40 - 1) % step) // 2 if offset is None else offset
  n_slices = (40 - 1 - first) // step + 1
  assert lr.data.shape == (12, n_slices, 10)
  np.testing.assert_allclose(lr.spacing, [0.9, 3.0, 1.1])
  for j in range(n_slices):
    for corner in [(0, 0), (11, 9), (5, 3)]:
      lr_index = (corner[0], j, corner[1])
      gt_index = (corner[0], first + j * step, corner[1])
      np.testing.assert_allclose(_world(lr.affine, lr_index), _world(truth.affine, gt_index),
                                 atol=1e-9)


def test_isotropic_grid_of_the_lr_volume_is_a_subgrid_of_the_truth():
  truth = _oblique_volume()
  lr = degrade_lib.degrade(truth, thick_axis=1, spacing_mm=3.0, offset_vox=2)
  shape, affine, _ = isotropic_geometry(lr.data.shape, lr.affine, 1, target_spacing=0.5)
  # First LR slice sits on truth voxel 2, so the upsampled grid is the truth from 2 on.
  expected = truth.affine.copy()
  expected[:3, 3] = _world(truth.affine, (0, 2, 0))
  np.testing.assert_allclose(affine, expected, atol=1e-9)
  assert shape == (12, (lr.data.shape[1] - 1) * 6 + 1, 10)


def test_constant_volume_stays_constant():
  truth = _volume(np.full((8, 30, 9), 7.5))
  for profile in ["gaussian", "rect"]:
    lr = degrade_lib.degrade(truth, 1, spacing_mm=4.0, thickness_mm=7.0, profile=profile)
    np.testing.assert_allclose(lr.data, 7.5, rtol=1e-6)


def test_rect_profile_weights_are_exact_and_sum_is_preserved():
  weights = degrade_lib.slice_profile("rect", 3.0)
  np.testing.assert_allclose(weights, [1 / 3] * 3)
  weights = degrade_lib.slice_profile("rect", 4.0)  # half voxels at both ends
  np.testing.assert_allclose(weights, [0.125, 0.25, 0.25, 0.25, 0.125])
  # A single bright plane in the truth: the LR slices see exactly the profile weights,
  # and with contiguous slices (thickness = spacing) the plane's total is preserved.
  data = np.zeros((4, 40, 4))
  data[:, 20, :] = 1.0
  lr = degrade_lib.degrade(_volume(data), 1, spacing_mm=4.0, thickness_mm=4.0, profile="rect",
                           offset_vox=0)
  profile = lr.data[0, :, 0]
  np.testing.assert_allclose(profile[5], 0.25, rtol=1e-6)  # slice 5 is centred on voxel 20
  np.testing.assert_allclose(np.delete(profile, 5), 0.0, atol=1e-7)
  for plane in range(16, 24):  # any position: the response sums to the plane's weight
    data = np.zeros((4, 40, 4))
    data[:, plane, :] = 1.0
    lr = degrade_lib.degrade(_volume(data), 1, 4.0, 4.0, profile="rect", offset_vox=0)
    np.testing.assert_allclose(lr.data[0, :, 0].sum() * 4, 1.0, rtol=1e-6)


def test_gaussian_fwhm_matches_thickness():
  data = np.zeros((3, 61, 3))
  data[:, 30, :] = 1.0
  # Spacing = input spacing so the response of a bright plane is the profile itself.
  lr = degrade_lib.degrade(_volume(data, spacing=(1, 0.5, 1)), 1, spacing_mm=0.5,
                           thickness_mm=4.0, offset_vox=0)
  response = lr.data[1, :, 1].astype(np.float64)
  half = response.max() / 2
  above = np.nonzero(response >= half)[0]
  lo, hi = above[0], above[-1]
  # Linear interpolation of the two half-maximum crossings.
  left = lo - (response[lo] - half) / (response[lo] - response[lo - 1])
  right = hi + (response[hi] - half) / (response[hi] - response[hi + 1])
  fwhm_mm = (right - left) * 0.5
  assert abs(fwhm_mm - 4.0) < 0.1
  np.testing.assert_allclose(response.sum(), 1.0, rtol=1e-6)
  assert np.argmax(response) == 30


def test_gap_between_slices():
  data = np.zeros((3, 40, 3))
  data[:, 14:17, :] = 1.0  # between the slices centred on voxels 12 and 18
  lr = degrade_lib.degrade(_volume(data), 1, spacing_mm=6.0, thickness_mm=2.0, profile="rect",
                           offset_vox=0)
  np.testing.assert_allclose(lr.data[0, :, 0], 0.0, atol=1e-7)  # the gap hides it
  # 2 mm covers [11, 13] only: the plane is entirely in the gap. 5 mm overlaps one voxel
  # at each side.
  lr = degrade_lib.degrade(_volume(data), 1, spacing_mm=6.0, thickness_mm=5.0, profile="rect",
                           offset_vox=0)
  np.testing.assert_allclose(lr.data[0, :, 0], [0, 0, 0.2, 0.2, 0, 0, 0], atol=1e-7)


def test_explicit_kernel():
  data = np.zeros((3, 20, 3))
  data[:, 10, :] = 1.0
  lr = degrade_lib.degrade(_volume(data), 1, 1.0, profile=np.array([1.0, 2.0, 1.0]),
                           offset_vox=0)
  np.testing.assert_allclose(lr.data[0, 9:12, 0], [0.25, 0.5, 0.25], rtol=1e-6)
  with pytest.raises(ValueError, match="odd"):
    degrade_lib.degrade(_volume(data), 1, 1.0, profile=np.ones(4))
  with pytest.raises(ValueError, match="thickness_mm"):
    degrade_lib.degrade(_volume(data), 1, 1.0, 3.0, profile=np.ones(3))


def test_rician_noise_of_zero_signal_is_rayleigh():
  truth = _volume(np.zeros((40, 60, 40)))
  lr = degrade_lib.degrade(truth, 1, 3.0, noise_sigma=2.0, noise_units="absolute", seed=1)
  values = lr.data.ravel().astype(np.float64)
  assert values.min() >= 0
  np.testing.assert_allclose(values.mean(), 2.0 * math.sqrt(math.pi / 2), rtol=0.02)
  np.testing.assert_allclose(np.mean(values**2), 2 * 2.0**2, rtol=0.03)  # E[R^2] = 2 sigma^2
  again = degrade_lib.degrade(truth, 1, 3.0, noise_sigma=2.0, noise_units="absolute", seed=1)
  np.testing.assert_array_equal(lr.data, again.data)


def test_relative_noise_scales_with_the_robust_max():
  data = np.full((30, 30, 30), 100.0)
  lr = degrade_lib.degrade(_volume(data), 1, 3.0, noise_sigma=0.05, noise_model="gaussian")
  np.testing.assert_allclose(lr.data.std(), 5.0, rtol=0.05)
  with pytest.raises(VolumeError, match="absolute"):
    degrade_lib.degrade(_volume(np.zeros((8, 8, 8))), 1, 2.0, noise_sigma=0.1)


def test_bad_spacing_raises_a_clear_error():
  truth = _volume(np.zeros((8, 30, 8)), spacing=(1, 0.8, 1))
  with pytest.raises(VolumeError, match=r"not a whole multiple of the input spacing 0.8 mm"):
    degrade_lib.degrade(truth, 1, spacing_mm=3.0)
  with pytest.raises(VolumeError, match="fewer than 2 slices"):
    degrade_lib.degrade(truth, 1, spacing_mm=24.0)


def test_degrade_file_round_trip(tmp_path):
  from clade_jax.data.volume import save_volume
  truth = _oblique_volume()
  src = tmp_path / "gt.nii.gz"
  save_volume(src, truth.data, truth.affine)
  out = degrade_lib.degrade_file(src, tmp_path / "lr.nii.gz", 1, 3.0, profile="rect")
  back = load_volume(tmp_path / "lr.nii.gz")
  np.testing.assert_allclose(back.data, out.data)
  np.testing.assert_allclose(back.affine, out.affine, atol=1e-5)
  with pytest.raises(VolumeError, match="refusing"):
    degrade_lib.degrade_file(src, src, 1, 3.0)
