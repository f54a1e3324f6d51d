"""NIfTI volumes: loading with clear errors, thick-slice geometry, isotropic resampling.

Loading refuses, in one line that names the file and the fix, anything that is not one
real intensity per voxel on an orthogonal grid: colour (RGB) data, complex data unless
the magnitude is asked for, a 4D file unless a volume index is given, a singular sform
or qform, a sheared grid. Nothing is dropped or reinterpreted silently.

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


# How to handle a complex-valued image: refuse it, or keep the magnitude |z| when the
# user asks (the phase is dropped, so it is never done silently).
COMPLEX_MODES = ("refuse", "magnitude")

# |cos| of the angle between two voxel axes above which the grid counts as sheared.
# Orthogonal affines stored as float32 sforms are off by ~1e-7, far below this.
SHEAR_TOLERANCE = 1e-3

# Option names the command lines expose for the choices below, so that the errors can
# tell the user exactly what to type.
_VOLUME_INDEX_OPTIONS = "--volume-index N (infer.py) or config.data.volume_index=N (training)"
_COMPLEX_OPTIONS = "--complex magnitude (infer.py) or config.data.complex=magnitude (training)"


def _datatype_name(header) -> str:
  """The NIfTI datatype as the standard names it (RGB24, COMPLEX64, ...)."""
  code = int(header["datatype"])
  try:
    return nib.nifti1.data_type_codes.niistring[code].removeprefix("NIFTI_TYPE_")
  except KeyError:
    return f"code {code}"


def _check_datatype(path: str, image, complex_mode: str) -> None:
  """Refuses voxel types that are not one real intensity per voxel."""
  dtype = image.get_data_dtype()
  if dtype.fields is not None:  # RGB24, RGBA32: one record of channels per voxel.
    raise VolumeError(
        f"{path}: colour image (NIfTI datatype {_datatype_name(image.header)}); CLADE needs a "
        f"single-channel intensity volume: convert it to grayscale first")
  if np.issubdtype(dtype, np.complexfloating) and complex_mode != "magnitude":
    raise VolumeError(
        f"{path}: complex-valued image (NIfTI datatype {_datatype_name(image.header)}); "
        f"CLADE needs real intensities: to use the magnitude |z| and drop the phase, pass "
        f"{_COMPLEX_OPTIONS}")


def _select_volume(path: str, shape: tuple[int, ...], volume_index: int | None):
  """The index into the 4th axis to read, or None to read the array as it is."""
  n_volumes = shape[3] if len(shape) == 4 else 1
  if volume_index is None:
    if len(shape) == 4 and n_volumes > 1:
      raise VolumeError(
          f"{path}: expected a 3D volume, got 4D shape {tuple(shape)} holding {n_volumes} "
          f"volumes; pick one with {_VOLUME_INDEX_OPTIONS}, N in 0..{n_volumes - 1}")
    return None
  if isinstance(volume_index, bool) or not isinstance(volume_index, (int, np.integer)):
    raise VolumeError(f"{path}: volume index must be an integer, got {volume_index!r}")
  if not 0 <= volume_index < n_volumes:
    raise VolumeError(
        f"{path}: volume index {volume_index} is out of range: the file holds {n_volumes} "
        f"volume{'s' if n_volumes > 1 else ''} (valid: 0..{n_volumes - 1})")
  return int(volume_index) if len(shape) == 4 else None


def _singular_columns(matrix: np.ndarray) -> list[int]:
  """Voxel axes whose column of a 4x4 affine is (near) zero, relative to the largest."""
  norms = np.linalg.norm(matrix[:3, :3], axis=0)
  return [int(j) for j in np.flatnonzero(norms <= 1e-6 * max(norms.max(), 1e-30))]


def _check_header_transforms(path: str, header) -> None:
  """Refuses an sform or qform that is in use (code > 0) but cannot map voxels to mm.

  Readers disagree about what to do with such a transform (nibabel returns it, others
  fall back to the other transform or to the voxel sizes), so the geometry of the
  output would depend on the reader: refuse instead of guessing. (nibabel already
  replaces zero voxel sizes by 1 when it reads a file, so the qform check guards
  headers built in memory or by other readers.)
  """
  for name, code_key, get in (("sform", "sform_code", header.get_sform),
                              ("qform", "qform_code", header.get_qform)):
    code = int(header[code_key])
    if code <= 0:
      continue
    matrix = np.asarray(get(), dtype=np.float64)
    if not np.all(np.isfinite(matrix)):
      raise VolumeError(f"{path}: the {name} ({code_key} {code}) has non-finite entries; "
                        f"fix the header's {name} or set {code_key} to 0")
    zero = _singular_columns(matrix)
    det = float(np.linalg.det(matrix[:3, :3]))
    if zero or abs(det) < 1e-12:
      what = (f"zero column for voxel axis {', '.join(map(str, zero))}" if zero
              else f"determinant {det:.3g}")
      raise VolumeError(f"{path}: the {name} ({code_key} {code}) is singular ({what}); fix "
                        f"the header's {name} or set {code_key} to 0 to use the other transform")


def axis_angle(affine: np.ndarray) -> tuple[float, int, int]:
  """The angle between the two voxel axes of an affine that are furthest from perpendicular.

  Args:
    affine: a 4x4 (or 3x3) voxel-to-world matrix with non-zero columns.

  Returns:
    (angle in degrees in [0, 180], axis i, axis j); 90.0 for an orthogonal grid.
  """
  columns = np.asarray(affine, dtype=np.float64)[:3, :3]
  unit = columns / np.linalg.norm(columns, axis=0)
  cosines = unit.T @ unit
  i, j = max([(0, 1), (0, 2), (1, 2)], key=lambda p: abs(cosines[p]))
  return float(np.degrees(np.arccos(np.clip(cosines[i, j], -1.0, 1.0)))), i, j


def load_volume(path: str | os.PathLike, *, volume_index: int | None = None,
                complex_mode: str = "refuse") -> Volume:
  """Reads a 3D NIfTI file as float32, failing with a one-line message on bad input.

  A trailing singleton 4th dimension (common in converter output) is dropped. Every
  error message names the file and, where the user can fix it, how.

  Args:
    path: a .nii or .nii.gz file.
    volume_index: which volume of a 4D file (time series, multi-echo) to read, 0-based;
      None requires a 3D file (or a singleton 4th axis). A 3D file has only volume 0.
    complex_mode: 'refuse' (default) rejects complex-valued data; 'magnitude' reads
      |z| and drops the phase.

  Returns:
    The `Volume`, with the affine nibabel resolves from the sform/qform.

  Raises:
    VolumeError: missing, unreadable or corrupt file; colour (RGB/RGBA) or, unless
      asked, complex data; several volumes and no `volume_index` (or one out of range);
      not 3D; non-finite voxels; a singular sform/qform in use; a degenerate or sheared
      affine.
    ValueError: an unknown `complex_mode` (a programming error, not bad input).
  """
  if complex_mode not in COMPLEX_MODES:
    raise ValueError(f"complex_mode must be one of {COMPLEX_MODES}, got {complex_mode!r}")
  path = os.fspath(path)
  if not os.path.exists(path):
    raise VolumeError(f"{path}: no such file")
  if not is_nifti(path):
    raise VolumeError(f"{path}: not a NIfTI file (expected {' or '.join(NIFTI_SUFFIXES)})")
  read_errors = (OSError, EOFError, ValueError, zlib.error, nib.filebasedimages.ImageFileError)
  try:
    image = nib.load(path)
  except read_errors as e:
    raise VolumeError(f"{path}: cannot read NIfTI ({type(e).__name__}: {e})") from None
  _check_datatype(path, image, complex_mode)
  index = _select_volume(path, image.shape, volume_index)
  try:
    raw = np.asarray(image.dataobj if index is None else image.dataobj[..., index])
  except read_errors as e:
    raise VolumeError(f"{path}: cannot read NIfTI ({type(e).__name__}: {e})") from None
  if np.iscomplexobj(raw):  # Only reached with complex_mode='magnitude'.
    raw = np.abs(raw)
  data = raw.astype(np.float32, copy=False)
  if data.ndim == 4 and data.shape[3] == 1:
    data = data[..., 0]
  if data.ndim != 3:
    raise VolumeError(f"{path}: expected a 3D volume, got {data.ndim}D shape {data.shape}")
  if min(data.shape) < 2:
    raise VolumeError(f"{path}: volume shape {data.shape} has an axis of length < 2")
  bad = int(np.size(data) - np.count_nonzero(np.isfinite(data)))
  if bad:
    raise VolumeError(f"{path}: {bad} voxels are NaN or Inf")
  _check_header_transforms(path, image.header)
  affine = np.asarray(image.affine, dtype=np.float64)
  if not np.all(np.isfinite(affine)) or abs(np.linalg.det(affine[:3, :3])) < 1e-12:
    raise VolumeError(f"{path}: degenerate voxel-to-world affine")
  # The thick-axis resampling rescales one affine column and assumes the others are
  # perpendicular to it; on a sheared grid the output voxels would not be isotropic.
  angle, i, j = axis_angle(affine)
  if abs(np.cos(np.radians(angle))) > SHEAR_TOLERANCE:
    raise VolumeError(
        f"{path}: the voxel grid is sheared (voxel axes {i} and {j} meet at {angle:.2f} "
        f"degrees, not 90); CLADE needs an orthogonal voxel grid: resample the volume onto "
        f"one first")
  return Volume(data=data, affine=affine, header=image.header, path=path)


def save_volume(path: str | os.PathLike, data: np.ndarray, affine: np.ndarray,
                like: Volume | None = None, descrip: str | None = None) -> None:
  """Writes float32 NIfTI atomically, keeping the qform/sform codes of `like`.

  The file is written beside its destination and renamed into place, so a crash never
  leaves a half-written volume. Refuses to overwrite the volume `like` was read from.

  Args:
    path: destination, .nii or .nii.gz.
    data: the 3D image.
    affine: its voxel-to-world matrix.
    like: the volume it derives from, for the qform/sform codes and units.
    descrip: text for the header's 80-byte ``descrip`` field (provenance:
      `clade_jax.provenance.descrip`); ASCII, at most 79 bytes.

  Raises:
    VolumeError: a path that is not NIfTI, or the input volume itself.
    ValueError: a `descrip` that is not ASCII or is too long.
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
  if descrip is not None:
    encoded = descrip.encode("ascii")  # UnicodeEncodeError is a ValueError.
    if len(encoded) > 79:  # char[80] with room for the NUL C readers expect.
      raise ValueError(f"descrip is {len(encoded)} bytes; the NIfTI field holds 79")
    image.header["descrip"] = encoded
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


