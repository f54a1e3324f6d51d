"""Tests of the data-consistency projection."""

import dataclasses

import numpy as np
import pytest
from scipy import linalg

from clade_jax import baselines
from clade_jax.data import consistency
from clade_jax.data import degrade as degrade_lib
from clade_jax.data.volume import Volume, isotropic_geometry

KERNEL = np.array([1.0, 2.0, 3.0, 2.0, 1.0])


def _volume(data, spacing=(1.0, 1.0, 1.0), origin=(-20.0, -30.0, 5.0)):
  affine = np.diag(list(spacing) + [1.0])
  affine[:3, 3] = origin
  return Volume(np.asarray(data, np.float32), affine)


def _lr_and_grid(spacing_mm, thick_axis=1, n_slices=7, target=1.0, seed=0):
  """A random LR volume and the shape and affine of its isotropic grid."""
  shape = [9, 8, 7]
  shape[thick_axis] = n_slices
  spacing = [0.9, 1.1, 1.0]
  spacing[thick_axis] = spacing_mm
  lr = _volume(np.random.default_rng(seed).uniform(10.0, 100.0, shape), spacing)
  out_shape, out_affine, _ = isotropic_geometry(lr.data.shape, lr.affine, thick_axis, target)
  return lr, out_shape, out_affine


def _reacquire(acquisition, volume):
  """A x along the thick axis, by an einsum on the unmoved array (not `project`'s path)."""
  subscripts = {0: "jn,nab->jab", 1: "jn,anb->ajb", 2: "jn,abn->abj"}[acquisition.thick_axis]
  return np.einsum(subscripts, acquisition.matrix, np.asarray(volume, np.float64))


# (thick axis, spacing mm, thickness mm, profile): contiguous, gaps, overlap, fractional
# spacing ratios (5.5 mm slices on a 1 mm grid) and an explicit kernel at whole and
# fractional centres.
CASES = [
    (1, 4.0, None, "gaussian"),
    (1, 4.0, None, "rect"),
    (1, 4.0, None, KERNEL),
    (0, 6.0, 2.0, "rect"),  # gap: 2 mm slices every 6 mm
    (2, 6.0, 1.5, "gaussian"),  # gap
    (1, 3.0, 6.0, "gaussian"),  # overlap: each slice twice the spacing
    (1, 5.5, None, "gaussian"),
    (1, 5.5, None, "rect"),
    (2, 5.5, None, KERNEL),
    (0, 2.5, 1.0, "rect"),  # fractional and a gap
]


@pytest.mark.parametrize("profile", ["gaussian", "rect"])
def test_acquisition_matches_degrade_except_where_end_profiles_leave_the_grid(profile):
  truth = _volume(np.random.default_rng(1).uniform(0.0, 1.0, (6, 40, 5)))
  lr = degrade_lib.degrade(truth, 1, spacing_mm=4.0, profile=profile, offset_vox=3)
  out_shape, out_affine, _ = isotropic_geometry(lr.data.shape, lr.affine, 1, 1.0)
  assert out_shape[1] == 37  # truth voxels 3..39: the grid ends on the truth's last voxel
  acquisition = consistency.for_grid(lr.data.shape, lr.affine, out_shape, out_affine, 1,
                                     profile=profile)
  on_grid = truth.data[:, 3:, :].astype(np.float64)
  reacquired = _reacquire(acquisition, on_grid)

  # degrade clamps at the truth's edges (index 0), A at the grid's (truth index 3): a
  # slice whose profile reaches below the grid's first voxel saw real truth voxels
  # there, which A replaces by the first plane. At the far end both clamp at truth
  # voxel 39. So exactly the rows with taps below 0 differ, and by exactly those taps.
  weights = degrade_lib.slice_profile(profile, 4.0)
  radius = (weights.size - 1) // 2
  edge_rows = 0
  for j, centre in enumerate(acquisition.centres.astype(int)):
    taps = np.arange(-radius, radius + 1)
    outside = centre + taps < 0
    if not outside.any():
      np.testing.assert_allclose(reacquired[:, j], lr.data[:, j], rtol=1e-6, atol=1e-7)
      continue
    seen = truth.data[:, np.maximum(3 + centre + taps[outside], 0), :].astype(np.float64)
    expected_gap = np.einsum("t,atb->ab", weights[outside], seen - on_grid[:, :1, :])
    np.testing.assert_allclose(lr.data[:, j] - reacquired[:, j], expected_gap, atol=2e-7)
    if j == 0:  # half the first profile lies outside: the difference is real
      assert np.abs(expected_gap).max() > 1e-2
    edge_rows += 1
  # Gaussian FWHM 4: radius 10, slices at 0, 4, 8 reach below; box of 4: slice 0 only.
  assert edge_rows == (3 if profile == "gaussian" else 1)


