"""Estimated SNR from two regions of interest, and ROI masks from world coordinates.

CLADE paper section 4.8: the mean intensity in a signal ROI (kidney in MRI, bone in
CT) divided by the standard deviation in a ROI with no signal (air in the stomach in
MRI, air outside the body in CT). The noise standard deviation is the sample
estimate (ddof=1): the ROI is a small sample of the background noise and we want an
unbiased estimate of its variance, not the spread of those particular voxels; it is
also what ROI tools such as OsiriX, which the paper used, report.

ROIs are placed in world coordinates (mm) so that the same anatomical region can be
used on volumes with different grids (a low-resolution volume and its isotropic
reconstructions). A voxel belongs to a ROI when its *centre* lies inside it.
"""

from __future__ import annotations

import numpy as np

from clade_jax.metrics import _checks


def snr(volume: np.ndarray, signal_mask: np.ndarray, background_mask: np.ndarray) -> float:
  """Mean in the signal ROI divided by the standard deviation in the background ROI.

  Args:
    volume: image of any rank.
    signal_mask: boolean ROI of the signal, the shape of `volume`.
    background_mask: boolean ROI of a region with no signal, the shape of `volume`;
      at least two voxels, disjoint from `signal_mask`.

  Returns:
    The estimated SNR.

  Raises:
    ValueError: shape mismatch, empty or overlapping ROIs, non-finite values, a
      single-voxel background, or a constant background (zero noise: SNR undefined,
      usually a zero-filled or masked region rather than air).
  """
  volume = _checks.as_finite_array(volume, "volume", keep_float_dtype=True)
  signal_mask = _checks.as_mask(signal_mask, volume.shape, "signal_mask")
  background_mask = _checks.as_mask(background_mask, volume.shape, "background_mask")
  if np.any(signal_mask & background_mask):
    raise ValueError("signal_mask and background_mask overlap; the ROIs must be disjoint")
  background = volume[background_mask].astype(np.float64)
  if background.size < 2:
    raise ValueError("background_mask has one voxel; a standard deviation needs two or more")
  noise = float(np.std(background, ddof=1))
  if noise == 0.0:
    raise ValueError(
        "background ROI is constant (zero standard deviation): SNR is undefined; "
        "is it a zero-filled or masked region rather than air?")
  return float(np.mean(volume[signal_mask], dtype=np.float64) / noise)


def _world_points(shape, affine, lo_mm, hi_mm):
  """Voxel centres in the part of the grid that can fall inside a world box.

  Transforming the box's eight corners into voxel indices bounds the voxels to test,
  so a small ROI in a large volume costs only its neighbourhood.

  Returns:
    (index slices into the volume, world coordinates [..., 3] of those voxel centres).
  """
  corners = np.array(np.meshgrid(*zip(lo_mm, hi_mm), indexing="ij")).reshape(3, -1)
  voxel = np.linalg.solve(affine, np.vstack([corners, np.ones(corners.shape[1])]))[:3]
  start = np.clip(np.floor(voxel.min(axis=1)).astype(int), 0, np.array(shape))
  stop = np.clip(np.ceil(voxel.max(axis=1)).astype(int) + 1, 0, np.array(shape))
  region = tuple(slice(a, b) for a, b in zip(start, stop))
  index = np.stack(np.meshgrid(*[np.arange(a, b) for a, b in zip(start, stop)],
                               indexing="ij"), axis=-1)
  world = index @ affine[:3, :3].T + affine[:3, 3]
  return region, world


def _check_shape(shape) -> tuple[int, ...]:
  shape = tuple(int(n) for n in shape)
  if len(shape) != 3 or min(shape) < 1:
    raise ValueError(f"shape must be three positive sizes, got {shape}")
  return shape


def _finish(mask: np.ndarray, what: str) -> np.ndarray:
  if not mask.any():
    raise ValueError(f"{what} contains no voxel centre; check the coordinates and affine")
  return mask


def box_roi(shape, affine: np.ndarray, corner0_mm, corner1_mm) -> np.ndarray:
  """Voxels whose centres lie in a box with faces parallel to the world axes.

  Args:
    shape: the volume's 3D shape.
    affine: its 4x4 voxel-to-world matrix (mm).
    corner0_mm, corner1_mm: opposite corners of the box in world mm (any order).

  Returns:
    Boolean mask of `shape`.

  Raises:
    ValueError: bad geometry, or a box containing no voxel centre.
  """
  shape, affine = _check_shape(shape), _checks.affine_matrix(affine)
  c0 = _checks.world_point(corner0_mm, "corner0_mm")
  c1 = _checks.world_point(corner1_mm, "corner1_mm")
  lo, hi = np.minimum(c0, c1), np.maximum(c0, c1)
  mask = np.zeros(shape, dtype=bool)
  region, world = _world_points(shape, affine, lo, hi)
  mask[region] = np.all((world >= lo) & (world <= hi), axis=-1)
  return _finish(mask, f"box {lo.tolist()} - {hi.tolist()} mm")


def sphere_roi(shape, affine: np.ndarray, centre_mm, radius_mm: float) -> np.ndarray:
  """Voxels whose centres lie within `radius_mm` of `centre_mm` (world mm).

  Args:
    shape: the volume's 3D shape.
    affine: its 4x4 voxel-to-world matrix (mm).
    centre_mm: sphere centre in world mm.
    radius_mm: sphere radius in mm.

  Returns:
    Boolean mask of `shape`.

  Raises:
    ValueError: bad geometry, or a sphere containing no voxel centre.
  """
  shape, affine = _check_shape(shape), _checks.affine_matrix(affine)
  centre = _checks.world_point(centre_mm, "centre_mm")
  radius = _checks.positive(radius_mm, "radius_mm")
  mask = np.zeros(shape, dtype=bool)
  region, world = _world_points(shape, affine, centre - radius, centre + radius)
  mask[region] = np.sum((world - centre) ** 2, axis=-1) <= radius**2
  return _finish(mask, f"sphere of radius {radius} mm at {centre.tolist()} mm")
