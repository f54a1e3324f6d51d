"""Super-resolving a volume end to end: inference.super_resolve, inference.run and infer.py.

One tiny workdir (4-feature generator, one residual block, random weights saved as a
real checkpoint) and one small oblique thick-slice volume serve every test, so the
reconstruction compiles once per slice shape.
"""

import json
import os
import shutil
import subprocess
import sys

import jax
import nibabel as nib
import numpy as np
import pytest

import infer
from clade_jax import checkpointing
from clade_jax import inference
from clade_jax import train
from clade_jax.methods import clade
from clade_jax.volume_srr import SROptions
from clade_jax.data import volume as volume_lib
from configs import mri
from tests import phantoms

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
THICK = 4.0  # mm; 1 mm in-plane, so isotropic resampling makes 4 new samples per old.
QFORM_CODE, SFORM_CODE = 1, 4  # scanner, MNI: distinct so swapping them would show.


def tiny_config():
  config = mri.get_config()
  config.model.features = 4
  config.model.num_blocks = 1
  config.model.disc_features = 4
  config.eval.batch_size = 64
  return config


def oblique_affine(spacing):
  """Rotated about two axes and shifted, so an axis mix-up cannot go unnoticed."""
  a, b = np.deg2rad(20.0), np.deg2rad(10.0)
  rz = np.array([[np.cos(a), -np.sin(a), 0], [np.sin(a), np.cos(a), 0], [0, 0, 1]])
  rx = np.array([[1, 0, 0], [0, np.cos(b), -np.sin(b)], [0, np.sin(b), np.cos(b)]])
  affine = np.eye(4)
  affine[:3, :3] = rz @ rx @ np.diag(spacing)
  affine[:3, 3] = [-20.0, 31.5, 7.25]
  return affine


def write_volume(path, data, affine):
  image = nib.Nifti1Image(np.asarray(data, np.float32), affine)
  image.set_qform(affine, code=QFORM_CODE)
  image.set_sform(affine, code=SFORM_CODE)
  nib.save(image, str(path))
  return str(path)


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
  """A workdir as training leaves it: config.json and a checkpoint at step 3."""
  path = str(tmp_path_factory.mktemp("run"))
  config = tiny_config()
  checkpointing.write_config(path, config)
  shapes = jax.eval_shape(lambda: clade.init_state(config, train.init_key(0)))
  # Random weights drawn in numpy: compiling flax's initialisers costs seconds on CPU.
  rng = np.random.default_rng(0)
  state = jax.tree.map(lambda s: rng.normal(0.0, 0.3, s.shape).astype(s.dtype), shapes)
  mngr = checkpointing.manager(path)
  checkpointing.save(mngr, 3, state, {})
  mngr.wait_until_finished()
  mngr.close()
  return path


@pytest.fixture(scope="module")
def scan(tmp_path_factory):
  """(path, data, affine): 40 x 12 x 36 voxels of 1 x 4 x 1 mm, intensities ~100-1100."""
  data = 100.0 + 1000.0 * phantoms.body_phantom((40, 12, 36), seed=2)
  affine = oblique_affine([1.0, THICK, 1.0])
  path = write_volume(tmp_path_factory.mktemp("scan") / "scan.nii.gz", data, affine)
  return path, data.astype(np.float32), affine


@pytest.fixture(scope="module")
def trained_plane(workdir, scan):
  params, config = checkpointing.restore_params(workdir)
  _, data, affine = scan
  return inference.super_resolve(data, affine, params, config, SROptions(progress=False))


@pytest.fixture(scope="module")
def cli_output(workdir, scan, tmp_path_factory):
  output = str(tmp_path_factory.mktemp("out") / "scan_srr.nii.gz")
  assert infer.main(["--workdir", workdir, "--input", scan[0], "--output", output,
                     "--no-progress"]) == 0
  return output


# -------------------------------------------------------------------- Python API


def test_output_grid_is_the_isotropic_geometry(scan, trained_plane):
  _, data, affine = scan
  out, out_affine = trained_plane
  shape, iso_affine, _ = volume_lib.isotropic_geometry(data.shape, affine, thick_axis=1)
  assert out.shape == shape == (40, 45, 36)
  assert out.dtype == np.float32
  np.testing.assert_allclose(out_affine, iso_affine)
  np.testing.assert_allclose(volume_lib.voxel_spacing(out_affine), [1.0, 1.0, 1.0])


