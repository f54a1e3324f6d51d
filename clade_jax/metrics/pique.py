"""PIQUE: the no-reference Perception-based Image QUality Evaluator, for 2D slices.

The CLADE paper scores reconstructions by the mean PIQUE over all 2D slices of a
plane (sections 4.6 and 4.8; lower is better). PIQUE is defined by Venkatanath et al.,
"Blind image quality evaluation using perception based features", NCC 2015, and is
best known as MATLAB's ``piqe`` (Image Processing Toolbox, R2018b+). This module
reproduces ``piqe`` for a 2D grayscale image; each step below says where it comes from.

1. Gray levels. ``piqe`` computes ``round(255 * im2double(I))`` (piqe.m, 2018), which
   is this module's default, ``gray_scale='type'``: the input's *type* fixes the scale.
   uint8 is used as it is; uint16 is divided by 257 (``x / 65535 * 255``); int16 is
   shifted by 32768 first; float input is taken to be on [0, 1] already and only
   multiplied by 255. piqe.m does not clip: a float image outside [0, 1] gives gray
   levels outside 0..255, and so does this module. Other dtypes are refused, as
   ``piqe`` refuses them. So the default of ``pique(I)`` is MATLAB's ``piqe(I)``, and
   ``gray_scale='minmax'`` (the image's own min and max go to 0 and 255; a constant
   image maps to zeros) is MATLAB's ``piqe(mat2gray(I))``. The constant C = 1 of step 3
   is tuned to a 0..255 scale, so CT/MRI intensities in raw units (HU, scanner units)
   should be put on one explicitly: ``gray_scale=(lo, hi)`` maps lo and hi to 0 and 255
   and clips values outside (a CT window, or one range for all slices of a volume or
   all methods of a comparison, see `pique_volume`). Rounding is half away from zero,
   as MATLAB's ``round``.
2. Padding. When a side is not a multiple of the 16-pixel block, ``piqe`` pads the
   bottom and right with *replicated* edge pixels (``padarray(..., 'replicate',
   'post')``) before anything else, so the last partial block row/column is scored as
   a full block. Cropping, or padding with zeros (which adds a false edge that is
   then scored), changes the score.
3. MSCN coefficients: ``(I - mu) / (sigma + C)`` with C = 1, where mu
   and sigma are the local mean and standard deviation under a 7x7 Gaussian window of
   standard deviation 7/6 normalised to sum 1, with replicate padding at the border
   (``imgaussfilt(..., 7/6, 'FilterSize', 7, 'Padding', 'replicate')``). sigma is
   ``sqrt(|E[I^2] - mu^2|)``; the absolute value absorbs round-off.
4. Blocks and spatial activity: non-overlapping 16x16 blocks of
   the MSCN map; a block is *spatially active* when the variance of its coefficients
   (normalised by N - 1, MATLAB's ``var``) exceeds T_A = 0.1. Only active blocks are
   scored: the paper's premise is that viewers judge quality from salient regions.
5. Noticeable distortion (blockiness, abrupt artefacts). Each of the block's four
   edges (first/last row and column, 16 coefficients) is cut into the 11 overlapping
   segments of 6 consecutive coefficients. A segment whose standard deviation (N - 1)
   is below 0.1 is a flat run along the block boundary, the signature of a blocking
   edge; one such segment on any edge marks the block as distorted. Its distortion is
   ``1 - v`` with v the block variance.
6. Noise (centre-surround criterion). The block centre is its two middle
   columns (8 and 9 of 16, 1-based). The surround is what piqe.m keeps after deleting
   column 8 and then "column 9" of the narrowed block, i.e. the original columns 8 and
   *10*: column 9 of the centre also counts as surround (``surround='matlab'``, the
   default). That reads as an indexing slip against the evident split, the other 14
   columns, which ``surround='centre'`` gives. With ``sigma_blk = sqrt(v)`` and
   ``r = std(centre) / std(surround)`` (both N - 1; 0/0 read as 0),
   ``beta = |sigma_blk - r| / max(sigma_blk, r)``; the block is noisy when
   ``sigma_blk > 2 * beta``. White noise gives r close to 1 and large sigma_blk. Its
   distortion is ``v``. A block both distorted and noisy contributes
   ``(1 - v) + v = 1``. The two surrounds agree on white noise; they differ where the
   columns either side of the centre differ strongly (tested).
7. Pooling: ``score = (sum of block distortions + C1) / (N_active + C1)
   * 100`` with C1 = 1, over the N_active spatially active blocks.

Consequences worth knowing:

* An image with no active block (flat, or so smooth that every block's MSCN variance
  is at most 0.1) scores (0 + 1) / (0 + 1) * 100 = **100**, the worst score. This is
  not a convention added here: it follows from the pooling and is documented by MATLAB
  ("If input image I is uniform or homogeneous, PIQE provides 100"). PIQUE reads "no
  salient structure" as "no perceivable content". For medical volumes this is why
  `pique_volume` skips slices without foreground instead of letting empty slices
  score 100.
* The score is in [0, 100] for real images. Since the MSCN variance of a block can in
  principle exceed 1 (e.g. a dense grid of impulses), a distorted block could contribute a
  small negative ``1 - v``; no clipping is applied, as in ``piqe``.
* The evaluation (`clade_jax.evaluation.scoring`) does not use the defaults: it passes
  the truth's intensity range as a fixed ``gray_scale=(lo, hi)`` shared by every method
  of a subject (raw MRI/CT units are not on [0, 1], and methods must share one scale),
  and ``surround='centre'``, which its reported numbers were computed with.
"""

