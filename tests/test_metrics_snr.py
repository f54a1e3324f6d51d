"""Estimated SNR and world-coordinate ROI masks."""

import numpy as np
import pytest

from clade_jax.metrics.snr import box_roi
from clade_jax.metrics.snr import snr
from clade_jax.metrics.snr import sphere_roi


def test_constant_signal_over_gaussian_noise_gives_mean_over_sigma():
  volume = np.random.default_rng(0).normal(0.0, 2.0, size=(40, 20, 20))
  signal = np.zeros(volume.shape, dtype=bool)
  signal[:10] = True
  volume[signal] = 100.0
  background = np.zeros(volume.shape, dtype=bool)
  background[20:] = True
  assert snr(volume, signal, background) == pytest.approx(50.0, rel=0.03)


def test_tiny_array_exact_value_uses_sample_std():
  volume = np.array([10.0, 14.0, 1.0, 2.0, 4.0])
  signal = np.array([1, 1, 0, 0, 0], dtype=bool)
  background = ~signal
  # Background mean 7/3; squared deviations sum to 42/9; / (n - 1) = 7/3.
  assert snr(volume, signal, background) == pytest.approx(12.0 / np.sqrt(7.0 / 3.0), rel=1e-12)


def test_snr_invalid_inputs_raise():
  volume = np.arange(12.0).reshape(3, 4)
  signal = np.zeros((3, 4), dtype=bool)
  signal[0] = True
  background = np.zeros((3, 4), dtype=bool)
  background[2] = True
  with pytest.raises(ValueError, match=r"\(3, 3\).*\(3, 4\)"):
    snr(volume, signal[:, :3], background)
  with pytest.raises(ValueError, match="empty"):
    snr(volume, signal, np.zeros((3, 4), dtype=bool))
  with pytest.raises(ValueError, match="overlap"):
    snr(volume, signal, signal | background)
  with pytest.raises(ValueError, match="constant"):
    snr(np.where(background, 5.0, volume), signal, background)
  one_voxel = np.zeros((3, 4), dtype=bool)
  one_voxel[2, 0] = True
  with pytest.raises(ValueError, match="one voxel"):
    snr(volume, signal, one_voxel)
  with pytest.raises(ValueError, match="non-finite"):
    snr(np.where(signal, np.inf, volume), signal, background)


def test_box_roi_selects_voxel_centres_inside_world_box():
  affine = np.diag([2.0, 2.0, 3.0, 1.0])
  affine[:3, 3] = [10.0, 0.0, -5.0]  # Voxel (i, j, k) sits at (10 + 2i, 2j, -5 + 3k) mm.
  mask = box_roi((8, 8, 8), affine, [16.0, 4.5, 1.0], [12.0, 0.0, -5.0])  # Any corner order.
  expected = np.zeros((8, 8, 8), dtype=bool)
  expected[1:4, 0:3, 0:3] = True
  np.testing.assert_array_equal(mask, expected)


def test_sphere_roi_counts_on_simple_grids():
  eye = np.eye(4)
  assert sphere_roi((11, 11, 11), eye, [5.0, 5.0, 5.0], 1.0).sum() == 7  # Centre + faces.
  assert sphere_roi((11, 11, 11), eye, [5.0, 5.0, 5.0], 1.5).sum() == 19  # + edges.
  thick = np.diag([1.0, 1.0, 3.0, 1.0])
  # Slices 3 mm apart: radius 2 mm keeps only the centre slice, a 13-voxel disc.
  assert sphere_roi((11, 11, 11), thick, [5.0, 5.0, 15.0], 2.0).sum() == 13


def test_sphere_roi_on_oblique_grid_matches_brute_force():
  theta = 0.4
  affine = np.eye(4)
  affine[:3, :3] = np.array([[np.cos(theta), -np.sin(theta), 0],
                             [np.sin(theta), np.cos(theta), 0],
                             [0, 0, 1]]) @ np.diag([0.8, 1.1, 2.5])
  affine[:3, 3] = [-20.0, 3.0, 7.0]
  shape = (30, 25, 12)
  centre, radius = np.array([-12.0, 15.0, 20.0]), 4.0
  index = np.stack(np.meshgrid(*map(np.arange, shape), indexing="ij"), axis=-1)
  world = index @ affine[:3, :3].T + affine[:3, 3]
  expected = np.linalg.norm(world - centre, axis=-1) <= radius
  assert expected.sum() > 20
  np.testing.assert_array_equal(sphere_roi(shape, affine, centre, radius), expected)


def test_roi_outside_the_volume_raises():
  with pytest.raises(ValueError, match="no voxel centre"):
    sphere_roi((5, 5, 5), np.eye(4), [100.0, 0.0, 0.0], 2.0)
  with pytest.raises(ValueError, match="no voxel centre"):
    box_roi((5, 5, 5), np.eye(4), [0.2, 0.2, 0.2], [0.8, 0.8, 0.8])  # Between centres.
  with pytest.raises(ValueError, match="positive"):
    sphere_roi((5, 5, 5), np.eye(4), [2.0, 2.0, 2.0], 0.0)