def test_original_samples_keep_their_world_positions(scan, trained_plane):
  _, data, affine = scan
  _, out_affine = trained_plane
  ratio = THICK / 1.0  # old / new spacing along the thick axis
  for k in range(data.shape[1]):
    for i, j in [(0, 0), (39, 35), (17, 5)]:
      np.testing.assert_allclose(out_affine @ [i, k * ratio, j, 1], affine @ [i, k, j, 1],
                                 atol=1e-9)


def test_intensities_are_back_in_the_input_units(scan, trained_plane):
  _, data, affine = scan
  out, _ = trained_plane
  # The training rule: robust percentiles of the acquired samples.
  lo, hi = np.percentile(data, (0.5, 99.5))
  assert data.min() <= lo < hi < data.max()
  span = hi - lo
  assert np.isfinite(out).all()
  assert out.std() > 1e-2 * span
  # The networks' tanh covers [lo, hi]; beyond the window the interpolated input comes
  # back (clipped to the acquired range), so the output spans the scan's whole range.
  iso = volume_lib.resample_thick_axis(volume_lib.Volume(data, affine), 1).data
  beyond = (iso <= lo) | (iso >= hi)
  assert beyond.any()
  np.testing.assert_array_equal(out[beyond], np.clip(iso, data.min(), data.max())[beyond])
  assert out.min() == data.min() and out.max() == data.max()


def test_clip_keeps_the_papers_output_within_the_window(workdir, scan):
  params, config = checkpointing.restore_params(workdir)
  config.eval.outside_window = "clip"
  _, data, affine = scan
  out, _ = inference.super_resolve(data, affine, params, config, SROptions(progress=False))
  lo, hi = np.percentile(data, (0.5, 99.5))
  assert lo - 1e-4 * (hi - lo) <= out.min() and out.max() <= hi + 1e-4 * (hi - lo)


def test_both_planes_run_and_differ_from_the_trained_plane(workdir, scan, trained_plane):
  params, config = checkpointing.restore_params(workdir)
  _, data, affine = scan
  both, both_affine = inference.super_resolve(data, affine, params, config,
                                              SROptions(planes="both", progress=False))
  trained, _ = trained_plane
  assert both.shape == trained.shape
  np.testing.assert_allclose(both_affine, trained_plane[1])
  assert np.isfinite(both).all()
  assert np.abs(both - trained).max() > 1e-3 * (data.max() - data.min())


def test_isotropic_volume_is_rejected(workdir):
  params, config = checkpointing.restore_params(workdir)
  data = phantoms.body_phantom((36, 36, 36))
  with pytest.raises(volume_lib.VolumeError, match="no thick-slice axis"):
    inference.super_resolve(data, np.diag([1.0, 1.0, 1.1, 1.0]), params, config,
                            SROptions(progress=False))


def test_checkpoint_from_another_config_is_named(workdir, tmp_path):
  other = str(tmp_path / "other")
  shutil.copytree(workdir, other)
  with open(os.path.join(other, checkpointing.CONFIG_FILE)) as f:
    saved = json.load(f)
  saved["model"]["features"] = 8
  with open(os.path.join(other, checkpointing.CONFIG_FILE), "w") as f:
    json.dump(saved, f)
  with pytest.raises(checkpointing.CheckpointError,
                     match=r"from another config.*CLADE networks.*features=8.*has shape"):
    inference.load_params(other)


def test_check_params_names_missing_and_extra_networks_and_layers(workdir):
  params, config = checkpointing.restore_params(workdir)
  inference.check_params(params, config)
  config.model.num_blocks = 2
  with pytest.raises(ValueError, match=r"G_X/ResidualBlock_1/\S+ is missing"):
    inference.check_params(params, config)
  config.model.num_blocks = 1
  with pytest.raises(ValueError, match=r"^parameters .* E/Conv_0/bias is not in the model"):
    inference.check_params(params | {"E": params["D_X"]}, config)


# -------------------------------------------------------------------------- CLI


