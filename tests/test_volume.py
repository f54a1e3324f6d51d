"""NIfTI loading errors, isotropic resampling geometry and normalisation."""

import nibabel as nib
import numpy as np
import pytest

from clade_jax.data import volume as volume_lib
from clade_jax.data.volume import Volume, VolumeError


def oblique_affine(spacing, origin=(-90.0, 20.0, 5.0), angle=0.3):
  """A rotated, anisotropic voxel-to-world matrix."""
  c, s = np.cos(angle), np.sin(angle)
  rotation = np.array([[c, -s, 0], [s, c, 0], [0, 0, 1]])
  affine = np.eye(4)
  affine[:3, :3] = rotation @ np.diag(spacing)
  affine[:3, 3] = origin
  return affine


def write(path, data, affine=np.eye(4)):
  nib.save(nib.Nifti1Image(np.asarray(data), affine), str(path))
  return str(path)


def test_load_reads_float32_and_drops_a_singleton_fourth_axis(tmp_path):
  data = np.arange(4 * 5 * 6, dtype=np.int16).reshape(4, 5, 6, 1)
  vol = volume_lib.load_volume(write(tmp_path / "a.nii.gz", data))
  assert vol.data.dtype == np.float32 and vol.data.shape == (4, 5, 6)
  np.testing.assert_array_equal(vol.data, data[..., 0])


@pytest.mark.parametrize("case, message", [
    ("missing", "no such file"),
    ("corrupt", "cannot read NIfTI"),
    ("truncated_gz", "cannot read NIfTI"),
    ("2d", "expected a 3D volume, got 2D"),
    ("4d", "expected a 3D volume, got 4D"),
    ("nan", "voxels are NaN or Inf"),
    ("not_nifti", "not a NIfTI file"),
])
def test_bad_inputs_give_one_line_errors_naming_the_file(tmp_path, case, message):
  path = tmp_path / ("x.nii.gz" if case != "not_nifti" else "x.png")
  if case == "corrupt":
    path.write_bytes(b"this is not a nifti file at all" * 20)
  elif case == "truncated_gz":
    write(path, np.random.default_rng(0).normal(size=(8, 8, 8)).astype(np.float32))
    path.write_bytes(path.read_bytes()[:-40])  # Cut the end of the gzip stream.
  elif case == "2d":
    write(path, np.ones((8, 8), np.float32))
  elif case == "4d":
    write(path, np.ones((8, 8, 8, 3), np.float32))
  elif case == "nan":
    data = np.ones((8, 8, 8), np.float32)
    data[1, 2, 3] = np.nan
    write(path, data)
  elif case == "not_nifti":
    path.write_bytes(b"\x89PNG")
  with pytest.raises(VolumeError) as err:
    volume_lib.load_volume(path)
  text = str(err.value)
  assert str(path) in text and message in text and "\n" not in text


def test_thick_axis_is_detected_and_isotropic_volumes_are_rejected():
  assert volume_lib.find_thick_axis([1.2, 6.6, 1.25]) == 1
  with pytest.raises(VolumeError, match="no thick-slice axis"):
    volume_lib.find_thick_axis([1.0, 1.0, 1.2], name="scan.nii")


def test_isotropic_geometry_keeps_world_positions_of_original_samples():
  affine = oblique_affine((1.2, 6.6, 1.25))
  shape = (10, 23, 12)
  new_shape, new_affine, positions = volume_lib.isotropic_geometry(shape, affine, 1)
  factor = 1.2 / 6.6
  assert new_shape == (10, int(np.floor(22 / factor + 1e-6)) + 1, 12)
  np.testing.assert_allclose(volume_lib.voxel_spacing(new_affine), [1.2, 1.2, 1.25])
  for k in range(shape[1]):
    old_world = affine @ [3, k, 5, 1]
    new_world = new_affine @ [3, k / factor, 5, 1]  # Continuous index on the new grid.
    np.testing.assert_allclose(new_world, old_world, atol=1e-9)
  np.testing.assert_allclose(positions, np.arange(new_shape[1]) * factor)
  assert positions[-1] <= shape[1] - 1 + 1e-9  # Never extrapolates past the last slice.


def test_cubic_resampling_passes_through_the_original_samples():
  rng = np.random.default_rng(0)
  affine = oblique_affine((1.0, 1.0, 4.0))
  vol = Volume(rng.normal(size=(5, 6, 9)).astype(np.float32), affine)
  iso = volume_lib.resample_thick_axis(vol, thick_axis=2)
  assert iso.data.shape == (5, 6, 33)
  np.testing.assert_allclose(iso.data[:, :, ::4], vol.data, atol=1e-5)
  # World round trip: the new voxel 4k is the old voxel k.
  np.testing.assert_allclose(iso.affine @ [1, 2, 8, 1], affine @ [1, 2, 2, 1], atol=1e-9)


