"""DICOM series and slice metadata: geometry against known volumes and against dcm2niix.

Series are written with pydicom from known integer volumes (tests/dicom_series.py) in
random file order under random names; the reader must give back the volume, its world
geometry and its slice thickness, and agree with dcm2niix voxel for voxel in world space.
"""

import dataclasses
import json
import os
import shutil
import subprocess

import nibabel as nib
import numpy as np
import pydicom
import pytest
from pydicom import encaps
from pydicom import uid as uid_lib
from pydicom.pixels import get_decoder

from clade_jax.data import acquisition
from clade_jax.data import dicom
from clade_jax.data import slice_profile
from clade_jax.data import volume as volume_lib
from clade_jax.data.volume import VolumeError
from configs import mri
from tests import dicom_series as series_lib

SHAPE = (24, 20, 7)  # columns, rows, slices
OBLIQUE = series_lib.rotation(17.0, 15.0)
OTHER_OBLIQUE = series_lib.rotation(-20.0, 18.0)


def _specs():
  rng = np.random.default_rng(23)
  raw = lambda dtype: series_lib.random_raw(SHAPE, dtype, rng)  # noqa: E731
  return {
      # 3 mm slices every 4 mm: a 1 mm gap.
      "axial": series_lib.SeriesSpec(raw(np.uint16), (1, 0, 0), (0, 1, 0), thickness=3.0,
                                     spacing=4.0, slope=0.5, intercept=-100.0),
      # CT: 5 mm slices every 4 mm (overlap), stored int16 with the usual -1024 intercept.
      "sagittal": series_lib.SeriesSpec(raw(np.int16), (0, 1, 0), (0, 0, -1), thickness=5.0,
                                        spacing=4.0, intercept=-1024.0, modality="CT"),
      "coronal": series_lib.SeriesSpec(raw(np.uint16), (1, 0, 0), (0, 0, -1), thickness=2.0,
                                       spacing=2.0, pixel_spacing=(0.8, 0.7)),
      "oblique": series_lib.SeriesSpec(raw(np.int16), tuple(OBLIQUE[:, 0]), tuple(OBLIQUE[:, 1]),
                                       thickness=3.5, spacing=5.0, slope=1.25, intercept=10.0),
      # One enhanced multi-frame file, another oblique stack.
      "enhanced": series_lib.SeriesSpec(raw(np.uint16), tuple(OTHER_OBLIQUE[:, 0]),
                                        tuple(OTHER_OBLIQUE[:, 1]), thickness=2.0, spacing=2.5,
                                        slope=2.0, intercept=-5.0),
  }


SPECS = _specs()


@pytest.fixture(scope="module")
def series_dirs(tmp_path_factory):
  """Each spec as a series folder (oblique: descending InstanceNumbers; enhanced: one file)."""
  root = tmp_path_factory.mktemp("dicom")
  rng = np.random.default_rng(0)
  for name, spec in SPECS.items():
    if name == "enhanced":
      series_lib.write_enhanced(spec, root / name / "IM0001", rng)
    else:
      series_lib.write_series(spec, root / name, rng, descending_instances=name == "oblique")
  return root


@pytest.mark.parametrize("name", list(SPECS))
def test_load_series_gives_back_the_volume_geometry_and_thickness(series_dirs, name):
  spec = SPECS[name]
  series = dicom.load_series(series_dirs / name)
  assert series.volume.data.dtype == np.float32 and series.volume.data.shape == SHAPE
  np.testing.assert_array_equal(series.volume.data, spec.physical)
  np.testing.assert_allclose(series.volume.affine, spec.ras_affine, atol=1e-6)
  assert series.slice_thickness_mm == spec.thickness
  assert series.slice_spacing_mm == pytest.approx(spec.spacing, abs=1e-6)
  assert series.thick_axis == 2
  np.testing.assert_allclose(series.volume.spacing[2], spec.spacing, atol=1e-6)
  assert series.metadata["Modality"] == spec.modality
  assert series.metadata["SeriesDescription"] == spec.description
  assert series.metadata["NumberOfSlices"] == SHAPE[2]
  assert "PatientName" not in series.metadata and "PatientID" not in series.metadata
  json.dumps(series.metadata)  # ready for a sidecar


