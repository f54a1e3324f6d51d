"""Edge sharpness on synthetic blurred step edges with a known analytic slope."""

import numpy as np
import pytest
from scipy import special

from clade_jax.metrics.sharpness import edge_sharpness
from clade_jax.metrics.sharpness import filter_window_samples
from clade_jax.metrics.sharpness import mean_edge_sharpness
from clade_jax.metrics.sharpness import sample_profile

SPACING = (0.7, 0.9, 1.6)  # Anisotropic voxels (mm).
SHAPE = (48, 40, 24)
NORMAL = np.array([0.3, -0.5, 0.8]) / np.linalg.norm([0.3, -0.5, 0.8])


def _rotation(a, b, c):
  """A rotation about z, then y, then x (radians)."""
  ca, sa, cb, sb, cc, sc = np.cos(a), np.sin(a), np.cos(b), np.sin(b), np.cos(c), np.sin(c)
  rz = np.array([[ca, -sa, 0], [sa, ca, 0], [0, 0, 1]])
  ry = np.array([[cb, 0, sb], [0, 1, 0], [-sb, 0, cb]])
  rx = np.array([[1, 0, 0], [0, cc, -sc], [0, sc, cc]])
  return rx @ ry @ rz


def _oblique_affine():
  affine = np.eye(4)
  affine[:3, :3] = _rotation(0.9, -0.6, 0.35) @ np.diag(SPACING)
  affine[:3, 3] = [-10.0, 5.0, 30.0]
  return affine


def _erf_edge(sigma_mm, noise=0.0, seed=0):
  """Intensity 20 -> 100 across an oblique plane, blurred by a Gaussian of sigma_mm.

  Returns (volume, affine, centre, normal): the plane passes through `centre` (world
  mm) with unit `normal`, so the normalised profile along the normal is
  Phi(s / sigma) with peak slope 1 / (sigma sqrt(2 pi)).
  """
  affine = _oblique_affine()
  index = np.stack(np.meshgrid(*map(np.arange, SHAPE), indexing="ij"), axis=-1)
  world = index @ affine[:3, :3].T + affine[:3, 3]
  centre = affine[:3, :3] @ ((np.array(SHAPE) - 1) / 2) + affine[:3, 3]
  distance = (world - centre) @ NORMAL
  volume = 20.0 + 80.0 * 0.5 * (1 + special.erf(distance / (sigma_mm * np.sqrt(2))))
  if noise:
    volume = volume + np.random.default_rng(seed).normal(0.0, noise, volume.shape)
  return volume.astype(np.float32), affine, centre, NORMAL


def _across(centre, normal, half_mm=12.0):
  return centre - half_mm * normal, centre + half_mm * normal


def test_blurred_oblique_edge_gives_the_analytic_slope():
  sigma = 2.5
  volume, affine, centre, normal = _erf_edge(sigma)
  p0, p1 = _across(centre, normal)
  analytic = 1.0 / (sigma * np.sqrt(2.0 * np.pi))
  assert edge_sharpness(volume, affine, p0, p1) == pytest.approx(analytic, rel=0.03)
  # Cubic-spline sampling is closer still on a smooth edge.
  assert edge_sharpness(volume, affine, p0, p1, order=3) == pytest.approx(analytic, rel=0.01)


def test_direction_of_the_segment_does_not_matter():
  volume, affine, centre, normal = _erf_edge(2.5)
  p0, p1 = _across(centre, normal)
  assert edge_sharpness(volume, affine, p1, p0) == pytest.approx(
      edge_sharpness(volume, affine, p0, p1), rel=1e-9)


def test_sharper_edge_scores_higher():
  values = []
  for sigma in (1.0, 2.0, 4.0):
    volume, affine, centre, normal = _erf_edge(sigma)
    values.append(edge_sharpness(volume, affine, *_across(centre, normal, 14.0)))
  assert values[0] > values[1] > values[2]


def test_invariant_to_intensity_scale_and_offset():
  volume, affine, centre, normal = _erf_edge(2.0)
  p0, p1 = _across(centre, normal)
  reference = edge_sharpness(volume, affine, p0, p1)
  assert edge_sharpness(37.0 * volume.astype(np.float64) - 5.0, affine, p0, p1) == (
      pytest.approx(reference, rel=1e-6))
  # A dark-to-bright edge and its bright-to-dark negative are equally sharp.
  assert edge_sharpness(-volume, affine, p0, p1) == pytest.approx(reference, rel=1e-6)