@pytest.mark.parametrize("thick_axis,spacing_mm,thickness_mm,profile", CASES)
def test_projection_reproduces_the_slices(thick_axis, spacing_mm, thickness_mm, profile):
  lr, out_shape, out_affine = _lr_and_grid(spacing_mm, thick_axis)
  acquisition = consistency.for_grid(lr.data.shape, lr.affine, out_shape, out_affine,
                                     thick_axis, thickness_mm, profile)
  cubic = baselines.upsample(lr, thick_axis, "cubic", target_spacing=1.0).data
  noise = np.random.default_rng(2).normal(0.0, 50.0, out_shape)
  for volume in (cubic, noise):
    original = volume.copy()
    before = consistency.residual(volume, lr.data, acquisition)
    projected = consistency.project(volume, lr.data, acquisition)
    assert projected.dtype == np.float32 and projected.shape == tuple(out_shape)
    # Every slice, the two end ones included, to float32 precision.
    np.testing.assert_allclose(_reacquire(acquisition, projected), lr.data, rtol=1e-5,
                               atol=1e-5 * 100.0)
    after = consistency.residual(projected, lr.data, acquisition)
    assert after["max_abs"] < 1e-4 < before["max_abs"]
    np.testing.assert_array_equal(volume, original)  # the input is not written to


def test_for_grid_places_slices_at_the_spacing_ratio():
  lr, out_shape, out_affine = _lr_and_grid(5.5, 1, n_slices=10)
  assert out_shape[1] == 50  # 0..49; the last slice sits at 49.5, half a voxel beyond
  acquisition = consistency.for_grid(lr.data.shape, lr.affine, out_shape, out_affine, 1,
                                     profile="rect")
  np.testing.assert_allclose(acquisition.centres, 5.5 * np.arange(10))
  np.testing.assert_allclose(acquisition.matrix.sum(axis=1), 1.0, rtol=1e-12)
  # Slice 1: box [2.75, 8.25] on 1 mm voxels.
  np.testing.assert_allclose(acquisition.matrix[1, :10] * 5.5,
                             [0, 0, 0, 0.75, 1, 1, 1, 1, 0.75, 0], atol=1e-12)
  # Last slice: box [46.75, 52.25]; voxels 50..52 are beyond the grid and fold onto 49.
  np.testing.assert_allclose(acquisition.matrix[9, 45:] * 5.5, [0, 0, 0.75, 1, 3.75],
                             atol=1e-12)


@pytest.mark.parametrize("thick_axis,spacing_mm,thickness_mm,profile", CASES[:3] + CASES[6:7])
def test_consistent_volumes_are_left_unchanged(thick_axis, spacing_mm, thickness_mm, profile):
  lr, out_shape, out_affine = _lr_and_grid(spacing_mm, thick_axis)
  acquisition = consistency.for_grid(lr.data.shape, lr.affine, out_shape, out_affine,
                                     thick_axis, thickness_mm, profile)
  volume = np.random.default_rng(3).uniform(0.0, 100.0, out_shape)
  once = consistency.project(volume, lr.data, acquisition)
  twice = consistency.project(once, lr.data, acquisition)
  np.testing.assert_allclose(twice, once, rtol=0, atol=1e-4)  # idempotent
  # Slices made from the volume itself: nothing to correct.
  own_slices = _reacquire(acquisition, volume)
  unchanged = consistency.project(volume, own_slices, acquisition)
  np.testing.assert_allclose(unchanged, volume, rtol=0, atol=1e-4)
  assert np.abs(once - volume).max() > 1.0  # whereas the random slices did move it


@pytest.mark.parametrize("thick_axis,spacing_mm,thickness_mm,profile", CASES[:1] + CASES[3:8])
def test_correction_is_the_minimum_norm_one(thick_axis, spacing_mm, thickness_mm, profile):
  lr, out_shape, out_affine = _lr_and_grid(spacing_mm, thick_axis)
  acquisition = consistency.for_grid(lr.data.shape, lr.affine, out_shape, out_affine,
                                     thick_axis, thickness_mm, profile)
  volume = np.random.default_rng(4).uniform(0.0, 100.0, out_shape)
  correction = np.moveaxis(
      consistency.project(volume, lr.data, acquisition).astype(np.float64) - volume,
      thick_axis, 0).reshape(acquisition.n_fine, -1)
  null = linalg.null_space(acquisition.matrix)  # orthonormal basis of null(A)
  assert null.shape[1] == acquisition.n_fine - acquisition.n_slices
  # Orthogonal to the null space, i.e. in the row space of A: no component of the
  # volume that the slices cannot see was touched. (Relative to the correction's
  # size, at float32 output precision.)
  leak = null.T @ correction
  assert np.abs(leak).max() < 1e-5 * np.abs(correction).max()
  # Hence any other consistent volume (projection + a null-space vector) is further.
  step = null @ np.random.default_rng(5).normal(size=(null.shape[1], correction.shape[1]))
  assert np.all(np.linalg.norm(correction + step, axis=0) > np.linalg.norm(correction, axis=0))