def _world_match(ours_data, ours_affine, theirs_data, theirs_affine):
  """For every voxel centre of ours, the voxel of theirs at the same world point.

  Returns:
    (index array of theirs per voxel of ours, max distance in mm between matched centres).
  """
  grid = np.stack(np.meshgrid(*[np.arange(n) for n in ours_data.shape], indexing="ij"), -1)
  world = grid.reshape(-1, 3) @ ours_affine[:3, :3].T + ours_affine[:3, 3]
  inverse = np.linalg.inv(theirs_affine)
  index = np.rint(world @ inverse[:3, :3].T + inverse[:3, 3]).astype(int)
  assert np.all(index >= 0) and np.all(index < np.asarray(theirs_data.shape)), "off their grid"
  matched = index @ theirs_affine[:3, :3].T + theirs_affine[:3, 3]
  return index, float(np.linalg.norm(matched - world, axis=1).max())


@pytest.mark.skipif(shutil.which("dcm2niix") is None,
                    reason="dcm2niix not on PATH (Debian package dcm2niix)")
@pytest.mark.parametrize("name", list(SPECS))
def test_same_voxels_in_world_space_as_dcm2niix(series_dirs, tmp_path, name):
  spec = SPECS[name]
  result = subprocess.run(["dcm2niix", "-z", "y", "-f", "out", "-o", str(tmp_path),
                           str(series_dirs / name)], capture_output=True, text=True, check=False)
  assert result.returncode == 0, result.stdout + result.stderr
  image = nib.load(tmp_path / "out.nii.gz")
  theirs = np.asarray(image.get_fdata(), np.float64)  # scl_slope/scl_inter applied
  series = dicom.load_series(series_dirs / name)
  assert theirs.size == series.volume.data.size
  index, distance = _world_match(series.volume.data, series.volume.affine, theirs, image.affine)
  assert distance < 1e-3, f"voxel centres {distance:.3g} mm apart"
  # A bijection: every voxel of theirs matched exactly once.
  assert len(np.unique(np.ravel_multi_index(index.T, theirs.shape))) == theirs.size
  np.testing.assert_allclose(series.volume.data.reshape(-1), theirs[tuple(index.T)],
                             rtol=1e-6, atol=1e-4)
  # dcm2niix's own sidecar, read the way a NIfTI input's is.
  meta = acquisition.slice_metadata(tmp_path / "out.nii.gz")
  assert meta.thickness_mm == spec.thickness
  assert meta.thickness_source == "out.json: SliceThickness"


def test_same_geometry_as_dcm2niix_is_not_vacuous(series_dirs):
  """The world-space comparison notices a voxel axis flipped or a half-voxel shift."""
  series = dicom.load_series(series_dirs / "oblique")
  flipped = series.volume.affine.copy()
  flipped[:3, 1] *= -1
  shifted = series.volume.affine.copy()
  shifted[:3, 3] += 0.5 * series.volume.affine[:3, 0]
  for affine in (flipped, shifted):
    try:
      _, distance = _world_match(series.volume.data, series.volume.affine,
                                 series.volume.data, affine)
    except AssertionError:
      continue  # off the other grid altogether
    assert distance > 1e-3


def test_dicom_is_recognised_by_content_and_other_files_are_skipped(tmp_path):
  spec = SPECS["axial"]
  paths = series_lib.write_series(spec, tmp_path / "s", np.random.default_rng(1))
  for k in (0, 3):  # no 128-byte preamble and 'DICM' marker: pydicom still parses them
    with open(paths[k], "rb") as f:
      headless = f.read()[132:]
    with open(paths[k], "wb") as f:
      f.write(headless)
  (tmp_path / "s" / "README").write_text("exported by hand\n")
  (tmp_path / "s" / "notes.dcm").write_bytes(b"\x00" * 300)  # a .dcm name, not DICOM
  directory = pydicom.Dataset()
  directory.file_meta = pydicom.dataset.FileMetaDataset()
  directory.file_meta.MediaStorageSOPClassUID = "1.2.840.10008.1.3.10"
  directory.file_meta.MediaStorageSOPInstanceUID = uid_lib.generate_uid()
  directory.file_meta.TransferSyntaxUID = uid_lib.ExplicitVRLittleEndian
  directory.FileSetID = "TEST"
  directory.save_as(tmp_path / "s" / "DICOMDIR", enforce_file_format=True)
  assert dicom.is_series_dir(tmp_path / "s")
  series = dicom.load_series(tmp_path / "s")
  np.testing.assert_array_equal(series.volume.data, spec.physical)
  (tmp_path / "text").mkdir()
  (tmp_path / "text" / "README").write_text("no images here\n")
  assert not dicom.is_series_dir(tmp_path / "text")
  assert not dicom.is_series_dir(tmp_path / "missing")
  assert not dicom.is_series_dir(tmp_path / "s" / "README")


