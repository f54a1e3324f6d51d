"""DICOM series folders read as one 3D volume, with the slice thickness from the header.

A series folder holds the files of one 3D series (one file per slice, any names, any
order; non-DICOM files and DICOMDIR indexes are skipped). The geometry comes from
ImagePositionPatient, ImageOrientationPatient and PixelSpacing, the slices are sorted
along the slice normal, and the affine is turned from DICOM's LPS world into NIfTI's
RAS+, so a `Volume` read here has the same voxel centres in world coordinates as the
dcm2niix NIfTI of the series (tests/test_dicom.py checks it against dcm2niix). Voxel
axes: 0 is the column index within a slice, 1 the row index, 2 the slice index along
the normal.

Anything that is not one evenly spaced 3D series (several series, a missing slice,
slices that differ in orientation or size, compressed pixels without their decoder,
multi-frame files without per-frame positions) is refused in one line naming the folder
and what to do. Enhanced multi-frame files (one file, per-frame functional groups) are
read frame by frame.
"""

from __future__ import annotations

import collections
import dataclasses
import json
import os

import numpy as np
import pydicom
from pydicom import uid as uid_lib
from pydicom.multival import MultiValue
from pydicom.pixels import get_decoder

from clade_jax import atomic
from clade_jax.data import acquisition
from clade_jax.data import volume as volume_lib
from clade_jax.data.volume import VolumeError

# Geometry tolerances. DICOM stores positions as decimal strings of up to 16 characters,
# so real series agree far better than these; anything beyond them is a real difference.
_ORIENTATION_TOLERANCE = 1e-4  # on the direction cosines
_SPACING_TOLERANCE_MM = 1e-4
_POSITION_TOLERANCE_MM = 1e-2  # off the evenly spaced grid, along or across the normal

# Header fields copied into `DicomSeries.metadata` (for sidecars and reports). Patient
# identity (name, ID, birth date) is left out on purpose: outputs get shared.
METADATA_KEYS = (
    "Modality", "SeriesDescription", "SeriesInstanceUID", "SeriesNumber", "StudyInstanceUID",
    "ProtocolName", "Manufacturer", "ManufacturerModelName", "MagneticFieldStrength",
    "BodyPartExamined", "PatientPosition", "SliceThickness", "SpacingBetweenSlices",
    "ImageType", "ScanningSequence", "SequenceName", "RepetitionTime", "EchoTime",
    "FlipAngle", "KVP", "ConvolutionKernel")


@dataclasses.dataclass(frozen=True)
class DicomSeries:
  """One DICOM series as a 3D volume.

  Attributes:
    volume: float32 data (rescale slope and intercept applied) and its voxel-to-world
      affine in NIfTI RAS+ mm; `volume.path` is the folder.
    slice_thickness_mm: the header's SliceThickness; None when absent or zero.
    slice_spacing_mm: distance between neighbouring slice centres, from the positions
      projected on the slice normal (not SpacingBetweenSlices, which scanners fill
      inconsistently).
    thick_axis: the voxel axis of the slice stack, the one SliceThickness is along (2).
    metadata: header fields named in `METADATA_KEYS` that the series has (JSON types),
      plus ``TransferSyntaxUID`` and ``NumberOfSlices``.
  """

  volume: volume_lib.Volume
  slice_thickness_mm: float | None
  slice_spacing_mm: float
  thick_axis: int
  metadata: dict

  @property
  def folder(self) -> str:
    return self.volume.path


def _is_dicom_file(path: str) -> bool:
  """DICOM by content: the 'DICM' marker after the preamble, or a header pydicom parses.

  Files without the 128-byte preamble (old or hand-made exports) are accepted when
  pydicom reads a SOP Class UID from them.
  """
  try:
    with open(path, "rb") as f:
      head = f.read(132)
  except OSError:
    return False
  if head[128:132] == b"DICM":
    return True
  try:
    ds = pydicom.dcmread(path, force=True, stop_before_pixels=True,
                         specific_tags=["SOPClassUID"])
    return "SOPClassUID" in ds
  except Exception:  # pylint: disable=broad-except  # any parse failure: not DICOM
    return False


