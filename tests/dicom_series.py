"""Writes DICOM series from known volumes with pydicom, for tests of the DICOM reader."""

from __future__ import annotations

import dataclasses
import os

import numpy as np
import pydicom
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

CT_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.2"
MR_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.4"


def rotation(degrees_x: float, degrees_y: float) -> np.ndarray:
  """Rotation about x, then about y (patient LPS axes)."""
  a, b = np.radians(degrees_x), np.radians(degrees_y)
  rx = np.array([[1, 0, 0], [0, np.cos(a), -np.sin(a)], [0, np.sin(a), np.cos(a)]])
  ry = np.array([[np.cos(b), 0, np.sin(b)], [0, 1, 0], [-np.sin(b), 0, np.cos(b)]])
  return ry @ rx


@dataclasses.dataclass(frozen=True)
class SeriesSpec:
  """A series to write: stored integers, rescale and geometry (LPS, DICOM's world).

  raw[i, j, k] is column i, row j of slice k (slices in order along the normal).
  """

  raw: np.ndarray
  row_dir: tuple  # direction of increasing column index
  col_dir: tuple  # direction of increasing row index
  pixel_spacing: tuple = (0.9, 1.1)  # (between rows, between columns) as in DICOM
  spacing: float = 4.0  # between slice centres along the normal
  thickness: float | None = 3.0
  origin: tuple = (-20.5, 13.25, 40.0)
  slope: float = 1.0
  intercept: float = 0.0
  modality: str = "MR"
  description: str = "t1 test"

  @property
  def normal(self) -> np.ndarray:
    return np.cross(self.row_dir, self.col_dir)

  @property
  def physical(self) -> np.ndarray:
    return self.raw.astype(np.float64) * self.slope + self.intercept

  def position(self, k: int) -> np.ndarray:
    return np.asarray(self.origin) + k * self.spacing * self.normal

  @property
  def ras_affine(self) -> np.ndarray:
    """The expected voxel-to-world affine of raw's voxel order, in NIfTI RAS+."""
    lps = np.eye(4)
    lps[:3, 0] = np.asarray(self.row_dir) * self.pixel_spacing[1]
    lps[:3, 1] = np.asarray(self.col_dir) * self.pixel_spacing[0]
    lps[:3, 2] = self.normal * self.spacing
    lps[:3, 3] = self.origin
    return np.diag([-1.0, -1.0, 1.0, 1.0]) @ lps


def slice_dataset(spec: SeriesSpec, k: int, series_uid: str, study_uid: str,
                  instance: int) -> Dataset:
  """Slice k of the series as a single-frame image dataset."""
  sop_class = CT_IMAGE_STORAGE if spec.modality == "CT" else MR_IMAGE_STORAGE
  meta = FileMetaDataset()
  meta.MediaStorageSOPClassUID = sop_class
  meta.MediaStorageSOPInstanceUID = generate_uid()
  meta.TransferSyntaxUID = ExplicitVRLittleEndian
  ds = Dataset()
  ds.file_meta = meta
  ds.SOPClassUID = sop_class
  ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
  ds.StudyInstanceUID = study_uid
  ds.SeriesInstanceUID = series_uid
  ds.FrameOfReferenceUID = series_uid
  ds.Modality = spec.modality
  ds.SeriesDescription = spec.description
  ds.SeriesNumber = 3
  ds.AcquisitionNumber = 1
  ds.InstanceNumber = instance
  ds.StudyDate = ds.SeriesDate = "20260101"
  ds.StudyTime = ds.SeriesTime = "120000"
  ds.AcquisitionTime = "120000"
  ds.PatientName, ds.PatientID = "Phantom^Test", "0001"
  ds.Manufacturer = "pydicom"
  ds.ImagePositionPatient = [f"{v:.6f}" for v in spec.position(k)]
  ds.ImageOrientationPatient = [f"{v:.8f}" for v in (*spec.row_dir, *spec.col_dir)]
  ds.PixelSpacing = [f"{v:g}" for v in spec.pixel_spacing]
  if spec.thickness is not None:
    ds.SliceThickness = f"{spec.thickness:g}"
  ds.RescaleSlope = f"{spec.slope:g}"
  ds.RescaleIntercept = f"{spec.intercept:g}"
  if spec.modality == "MR":
    ds.EchoTime, ds.RepetitionTime, ds.MagneticFieldStrength = "10", "500", "3"
  pixels = np.ascontiguousarray(spec.raw[:, :, k].T)  # [rows, columns]
  ds.Rows, ds.Columns = pixels.shape
  ds.SamplesPerPixel = 1
  ds.PhotometricInterpretation = "MONOCHROME2"
  ds.BitsAllocated = ds.BitsStored = 16
  ds.HighBit = 15
  ds.PixelRepresentation = 1 if spec.raw.dtype == np.int16 else 0
  ds.PixelData = pixels.astype(spec.raw.dtype).tobytes()
  return ds