def test_each_slice_keeps_its_own_rescale(tmp_path):
  spec = SPECS["axial"]
  paths = series_lib.write_series(spec, tmp_path, np.random.default_rng(4))
  def rescale(ds):
    ds.RescaleSlope, ds.RescaleIntercept = "2.5", "7"
  _edit(paths[4], rescale)
  expected = spec.physical
  expected[:, :, 4] = spec.raw[:, :, 4] * 2.5 + 7
  np.testing.assert_array_equal(dicom.load_series(tmp_path).volume.data, expected)


def test_write_nifti_round_trips_volume_and_thickness(series_dirs, tmp_path):
  spec = SPECS["oblique"]
  series = dicom.load_series(series_dirs / "oblique")
  sidecar = dicom.write_nifti(series, tmp_path / "scan.nii.gz")
  assert sidecar == str(tmp_path / "scan.json")
  back = volume_lib.load_volume(tmp_path / "scan.nii.gz")
  np.testing.assert_array_equal(back.data, series.volume.data)
  np.testing.assert_allclose(back.affine, series.volume.affine, atol=1e-4)
  meta = acquisition.slice_metadata(tmp_path / "scan.nii.gz")
  assert meta.thickness_mm == spec.thickness and meta.spacing_mm == pytest.approx(spec.spacing)
  assert meta.thickness_source == "scan.json: SliceThickness"
  assert meta.gap_mm == pytest.approx(spec.spacing - spec.thickness)
  assert not [f for f in os.listdir(tmp_path) if f.startswith(".tmp")]


# --- Folders that are not one 3D series ---------------------------------------------------


def _edit(path, change):
  ds = pydicom.dcmread(path)
  change(ds)
  ds.save_as(path, enforce_file_format=True)


def _small_spec(**kwargs):
  raw = series_lib.random_raw((6, 5, 4), np.uint16, np.random.default_rng(2))
  return series_lib.SeriesSpec(raw, (1, 0, 0), (0, 1, 0), **kwargs)


def _several_series(folder, rng):
  series_lib.write_series(_small_spec(description="t1"), folder, rng, series_uid="1.2.3.1")
  series_lib.write_series(_small_spec(description="flair"), folder, rng, series_uid="1.2.3.2")


def _missing_slice(folder, rng):
  os.remove(series_lib.write_series(_small_spec(), folder, rng)[2])


def _duplicate_positions(folder, rng):
  series_lib.write_series(_small_spec(), folder, rng, series_uid="1.2.3.4")
  series_lib.write_series(_small_spec(), folder, rng, series_uid="1.2.3.4")


def _varying_orientation(folder, rng):
  tilted = series_lib.rotation(5.0, 0.0)
  path = series_lib.write_series(_small_spec(), folder, rng)[1]
  _edit(path, lambda ds: setattr(ds, "ImageOrientationPatient",
                                 [f"{v:.8f}" for v in (*tilted[:, 0], *tilted[:, 1])]))


def _sheared_orientation(folder, rng):
  for path in series_lib.write_series(_small_spec(), folder, rng).values():
    _edit(path, lambda ds: setattr(ds, "ImageOrientationPatient",
                                   ["1", "0", "0", "0.1", "0.99498744", "0"]))


def _corrupt_rescale_slope(folder, rng):
  """A slope pydicom cannot parse (patched in the bytes: pydicom refuses to write it)."""
  path = series_lib.write_series(_small_spec(), folder, rng)[1]
  with open(path, "rb") as f:
    data = f.read()
  element = b"\x28\x00\x53\x10DS\x02\x00"  # (0028,1053) RescaleSlope, DS, 2 bytes
  assert data.count(element + b"1 ") == 1
  with open(path, "wb") as f:
    f.write(data.replace(element + b"1 ", element + b"x "))


