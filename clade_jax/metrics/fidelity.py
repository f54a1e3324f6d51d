"""Fidelity to a ground truth: PSNR and SSIM, optionally within a foreground mask.

CLADE itself has no paired ground truth (paper section 6), but simulated
degradations of high-resolution volumes do, and there PSNR and SSIM say how close a
reconstruction is. Both take an explicit `data_range` (the intensity span the
images are compared on, e.g. the ground truth's max - min, or 1 for volumes
normalised to [0, 1]): inferring it from the data would make scores of different
methods depend on their own outliers.

SSIM follows Wang et al. (2004): Gaussian-weighted local means, variances and
covariance (sigma 1.5, window truncated at radius 5, i.e. 11 taps, weights summing
to 1, so no N/(N-1) correction), K1 = 0.01, K2 = 0.03, C1 = (K1 L)^2, C2 = (K2 L)^2
with L = `data_range`. Choices:

* `ssim` uses a 3D Gaussian window on volumes (any rank works); `ssim_per_slice` a
  2D window within each slice of a plane.
* Borders are handled by symmetric reflection (``mode='reflect'``) and every voxel
  keeps its SSIM value, rather than cropping a 5-voxel margin as Wang's 'valid'
  filtering does, so that a mask touching the volume edge is honoured and thin
  volumes are not cropped away. On medical volumes the border is mostly background
  that the mask excludes anyway.
* A mask selects which voxels' local SSIM values are averaged; the windows still see
  the neighbouring voxels outside the mask (the local statistics at a boundary
  voxel need its neighbourhood).
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from clade_jax.metrics import _checks

SSIM_SIGMA = 1.5
SSIM_RADIUS = 5  # Window truncation (11 taps), as Wang et al.'s 11x11 window.
SSIM_K1 = 0.01
SSIM_K2 = 0.03
ROBUST_PERCENTILES = (1.0, 99.0)


def foreground_mask(volume: np.ndarray, threshold_fraction: float = 0.1, *,
                    fill_holes: bool = True) -> np.ndarray:
  """Voxels brighter than a fraction of the volume's robust intensity range.

  The threshold is ``lo + threshold_fraction * (hi - lo)`` with lo and hi the 1st
  and 99th percentiles: percentiles, not min and max, so that a few hot or cold
  voxels do not move it; measured from lo, not from 0, so that it also works for CT
  in HU (air at -1000). Holes (e.g. air in the stomach or lungs, enclosed by the
  body) are filled by default, so the mask is the body rather than its bright parts.
  A fixed fraction rather than Otsu's method: Otsu's threshold moves with the shape
  of the histogram (how much air the field of view holds, how many tissue classes
  there are), whereas this rule is predictable and applies equally to every method
  compared; compute the mask once, on the ground truth.

  Args:
    volume: image of any rank.
    threshold_fraction: in [0, 1).
    fill_holes: fill background regions enclosed by foreground.

  Returns:
    Boolean mask of the volume's shape (all False for a constant volume).

  Raises:
    ValueError: non-finite values or a fraction outside [0, 1).
  """
  volume = _checks.as_finite_array(volume, "volume", keep_float_dtype=True)
  if not 0.0 <= threshold_fraction < 1.0:
    raise ValueError(f"threshold_fraction must be in [0, 1), got {threshold_fraction}")
  lo, hi = np.percentile(volume, ROBUST_PERCENTILES)
  if hi <= lo:
    return np.zeros(volume.shape, dtype=bool)
  mask = volume > lo + threshold_fraction * (hi - lo)
  return ndimage.binary_fill_holes(mask) if fill_holes else mask


def _prepare(pred, target, mask):
  pred = _checks.as_finite_array(pred, "pred")
  target = _checks.as_finite_array(target, "target")
  _checks.same_shape(pred, target, "pred", "target")
  if mask is not None:
    mask = _checks.as_mask(mask, pred.shape, "mask")
  return pred, target, mask


def psnr(pred: np.ndarray, target: np.ndarray, data_range: float,
         mask: np.ndarray | None = None) -> float:
  """Peak signal-to-noise ratio (dB): ``10 log10(data_range^2 / MSE)``.

  Args:
    pred: reconstruction, any rank.
    target: ground truth, the shape of `pred`.
    data_range: the peak-to-peak intensity span (> 0).
    mask: optional boolean mask; the MSE is taken over its voxels only.

  Returns:
    PSNR in dB; ``inf`` when pred equals target (zero error).

  Raises:
    ValueError: shape mismatch, non-finite values, bad data_range, or an empty mask.
  """
  pred, target, mask = _prepare(pred, target, mask)
  data_range = _checks.positive(data_range, "data_range")
  error = pred - target
  mse = float(np.mean(np.square(error[mask] if mask is not None else error)))
  if mse == 0.0:
    return float("inf")
  return float(10.0 * np.log10(data_range**2 / mse))


def _ssim_map(pred: np.ndarray, target: np.ndarray, data_range: float,
              sigma: float | list[float]) -> np.ndarray:
  """Local SSIM at every voxel with a Gaussian window of per-axis `sigma`."""
  c1 = (SSIM_K1 * data_range) ** 2
  c2 = (SSIM_K2 * data_range) ** 2

  def local_mean(x):
    return ndimage.gaussian_filter(x, sigma, mode="reflect", radius=SSIM_RADIUS)

  mu_p, mu_t = local_mean(pred), local_mean(target)
  var_p = local_mean(pred * pred) - mu_p * mu_p
  var_t = local_mean(target * target) - mu_t * mu_t
  cov = local_mean(pred * target) - mu_p * mu_t
  return ((2 * mu_p * mu_t + c1) * (2 * cov + c2)) / (
      (mu_p**2 + mu_t**2 + c1) * (var_p + var_t + c2))


def ssim_map(pred: np.ndarray, target: np.ndarray, data_range: float) -> np.ndarray:
  """The local SSIM at every voxel (window over all axes), for figures.

  Args:
    pred: reconstruction, 2D or 3D.
    target: ground truth, the shape of `pred`.
    data_range: the peak-to-peak intensity span (> 0).

  Returns:
    float64 array of the shape of `pred`.
  """
  pred, target, _ = _prepare(pred, target, None)
  data_range = _checks.positive(data_range, "data_range")
  return _ssim_map(pred, target, data_range, SSIM_SIGMA)


def ssim(pred: np.ndarray, target: np.ndarray, data_range: float,
         mask: np.ndarray | None = None) -> float:
  """Mean structural similarity, with a Gaussian window over all axes (3D for volumes).

  Args:
    pred: reconstruction, 2D or 3D.
    target: ground truth, the shape of `pred`.
    data_range: the peak-to-peak intensity span (> 0).
    mask: optional boolean mask; the SSIM map is averaged over its voxels.

  Returns:
    Mean SSIM, 1 for identical inputs.

  Raises:
    ValueError: shape mismatch, non-finite values, bad data_range, or an empty mask.
  """
  pred, target, mask = _prepare(pred, target, mask)
  data_range = _checks.positive(data_range, "data_range")
  values = _ssim_map(pred, target, data_range, SSIM_SIGMA)
  return float(np.mean(values[mask] if mask is not None else values))


def ssim_per_slice(pred: np.ndarray, target: np.ndarray, axis: int, data_range: float,
                   mask: np.ndarray | None = None) -> np.ndarray:
  """2D SSIM of each slice perpendicular to `axis` (the window stays in the slice).

  Args:
    pred: reconstruction, 3D.
    target: ground truth, the shape of `pred`.
    axis: the voxel axis the slices are perpendicular to (negative allowed).
    data_range: the peak-to-peak intensity span (> 0).
    mask: optional boolean mask; each slice's SSIM map is averaged over its part.

  Returns:
    float64 [n_slices]; NaN for slices where `mask` selects nothing.

  Raises:
    ValueError: not 3D, shape mismatch, non-finite values, bad axis or data_range,
      or an empty mask.
  """
  pred, target, mask = _prepare(pred, target, mask)
  if pred.ndim != 3:
    raise ValueError(f"pred and target must be 3D, got shape {pred.shape}")
  if not -3 <= axis < 3:
    raise ValueError(f"axis must be in [-3, 2] for a 3D volume, got {axis}")
  data_range = _checks.positive(data_range, "data_range")
  # sigma 0 along `axis`: scipy skips that axis, so each slice is filtered in 2D.
  sigma = [0.0 if a == axis % 3 else SSIM_SIGMA for a in range(3)]
  values = np.moveaxis(_ssim_map(pred, target, data_range, sigma), axis, 0)
  if mask is None:
    return values.reshape(len(values), -1).mean(axis=1)
  mask = np.moveaxis(mask, axis, 0)
  return np.array([v[m].mean() if m.any() else np.nan for v, m in zip(values, mask)])
