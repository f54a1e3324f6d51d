"""NIfTI volumes: loading with clear errors, thick-slice geometry, isotropic resampling.

Geometry convention. A volume is a 3D float32 array plus its 4x4 voxel-to-world affine
(mm). The *thick axis* is the voxel axis with the large spacing. Resampling to isotropic
only touches that axis: the new grid starts on the first original sample, steps by the
target spacing and stops at or before the last original sample, so the new affine is
the old one with the thick-axis column rescaled. Every original sample k therefore sits
at the continuous new index ``k * old_spacing / new_spacing`` and keeps its world
position exactly; when the ratio is an integer it lands on a voxel of the new grid.
"""

from __future__ import annotations

import dataclasses
import os
import zlib

import nibabel as nib
import numpy as np
from scipy import interpolate

from clade_jax import atomic

NIFTI_SUFFIXES = (".nii", ".nii.gz")

# Plane names as anatomical axes: a sagittal slice is perpendicular to left-right, etc.
PLANE_NORMALS = {"sagittal": "LR", "coronal": "AP", "axial": "SI"}


class VolumeError(ValueError):
  """A volume that cannot be used; the message names the file and the problem."""


@dataclasses.dataclass(frozen=True)
class Volume:
  """A 3D image on a world grid.

  Attributes:
    data: float32 array [I, J, K].
    affine: 4x4 voxel-to-world matrix (mm).
    header: the NIfTI header it was read from (kept so qform/sform codes survive).
    path: where it was read from, for error messages; None if built in memory.
  """

  data: np.ndarray
  affine: np.ndarray
  header: nib.Nifti1Header | None = None
  path: str | None = None

  @property
  def spacing(self) -> np.ndarray:
    return voxel_spacing(self.affine)

  @property
  def name(self) -> str:
    return self.path or "<in-memory volume>"


def voxel_spacing(affine: np.ndarray) -> np.ndarray:
  """Voxel sizes (mm) along each voxel axis: the norms of the affine's columns."""
  return np.linalg.norm(np.asarray(affine)[:3, :3], axis=0)


def is_nifti(path: str) -> bool:
  return str(path).endswith(NIFTI_SUFFIXES)


def load_volume(path: str | os.PathLike) -> Volume:
  """Reads a 3D NIfTI file as float32, failing with a one-line message on bad input.

  A trailing singleton 4th dimension (common in converter output) is dropped.

  Raises:
    VolumeError: missing, unreadable or corrupt file; not 3D; non-finite voxels;
      a degenerate affine.
  """
  path = os.fspath(path)
  if not os.path.exists(path):
    raise VolumeError(f"{path}: no such file")
  if not is_nifti(path):
    raise VolumeError(f"{path}: not a NIfTI file (expected {' or '.join(NIFTI_SUFFIXES)})")
  try:
    image = nib.load(path)
    data = np.asarray(image.dataobj, dtype=np.float32)
  except (OSError, EOFError, ValueError, zlib.error, nib.filebasedimages.ImageFileError) as e:
    raise VolumeError(f"{path}: cannot read NIfTI ({type(e).__name__}: {e})") from None
  if data.ndim == 4 and data.shape[3] == 1:
    data = data[..., 0]
  if data.ndim != 3:
    raise VolumeError(f"{path}: expected a 3D volume, got {data.ndim}D shape {data.shape}")
  if min(data.shape) < 2:
    raise VolumeError(f"{path}: volume shape {data.shape} has an axis of length < 2")
  bad = int(np.size(data) - np.count_nonzero(np.isfinite(data)))
  if bad:
    raise VolumeError(f"{path}: {bad} voxels are NaN or Inf")
  affine = np.asarray(image.affine, dtype=np.float64)
  if not np.all(np.isfinite(affine)) or abs(np.linalg.det(affine[:3, :3])) < 1e-12:
    raise VolumeError(f"{path}: degenerate voxel-to-world affine")
  return Volume(data=data, affine=affine, header=image.header, path=path)