def test_cli_writes_the_api_result_with_the_input_codes(scan, trained_plane, cli_output):
  out, out_affine = trained_plane
  image = nib.load(cli_output)
  assert image.get_data_dtype() == np.float32
  # Two compilations of the same program: bitwise on CPU; on a GPU, TF32 convolutions
  # may pick other algorithms per compilation.
  # The file's float32 sform moves the interpolation positions by ~1e-7 voxels, and the
  # interpolated input reaches the output directly (clade_jax/data/intensity.py).
  rtol = 1e-6 if jax.default_backend() == "cpu" else 1e-4
  span = float(scan[1].max() - scan[1].min())
  np.testing.assert_allclose(np.asarray(image.dataobj), out, rtol=rtol, atol=5e-6 * span)
  assert int(image.header["qform_code"]) == QFORM_CODE
  assert int(image.header["sform_code"]) == SFORM_CODE
  # NIfTI stores the affine in float32 (sform) and as a quaternion (qform).
  np.testing.assert_allclose(image.get_sform(), out_affine, atol=1e-4)
  np.testing.assert_allclose(image.get_qform(), out_affine, atol=1e-4)
  figure = inference.figure_path(cli_output)
  assert figure.endswith("scan_srr_compare.png")
  with open(figure, "rb") as f:
    assert f.read(8) == b"\x89PNG\r\n\x1a\n"


def _bad_inputs(workdir, scan, tmp):
  """(name, argv, expected message) for every kind of bad input."""
  corrupt = tmp / "corrupt.nii.gz"
  corrupt.write_bytes(b"\x1f\x8b not really gzip")
  iso = write_volume(tmp / "iso.nii.gz", phantoms.body_phantom((36, 36, 36)), np.eye(4))
  empty = tmp / "empty"
  empty.mkdir()
  untrained = tmp / "untrained"
  checkpointing.write_config(str(untrained), tiny_config())
  out = str(tmp / "out.nii.gz")
  existing = tmp / "existing.nii.gz"
  existing.write_bytes(b"an earlier result")
  rgb = tmp / "rgb.nii.gz"
  rgb_dtype = np.dtype([("R", "u1"), ("G", "u1"), ("B", "u1")])
  nib.save(nib.Nifti1Image(np.zeros((20, 6, 20), rgb_dtype), np.diag([1.0, 4.0, 1.0, 1.0])),
           str(rgb))
  complex_path = write_volume(tmp / "complex.nii.gz", np.zeros((20, 6, 20)), np.eye(4))
  nib.save(nib.Nifti1Image(np.ones((20, 6, 20), np.complex64), np.diag([1.0, 4.0, 1.0, 1.0])),
           complex_path)
  four_d = tmp / "four_d.nii.gz"
  nib.save(nib.Nifti1Image(np.ones((20, 6, 20, 3), np.float32), np.diag([1.0, 4.0, 1.0, 1.0])),
           str(four_d))
  return [
      ("missing file", [workdir, str(tmp / "nope.nii.gz"), out], "no such file"),
      ("corrupt file", [workdir, str(corrupt), out], "cannot read NIfTI"),
      ("not a workdir", [str(empty), scan[0], out], "not a training workdir"),
      ("no checkpoint", [str(untrained), scan[0], out], "no checkpoint found"),
      ("missing step", [workdir, scan[0], out, "--step", "7"], "no checkpoint at step 7"),
      ("isotropic", [workdir, iso, out], "no thick-slice axis"),
      ("output is input", [workdir, scan[0], scan[0]], "refusing to overwrite the input"),
      ("not NIfTI", [workdir, scan[0], str(tmp / "out.png")], "output must end in"),
      ("stride above patch", [workdir, scan[0], out, "--stride", "40"], "--stride must be"),
      ("existing output", [workdir, scan[0], str(existing)],
       "exists already; pass --overwrite to replace it"),
      ("RGB", [workdir, str(rgb), out], "colour image (NIfTI datatype RGB24)"),
      ("complex", [workdir, complex_path, out], "pass --complex magnitude"),
      ("4D", [workdir, str(four_d), out], "holding 3 volumes; pick one with --volume-index"),
      ("volume index", [workdir, str(four_d), out, "--volume-index", "3"],
       "volume index 3 is out of range"),
  ]


def test_cli_bad_inputs_give_one_line_and_exit_code_1(workdir, scan, tmp_path, capsys):
  before = open(scan[0], "rb").read()
  for name, (wd, inp, out, *rest), message in _bad_inputs(workdir, scan, tmp_path):
    code = infer.main(["--workdir", wd, "--input", inp, "--output", out, "--no-progress",
                       *rest])
    captured = capsys.readouterr()
    assert code == 1, name
    assert captured.out == "", name
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), (name, captured.err)
    assert message in lines[0], (name, lines[0])
    assert not os.path.exists(tmp_path / "out.nii.gz"), name
  assert open(scan[0], "rb").read() == before
  assert (tmp_path / "existing.nii.gz").read_bytes() == b"an earlier result"