def _varying_pixel_spacing(folder, rng):
  path = series_lib.write_series(_small_spec(), folder, rng)[1]
  _edit(path, lambda ds: setattr(ds, "PixelSpacing", ["0.9", "1.2"]))


def _varying_size(folder, rng):
  def crop(ds):
    ds.PixelData = ds.pixel_array[:, :-1].copy().tobytes()
    ds.Columns -= 1
  path = series_lib.write_series(_small_spec(), folder, rng)[1]
  _edit(path, crop)


def _gantry_tilt(folder, rng):
  for k, path in series_lib.write_series(_small_spec(), folder, rng).items():
    _edit(path, lambda ds, k=k: setattr(ds, "ImagePositionPatient", [
        f"{float(v) + (1.5 * k if i == 1 else 0):.6f}" for i, v in
        enumerate(ds.ImagePositionPatient)]))


def _compressed(folder, rng):
  def to_jpeg_ls(ds):
    ds.file_meta.TransferSyntaxUID = uid_lib.JPEGLSLossless
    ds.PixelData = encaps.encapsulate([b"\xff\xd8\xff\xf7" + b"\x00" * 40])
    ds["PixelData"].VR = "OB"
  for path in series_lib.write_series(_small_spec(), folder, rng).values():
    _edit(path, to_jpeg_ls)


def _truncated_file(cut):
  def make(folder, rng):
    path = series_lib.write_series(_small_spec(), folder, rng)[3]  # the last slice
    with open(path, "rb") as f:
      head = f.read()[:cut]
    with open(path, "wb") as f:
      f.write(head)
  return make


def _no_dicom(folder, rng):
  del rng
  os.makedirs(folder)
  (folder / "README.txt").write_text("nothing\n")


def _single_slice(folder, rng):
  spec = _small_spec()
  series_lib.write_series(dataclasses.replace(spec, raw=spec.raw[:, :, :1]), folder, rng)


def _legacy_multi_frame(folder, rng):
  """Several frames in one file, but no per-frame positions to place them with."""
  del rng
  spec = _small_spec()
  ds = series_lib.slice_dataset(spec, 0, uid_lib.generate_uid(), uid_lib.generate_uid(), 1)
  ds.NumberOfFrames = spec.raw.shape[2]
  ds.PixelData = np.ascontiguousarray(spec.raw.transpose(2, 1, 0)).tobytes()
  os.makedirs(folder)
  ds.save_as(folder / "enhanced.dcm", enforce_file_format=True)


@pytest.mark.parametrize("make, expected", [
    (_several_series, ["holds 2 DICOM series", "1.2.3.1 (t1, 4 images)",
                       "1.2.3.2 (flair, 4 images)", "its own folder"]),
    (_missing_slice, ["not evenly spaced", "8 mm between sorted slices 1 and 2",
                      "smallest step is 4 mm", "missing slice"]),
    (_duplicate_positions, ["8 images at only 4 slice positions", "one 3D volume per folder"]),
    (_varying_orientation, ["different orientations", "one stack of parallel slices"]),
    (_sheared_orientation, ["is not two perpendicular unit vectors"]),
    (_corrupt_rescale_slope, ["has a RescaleSlope that is not a number ('x')"]),
    (_varying_pixel_spacing, ["different pixel spacings", "[0.9, 1.2]"]),
    (_varying_size, ["different sizes", "5x5", "5x6"]),
    (_gantry_tilt, ["shifted within their plane", "gantry tilt"]),
    (_compressed, ["JPEG-LS Lossless", "no decoder", "pylibjpeg", "gdcm"]),
    (_truncated_file(150), ["without pixel data (truncated?)"]),  # inside the file meta
    (_truncated_file(600), ["without pixel data (truncated?)"]),
    (_truncated_file(-100), ["without pixel data (truncated?)"]),  # inside the pixels' tag
    (_truncated_file(-10), ["cannot decode the pixels of", "less than expected"]),
    (_no_dicom, ["no DICOM image files"]),
    (_single_slice, ["only one slice"]),
    (_legacy_multi_frame, ["enhanced.dcm holds 4 frames without per-frame positions",
                           "legacy multi-frame", "dcm2niix"]),
])
def test_what_is_not_one_3d_series_is_refused_in_one_line_naming_the_folder(
    tmp_path, make, expected):
  if make is _compressed and get_decoder(uid_lib.JPEGLSLossless).is_available:
    pytest.skip("a JPEG-LS decoder (pylibjpeg-libjpeg, pyjpegls or gdcm) is installed")
  folder = tmp_path / "series"
  make(folder, np.random.default_rng(5))
  with pytest.raises(VolumeError) as error:
    dicom.load_series(folder)
  message = str(error.value)
  assert message.startswith(f"{folder}: ") and "\n" not in message
  for text in expected:
    assert text in message