def _files(folder: str) -> list[str]:
  """The regular, non-hidden files directly in `folder`, sorted by name."""
  return sorted(e.path for e in os.scandir(folder) if e.is_file() and not e.name.startswith("."))


def is_series_dir(path: str | os.PathLike) -> bool:
  """Whether `path` is a folder holding at least one DICOM file (judged by content).

  Cheap: stops at the first DICOM file. Whether the files form one usable series is
  `load_series`'s job.
  """
  path = os.fspath(path)
  if not os.path.isdir(path):
    return False
  return any(_is_dicom_file(f) for f in _files(path))


def _read_headers(folder: str) -> list[pydicom.Dataset]:
  """The image datasets of the folder, pixel data left on disk until asked for."""
  datasets = []
  for path in _files(folder):
    if not _is_dicom_file(path):
      continue
    try:
      # Large elements (the pixels) are read from the file only when accessed.
      ds = pydicom.dcmread(path, force=True, defer_size="64 KB")
    except Exception as e:  # pylint: disable=broad-except  # a truncated or corrupt file
      raise VolumeError(f"{folder}: cannot read DICOM file {os.path.basename(path)} "
                        f"({type(e).__name__}: {e}); remove or replace it") from None
    sop_class = uid_lib.UID(str(ds.get(
        "SOPClassUID", getattr(ds.file_meta, "MediaStorageSOPClassUID", ""))))
    if "PixelData" in ds:
      datasets.append(ds)
    elif not sop_class or "Image Storage" in sop_class.name or "Rows" in ds:
      # An image whose pixels are missing: a truncated copy, not an object to skip.
      raise VolumeError(f"{folder}: {os.path.basename(path)} is an image file without pixel "
                        f"data (truncated?); copy it again or remove it")
    # Otherwise a DICOMDIR, a structured report, a presentation state...: skipped.
  return datasets


def _check_one_series(folder: str, datasets: list[pydicom.Dataset]) -> None:
  by_series = collections.defaultdict(list)
  for ds in datasets:
    by_series[str(ds.get("SeriesInstanceUID", "<no SeriesInstanceUID>"))].append(ds)
  if len(by_series) > 1:
    listing = "; ".join(
        f"{uid} ({str(group[0].get('SeriesDescription', '')) or 'no description'}, "
        f"{len(group)} images)" for uid, group in sorted(by_series.items()))
    raise VolumeError(f"{folder}: holds {len(by_series)} DICOM series ({listing}); put each "
                      f"series in its own folder")


def _check_transfer_syntax(folder: str, ds: pydicom.Dataset) -> str:
  syntax = uid_lib.UID(str(getattr(ds.file_meta, "TransferSyntaxUID",
                                   uid_lib.ImplicitVRLittleEndian)))
  if not syntax.is_compressed:
    return str(syntax)
  try:
    decoder = get_decoder(syntax)
  except NotImplementedError:
    raise VolumeError(f"{folder}: pixel data compressed as {syntax.name} ({syntax}), which "
                      f"pydicom cannot decode; convert the series with dcm2niix or "
                      f"decompress it (gdcmconv --raw) first") from None
  if not decoder.is_available:
    # pydicom words each option as "<plugin> - requires <packages>".
    options = " | ".join(d.split(" - requires ")[-1] for d in decoder.missing_dependencies)
    raise VolumeError(f"{folder}: pixel data compressed as {syntax.name} ({syntax}) and no "
                      f"decoder for it is installed; pip install one of: {options}")
  return str(syntax)


@dataclasses.dataclass(frozen=True)
class _Slice:
  """One 2D image: a single-frame file, or one frame of an enhanced multi-frame file."""

  name: str  # the file name, with the frame number for a multi-frame file
  dataset: pydicom.Dataset
  frame: int | None
  position: np.ndarray  # ImagePositionPatient (LPS mm)
  orientation: np.ndarray  # ImageOrientationPatient: row, then column direction cosines
  pixel_spacing: np.ndarray  # (between rows, between columns) mm
  shape: tuple[int, int]  # (rows, columns)
  thickness: float | None
  slope: float
  intercept: float


