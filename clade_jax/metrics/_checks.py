"""Input checks shared by the metrics: every failure is a ValueError naming the problem."""

from __future__ import annotations

import numpy as np


def as_finite_array(x, name: str, ndim: int | tuple[int, ...] | None = None, *,
                    keep_float_dtype: bool = False) -> np.ndarray:
  """Returns `x` as a floating array after checking its rank and that it is finite.

  Args:
    x: array-like input.
    name: what to call it in error messages.
    ndim: the allowed rank(s); None accepts any rank.
    keep_float_dtype: leave float32 input as it is (no volume-sized copy) instead of
      promoting it to float64; non-float input still becomes float64.

  Returns:
    A float array (a copy only when the dtype changes).

  Raises:
    ValueError: wrong rank, empty, or NaN/inf present.
  """
  x = np.asarray(x)
  if not (keep_float_dtype and np.issubdtype(x.dtype, np.floating)):
    x = x.astype(np.float64, copy=False)
  allowed = (ndim,) if isinstance(ndim, int) else ndim
  if allowed is not None and x.ndim not in allowed:
    want = " or ".join(f"{d}D" for d in allowed)
    raise ValueError(f"{name} must be {want}, got shape {x.shape}")
  if x.size == 0:
    raise ValueError(f"{name} is empty (shape {x.shape})")
  if not np.all(np.isfinite(x)):
    bad = int(np.size(x) - np.count_nonzero(np.isfinite(x)))
    raise ValueError(f"{name} has {bad} non-finite value(s) (NaN or inf)")
  return x


def same_shape(a: np.ndarray, b: np.ndarray, name_a: str, name_b: str) -> None:
  """Raises ValueError naming both shapes when `a` and `b` differ in shape."""
  if np.shape(a) != np.shape(b):
    raise ValueError(
        f"shape mismatch: {name_a} has shape {np.shape(a)}, {name_b} has shape {np.shape(b)}")


def as_mask(mask, shape: tuple[int, ...], name: str = "mask") -> np.ndarray:
  """Returns `mask` as a boolean array of `shape` with at least one True voxel.

  Raises:
    ValueError: a shape different from `shape`, or no True voxel (an empty ROI).
  """
  mask = np.asarray(mask)
  if mask.shape != tuple(shape):
    raise ValueError(
        f"shape mismatch: {name} has shape {mask.shape}, image has shape {tuple(shape)}")
  if mask.dtype != bool:
    if not np.all(np.isin(mask, (0, 1))):
      raise ValueError(f"{name} must be boolean (or 0/1), got values other than 0 and 1")
    mask = mask.astype(bool)
  if not mask.any():
    raise ValueError(f"{name} is empty: it selects no voxel")
  return mask


def positive(value: float, name: str) -> float:
  """Returns `value` as a float after checking it is finite and > 0."""
  value = float(value)
  if not np.isfinite(value) or value <= 0:
    raise ValueError(f"{name} must be a finite positive number, got {value}")
  return value


def affine_matrix(affine) -> np.ndarray:
  """Returns a finite, invertible 4x4 voxel-to-world matrix as float64."""
  affine = as_finite_array(affine, "affine", ndim=2)
  if affine.shape != (4, 4):
    raise ValueError(f"affine must be 4x4, got shape {affine.shape}")
  if abs(np.linalg.det(affine[:3, :3])) < 1e-12:
    raise ValueError("affine is singular: its 3x3 part has zero determinant")
  return affine


def world_point(p, name: str) -> np.ndarray:
  """Returns a finite 3-vector (x, y, z) in mm as float64."""
  p = as_finite_array(p, name, ndim=1)
  if p.shape != (3,):
    raise ValueError(f"{name} must be a 3-vector (x, y, z) in mm, got shape {p.shape}")
  return p