def save_volume(path: str | os.PathLike, data: np.ndarray, affine: np.ndarray,
                like: Volume | None = None) -> None:
  """Writes float32 NIfTI atomically, keeping the qform/sform codes of `like`.

  The file is written beside its destination and renamed into place, so a crash never
  leaves a half-written volume. Refuses to overwrite the volume `like` was read from.
  """
  path = os.fspath(path)
  if not is_nifti(path):
    raise VolumeError(f"{path}: output must end in {' or '.join(NIFTI_SUFFIXES)}")
  if like is not None and like.path and os.path.exists(path) and os.path.samefile(path, like.path):
    raise VolumeError(f"{path}: refusing to overwrite the input volume")
  image = nib.Nifti1Image(np.asarray(data, np.float32), np.asarray(affine, np.float64))
  qcode, scode = 1, 1  # scanner-anat, for volumes built from scratch
  if like is not None and like.header is not None:
    qcode = int(like.header["qform_code"]) or 1
    scode = int(like.header["sform_code"]) or 1
    image.header.set_xyzt_units(*like.header.get_xyzt_units())
  image.set_qform(affine, code=qcode)
  image.set_sform(affine, code=scode)
  with atomic.atomic_path(path, suffix=".nii.gz" if path.endswith(".gz") else ".nii") as tmp:
    nib.save(image, tmp)


def find_thick_axis(spacing, *, min_ratio: float = 1.5, name: str = "volume") -> int:
  """The voxel axis whose spacing is at least `min_ratio` times every other axis's.

  Raises:
    VolumeError: no axis is clearly thicker (an isotropic or near-isotropic volume).
  """
  spacing = np.asarray(spacing, dtype=np.float64)
  axis = int(np.argmax(spacing))
  others = np.delete(spacing, axis)
  if spacing[axis] < min_ratio * others.max():
    raise VolumeError(
        f"{name}: no thick-slice axis (voxel sizes {np.round(spacing, 3).tolist()} mm; "
        f"need one at least {min_ratio}x the others; set data.thick_axis to force one)")
  return axis


def plane_name(affine: np.ndarray, axis: int) -> str:
  """The anatomical plane ('sagittal', 'coronal', 'axial') of slices along voxel `axis`."""
  code = nib.aff2axcodes(affine)[axis]
  return next(plane for plane, normal in PLANE_NORMALS.items() if code in normal)


def plane_axis(affine: np.ndarray, plane: str, among=(0, 1, 2)) -> int:
  """The voxel axis (one of `among`) whose 2D slices are `plane`.

  Raises:
    ValueError: unknown plane name, or no axis in `among` has that plane's normal.
  """
  if plane not in PLANE_NORMALS:
    raise ValueError(f"unknown plane {plane!r}; use {', '.join(PLANE_NORMALS)}")
  for axis in among:
    if plane_name(affine, axis) == plane:
      return axis
  raise ValueError(f"no voxel axis among {list(among)} is close to the {plane} normal "
                   f"(orientation {''.join(nib.aff2axcodes(affine))})")


def lr_slice_axis(affine: np.ndarray, thick_axis: int, plane: str = "auto") -> int:
  """The voxel axis to slice along to get low-resolution-plane slices.

  A low-resolution plane contains the thick axis, so it is sliced along one of the two
  in-plane axes. `plane` names it anatomically ('sagittal', 'coronal', 'axial') using the
  affine's orientation, or 'auto' takes the first in-plane voxel axis.
  """
  in_plane = [a for a in range(3) if a != thick_axis]
  if plane == "auto":
    return in_plane[0]
  if plane not in PLANE_NORMALS:
    raise ValueError(f"unknown plane {plane!r}; use auto, {', '.join(PLANE_NORMALS)}")
  try:
    return plane_axis(affine, plane, among=in_plane)
  except ValueError:
    codes = nib.aff2axcodes(affine)
    raise ValueError(
        f"a {plane} slice is not a low-resolution plane here: the thick axis is voxel axis "
        f"{thick_axis} ({codes[thick_axis]}), orientation {''.join(codes)}") from None


