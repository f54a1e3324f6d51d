"""Slice profiles: how much each fine voxel contributes to one thick slice.

One definition serves every piece of code that models the acquisition: the
degradation simulator (`degrade`), the data-consistency projection (`consistency`)
and, later, SMORE's training pairs. A profile is a density along the thick axis,
measured in fine voxels and centred on the slice:

  gaussian: a Gaussian with FWHM = thickness, truncated at ``radius + 1/2`` voxels
    from the centre, ``radius = max(1, ceil(5.3 sigma))`` (the tail beyond holds
    < 1e-7 of the weight).
  rect: a box of width = thickness.
  an explicit 1D kernel (odd length, in fine voxels): tap t is a constant density
    over ``[t - 1/2, t + 1/2]`` around the centre, so at a whole-voxel centre the
    weights are the kernel itself.

The weight of fine voxel i is the integral of the density over the voxel's extent
``[i - 1/2, i + 1/2]``, normalised so the weights sum to 1. Integrating rather than
sampling is what lets a slice sit at any continuous position (5.5 mm slices on a
1 mm grid are centred on 0, 5.5, 11, ...) and a thickness that is not a whole number
of voxels give partial edge weights instead of being rounded.
"""

from __future__ import annotations

import math

import numpy as np
from scipy import special

PROFILES = ("gaussian", "rect")

# A Gaussian profile is truncated where its tail weight is negligible (< 1e-7 of the
# total beyond 5.3 sigma), then renormalised.
_GAUSSIAN_TRUNCATE_SIGMAS = 5.3
_FWHM_PER_SIGMA = 2.0 * math.sqrt(2.0 * math.log(2.0))

# Voxels whose overlap with the profile's support is below this (in voxels) get no
# tap: float noise in a centre or a half-width must not add a tap of weight ~1e-16.
_OVERLAP_TOLERANCE = 1e-9


def _check_kernel(profile) -> np.ndarray:
  kernel = np.asarray(profile, dtype=np.float64)
  if kernel.ndim != 1 or kernel.size % 2 == 0:
    raise ValueError(
        f"a slice kernel must be 1D with an odd number of taps (its middle tap is the "
        f"slice centre), got shape {kernel.shape}")
  if not np.all(np.isfinite(kernel)) or np.any(kernel < 0) or not kernel.sum() > 0:
    raise ValueError("a slice kernel must be finite, non-negative and not all zero")
  return kernel