def test_regularisation_is_the_map_estimate_and_tends_to_exact_consistency():
  lr, out_shape, out_affine = _lr_and_grid(4.0, 1)
  acquisition = consistency.for_grid(lr.data.shape, lr.affine, out_shape, out_affine, 1)
  volume = baselines.upsample(lr, 1, "linear", target_spacing=1.0).data + np.random.default_rng(
      6).normal(0.0, 5.0, out_shape).astype(np.float32)
  a = acquisition.matrix
  residuals = []
  for lam in [1.0, 0.1, 0.01, 1e-3, 0.0]:
    projected = consistency.project(volume, lr.data, acquisition, regularisation=lam)
    residuals.append(consistency.residual(projected, lr.data, acquisition)["rms"])
    if lam:
      # Independently: argmin |x' - x|^2 + |A x' - lr|^2 / lam from the normal equations
      # (I + A^T A / lam) x' = x + A^T lr / lam, on one line.
      x = volume[3, :, 2].astype(np.float64)
      expected = np.linalg.solve(np.eye(a.shape[1]) + a.T @ a / lam,
                                 x + a.T @ lr.data[3, :, 2] / lam)
      np.testing.assert_allclose(projected[3, :, 2], expected, rtol=1e-5, atol=1e-4)
  assert all(b < a for a, b in zip(residuals, residuals[1:])), residuals
  assert residuals[-1] < 1e-5 < residuals[-2]
  with pytest.raises(ValueError, match="regularisation"):
    consistency.project(volume, lr.data, acquisition, regularisation=-1.0)


@pytest.mark.parametrize("offset", range(6))
def test_for_grid_on_the_mni_protocol(offset):
  # 1 mm truth, 6 mm Gaussian slices starting at truth voxel `offset`.
  truth = _volume(np.random.default_rng(7).uniform(0.0, 1.0, (5, 60, 4)))
  lr = degrade_lib.degrade(truth, 1, spacing_mm=6.0, offset_vox=offset)
  out_shape, out_affine, _ = isotropic_geometry(lr.data.shape, lr.affine, 1, 1.0)
  acquisition = consistency.for_grid(lr.data.shape, lr.affine, out_shape, out_affine, 1)
  n_slices = lr.data.shape[1]
  np.testing.assert_array_equal(acquisition.centres, 6.0 * np.arange(n_slices))
  weights = degrade_lib.slice_profile("gaussian", 6.0)
  radius = (weights.size - 1) // 2
  interior = [k for k in range(n_slices) if radius <= 6 * k < out_shape[1] - radius]
  assert interior  # 6k - 14 >= 0 and 6k + 14 <= last voxel
  for k in interior:
    row = acquisition.matrix[k]
    np.testing.assert_array_equal(row[6 * k - radius:6 * k + radius + 1], weights)
    assert row.sum() == pytest.approx(1.0, abs=1e-12)
    np.testing.assert_allclose(row @ np.arange(out_shape[1]), 6.0 * k, atol=1e-9)
    on_grid = truth.data[2, offset:offset + out_shape[1], 1].astype(np.float64)
    np.testing.assert_allclose(row @ on_grid, lr.data[2, k, 1], rtol=1e-6)


def test_heavily_overlapping_slices_stay_stable():
  # 12 mm Gaussian slices every 2 mm on a 1 mm grid: A is numerically rank deficient.
  lr, out_shape, out_affine = _lr_and_grid(2.0, 1, n_slices=20)
  acquisition = consistency.for_grid(lr.data.shape, lr.affine, out_shape, out_affine, 1, 12.0)
  a = acquisition.matrix
  singular = np.linalg.svd(a, compute_uv=False)
  assert singular[-1] < 1e-8 * singular[0]
  truth = np.random.default_rng(8).uniform(0.0, 100.0, out_shape)
  slices = _reacquire(acquisition, truth)  # consistent data: reachable
  cubic = baselines.upsample(dataclasses.replace(lr, data=slices.astype(np.float32)), 1,
                             "cubic", 1.0).data
  projected = consistency.project(cubic, slices, acquisition)
  # Directions with s < 1e-4 s_max are left alone, so consistency is to ~1e-4 of the
  # residual there (instead of exact), which is still far below the LR's range.
  np.testing.assert_allclose(_reacquire(acquisition, projected), slices, rtol=0, atol=1e-2)
  # Random slices are not reachable along those directions: the correction of each line
  # is bounded by |residual| / (1e-4 s_max), where the exact pseudo-inverse would divide
  # by the smallest singular value.
  projected = consistency.project(cubic, lr.data, acquisition)
  change = np.linalg.norm(projected.astype(np.float64) - cubic, axis=1)
  residual = np.linalg.norm(lr.data - _reacquire(acquisition, cubic), axis=1)
  assert np.all(change <= residual / (1e-4 * singular[0]) * (1 + 1e-6))
  exact = np.linalg.pinv(a, rcond=1e-15) @ (lr.data[4, :, 3] - a @ cubic[4, :, 3])
  assert np.linalg.norm(exact) > 1e3 * change[4, 3]