def test_a_missing_folder_is_refused(tmp_path):
  with pytest.raises(VolumeError, match="not a folder"):
    dicom.load_series(tmp_path / "nowhere")


# --- Sidecar metadata and the slice profile -----------------------------------------------


def test_no_sidecar_gives_none_and_missing_keys_give_none(tmp_path):
  assert acquisition.slice_metadata(tmp_path / "scan.nii.gz") is None
  (tmp_path / "scan.json").write_text('{"SpacingBetweenSlices": 4}')
  meta = acquisition.slice_metadata(tmp_path / "scan.nii.gz")
  assert meta.thickness_mm is None and meta.thickness_source is None
  assert meta.spacing_mm == 4.0 and meta.spacing_source == "scan.json: SpacingBetweenSlices"
  assert acquisition.sidecar_path("a/b.nii") == "a/b.json"


@pytest.mark.parametrize("text, expected", [
    ('{"SliceThickness": 3,', "cannot read the JSON sidecar"),
    ('[3]', "must hold an object"),
    ('{"SliceThickness": -3}', "SliceThickness must be a positive number"),
    ('{"SliceThickness": "3 mm"}', "SliceThickness must be a positive number"),
])
def test_bad_sidecar_is_refused_naming_the_file(tmp_path, text, expected):
  (tmp_path / "scan.json").write_text(text)
  with pytest.raises(VolumeError) as error:
    acquisition.slice_metadata(tmp_path / "scan.nii.gz")
  assert str(error.value).startswith(f"{tmp_path / 'scan.json'}: ")
  assert expected in str(error.value) and "\n" not in str(error.value)


@pytest.mark.parametrize("name, profile", [("axial", "rect"), ("sagittal", "gaussian")])
def test_header_thickness_and_gap_reach_the_slice_profile(series_dirs, name, profile):
  spec = SPECS[name]
  series = dicom.load_series(series_dirs / name)
  meta = acquisition.from_series(series)
  assert meta.thickness_source == f"{name}: DICOM SliceThickness"
  assert meta.gap_mm == pytest.approx(spec.spacing - spec.thickness)  # +1 gap, -1 overlap
  data = mri.get_config().data
  data.slice_profile = profile
  line = acquisition.apply_to_data_config(data, meta)
  assert line == f"slice thickness: {spec.thickness:g} mm from {name}: DICOM SliceThickness"
  got_profile, thickness_mm = slice_profile.from_config(data)
  assert (got_profile, thickness_mm) == (profile, spec.thickness)
  # On a 1 mm fine grid the weights span the header's thickness, not the spacing.
  weights = slice_profile.centred_weights(got_profile, thickness_mm / 1.0)
  taps = np.arange(weights.size) - weights.size // 2
  if profile == "rect":  # 3 mm box: three equal taps
    np.testing.assert_allclose(weights, np.ones(3) / 3)
  else:  # Gaussian with FWHM 5 mm: variance (5 / 2.3548)^2 + 1/12 from voxel integration
    variance = float(weights @ taps**2)
    assert variance == pytest.approx((5.0 / 2.35482) ** 2 + 1 / 12, rel=1e-3)


def test_a_thickness_the_user_gave_wins_over_the_header(series_dirs):
  meta = acquisition.from_series(dicom.load_series(series_dirs / "axial"))
  data = mri.get_config().data
  data.slice_thickness = 2.5
  assert acquisition.apply_to_data_config(data, meta) == (
      "slice thickness: 2.5 mm from data.slice_thickness")
  assert slice_profile.from_config(data) == ("gaussian", 2.5)
  data = mri.get_config().data
  assert acquisition.apply_to_data_config(data, None) == (
      "slice thickness: not recorded; the slice spacing is used")
  assert slice_profile.from_config(data) == ("gaussian", None)