def test_cubic_resampling_reproduces_a_cubic_polynomial_exactly():
  z = np.arange(12, dtype=np.float64)
  profile = 0.01 * z**3 - 0.2 * z**2 + z
  vol = Volume(np.tile(profile, (3, 4, 1)).astype(np.float32), np.diag([1.0, 1.0, 3.0, 1.0]))
  iso = volume_lib.resample_thick_axis(vol, 2)
  zz = np.arange(iso.data.shape[2]) / 3.0
  np.testing.assert_allclose(iso.data[0, 0], 0.01 * zz**3 - 0.2 * zz**2 + zz, atol=1e-4)


def test_normalizer_maps_robust_range_to_unit_interval_and_back():
  data = np.linspace(-1000, 3000, 1001).astype(np.float32)  # CT-like, negative values.
  norm = volume_lib.Normalizer.fit(data, (0.0, 100.0))
  np.testing.assert_allclose(norm.forward([-1000, 1000, 3000]), [-1, 0, 1], atol=1e-6)
  np.testing.assert_allclose(norm.inverse(norm.forward(data)), data, rtol=1e-5, atol=1e-2)
  assert norm.forward([5000])[0] == 1.0  # Clipped.
  with pytest.raises(VolumeError, match="constant"):
    volume_lib.Normalizer.fit(np.zeros(10))


def test_save_volume_is_atomic_keeps_codes_and_refuses_to_overwrite_input(tmp_path):
  affine = oblique_affine((1.0, 1.0, 3.0))
  image = nib.Nifti1Image(np.ones((4, 5, 6), np.float32), affine)
  image.set_qform(affine, code=2)
  image.set_sform(affine, code=4)
  src = tmp_path / "in.nii.gz"
  nib.save(image, str(src))
  vol = volume_lib.load_volume(src)
  out = tmp_path / "out.nii.gz"
  volume_lib.save_volume(out, vol.data * 2, vol.affine, like=vol)
  saved = nib.load(str(out))
  assert int(saved.header["qform_code"]) == 2 and int(saved.header["sform_code"]) == 4
  np.testing.assert_allclose(saved.affine, affine, atol=1e-5)
  assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".tmp")] == []
  with pytest.raises(VolumeError, match="refusing to overwrite"):
    volume_lib.save_volume(src, vol.data, vol.affine, like=vol)
  np.testing.assert_array_equal(volume_lib.load_volume(src).data, 1.0)


def test_lr_slice_axis_by_anatomical_plane():
  ras = np.diag([1.0, 6.0, 1.0, 1.0])  # Thick along A-P (coronal acquisition).
  assert volume_lib.lr_slice_axis(ras, 1, "sagittal") == 0
  assert volume_lib.lr_slice_axis(ras, 1, "axial") == 2
  assert volume_lib.lr_slice_axis(ras, 1, "auto") == 0
  with pytest.raises(ValueError, match="not a low-resolution plane"):
    volume_lib.lr_slice_axis(ras, 1, "coronal")


def test_plane_slices_round_trip():
  data = np.arange(24).reshape(2, 3, 4)
  for axis in range(3):
    stack = volume_lib.plane_slices(data, axis)
    assert stack.shape[0] == data.shape[axis]
    np.testing.assert_array_equal(volume_lib.from_plane_slices(stack, axis), data)


RGB24 = np.dtype([("R", "u1"), ("G", "u1"), ("B", "u1")])


def _rgb(path):
  data = np.zeros((6, 7, 8), dtype=RGB24)
  data["G"] = 200
  return write(path, data)


def _complex(path):
  return write(path, np.full((6, 7, 8), 3 + 4j, dtype=np.complex64))


def _sheared(path):
  affine = np.eye(4)
  affine[0, 1] = 0.5  # Voxel axis 1 leans into axis 0: cos = 0.5 / sqrt(1.25).
  return write(path, np.ones((6, 7, 8), np.float32), affine)


def _zero_sform_column(path):
  image = nib.Nifti1Image(np.ones((6, 7, 8), np.float32), np.diag([1.0, 1.0, 3.0, 1.0]))
  sform = np.diag([1.0, 1.0, 3.0, 1.0])
  sform[:3, 1] = 0.0
  image.set_sform(sform, code=2)  # The qform (code 1) stays valid: readers could
  image.set_qform(np.diag([1.0, 1.0, 3.0, 1.0]), code=1)  # silently pick either.
  nib.save(image, str(path))
  return str(path)