def _float(folder: str, name: str, keyword: str, value) -> float:
  try:
    return float(value)
  except (TypeError, ValueError):
    raise VolumeError(f"{folder}: {name} has a {keyword} that is not a number ({value!r}); "
                      f"the header is corrupt") from None


def _vector(folder: str, name: str, value, keyword: str, size: int) -> np.ndarray:
  if not isinstance(value, (MultiValue, list, tuple)) or len(value) != size:
    raise VolumeError(
        f"{folder}: {name} has no usable {keyword} ({value!r}); the series has no 3D "
        f"geometry (a localizer, a screen capture?): use a 3D series")
  return np.asarray([_float(folder, name, keyword, v) for v in value], np.float64)


def _functional_group(ds: pydicom.Dataset, frame: int, sequence: str, keyword: str):
  """An attribute of an enhanced image's frame: per-frame groups first, then shared ones."""
  for groups in (ds.PerFrameFunctionalGroupsSequence[frame],
                 *ds.get("SharedFunctionalGroupsSequence", [])):
    items = groups.get(sequence)
    if items and keyword in items[0]:
      return items[0].get(keyword)
  return ds.get(keyword)  # some writers keep it at the top level


def _slices(folder: str, ds: pydicom.Dataset) -> list[_Slice]:
  """The 2D images of one file, with their geometry."""
  name = os.path.basename(ds.filename)
  enhanced = "PerFrameFunctionalGroupsSequence" in ds
  frames = int(ds.get("NumberOfFrames", 1) or 1)
  if frames > 1 and not enhanced:
    raise VolumeError(
        f"{folder}: {name} holds {frames} frames without per-frame positions (a legacy "
        f"multi-frame file, not an enhanced image); convert it with dcm2niix and use the NIfTI")

  def attribute(frame, sequence, keyword):
    return ds.get(keyword) if frame is None else _functional_group(ds, frame, sequence, keyword)

  slices = []
  for frame in range(frames) if enhanced else [None]:
    frame_name = name if frame is None else f"{name} frame {frame + 1}"
    geometry = {keyword: _vector(folder, frame_name, attribute(frame, sequence, keyword),
                                 keyword, size)
                for sequence, keyword, size in (
                    ("PlanePositionSequence", "ImagePositionPatient", 3),
                    ("PlaneOrientationSequence", "ImageOrientationPatient", 6),
                    ("PixelMeasuresSequence", "PixelSpacing", 2))}
    def number(sequence, keyword, default, frame=frame, frame_name=frame_name):
      value = attribute(frame, sequence, keyword)
      empty = value is None or value == ""
      return default if empty else _float(folder, frame_name, keyword, value)

    thickness = number("PixelMeasuresSequence", "SliceThickness", None)
    slices.append(_Slice(
        name=frame_name, dataset=ds, frame=frame,
        position=geometry["ImagePositionPatient"],
        orientation=geometry["ImageOrientationPatient"],
        pixel_spacing=geometry["PixelSpacing"],
        shape=(int(ds.Rows), int(ds.Columns)),
        thickness=thickness if thickness and thickness > 0 else None,
        slope=number("PixelValueTransformationSequence", "RescaleSlope", 1.0),
        intercept=number("PixelValueTransformationSequence", "RescaleIntercept", 0.0)))
  return slices


def _describe_steps(steps: np.ndarray) -> str:
  """Points at the largest step: a missing slice leaves a multiple of the smallest."""
  smallest = float(steps.min())
  k = int(np.argmax(steps))
  return (f"{steps[k]:.4g} mm between sorted slices {k} and {k + 1} where the smallest step "
          f"is {smallest:.4g} mm")