def test_cli_overwrite_replaces_an_existing_output_and_records_provenance(
    workdir, scan, cli_output, tmp_path):
  output = tmp_path / "again.nii.gz"
  output.write_bytes(b"an earlier result")
  assert infer.main(["--workdir", workdir, "--input", scan[0], "--output", str(output),
                     "--no-progress", "--no-figure", "--overwrite"]) == 0
  image = nib.load(str(output))
  np.testing.assert_allclose(np.asarray(image.dataobj), np.asarray(nib.load(cli_output).dataobj),
                             rtol=1e-6 if jax.default_backend() == "cpu" else 1e-4)
  assert image.header["descrip"].tobytes().decode().startswith("clade-jax ")
  assert image.header["descrip"].tobytes().decode().rstrip("\x00").endswith("clade step 3")
  with open(inference.provenance_path(str(output))) as f:
    info = json.load(f)
  assert info["config"]["method"] == "clade" and info["inference"]["step"] == 3
  assert info["inference"]["input"] == os.path.abspath(scan[0])
  ranges = info["inference"]["intensity"]
  _, data, _ = scan
  lo, hi = np.percentile(data, (0.5, 99.5))
  np.testing.assert_allclose(ranges["input_range"], [data.min(), data.max()])
  np.testing.assert_allclose(ranges["window"], [lo, hi], rtol=1e-6)
  assert ranges["below_window"] == pytest.approx(np.mean(data < lo))
  assert ranges["above_window"] == pytest.approx(np.mean(data > hi))
  written = np.asarray(image.dataobj)
  np.testing.assert_allclose(ranges["output_range"], [written.min(), written.max()])
  assert (ranges["normalization"], ranges["outside_window"]) == ("percentile", "restore")


def test_cli_prints_the_intensity_ranges(workdir, scan, tmp_path, capsys):
  output = str(tmp_path / "clipped.nii.gz")
  assert infer.main(["--workdir", workdir, "--input", scan[0], "--output", output,
                     "--no-progress", "--no-figure", "--outside-window", "clip"]) == 0
  printed = capsys.readouterr().out
  line = next(l for l in printed.splitlines() if l.startswith("intensities:"))
  _, data, _ = scan
  lo, hi = np.percentile(data, (0.5, 99.5))
  written = np.asarray(nib.load(output).dataobj)
  assert f"input {data.min():.6g}..{data.max():.6g}" in line
  assert f"output {written.min():.6g}..{written.max():.6g}" in line
  assert f"window {lo:.6g}..{hi:.6g} (percentile)" in line
  assert f"{100 * np.mean(data > hi):.2f}% above (clipped to the window)" in line
  assert written.max() <= hi + 1e-4 * (hi - lo)


def test_data_consistency_makes_the_output_reproduce_the_acquired_slices(workdir, scan):
  from clade_jax.data import consistency  # pylint: disable=g-import-not-at-top
  params, config = checkpointing.restore_params(workdir)
  _, data, affine = scan
  options = SROptions(progress=False)
  plain, out_affine = inference.super_resolve(data, affine, params, config, options)
  consistent, _ = inference.super_resolve(data, affine, params, config, options,
                                          data_consistency=True)
  acquisition = consistency.for_grid(data.shape, affine, plain.shape, out_affine, 1)
  span = float(np.percentile(data, 99.5) - np.percentile(data, 0.5))
  before = consistency.residual(plain, data, acquisition)["rms"]
  assert before > 1e-2 * span
  # Exact where the acquired range does not bind; the background here is the scan's
  # minimum, and a slice at the minimum whose Gaussian tails reach tissue cannot be
  # matched in range (`consistency.project_within`): 0.65 % of the range is left.
  after = np.einsum("sk,ikj->isj", acquisition.matrix, consistent) - data
  assert np.sqrt(np.mean(after ** 2)) < min(1e-2 * span, 0.1 * before)
  assert consistent.min() >= data.min() and consistent.max() <= data.max()


