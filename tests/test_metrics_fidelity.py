"""PSNR, SSIM and the foreground mask against values computed independently."""

import numpy as np
import pytest
from scipy import ndimage

from clade_jax.metrics.fidelity import foreground_mask
from clade_jax.metrics.fidelity import psnr
from clade_jax.metrics.fidelity import ssim
from clade_jax.metrics.fidelity import ssim_per_slice


def _volume(seed=0, shape=(32, 32, 32)):
  """A smooth random volume in roughly [0, 1]."""
  x = ndimage.gaussian_filter(np.random.default_rng(seed).normal(size=shape), 2.0)
  return (x - x.min()) / (x.max() - x.min())


def test_psnr_of_known_gaussian_noise_level():
  target = _volume()
  pred = target + np.random.default_rng(1).normal(0.0, 0.05, target.shape)
  assert psnr(pred, target, data_range=1.0) == pytest.approx(20 * np.log10(1.0 / 0.05), abs=0.1)


def test_psnr_exact_for_constant_offset_and_inf_for_identical():
  target = _volume()
  assert psnr(target + 0.1, target, data_range=2.0) == pytest.approx(
      20 * np.log10(2.0 / 0.1), rel=1e-12)
  assert psnr(target, target.copy(), data_range=1.0) == float("inf")


def test_psnr_mask_restricts_the_error():
  target = _volume()
  pred = target.copy()
  pred[:8] += 0.3
  mask = np.zeros(target.shape, dtype=bool)
  mask[16:] = True
  assert psnr(pred, target, 1.0, mask=mask) == float("inf")
  # Over the first 16 slices only half the voxels are off by 0.3: MSE = 0.09 / 2.
  assert psnr(pred, target, 1.0, mask=~mask) == pytest.approx(10 * np.log10(2.0 / 0.09))


def test_ssim_identical_is_one_symmetric_and_decreases_with_noise():
  target = _volume()
  assert ssim(target, target.copy(), data_range=1.0) == pytest.approx(1.0, abs=1e-12)
  rng = np.random.default_rng(2)
  noise = rng.normal(size=target.shape)
  values = [ssim(target + s * noise, target, data_range=1.0) for s in (0.01, 0.05, 0.2)]
  assert 1.0 > values[0] > values[1] > values[2]
  noisy = target + 0.05 * noise
  assert ssim(noisy, target, 1.0) == pytest.approx(ssim(target, noisy, 1.0), rel=1e-12)


def _reference_ssim_2d(x, y, data_range):
  """SSIM by explicit sums over an 11x11 Gaussian window (sigma 1.5, reflected border)."""
  offsets = np.arange(-5, 6)
  w = np.exp(-offsets**2 / (2 * 1.5**2))
  w /= w.sum()
  c1, c2 = (0.01 * data_range) ** 2, (0.03 * data_range) ** 2
  xp, yp = np.pad(x, 5, mode="symmetric"), np.pad(y, 5, mode="symmetric")
  values = []
  for i in range(x.shape[0]):
    for j in range(x.shape[1]):
      mx = my = sxx = syy = sxy = 0.0
      for a in range(11):
        for b in range(11):
          weight = w[a] * w[b]
          u, v = xp[i + a, j + b], yp[i + a, j + b]
          mx += weight * u
          my += weight * v
          sxx += weight * u * u
          syy += weight * v * v
          sxy += weight * u * v
      vx, vy, cov = sxx - mx * mx, syy - my * my, sxy - mx * my
      values.append((2 * mx * my + c1) * (2 * cov + c2)
                    / ((mx * mx + my * my + c1) * (vx + vy + c2)))
  return float(np.mean(values))


def test_ssim_2d_matches_explicit_formula_and_per_slice_agrees():
  rng = np.random.default_rng(3)
  x = rng.uniform(size=(3, 12, 10))
  y = np.clip(x + rng.normal(0.0, 0.2, x.shape), 0.0, 1.0)
  reference = [_reference_ssim_2d(x[i], y[i], 1.0) for i in range(3)]
  assert ssim(x[0], y[0], data_range=1.0) == pytest.approx(reference[0], rel=1e-10)
  np.testing.assert_allclose(ssim_per_slice(x, y, axis=0, data_range=1.0), reference, rtol=1e-10)
  # The same slices stacked along the last axis.
  moved = ssim_per_slice(np.moveaxis(x, 0, -1), np.moveaxis(y, 0, -1), axis=-1, data_range=1.0)
  np.testing.assert_allclose(moved, reference, rtol=1e-10)


def test_ssim_mask_restricts_the_average():
  target = _volume()
  pred = target.copy()
  pred[:8] += np.random.default_rng(4).normal(0.0, 0.2, pred[:8].shape)
  far = np.zeros(target.shape, dtype=bool)
  far[16:] = True  # More than the 5-voxel window radius from the changed part.
  assert ssim(pred, target, 1.0, mask=far) == pytest.approx(1.0, abs=1e-12)
  assert ssim(pred, target, 1.0) < 0.9

  per_slice = ssim_per_slice(pred, target, axis=0, data_range=1.0,
                             mask=np.broadcast_to(np.arange(32)[:, None, None] % 2 == 0, pred.shape))
  assert np.isnan(per_slice[1::2]).all()
  assert (per_slice[0:8:2] < 0.9).all()
  np.testing.assert_allclose(per_slice[8::2], 1.0)


def test_foreground_mask_finds_body_and_fills_enclosed_air():
  index = np.indices((40, 40, 40)) - 19.5
  radius = np.sqrt((index**2).sum(axis=0))
  noise = np.random.default_rng(5).normal(size=radius.shape)
  for air, tissue in ((0.0, 100.0), (-1000.0, 40.0)):  # MRI-like and CT-like (HU).
    volume = np.where(radius < 15, tissue, air) + noise
    volume[radius < 4] = air + noise[radius < 4]  # Air enclosed in the body.
    mask = foreground_mask(volume)
    np.testing.assert_array_equal(mask, radius < 15)
    assert not foreground_mask(volume, fill_holes=False)[radius < 4].any()
  assert not foreground_mask(np.full((4, 4, 4), 3.0)).any()


def test_invalid_inputs_raise():
  a = _volume(shape=(8, 8, 8))
  with pytest.raises(ValueError, match=r"\(8, 8, 8\).*\(8, 8, 7\)"):
    psnr(a, a[..., :7], 1.0)
  with pytest.raises(ValueError, match=r"\(8, 8, 8\).*\(8, 8, 7\)"):
    ssim(a, a[..., :7], 1.0)
  with pytest.raises(ValueError, match="data_range"):
    psnr(a, a, 0.0)
  with pytest.raises(ValueError, match="non-finite"):
    ssim(np.where(a > 0.5, np.nan, a), a, 1.0)
  with pytest.raises(ValueError, match="empty"):
    ssim(a, a, 1.0, mask=np.zeros(a.shape, dtype=bool))
  with pytest.raises(ValueError, match="3D"):
    ssim_per_slice(a[0], a[0], axis=0, data_range=1.0)
  with pytest.raises(ValueError, match=r"\[0, 1\)"):
    foreground_mask(a, threshold_fraction=1.5)