def _geometry(folder: str, slices: list[_Slice]):
  """Sorts the slices along the normal and checks they form one even grid.

  Returns:
    (sorted slices, LPS affine, slice spacing mm).
  """
  first = slices[0]
  for s in slices[1:]:
    if np.abs(s.orientation - first.orientation).max() > _ORIENTATION_TOLERANCE:
      raise VolumeError(f"{folder}: the slices have different orientations (ImageOrientation"
                        f"Patient of {s.name} differs from {first.name}); put one stack of "
                        f"parallel slices per folder")
    if np.abs(s.pixel_spacing - first.pixel_spacing).max() > _SPACING_TOLERANCE_MM:
      raise VolumeError(f"{folder}: the slices have different pixel spacings ({s.name}: "
                        f"{s.pixel_spacing.tolist()}, {first.name}: "
                        f"{first.pixel_spacing.tolist()}); put one series per folder")
    if s.shape != first.shape:
      raise VolumeError(f"{folder}: the slices have different sizes ({s.name}: {s.shape[0]}x"
                        f"{s.shape[1]}, {first.name}: {first.shape[0]}x{first.shape[1]}); "
                        f"put one series per folder")
  row_dir, col_dir = first.orientation[:3], first.orientation[3:]
  if (abs(np.linalg.norm(row_dir) - 1) > _ORIENTATION_TOLERANCE
      or abs(np.linalg.norm(col_dir) - 1) > _ORIENTATION_TOLERANCE
      or abs(row_dir @ col_dir) > _ORIENTATION_TOLERANCE):
    raise VolumeError(f"{folder}: ImageOrientationPatient {first.orientation.tolist()} of "
                      f"{first.name} is not two perpendicular unit vectors; the header is "
                      f"corrupt")
  normal = np.cross(row_dir, col_dir)
  positions = np.stack([s.position for s in slices])
  along = positions @ normal
  order = np.argsort(along, kind="stable")
  slices = [slices[i] for i in order]
  positions, along = positions[order], along[order]
  steps = np.diff(along)
  if np.any(steps < _POSITION_TOLERANCE_MM):
    raise VolumeError(
        f"{folder}: {len(slices)} images at only {len(np.unique(np.round(along, 2)))} slice "
        f"positions (several echoes, time points or volumes in one series?); put the images "
        f"of one 3D volume per folder (dcm2niix splits them)")
  spacing = (along[-1] - along[0]) / (len(slices) - 1)
  off_grid = np.abs(along - along[0] - spacing * np.arange(len(slices))).max()
  if off_grid > _POSITION_TOLERANCE_MM:
    raise VolumeError(
        f"{folder}: slice positions are not evenly spaced ({_describe_steps(steps)}: a "
        f"missing slice?); export the complete series, or convert it with dcm2niix, which "
        f"can resample uneven slices")
  across = np.linalg.norm(positions - positions[0] - np.outer(along - along[0], normal), axis=1)
  if across.max() > _POSITION_TOLERANCE_MM:
    raise VolumeError(
        f"{folder}: the slices are shifted within their plane from one to the next (up to "
        f"{across.max():.3g} mm; a CT gantry tilt?), so the voxel grid is sheared; resample "
        f"it first (dcm2niix corrects gantry tilt)")
  lps = np.eye(4)
  lps[:3, 0] = row_dir * first.pixel_spacing[1]  # voxel axis 0: along a row
  lps[:3, 1] = col_dir * first.pixel_spacing[0]  # voxel axis 1: down a column
  lps[:3, 2] = normal * spacing
  lps[:3, 3] = positions[0]
  return slices, lps, float(spacing)


def _pixels(folder: str, s: _Slice) -> np.ndarray:
  """One slice in physical units, transposed to [column, row] like the affine."""
  try:
    raw = s.dataset.pixel_array  # pydicom keeps the decoded array for the other frames
  except Exception as e:  # pylint: disable=broad-except  # decoder errors have many types
    raise VolumeError(f"{folder}: cannot decode the pixels of {s.name} ({type(e).__name__}: "
                      f"{str(e).splitlines()[0] if str(e) else ''})") from None
  if raw.ndim == 3:  # [frame, row, column]
    raw = raw[s.frame]
  return (raw.astype(np.float64) * s.slope + s.intercept).T