def test_filter_window_is_fixed_in_mm_not_in_samples():
  # 5 pixels of 0.7 mm = 3.5 mm: 35 samples at 0.1 mm (odd), 71 at 0.05 mm (70 -> odd).
  assert filter_window_samples(0.7, 0.1) == 35
  assert filter_window_samples(0.7, 0.05) == 71
  assert filter_window_samples(0.7, 1.0) == 5  # Never below the paper's 5 points.
  volume, affine, centre, normal = _erf_edge(2.0)
  p0, p1 = _across(centre, normal)
  fine = edge_sharpness(volume, affine, p0, p1, step_mm=0.05)
  assert edge_sharpness(volume, affine, p0, p1, step_mm=0.1) == pytest.approx(fine, rel=0.01)
  # A wider window (bigger pixels) smooths a sharp edge more and lowers ES.
  volume, affine, centre, normal = _erf_edge(1.0)
  p0, p1 = _across(centre, normal)
  assert (edge_sharpness(volume, affine, p0, p1, pixel_mm=2.0)
          < 0.8 * edge_sharpness(volume, affine, p0, p1, pixel_mm=0.7))


def test_savitzky_golay_filter_keeps_noisy_edge_close_to_analytic():
  sigma = 2.5
  volume, affine, centre, normal = _erf_edge(sigma, noise=1.0, seed=0)  # Contrast 80.
  analytic = 1.0 / (sigma * np.sqrt(2.0 * np.pi))
  es = edge_sharpness(volume, affine, *_across(centre, normal))
  assert es == pytest.approx(analytic, rel=0.1)


def test_sample_profile_hits_both_ends_and_follows_the_edge():
  volume, affine, centre, normal = _erf_edge(2.0)
  p0, p1 = _across(centre, normal)
  distance, profile = sample_profile(volume, affine, p0, p1, step_mm=0.1)
  assert distance[0] == 0.0 and distance[-1] == pytest.approx(24.0)
  assert np.diff(distance) == pytest.approx(0.1)
  assert profile[0] == pytest.approx(20.0, abs=0.1) and profile[-1] == pytest.approx(100.0, abs=0.1)
  assert profile[len(profile) // 2] == pytest.approx(60.0, abs=0.5)


def test_mean_edge_sharpness_averages_borders():
  volume, affine, centre, normal = _erf_edge(2.0)
  border_a = _across(centre, normal)
  border_b = _across(centre + 2.0 * np.cross(normal, [0, 0, 1]) / np.linalg.norm(
      np.cross(normal, [0, 0, 1])), normal)
  expected = np.mean([edge_sharpness(volume, affine, *b) for b in (border_a, border_b)])
  assert mean_edge_sharpness(volume, affine, [border_a, border_b]) == pytest.approx(expected)
  with pytest.raises(ValueError, match="empty"):
    mean_edge_sharpness(volume, affine, [])


def test_invalid_inputs_raise():
  volume, affine, centre, normal = _erf_edge(2.0)
  p0, p1 = _across(centre, normal)
  with pytest.raises(ValueError, match="same point"):
    edge_sharpness(volume, affine, p0, p0)
  with pytest.raises(ValueError, match="leaves the volume"):
    edge_sharpness(volume, affine, p0, p1 + 100.0 * normal)
  with pytest.raises(ValueError, match="flat"):
    edge_sharpness(np.ones(SHAPE), affine, p0, p1)
  with pytest.raises(ValueError, match="shorter than the filter window"):
    edge_sharpness(volume, affine, centre, centre + 0.5 * normal)
  with pytest.raises(ValueError, match="4x4"):
    edge_sharpness(volume, affine[:3], p0, p1)
  with pytest.raises(ValueError, match="3-vector"):
    edge_sharpness(volume, affine, p0[:2], p1)
  with pytest.raises(ValueError, match="non-finite"):
    edge_sharpness(np.where(np.arange(SHAPE[2]) == 3, np.nan, volume), affine, p0, p1)
