"""Display windows that fit the modality, and where a picture should look closer.

One home for both, so the QC report's viewer and the static PNG figures
(`plotting.orthogonal_slices`) show a scan the same way:

* CT (Hounsfield units) is shown with the radiologists' presets: brain (W80 L40, so
  0..80 HU, grey and white matter apart) first, bone (W2000 L500) second. The full HU
  range would put all brain tissue in one flat grey.
* Anything else (MRI, arbitrary units) gets robust percentiles: the 0.5th of the whole
  volume, the 99.5th of the foreground.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

# (name, (lo, hi)) in HU: level -+ width / 2.
CT_WINDOWS = (("brain", (0.0, 80.0)), ("bone", (-500.0, 1500.0)))
# Robust percentiles for MRI and other relative units (low: all voxels, high: foreground).
ROBUST_PERCENTILES = (0.5, 99.5)
# A scan is taken for CT when this fraction of its voxels sits at air's HU (<= -900):
# every head or body CT has air around the patient; MRI and normalised data have no
# values that low.
_CT_AIR_HU = -900.0
_CT_AIR_FRACTION = 0.01


def modality(data: np.ndarray) -> str:
  """'ct' for data in Hounsfield units (air present at <= -900), else 'mri'."""
  data = np.asarray(data)
  return "ct" if np.mean(data <= _CT_AIR_HU) >= _CT_AIR_FRACTION else "mri"


def foreground(data: np.ndarray) -> np.ndarray:
  """Voxels above the darkest tenth of the range (air, background), as a boolean mask."""
  data = np.asarray(data, np.float32)
  lo, hi = np.percentile(data, (1, 99))
  mask = data > lo + 0.1 * (hi - lo)
  return mask if mask.any() else np.ones(data.shape, bool)


def windows(data: np.ndarray, kind: str | None = None) -> list[tuple[str, tuple[float, float]]]:
  """Named display windows, the default first.

  Args:
    data: the volume (scan units).
    kind: 'ct' or 'mri'; default `modality(data)`.

  Returns:
    ``[(name, (lo, hi)), ...]``: CT brain and bone presets, or the MRI robust
    percentiles ('robust': 0.5th of all voxels, 99.5th of the foreground).
  """
  kind = kind or modality(data)
  if kind == "ct":
    return [(name, window) for name, window in CT_WINDOWS]
  data = np.asarray(data, np.float32)
  # Low end over every voxel (background shows black, the darkest tissue above it),
  # high end over the foreground (a small head in a large field of view still fills
  # the range).
  lo = np.percentile(data, ROBUST_PERCENTILES[0])
  hi = np.percentile(data[foreground(data)], ROBUST_PERCENTILES[1])
  if not hi > lo:
    lo, hi = float(data.min()), float(data.max()) + (data.max() == data.min())
  return [("robust", (float(lo), float(hi)))]


def structure_point(image: np.ndarray, size: int, mask: np.ndarray | None = None,
                    window: tuple[float, float] | None = None) -> tuple[int, ...]:
  """Centre of the ``size``-wide window with the most local gradient energy.

  Where a magnified inset should go: the gradient energy (sum of squared finite
  differences) averaged over a window is large at edges and texture and zero on flat
  tissue or air, so the chosen window shows detail rather than the featureless
  middle of the image. Works for 2D and 3D arrays.

  Args:
    image: 2D or 3D array.
    size: side of the window in voxels.
    mask: where the centre may lie (e.g. the foreground); default anywhere the whole
      window fits.
    window: the display window: voxels at or beyond it (and their edges) add no
      energy, so on a CT brain window the skull's edge does not outshine the brain.

  Returns:
    The centre index.
  """
  image = np.asarray(image, np.float32)
  energy = sum(np.square(np.gradient(image, axis=a)) for a in range(image.ndim))
  if window is not None:
    inside = (image > window[0]) & (image < window[1])
    inside = ndimage.binary_erosion(inside, iterations=1)
    if inside.any():
      energy = np.where(inside, energy, 0.0)
  local = ndimage.uniform_filter(energy, size=size, mode="constant")
  allowed = np.zeros(image.shape, bool)
  half = size // 2
  inner = tuple(slice(min(half, n // 2), max(n - half, n // 2 + 1)) for n in image.shape)
  allowed[inner] = True
  if mask is not None and (mask & allowed).any():
    allowed &= mask
  local = np.where(allowed, local, -np.inf)
  return tuple(int(i) for i in np.unravel_index(np.argmax(local), image.shape))