class AlignmentError(VolumeError):
  """An output grid that is not a sub-grid of the ground truth."""


def crop_truth(truth: Volume, shape, affine: np.ndarray, atol_mm: float = 1e-3) -> np.ndarray:
  """The truth's voxels at exactly the voxel centres of the grid (shape, affine).

  The grid must be a sub-grid of the truth: each of its voxel axes parallel to the
  truth's same axis with an integer (>= 1) multiple of its step, and its first voxel
  centre on a truth voxel centre, all within `atol_mm` at the far corner.

  Args:
    truth: the ground-truth volume.
    shape: the output grid's 3D shape.
    affine: the output grid's voxel-to-world affine.
    atol_mm: tolerance on world positions (covers float32 affines in NIfTI headers).

  Returns:
    float32 array of `shape` (a strided view copied out of the truth).

  Raises:
    AlignmentError: a different orientation, a non-integer step ratio, an offset that
      is not a whole number of truth voxels, or a grid reaching outside the truth.
  """
  affine = np.asarray(affine, np.float64)
  t_affine = np.asarray(truth.affine, np.float64)
  t_cols = t_affine[:3, :3]
  # The output's axes expressed in truth voxel steps: should be diag(integers).
  steps = np.linalg.solve(t_cols, affine[:3, :3])
  start = np.linalg.solve(t_cols, affine[:3, 3] - t_affine[:3, 3])
  stride = np.rint(np.diag(steps)).astype(int)
  offset = np.rint(start).astype(int)
  extent = np.asarray(shape, np.float64) - 1
  # Errors measured in mm at the far corner of the grid, where they accumulate.
  axis_err = np.abs(steps - np.diag(stride)) @ extent * voxel_spacing(t_affine).max()
  offset_err = np.linalg.norm(t_cols @ (start - offset))
  name = truth.name
  if np.any(stride < 1) or np.any(axis_err > atol_mm):
    raise AlignmentError(
        f"{name}: the output grid is not a sub-grid of the truth: output voxel axes "
        f"{np.round(affine[:3, :3], 4).tolist()} vs truth {np.round(t_cols, 4).tolist()} "
        f"(need the same orientation and whole-number step ratios)")
  if offset_err > atol_mm:
    raise AlignmentError(
        f"{name}: output voxel centres are off the truth's by {offset_err:.3g} mm (first "
        f"output voxel at truth index {np.round(start, 3).tolist()}); the output must "
        f"be resampled on the truth's voxel centres")
  stop = offset + stride * (np.asarray(shape) - 1)
  if np.any(offset < 0) or np.any(stop >= np.asarray(truth.data.shape)):
    raise AlignmentError(
        f"{name}: the output grid covers truth indices {offset.tolist()} to "
        f"{stop.tolist()}, outside the truth's shape {list(truth.data.shape)}")
  index = tuple(slice(o, s + 1, st) for o, s, st in zip(offset, stop, stride))
  return np.array(truth.data[index], dtype=np.float32)


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
  """Maps the intensity window [lo, hi] linearly onto [-1, 1] for the networks.

  The window is robust percentiles of the scan (`fit`) or a fixed range in the scan's
  units, e.g. HU for CT (`clade_jax.data.intensity.fit_normalizer`). Percentiles
  rather than min/max, so a few hot voxels do not squash the contrast.

  `scale` and `inverse` are the linear map and its inverse over the whole real line:
  nothing is lost outside the window. `forward` is what the networks see: the scaled
  values clipped to [-1, 1] (the generators end in tanh, and training data never holds
  anything else), so a network cannot tell voxels beyond the window apart. How the
  output gets them back is `clade_jax.data.intensity.to_scan_units`.
  """

  lo: float
  hi: float

  @classmethod
  def fit(cls, data: np.ndarray, percentiles=(0.5, 99.5), name: str = "volume") -> "Normalizer":
    lo, hi = np.percentile(data, percentiles)
    if not hi > lo:
      raise VolumeError(f"{name}: constant intensities ({lo:g}); nothing to learn from")
    return cls(float(lo), float(hi))

  @property
  def half_width(self) -> float:
    """Scan units per normalised unit: (hi - lo) / 2."""
    return 0.5 * (self.hi - self.lo)

  def scale(self, x) -> np.ndarray:
    """The linear map, not clipped: lo -> -1, hi -> 1, and beyond them linearly."""
    # float32 arithmetic, as before `scale` existed: training data stay bit for bit.
    return (2.0 * (np.asarray(x, np.float32) - self.lo) / (self.hi - self.lo) - 1.0).astype(
        np.float32)

  def forward(self, x) -> np.ndarray:
    """The networks' input: `scale` clipped to [-1, 1]."""
    return np.clip(self.scale(x), -1.0, 1.0)

  def inverse(self, y) -> np.ndarray:
    """Normalised units back to the scan's units (the inverse of `scale`)."""
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