from __future__ import annotations

import dataclasses

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view
from scipy import ndimage

from clade_jax.metrics import _checks

BLOCK_SIZE = 16
ACTIVITY_THRESHOLD = 0.1  # T_A: MSCN variance above which a block is spatially active.
SEGMENT_LENGTH = 6  # Pixels per block-edge segment.
SEGMENT_STD_THRESHOLD = 0.1  # A segment flatter than this marks a noticeable distortion.
MSCN_WINDOW = 7
MSCN_SIGMA = 7.0 / 6.0
MSCN_C = 1.0  # Stabiliser in the MSCN denominator, tuned to a 0..255 gray scale.
POOLING_C1 = 1.0
GRAY_MAX = 255.0

# Column indices (0-based) of the block centre in the noise criterion, and the columns
# each surround variant leaves out of the surround (see the module docstring, step 6).
_CENTRE_COLUMNS = (BLOCK_SIZE // 2 - 1, BLOCK_SIZE // 2)
_DROPPED_COLUMNS = {
    "matlab": (BLOCK_SIZE // 2 - 1, BLOCK_SIZE // 2 + 1),  # piqe.m: columns 8 and 10.
    "centre": _CENTRE_COLUMNS,
}
SURROUNDS = tuple(_DROPPED_COLUMNS)

# gray_scale='type': the value range im2double maps onto [0, 1] for each integer type
# MATLAB's piqe accepts; float input is taken as already on [0, 1].
_TYPE_RANGES = {
    np.dtype(np.uint8): (0.0, 255.0),
    np.dtype(np.uint16): (0.0, 65535.0),
    np.dtype(np.int16): (-32768.0, 32767.0),
}
GRAY_SCALES = ("type", "minmax")

GrayScale = str | tuple[float, float]


@dataclasses.dataclass(frozen=True)
class PiqueResult:
  """A PIQUE score with its block-level maps, for figures.

  Attributes:
    score: the PIQUE score (lower is better).
    activity_mask: bool [H, W], pixels of spatially active blocks.
    artifact_mask: bool [H, W], pixels of active blocks with a noticeable distortion.
    noise_mask: bool [H, W], pixels of active blocks classified as noisy.
    n_active: the number of spatially active blocks.
  """

  score: float
  activity_mask: np.ndarray
  artifact_mask: np.ndarray
  noise_mask: np.ndarray
  n_active: int


def _matlab_round(x: np.ndarray) -> np.ndarray:
  """MATLAB's round: half away from zero (numpy's np.round rounds half to even)."""
  return np.sign(x) * np.floor(np.abs(x) + 0.5)


def _check_gray_scale(gray_scale, allowed: tuple[str, ...] = GRAY_SCALES):
  """Returns `gray_scale` as a name in `allowed` or a validated (lo, hi) float pair."""
  if isinstance(gray_scale, str):
    if gray_scale not in allowed:
      raise ValueError(
          f"gray_scale must be one of {', '.join(allowed)} or (lo, hi), got {gray_scale!r}")
    return gray_scale
  try:
    lo, hi = (float(v) for v in gray_scale)
  except (TypeError, ValueError):
    raise ValueError(
        f"gray_scale must be one of {', '.join(allowed)} or (lo, hi), got {gray_scale!r}"
    ) from None
  if not (np.isfinite(lo) and np.isfinite(hi) and hi > lo):
    raise ValueError(f"intensity range must be finite with hi > lo, got {(lo, hi)}")
  return lo, hi


def _resolve_gray_scale(gray_scale, intensity_range, allowed=GRAY_SCALES, default="type"):
  """One gray scale from the two spellings (`intensity_range` is the older one)."""
  if intensity_range is not None:
    if gray_scale is not None:
      raise ValueError("pass gray_scale or intensity_range, not both")
    gray_scale = intensity_range
  return _check_gray_scale(default if gray_scale is None else gray_scale, allowed)


def to_gray_levels(image: np.ndarray, gray_scale: GrayScale = "type") -> np.ndarray:
  """Maps intensities onto PIQUE's integer gray levels (step 1 of the module docstring).

  Args:
    image: array of any shape.
    gray_scale: 'type' (MATLAB ``piqe``'s ``round(255 * im2double(I))``: uint8,
      uint16 and int16 by their type's range, float as already on [0, 1], no
      clipping); 'minmax' (this image's min and max go to 0 and 255); or (lo, hi),
      mapped to 0 and 255 with values outside clipped.

  Returns:
    float64 array of integer values, the shape of `image`; within [0, 255] except
    for float input outside [0, 1] under 'type'. A constant image maps to zeros under
    'minmax'.

  Raises:
    ValueError: an unknown `gray_scale`, a range with hi <= lo or non-finite ends, or
      under 'type' a dtype MATLAB's piqe does not take (bool, int8, int32, ...).
  """
  gray_scale = _check_gray_scale(gray_scale)
  dtype = np.asarray(image).dtype
  if gray_scale == "type":
    if np.issubdtype(dtype, np.floating):
      return _matlab_round(GRAY_MAX * np.asarray(image, dtype=np.float64))
    if dtype not in _TYPE_RANGES:
      raise ValueError(
          f"gray_scale='type' takes uint8, uint16, int16 or float images (as MATLAB's "
          f"piqe), got {dtype}; pass gray_scale='minmax' or (lo, hi)")
    lo, hi = _TYPE_RANGES[dtype]
    unit = (np.asarray(image, dtype=np.float64) - lo) / (hi - lo)
    return _matlab_round(GRAY_MAX * unit)
  image = np.asarray(image, dtype=np.float64)
  if gray_scale == "minmax":
    lo, hi = float(image.min()), float(image.max())
    if hi == lo:
      return np.zeros_like(image)
  else:
    lo, hi = gray_scale
  unit = np.clip((image - lo) / (hi - lo), 0.0, 1.0)
  return _matlab_round(GRAY_MAX * unit)


def mscn_coefficients(gray: np.ndarray) -> np.ndarray:
  """Mean-subtracted contrast-normalised coefficients of a 0..255 image (step 3).

  Args:
    gray: 2D image on the 0..255 gray scale.

  Returns:
    ``(gray - mu) / (sigma + 1)``, same shape.
  """
  offsets = np.arange(MSCN_WINDOW) - MSCN_WINDOW // 2
  kernel = np.exp(-offsets**2 / (2.0 * MSCN_SIGMA**2))
  kernel /= kernel.sum()

  def local_mean(x):
    # The 2D Gaussian is separable; 'nearest' is MATLAB's 'replicate' padding.
    x = ndimage.correlate1d(x, kernel, axis=0, mode="nearest")
    return ndimage.correlate1d(x, kernel, axis=1, mode="nearest")

  mu = local_mean(gray)
  sigma = np.sqrt(np.abs(local_mean(gray * gray) - mu * mu))
  return (gray - mu) / (sigma + MSCN_C)


def _pad_to_blocks(gray: np.ndarray) -> np.ndarray:
  """Replicate-pads the bottom and right up to a multiple of the block size."""
  pad = [(0, -n % BLOCK_SIZE) for n in gray.shape]
  return np.pad(gray, pad, mode="edge")


def _as_blocks(x: np.ndarray) -> np.ndarray:
  """[H, W] with H, W multiples of 16 -> [H/16, W/16, 16, 16] non-overlapping blocks."""
  rows, cols = x.shape[0] // BLOCK_SIZE, x.shape[1] // BLOCK_SIZE
  return x.reshape(rows, BLOCK_SIZE, cols, BLOCK_SIZE).swapaxes(1, 2)


def _has_noticeable_distortion(blocks: np.ndarray) -> np.ndarray:
  """Step 5 for every block: True where some 6-pixel edge segment is flat."""
  edges = np.stack(
      [blocks[..., 0, :], blocks[..., :, -1], blocks[..., -1, :], blocks[..., :, 0]],
      axis=-2)  # [..., 4 edges, 16]
  segments = sliding_window_view(edges, SEGMENT_LENGTH, axis=-1)  # [..., 4, 11, 6]
  segment_std = segments.std(axis=-1, ddof=1)
  return np.any(segment_std < SEGMENT_STD_THRESHOLD, axis=(-2, -1))


def _std_per_block(columns: np.ndarray) -> np.ndarray:
  """[..., 16, k] selected columns of each block -> [...] their std (N - 1)."""
  return columns.reshape(*columns.shape[:-2], -1).std(axis=-1, ddof=1)


def _is_noisy(blocks: np.ndarray, block_var: np.ndarray, surround: str) -> np.ndarray:
  """Step 6 for every block: the centre-surround noise criterion."""
  dropped = _DROPPED_COLUMNS[surround]
  kept = [c for c in range(BLOCK_SIZE) if c not in dropped]
  centre_std = _std_per_block(blocks[..., :, list(_CENTRE_COLUMNS)])
  surround_std = _std_per_block(blocks[..., :, kept])
  block_sigma = np.sqrt(block_var)
  with np.errstate(divide="ignore", invalid="ignore"):
    # piqe reads a 0/0 ratio (flat centre and surround) as 0; keep x/0 infinite.
    ratio = np.nan_to_num(centre_std / surround_std, nan=0.0, posinf=np.inf)
    beta = np.abs(block_sigma - ratio) / np.maximum(block_sigma, ratio)
    # A NaN beta (0/0 or inf/inf) compares False: not classified as noise, as in piqe.
    return block_sigma > 2.0 * beta


def _block_to_pixel_mask(block_mask: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
  """Expands a per-block mask to pixels and crops the padding away."""
  full = np.repeat(np.repeat(block_mask, BLOCK_SIZE, axis=0), BLOCK_SIZE, axis=1)
  return full[:shape[0], :shape[1]]


def _check_surround(surround: str) -> str:
  if surround not in _DROPPED_COLUMNS:
    raise ValueError(f"surround must be one of {', '.join(SURROUNDS)}, got {surround!r}")
  return surround


def pique_with_masks(image: np.ndarray, *,
                     gray_scale: GrayScale | None = None,
                     intensity_range: tuple[float, float] | None = None,
                     surround: str = "matlab") -> PiqueResult:
  """PIQUE score of a 2D image plus its activity, artefact and noise masks.

  The defaults are MATLAB's ``[score, activity, artifacts, noise] = piqe(I)``.

  Args:
    image: 2D grayscale image [H, W]: uint8, uint16, int16 or float under the default
      gray scale, any real dtype otherwise.
    gray_scale: 'type' (default, MATLAB's: the dtype's range, float as [0, 1]),
      'minmax' (this image's min and max, MATLAB's ``piqe(mat2gray(I))``), or a fixed
      (lo, hi) window, values outside clipped. See the module docstring, step 1.
    intensity_range: (lo, hi), the same as ``gray_scale=(lo, hi)`` (the older
      spelling); give one or the other.
    surround: 'matlab' (default, piqe.m's columns) or 'centre' (the 14 columns outside
      the centre); module docstring, step 6.

  Returns:
    A `PiqueResult`; its masks have the shape of `image`.

  Raises:
    ValueError: not 2D, empty, non-finite values, an unknown option, a bad range, or
      a dtype the 'type' gray scale does not take.
  """
  gray_scale = _resolve_gray_scale(gray_scale, intensity_range)
  surround = _check_surround(surround)
  image = np.asarray(image)
  _checks.as_finite_array(image, "image", ndim=2)  # Checks only: keep the dtype for 'type'.
  gray = _pad_to_blocks(to_gray_levels(image, gray_scale))
  blocks = _as_blocks(mscn_coefficients(gray))
  block_var = blocks.reshape(*blocks.shape[:2], -1).var(axis=-1, ddof=1)

  active = block_var > ACTIVITY_THRESHOLD
  artifact = active & _has_noticeable_distortion(blocks)
  noise = active & _is_noisy(blocks, block_var, surround)
  distortion = np.sum(artifact * (1.0 - block_var) + noise * block_var)
  n_active = int(active.sum())
  score = (distortion + POOLING_C1) / (n_active + POOLING_C1) * 100.0

  return PiqueResult(
      score=float(score),
      activity_mask=_block_to_pixel_mask(active, image.shape),
      artifact_mask=_block_to_pixel_mask(artifact, image.shape),
      noise_mask=_block_to_pixel_mask(noise, image.shape),
      n_active=n_active)


def pique(image: np.ndarray, *,
          gray_scale: GrayScale | None = None,
          intensity_range: tuple[float, float] | None = None,
          surround: str = "matlab") -> float:
  """PIQUE score of a 2D grayscale image, in [0, 100]; lower is better.

  ``pique(I)`` is MATLAB's ``piqe(I)``; see `pique_with_masks` for the options.

  Args:
    image: 2D image [H, W].
    gray_scale: 'type' (default), 'minmax' or a fixed (lo, hi) window. Raw CT/MRI
      intensities are not on [0, 1]: pass a window, or one range for all slices of a
      volume (`pique_volume`) so that they share a scale.
    intensity_range: (lo, hi), the same as ``gray_scale=(lo, hi)``.
    surround: 'matlab' (default) or 'centre'.

  Returns:
    The score; 100 when no block is spatially active (e.g. a flat image).

  Raises:
    ValueError: as `pique_with_masks`.
  """
  return pique_with_masks(image, gray_scale=gray_scale, intensity_range=intensity_range,
                          surround=surround).score


def pique_volume(volume: np.ndarray, axis: int, *,
                 mask: np.ndarray | None = None,
                 gray_scale: GrayScale | None = None,
                 intensity_range: tuple[float, float] | None = None,
                 surround: str = "matlab") -> np.ndarray:
  """PIQUE of every 2D slice perpendicular to `axis`; the paper averages these.

  All slices share one gray scale: 'type' (default: each slice as MATLAB's
  ``piqe(slice)`` reads it, which is one scale for the whole volume), 'volume' (the
  min and max of the whole volume go to 0 and 255), or a fixed (lo, hi) window. There
  is deliberately no per-slice min-max: it would stretch the contrast of a dim slice
  (its noise included) and make scores of different slices, and of different
  reconstructions of the same volume, incomparable.

  Slices with no foreground are skipped (NaN): by `mask` when given (no True voxel in
  the slice), otherwise slices that are constant (e.g. zero-filled). An empty slice
  would otherwise score 100 and swamp the mean (module docstring). Average with
  ``np.nanmean``.

  Slices are ``np.moveaxis(volume, axis, 0)[i]``: rows and columns keep the remaining
  voxel axes in order, as `clade_jax.data.volume.plane_slices` does. PIQUE is not
  transpose-invariant (block padding is bottom/right; the noise centre is two
  columns), so keep this orientation fixed across methods being compared.

  Args:
    volume: 3D array.
    axis: the voxel axis the slices are perpendicular to (negative allowed).
    mask: optional boolean foreground mask, the shape of `volume`.
    gray_scale: 'type' (default), 'volume' or (lo, hi), as above.
    intensity_range: (lo, hi), the same as ``gray_scale=(lo, hi)``.
    surround: 'matlab' (default) or 'centre' (module docstring, step 6).

  Returns:
    float64 [n_slices] scores, NaN for skipped slices.

  Raises:
    ValueError: not 3D, non-finite values, bad axis, an unknown option, a mask of
      another shape or with no True voxel.
  """
  gray_scale = _resolve_gray_scale(gray_scale, intensity_range, allowed=("type", "volume"))
  surround = _check_surround(surround)
  volume = np.asarray(volume)
  _checks.as_finite_array(volume, "volume", ndim=3, keep_float_dtype=True)
  if not -3 <= axis < 3:
    raise ValueError(f"axis must be in [-3, 2] for a 3D volume, got {axis}")
  if mask is not None:
    mask = np.moveaxis(_checks.as_mask(mask, volume.shape, "mask"), axis, 0)
  slices = np.moveaxis(volume, axis, 0)
  if gray_scale == "volume":
    lo, hi = float(volume.min()), float(volume.max())
    if hi == lo:
      return np.full(len(slices), np.nan)
    gray_scale = (lo, hi)

  scores = np.full(len(slices), np.nan)
  for i, image in enumerate(slices):
    has_foreground = mask[i].any() if mask is not None else image.min() < image.max()
    if has_foreground:
      scores[i] = pique(image, gray_scale=gray_scale, surround=surround)
  return scores
