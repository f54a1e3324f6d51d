"""Slice thickness and spacing as the scanner recorded them, and where each came from.

NIfTI stores the slice spacing but not the thickness; the JSON sidecar that dcm2niix and
BIDS put beside a NIfTI (``scan.nii.gz`` -> ``scan.json``) does, as does a DICOM
header. Both yield one `SliceMetadata`, whose ``*_source`` strings say where each value
was read ("scan.json: SliceThickness") for the log and the output sidecar.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os

from clade_jax.data import volume as volume_lib
from clade_jax.data.volume import VolumeError


@dataclasses.dataclass(frozen=True)
class SliceMetadata:
  """What the acquisition metadata says about the slices (None: not recorded).

  Attributes:
    thickness_mm: the slice thickness (the profile's width), e.g. SliceThickness.
    spacing_mm: the distance between slice centres, e.g. SpacingBetweenSlices.
    thickness_source: where `thickness_mm` came from, e.g. "scan.json: SliceThickness".
    spacing_source: where `spacing_mm` came from.
  """

  thickness_mm: float | None = None
  spacing_mm: float | None = None
  thickness_source: str | None = None
  spacing_source: str | None = None

  @property
  def gap_mm(self) -> float | None:
    """Spacing minus thickness: > 0 a gap between slices, < 0 an overlap."""
    if self.thickness_mm is None or self.spacing_mm is None:
      return None
    return self.spacing_mm - self.thickness_mm


def sidecar_path(nifti_path: str | os.PathLike) -> str:
  """The BIDS/dcm2niix sidecar of a NIfTI file: its name with .json for .nii(.gz)."""
  path = os.fspath(nifti_path)
  for suffix in volume_lib.NIFTI_SUFFIXES[::-1]:  # '.nii.gz' before '.nii'
    if path.endswith(suffix):
      return path[:-len(suffix)] + ".json"
  raise ValueError(f"{path}: not a NIfTI path (expected {' or '.join(volume_lib.NIFTI_SUFFIXES)})")


def _positive_mm(path: str, fields: dict, key: str) -> float | None:
  if key not in fields or fields[key] is None:
    return None
  value = fields[key]
  if isinstance(value, bool) or not isinstance(value, (int, float)) or not (
      math.isfinite(value) and value > 0):
    raise VolumeError(f"{path}: {key} must be a positive number of mm, got {value!r}; fix or "
                      f"remove it")
  return float(value)


def slice_metadata(nifti_path: str | os.PathLike) -> SliceMetadata | None:
  """Reads SliceThickness and SpacingBetweenSlices from the JSON sidecar of a NIfTI.

  Only the sidecar directly beside the file is read (not BIDS's inherited ones).

  Args:
    nifti_path: the .nii or .nii.gz file.

  Returns:
    The `SliceMetadata` (fields the sidecar lacks are None), or None without a sidecar.

  Raises:
    VolumeError: a sidecar that is not a JSON object, or a value that is not a positive
      number; the message names the file.
  """
  path = sidecar_path(nifti_path)
  if not os.path.exists(path):
    return None
  try:
    with open(path, encoding="utf-8") as f:
      fields = json.load(f)
  except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
    raise VolumeError(f"{path}: cannot read the JSON sidecar ({type(e).__name__}: {e}); fix "
                      f"or remove it") from None
  if not isinstance(fields, dict):
    raise VolumeError(f"{path}: the JSON sidecar must hold an object, got "
                      f"{type(fields).__name__}; fix or remove it")
  name = os.path.basename(path)
  thickness = _positive_mm(path, fields, "SliceThickness")
  spacing = _positive_mm(path, fields, "SpacingBetweenSlices")
  return SliceMetadata(
      thickness_mm=thickness, spacing_mm=spacing,
      thickness_source=f"{name}: SliceThickness" if thickness is not None else None,
      spacing_source=f"{name}: SpacingBetweenSlices" if spacing is not None else None)


def from_series(series) -> SliceMetadata:
  """The same for a `clade_jax.data.dicom.DicomSeries`: its header and slice positions."""
  folder = os.path.basename(os.path.normpath(series.folder))
  return SliceMetadata(
      thickness_mm=series.slice_thickness_mm, spacing_mm=series.slice_spacing_mm,
      thickness_source=(f"{folder}: DICOM SliceThickness"
                        if series.slice_thickness_mm is not None else None),
      spacing_source=f"{folder}: DICOM ImagePositionPatient along the slice normal")


def apply_to_data_config(data_config, metadata: SliceMetadata | None) -> str:
  """Sets ``data.slice_thickness`` from the metadata unless the user already set it.

  A thickness in the config (non-zero) or an explicit ``data.slice_kernel`` wins over
  the metadata.

  Args:
    data_config: a run's ``config.data`` (modified in place).
    metadata: what the scan's metadata says, or None.

  Returns:
    One line for the log saying which thickness is used and where it came from.
  """
  if tuple(data_config.get("slice_kernel", ()) or ()):
    return "slice profile: data.slice_kernel from the config"
  if float(data_config.get("slice_thickness", 0.0) or 0.0) > 0:
    return f"slice thickness: {data_config.slice_thickness:g} mm from data.slice_thickness"
  if metadata is None or metadata.thickness_mm is None:
    return "slice thickness: not recorded; the slice spacing is used"
  data_config.slice_thickness = metadata.thickness_mm
  return f"slice thickness: {metadata.thickness_mm:g} mm from {metadata.thickness_source}"