def test_data_consistency_keeps_a_zero_background_scan_within_its_range(workdir):
  """Sharp edges on a zero background (magnitude MRI): with the projection on, no voxel
  leaves the acquired range, and the slices are still reproduced closely."""
  from clade_jax.data import consistency  # pylint: disable=g-import-not-at-top
  params, config = checkpointing.restore_params(workdir)
  data = (1000.0 * np.clip(phantoms.body_phantom((40, 12, 36), seed=3), 0.0, None)
          ).astype(np.float32)
  affine = oblique_affine([1.0, THICK, 1.0])
  output, out_affine = inference.super_resolve(data, affine, params, config,
                                               SROptions(progress=False),
                                               data_consistency=True)
  assert output.min() >= data.min() == 0.0 and output.max() <= data.max()
  acquisition = consistency.for_grid(data.shape, affine, output.shape, out_affine, 1)
  # Random weights start ~10 % (rms) of the range away from the slices; see above.
  assert consistency.residual(output, data, acquisition)["rms_relative"] < 1e-2


def test_a_config_asking_for_an_estimate_gets_one_from_the_input(workdir, scan):
  """Inference with a config that still says data.slice_profile='estimate' (a run that
  was not trained through train_and_evaluate) estimates from the input and says so."""
  config = checkpointing.load_config(workdir)  # a fresh copy: the module's is shared
  path, data, affine = scan
  source = volume_lib.Volume(data, affine, path=path)
  config.data.slice_profile = "estimate"
  profile, thickness, origin = inference.slice_profile_of(source, config.data)
  assert profile in ("gaussian", "rect") and 1.0 <= thickness <= 8.0
  assert origin["spacing_mm"] == pytest.approx(THICK) and origin["profile"] == profile


def _infer(*args):
  return subprocess.run([sys.executable, os.path.join(REPO, "infer.py"), *args],
                        capture_output=True, text=True, cwd=REPO, timeout=120)


def test_cli_flags_reach_the_method_as_one_resolved_options_object(
    workdir, scan, tmp_path, monkeypatch):
  seen = []

  def recording(params, config, prepared, options):
    seen.append(options)  # What the method gets; a zero volume skips the network.
    return np.zeros(prepared.isotropic.shape, np.float32)

  monkeypatch.setattr(clade, "super_resolve", recording)
  output = str(tmp_path / "flags.nii.gz")
  assert infer.main(["--workdir", workdir, "--input", scan[0], "--output", output,
                     "--no-progress", "--no-figure", "--stride", "6", "--batch-size", "5",
                     "--blend", "taper", "--planes", "both"]) == 0
  assert seen == [SROptions(stride=6, mode="patch", blend="taper", batch_size=5,
                            planes="both", progress=False)]
  with open(inference.provenance_path(output)) as f:
    recorded = json.load(f)["inference"]["options"]
  assert (recorded["stride"], recorded["blend"], recorded["mode"]) == (6, "taper", "patch")
  # From Python the same object; the fields left None take the run's config.eval, and
  # the result carries the options resolved.
  result = inference.run(workdir, scan[0], output,
                         options=SROptions(stride=4, blend="taper", progress=False),
                         overwrite=True, figure=False)
  assert seen[-1] == SROptions(stride=4, mode="patch", blend="taper", batch_size=64,
                               planes="trained", progress=False)
  assert result.options == seen[-1]


def test_a_bad_option_is_named_by_its_flag_or_its_config_field(workdir, scan, tmp_path):
  output = str(tmp_path / "never.nii.gz")
  with pytest.raises(inference.UsageError, match=r"^--stride must be in \[1, 32\]"):
    inference.run(workdir, scan[0], output, options=SROptions(stride=40))
  edited = tmp_path / "edited"
  shutil.copytree(workdir, edited)
  with open(edited / "config.json") as f:
    config = json.load(f)
  config["eval"]["blend"] = "median"  # A hand-edited config.json.
  (edited / "config.json").write_text(json.dumps(config))
  with pytest.raises(inference.UsageError, match="^eval.blend must be one of flat, taper"):
    inference.run(str(edited), scan[0], output)
  assert not os.path.exists(output)


def test_cli_help_answers_without_loading_jax():
  proc = _infer("--help")
  assert proc.returncode == 0
  for flag in ("--workdir", "--stride", "--batch-size", "--mode", "--blend", "--planes",
               "--step", "--no-figure"):
    assert flag in proc.stdout


def test_cli_subprocess_error_has_no_traceback(workdir, scan):
  proc = _infer("--workdir", workdir, "--input", scan[0], "--output", scan[0])
  assert proc.returncode == 1
  assert proc.stderr.strip().splitlines() == [
      f"error: {scan[0]}: refusing to overwrite the input volume; choose another --output"]