def weights_at(profile: str | np.ndarray, centre: float,
               thickness_vox: float | None = None) -> tuple[int, np.ndarray]:
  """Weights of a slice centred at a continuous position of the fine grid.

  Args:
    profile: 'gaussian' (FWHM = thickness), 'rect' (width = thickness), or an
      explicit 1D kernel in fine voxels (odd length; see the module docstring).
    centre: the slice centre as a continuous fine-voxel index (voxel i spans
      ``[i - 1/2, i + 1/2]``).
    thickness_vox: slice thickness in fine voxels; required for the named profiles,
      None for an explicit kernel (its taps set the thickness).

  Returns:
    (first, weights): float64 weights summing to 1; ``weights[t]`` belongs to fine
    voxel ``first + t``. Indices are not clipped to any volume: the caller decides
    what lies beyond its edges.

  Raises:
    ValueError: unknown profile, non-positive or missing thickness, a thickness with
      an explicit kernel, an unusable kernel, or a non-finite centre.
  """
  centre = float(centre)
  if not math.isfinite(centre):
    raise ValueError(f"slice centre must be finite, got {centre}")
  if isinstance(profile, str):
    if profile not in PROFILES:
      raise ValueError(f"unknown slice profile {profile!r}; use one of {PROFILES} or an array")
    if thickness_vox is None or not thickness_vox > 0:
      raise ValueError(f"slice thickness must be > 0 voxels, got {thickness_vox}")
    if profile == "rect":
      half_width = thickness_vox / 2.0
    else:
      sigma = thickness_vox / _FWHM_PER_SIGMA
      half_width = max(1, int(math.ceil(_GAUSSIAN_TRUNCATE_SIGMAS * sigma))) + 0.5
  else:
    if thickness_vox is not None:
      raise ValueError("the explicit kernel sets the thickness; pass thickness_vox=None")
    kernel = _check_kernel(profile)
    half_width = kernel.size / 2.0

  # Voxels that overlap the support (centre - half_width, centre + half_width) by
  # more than the tolerance.
  first = math.floor(centre - half_width - 0.5 + _OVERLAP_TOLERANCE) + 1
  last = math.ceil(centre + half_width + 0.5 - _OVERLAP_TOLERANCE) - 1
  # Voxel extents relative to the centre. For a whole-number centre these are exact
  # half-integers, which keeps the integer-centre weights bit-identical to the
  # original centred formula.
  lower = np.arange(first, last + 1, dtype=np.float64) - centre - 0.5
  upper = lower + 1.0
  if isinstance(profile, str) and profile == "gaussian":
    lo = np.maximum(lower, -half_width) / (sigma * math.sqrt(2))
    hi = np.minimum(upper, half_width) / (sigma * math.sqrt(2))
    weights = 0.5 * (special.erf(hi) - special.erf(lo))  # exact integral per voxel
  elif isinstance(profile, str):
    weights = np.clip(np.minimum(upper, half_width) - np.maximum(lower, -half_width), 0.0, None)
  else:
    # Overlap of each fine voxel with each kernel tap's unit interval.
    radius = (kernel.size - 1) // 2
    tap_lower = np.arange(-radius, radius + 1, dtype=np.float64) - 0.5
    overlap = np.clip(np.minimum(upper[:, None], tap_lower[None, :] + 1.0)
                      - np.maximum(lower[:, None], tap_lower[None, :]), 0.0, None)
    weights = overlap @ kernel
  return first, weights / weights.sum()


def centred_weights(profile: str | np.ndarray, thickness_vox: float | None = None) -> np.ndarray:
  """Weights of one slice centred on a fine voxel (`weights_at` with centre 0).

  Args:
    profile: 'gaussian', 'rect' or an explicit kernel, as in `weights_at`.
    thickness_vox: slice thickness in fine voxels; required for the named profiles.

  Returns:
    float64 weights of odd length 2r+1 summing to 1; tap i covers the fine voxel at
    offset i - r from the slice centre.

  Raises:
    ValueError: as `weights_at`.
  """
  first, weights = weights_at(profile, 0.0, thickness_vox)
  assert weights.size == 1 - 2 * first, (first, weights.size)  # symmetric about 0
  return weights


def from_config(data_config) -> tuple[str | np.ndarray, float | None]:
  """The slice profile and thickness a run's ``config.data`` describes.

  ``data.slice_kernel`` (a 1D kernel in fine voxels, odd length; empty for none) wins
  over ``data.slice_profile`` ('gaussian' or 'rect', with ``data.slice_thickness`` in
  mm, 0 = the slice spacing). NIfTI stores the spacing, not the thickness, so both
  come from the user.

  Returns:
    (profile, thickness_mm): a profile name or the kernel as a float64 array, and the
    thickness in mm, None for "the slice spacing" and for a kernel.

  Raises:
    ValueError: a kernel that is not usable, or a kernel together with a thickness;
      the message names the config field.
  """
  kernel = tuple(data_config.get("slice_kernel", ()) or ())
  thickness = float(data_config.get("slice_thickness", 0.0) or 0.0) or None
  if not kernel:
    profile = data_config.get("slice_profile", "gaussian")
    if profile == "estimate":
      raise ValueError("data.slice_profile='estimate' is resolved from the scan before use "
                       "(profile_estimation.resolve_config); this config was not")
    return profile, thickness
  if thickness is not None:
    raise ValueError("data.slice_kernel sets the slice thickness; leave "
                     "data.slice_thickness at 0")
  try:
    return _check_kernel(kernel), None
  except ValueError as e:
    raise ValueError(f"data.slice_kernel={kernel}: {e}") from None