def isotropic_geometry(shape, affine, thick_axis: int, target_spacing: float | None = None):
  """The grid obtained by resampling `thick_axis` to `target_spacing`.

  Args:
    shape: the original 3D shape.
    affine: the original voxel-to-world affine.
    thick_axis: the voxel axis to resample.
    target_spacing: new spacing in mm; default the finest in-plane spacing.

  Returns:
    (new_shape, new_affine, positions): positions are the continuous original indices
    along `thick_axis` of the new samples.
  """
  spacing = voxel_spacing(affine)
  if target_spacing is None:
    target_spacing = float(np.delete(spacing, thick_axis).min())
  factor = target_spacing / spacing[thick_axis]  # original-index step per new sample
  n_new = int(np.floor((shape[thick_axis] - 1) / factor + 1e-6)) + 1
  positions = np.arange(n_new) * factor
  new_affine = np.array(affine, dtype=np.float64)
  new_affine[:3, thick_axis] *= factor
  new_shape = list(shape)
  new_shape[thick_axis] = n_new
  return tuple(new_shape), new_affine, positions


def resample_thick_axis(volume: Volume, thick_axis: int, target_spacing: float | None = None,
                        order: int = 3) -> Volume:
  """Interpolates the thick axis onto an isotropic grid (cubic spline by default).

  The spline interpolates: it passes through every original sample (the paper's
  pre-processing; order=1 gives linear interpolation, order=0 nearest).
  """
  new_shape, new_affine, positions = isotropic_geometry(
      volume.data.shape, volume.affine, thick_axis, target_spacing)
  n = volume.data.shape[thick_axis]
  if order == 0:
    resampled = np.take(volume.data, np.rint(positions).astype(int), axis=thick_axis)
  else:
    spline = interpolate.make_interp_spline(
        np.arange(n), volume.data, k=min(order, n - 1), axis=thick_axis)
    resampled = spline(positions)
  return dataclasses.replace(volume, data=resampled.astype(np.float32), affine=new_affine)


@dataclasses.dataclass(frozen=True)
class Normalizer:
  """Maps intensities linearly so the robust range [lo, hi] becomes [-1, 1].

  Robust percentiles rather than min/max, so a few hot voxels do not squash the
  contrast; values outside are clipped on the way in (the generator ends in tanh).
  """

  lo: float
  hi: float

  @classmethod
  def fit(cls, data: np.ndarray, percentiles=(0.5, 99.5), name: str = "volume") -> "Normalizer":
    lo, hi = np.percentile(data, percentiles)
    if not hi > lo:
      raise VolumeError(f"{name}: constant intensities ({lo:g}); nothing to learn from")
    return cls(float(lo), float(hi))

  def forward(self, x):
    return np.clip(2.0 * (np.asarray(x, np.float32) - self.lo) / (self.hi - self.lo) - 1.0,
                   -1.0, 1.0).astype(np.float32)

  def inverse(self, y):
    return ((np.asarray(y, np.float32) + 1.0) * 0.5 * (self.hi - self.lo) + self.lo).astype(
        np.float32)


def plane_slices(data: np.ndarray, axis: int) -> np.ndarray:
  """Stacks the 2D slices perpendicular to `axis`: [n_slices, rows, cols].

  Rows and columns keep the volume's remaining axes in voxel order, so training and
  inference see every plane in the same orientation.
  """
  return np.moveaxis(data, axis, 0)


def from_plane_slices(slices: np.ndarray, axis: int) -> np.ndarray:
  """Inverse of `plane_slices`."""
  return np.moveaxis(slices, 0, axis)