def test_project_volume_wraps_for_grid_and_project():
  lr, _, _ = _lr_and_grid(5.5, 2)
  cubic = baselines.upsample(lr, 2, "cubic", target_spacing=1.0)
  projected = consistency.project_volume(cubic, lr, 2, profile="rect")
  np.testing.assert_array_equal(projected.affine, cubic.affine)
  acquisition = consistency.for_grid(lr.data.shape, lr.affine, cubic.data.shape, cubic.affine,
                                     2, profile="rect")
  np.testing.assert_array_equal(projected.data,
                                consistency.project(cubic.data, lr.data, acquisition))
  assert consistency.residual(projected.data, lr.data, acquisition)["max_abs_relative"] < 1e-6


def test_grid_and_shape_errors():
  lr, out_shape, out_affine = _lr_and_grid(4.0, 1)
  wrong_count = list(out_shape)
  wrong_count[1] += 1
  with pytest.raises(ValueError, match="not the isotropic grid"):
    consistency.for_grid(lr.data.shape, lr.affine, wrong_count, out_affine, 1)
  moved = out_affine.copy()
  moved[:3, 3] += [0.0, 0.5, 0.0]
  with pytest.raises(ValueError, match="origin"):
    consistency.for_grid(lr.data.shape, lr.affine, out_shape, moved, 1)
  resized = out_affine.copy()
  resized[:3, 0] *= 2.0  # other in-plane spacing
  with pytest.raises(ValueError, match="voxel axes"):
    consistency.for_grid(lr.data.shape, lr.affine, out_shape, resized, 1)
  with pytest.raises(ValueError, match="thickness_mm=None"):
    consistency.for_grid(lr.data.shape, lr.affine, out_shape, out_affine, 1, 3.0, KERNEL)
  acquisition = consistency.for_grid(lr.data.shape, lr.affine, out_shape, out_affine, 1)
  with pytest.raises(ValueError, match="shapes do not match"):
    consistency.project(np.zeros((9, 20, 7)), lr.data, acquisition)
  with pytest.raises(ValueError, match="within one voxel"):
    consistency.acquisition_matrix(10, [0.0, 10.5], 2.0)


@pytest.mark.parametrize("profile,thickness_mm", [("gaussian", None), ("rect", 3.0)])
def test_projection_within_the_range_keeps_a_zero_background_non_negative(profile,
                                                                           thickness_mm):
  """Sharp edges on a zero background: one projection undershoots below zero, the
  alternating projections stay in [min, max] of the acquired slices, still reproduce
  them to within 0.5 % of the range (rms), and lose no PSNR against the truth."""
  from tests import phantoms  # pylint: disable=g-import-not-at-top
  truth = np.clip(phantoms.body_phantom((32, 32, 32), seed=0), 0.0, None)
  lr = degrade_lib.degrade(_volume(truth, origin=(0, 0, 0)), 1, 4.0, thickness_mm=thickness_mm,
                           profile=profile, offset_vox=0)
  output = baselines.upsample(lr, 1, "cubic", 1.0)
  acquisition = consistency.for_grid(lr.data.shape, lr.affine, output.data.shape,
                                     output.affine, 1, thickness_mm, profile)
  limits = (float(lr.data.min()), float(lr.data.max()))
  assert limits[0] == 0.0
  clipped = np.clip(output.data, *limits)
  once = consistency.project(clipped, lr.data, acquisition)
  assert once.min() < -0.05 * limits[1]  # the defect this guards against
  within = consistency.project_within(clipped, lr.data, acquisition, limits)
  assert within.min() >= limits[0] and within.max() <= limits[1]
  assert consistency.residual(within, lr.data, acquisition)["rms_relative"] < 5e-3
  t = truth[:, :within.shape[1]]
  squared_error = lambda x: float(np.mean((x - t) ** 2))
  assert squared_error(within) <= squared_error(once)
  # More rounds leave less residual (POCS converges; slowly for a Gaussian).
  fewer, more = (consistency.project_within(clipped, lr.data, acquisition, limits,
                                            iterations=n, tolerance=0.0) for n in (5, 40))
  assert (consistency.residual(more, lr.data, acquisition)["rms"]
          < consistency.residual(fewer, lr.data, acquisition)["rms"])
  with pytest.raises(ValueError, match="limits"):
    consistency.project_within(clipped, lr.data, acquisition, (1.0, 0.0))