def _json_value(value):
  """A header value as JSON: numbers as numbers, multi-values as lists, the rest as text."""
  if isinstance(value, (MultiValue, list, tuple)):
    return [_json_value(v) for v in value]
  if isinstance(value, int):  # IS, US, ... as plain numbers
    return int(value)
  if isinstance(value, float):  # DS, FD, ...
    return float(value)
  return str(value)


def load_series(folder: str | os.PathLike) -> DicomSeries:
  """Reads the DICOM series in `folder` as one 3D volume.

  Args:
    folder: a folder whose DICOM files are the slices of one series (other files are
      skipped).

  Returns:
    The `DicomSeries`: float32 volume in physical units with a RAS+ affine, the slice
    thickness and spacing, and header metadata.

  Raises:
    VolumeError: no DICOM images; several series; legacy multi-frame files; colour images; a
      compressed transfer syntax without its decoder; slices that differ in
      orientation, pixel spacing or size; a single slice; duplicate or unevenly spaced
      slice positions (a missing slice); slices shifted in-plane (gantry tilt).
  """
  folder = os.fspath(folder)
  if not os.path.isdir(folder):
    raise VolumeError(f"{folder}: not a folder (a DICOM series is read from the folder "
                      f"holding its files)")
  try:
    datasets = _read_headers(folder)
  except OSError as e:
    raise VolumeError(f"{folder}: cannot list the folder ({e.strerror})") from None
  _check_one_series(folder, datasets)
  if not datasets:
    raise VolumeError(f"{folder}: no DICOM image files found; point to the folder holding "
                      f"the series' files")
  first = datasets[0]
  if int(first.get("SamplesPerPixel", 1)) != 1:
    raise VolumeError(f"{folder}: colour images ({first.get('PhotometricInterpretation')}); "
                      f"CLADE needs a single-channel intensity series")
  syntaxes = sorted({_check_transfer_syntax(folder, ds) for ds in datasets})
  slices = [s for ds in datasets for s in _slices(folder, ds)]
  if len(slices) < 2:
    raise VolumeError(f"{folder}: only one slice; a 3D series needs at least two (is this a "
                      f"single image or a localizer?)")
  slices, lps, spacing = _geometry(folder, slices)
  data = np.stack([_pixels(folder, s) for s in slices], axis=-1).astype(np.float32)
  # DICOM's patient coordinates are LPS; NIfTI's are RAS: negate x and y.
  affine = np.diag([-1.0, -1.0, 1.0, 1.0]) @ lps
  thickness = slices[0].thickness
  metadata = {k: _json_value(first.get(k)) for k in METADATA_KEYS
              if first.get(k) not in (None, "")}
  if thickness is not None:
    metadata["SliceThickness"] = thickness  # enhanced images keep it per frame
  metadata.update(TransferSyntaxUID=syntaxes[0] if len(syntaxes) == 1 else syntaxes,
                  NumberOfSlices=len(slices))
  return DicomSeries(
      volume=volume_lib.Volume(data=data, affine=affine, path=folder),
      slice_thickness_mm=thickness, slice_spacing_mm=spacing, thick_axis=2,
      metadata=metadata)


def write_nifti(series: DicomSeries, path: str | os.PathLike) -> str:
  """Writes the series as NIfTI with a dcm2niix-style JSON sidecar beside it, atomically.

  The sidecar (``scan.nii.gz`` -> ``scan.json``) holds the header metadata plus
  ``SliceThickness`` and ``SpacingBetweenSlices`` (the measured spacing), so
  `clade_jax.data.acquisition.slice_metadata` finds the thickness again from the NIfTI.

  Returns:
    The sidecar's path.
  """
  path = os.fspath(path)
  sidecar = acquisition.sidecar_path(path)
  fields = dict(series.metadata)
  fields["SpacingBetweenSlices"] = series.slice_spacing_mm
  if series.slice_thickness_mm is not None:
    fields["SliceThickness"] = series.slice_thickness_mm
  fields["ConversionSoftware"] = "clade_jax.data.dicom"
  volume_lib.save_volume(path, series.volume.data, series.volume.affine)
  atomic.write_text(sidecar, json.dumps(fields, indent=2) + "\n")
  return sidecar