@pytest.mark.parametrize("make, messages", [
    (_rgb, ["colour image (NIfTI datatype RGB24)", "convert it to grayscale first"]),
    (_complex, ["complex-valued image (NIfTI datatype COMPLEX64)",
                "--complex magnitude (infer.py) or config.data.complex=magnitude (training)"]),
    (lambda p: write(p, np.ones((6, 7, 8, 3), np.float32)),
     ["4D shape (6, 7, 8, 3) holding 3 volumes",
      "--volume-index N (infer.py) or config.data.volume_index=N (training), N in 0..2"]),
    (_sheared, ["the voxel grid is sheared (voxel axes 0 and 1 meet at 63.43 degrees, not 90)",
                "resample the volume onto one first"]),
    (_zero_sform_column, ["the sform (sform_code 2) is singular (zero column for voxel axis 1)",
                          "set sform_code to 0"]),
], ids=["rgb", "complex", "4d_volumes", "shear", "sform_zero_column"])
def test_unusable_voxel_types_and_geometry_are_refused_in_one_line(tmp_path, make, messages):
  path = make(tmp_path / "bad.nii.gz")
  with pytest.raises(VolumeError) as err:
    volume_lib.load_volume(path)
  text = str(err.value)
  assert text.startswith(f"{path}: ") and "\n" not in text, text
  for message in messages:
    assert message in text


def test_sheared_angle_is_the_angle_between_the_voxel_axes():
  affine = np.eye(4)
  affine[0, 1] = 0.5
  angle, i, j = volume_lib.axis_angle(affine)
  # Columns (1, 0, 0) and (0.5, 1, 0): cos = 0.5 / sqrt(1.25).
  assert (i, j) == (0, 1)
  assert angle == pytest.approx(np.degrees(np.arccos(0.5 / np.sqrt(1.25))), abs=1e-12)
  assert volume_lib.axis_angle(oblique_affine((1.0, 2.0, 5.0)))[0] == pytest.approx(90.0)


def test_oblique_and_flipped_orthogonal_grids_are_accepted(tmp_path):
  affine = oblique_affine((1.2, 1.2, 6.6)) @ np.diag([-1.0, 1.0, 1.0, 1.0])
  vol = volume_lib.load_volume(write(tmp_path / "o.nii.gz", np.ones((6, 7, 8), np.float32),
                                     affine))
  np.testing.assert_allclose(vol.affine, affine, atol=1e-5)


def test_complex_magnitude_is_read_only_when_asked(tmp_path):
  path = _complex(tmp_path / "c.nii.gz")
  vol = volume_lib.load_volume(path, complex_mode="magnitude")
  assert vol.data.dtype == np.float32
  np.testing.assert_array_equal(vol.data, 5.0)  # |3 + 4i|
  with pytest.raises(ValueError, match="complex_mode must be one of"):
    volume_lib.load_volume(path, complex_mode="real")


def test_volume_index_picks_one_volume_of_a_4d_file_and_is_range_checked(tmp_path):
  data = np.stack([np.full((6, 7, 8), float(v), np.float32) for v in (10, 20, 30)], axis=-1)
  data[0, 0, 0, 1] = -1.0  # Mark volume 1 so a transposed read would show.
  path = write(tmp_path / "t.nii.gz", data)
  vol = volume_lib.load_volume(path, volume_index=1)
  np.testing.assert_array_equal(vol.data, data[..., 1])
  for bad in (3, -1):
    with pytest.raises(VolumeError) as err:
      volume_lib.load_volume(path, volume_index=bad)
    assert str(err.value) == (f"{path}: volume index {bad} is out of range: the file holds 3 "
                              f"volumes (valid: 0..2)")
  three_d = write(tmp_path / "s.nii.gz", data[..., 0])
  np.testing.assert_array_equal(volume_lib.load_volume(three_d, volume_index=0).data, 10.0)
  with pytest.raises(VolumeError, match="holds 1 volume \\(valid: 0..0\\)"):
    volume_lib.load_volume(three_d, volume_index=1)


def test_a_singular_qform_in_use_is_refused():
  # nibabel repairs zero voxel sizes when it reads a file (with a warning), so a zero
  # qform column only reaches the check through a header built in memory.
  header = nib.Nifti1Header()
  header.set_data_shape((6, 7, 8))
  header.set_qform(np.eye(4), code=1)
  header["pixdim"][2] = 0.0
  with pytest.raises(VolumeError) as err:
    volume_lib._check_header_transforms("q.nii", header)
  assert str(err.value) == ("q.nii: the qform (qform_code 1) is singular (zero column for voxel "
                            "axis 1); fix the header's qform or set qform_code to 0 to use the "
                            "other transform")
  header.set_qform(np.eye(4), code=0)  # Not in use: nothing to refuse.
  volume_lib._check_header_transforms("q.nii", header)