def write_series(spec: SeriesSpec, folder, rng: np.random.Generator, series_uid=None,
                 descending_instances: bool = False) -> dict[int, str]:
  """Writes every slice to a randomly named file, in random order.

  Returns:
    {slice index along the normal: file path}.
  """
  os.makedirs(folder, exist_ok=True)
  series_uid = series_uid or generate_uid()
  study_uid = generate_uid()
  n = spec.raw.shape[2]
  paths = {}
  for k in rng.permutation(n):
    instance = n - k if descending_instances else k + 1
    ds = slice_dataset(spec, int(k), series_uid, study_uid, int(instance))
    path = os.path.join(str(folder), f"{rng.integers(1 << 62):016x}")
    ds.save_as(path, enforce_file_format=True)
    paths[int(k)] = path
  return paths


def random_raw(shape, dtype, rng: np.random.Generator) -> np.ndarray:
  info = np.iinfo(dtype)
  lo, hi = max(info.min, -2000), min(info.max, 4000)
  return rng.integers(lo, hi, size=shape).astype(dtype)


ENHANCED_MR_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.4.1"


def write_enhanced(spec: SeriesSpec, path, rng: np.random.Generator) -> None:
  """Writes the series as one enhanced MR file: frames in random order, per-frame positions."""
  order = rng.permutation(spec.raw.shape[2])
  ds = slice_dataset(spec, 0, generate_uid(), generate_uid(), 1)
  ds.SOPClassUID = ds.file_meta.MediaStorageSOPClassUID = ENHANCED_MR_IMAGE_STORAGE
  for keyword in ("ImagePositionPatient", "ImageOrientationPatient", "PixelSpacing",
                  "SliceThickness", "RescaleSlope", "RescaleIntercept"):
    delattr(ds, keyword)
  ds.NumberOfFrames = len(order)
  ds.ImageType = ["ORIGINAL", "PRIMARY", "M", "NONE"]

  def item(**fields):
    one = Dataset()
    for key, value in fields.items():
      setattr(one, key, value)
    return one

  measures = item(PixelSpacing=[f"{v:g}" for v in spec.pixel_spacing])
  if spec.thickness is not None:
    measures.SliceThickness = f"{spec.thickness:g}"
  ds.SharedFunctionalGroupsSequence = [item(
      PlaneOrientationSequence=[item(ImageOrientationPatient=[
          f"{v:.8f}" for v in (*spec.row_dir, *spec.col_dir)])],
      PixelMeasuresSequence=[measures],
      PixelValueTransformationSequence=[item(
          RescaleSlope=f"{spec.slope:g}", RescaleIntercept=f"{spec.intercept:g}",
          RescaleType="US")])]
  ds.PerFrameFunctionalGroupsSequence = [item(
      PlanePositionSequence=[item(ImagePositionPatient=[f"{v:.6f}" for v in spec.position(k)])],
      FrameContentSequence=[item(InStackPositionNumber=int(k) + 1, StackID="1",
                                 DimensionIndexValues=[1, int(k) + 1])])
      for k in order]
  ds.DimensionIndexSequence = [
      item(DimensionIndexPointer=0x00209056, FunctionalGroupPointer=0x00209111),
      item(DimensionIndexPointer=0x00209057, FunctionalGroupPointer=0x00209111)]
  frames = np.stack([spec.raw[:, :, k].T for k in order])  # [frame, rows, columns]
  ds.PixelData = np.ascontiguousarray(frames.astype(spec.raw.dtype)).tobytes()
  os.makedirs(os.path.dirname(str(path)), exist_ok=True)
  ds.save_as(str(path), enforce_file_format=True)
