"""Tests of the interpolation baselines."""

import numpy as np
import pytest

from clade_jax import baselines
from clade_jax.data.volume import Volume, isotropic_geometry


def _lr_volume(data, thick=4.0, in_plane=1.0):
  affine = np.diag([in_plane, thick, in_plane, 1.0])
  affine[:3, 3] = [10.0, -20.0, 3.0]
  return Volume(np.asarray(data, np.float32), affine)


@pytest.mark.parametrize("method", baselines.METHODS)
def test_original_samples_are_reproduced_where_grids_coincide(method):
  data = np.random.default_rng(0).random((5, 9, 6))
  out = baselines.upsample(_lr_volume(data), 1, method)
  assert out.data.shape == (5, 33, 6)  # (9 - 1) * 4 + 1
  np.testing.assert_allclose(out.data[:, ::4, :], data, atol=1e-5)


@pytest.mark.parametrize("method", baselines.METHODS)
def test_output_affine_is_the_isotropic_geometry(method):
  volume = _lr_volume(np.zeros((4, 7, 3)), thick=3.0, in_plane=0.75)
  shape, affine, _ = isotropic_geometry(volume.data.shape, volume.affine, 1)
  out = baselines.upsample(volume, 1, method)
  assert out.data.shape == shape
  np.testing.assert_allclose(out.affine, affine)
  # A non-integer ratio also lands on the same grid.
  shape, affine, _ = isotropic_geometry(volume.data.shape, volume.affine, 1, 0.7)
  out = baselines.upsample(volume, 1, method, target_spacing=0.7)
  assert out.data.shape == shape
  np.testing.assert_allclose(out.affine, affine)


def test_linear_ramp():
  ramp = np.broadcast_to(np.arange(12, dtype=np.float64)[None, :, None] * 2.0 + 1, (3, 12, 2))
  expected = np.broadcast_to(np.arange(45)[None, :, None] / 4 * 2.0 + 1, (3, 45, 2))
  for method in ["linear", "cubic"]:
    out = baselines.upsample(_lr_volume(ramp), 1, method)
    np.testing.assert_allclose(out.data, expected, atol=1e-4)
  out = baselines.upsample(_lr_volume(ramp), 1, "lanczos")
  interior = slice(3 * 4, 45 - 3 * 4)  # more than 3 slices from either end
  np.testing.assert_allclose(out.data[:, interior], expected[:, interior], atol=0.05)
  nearest = baselines.upsample(_lr_volume(ramp), 1, "nearest")
  # Ties (2 of 4 new voxels between slices) go to the later slice, consistently.
  np.testing.assert_allclose(nearest.data[0, :8, 0], [1, 1, 3, 3, 3, 3, 5, 5])


def test_lanczos_keeps_constants_and_kernel_zeros():
  out = baselines.upsample(_lr_volume(np.full((2, 4, 2), 3.0)), 1, "lanczos", 0.5)
  np.testing.assert_allclose(out.data, 3.0, rtol=1e-6)
  np.testing.assert_allclose(baselines.lanczos_kernel(np.array([0, 1, 2, -1, 3, 4])),
                             [1, 0, 0, 0, 0, 0], atol=1e-12)


def test_unknown_method():
  with pytest.raises(ValueError, match="unknown upsampling method"):
    baselines.upsample(_lr_volume(np.zeros((2, 3, 2))), 1, "bicubic")
