"""`clade-jax sr`: inputs, the slice profile's choice, cohorts that survive a kill and a
broken scan, BIDS derivatives, shards, a shared model, and an installed command."""

import csv
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time

import nibabel as nib
import numpy as np
import pytest

from clade_jax import cli, cohort, scans
from clade_jax.cli import train as train_cli
from clade_jax.data import volume as volume_lib
from tests import phantoms

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# A few steps of a tiny network: the pipeline, not the quality, is under test.
TINY = ["data.patch_size=16", "eval.stride=8", "model.features=4", "model.num_blocks=1",
        "train.batch_size=4", "train.num_steps=4", "train.warmup_steps=1",
        "train.sample_every=2", "ckpt.every=2", "data.num_threads=1"]


def tiny(*extra):
  return [arg for item in (*TINY, *extra) for arg in ("--set", item)]


def read_summary(path):
  with open(path, newline="") as f:
    return {row["name"]: row for row in csv.DictReader(f)}


def env():
  # The subprocesses share the tests' compilation cache and fake devices (conftest).
  return {**os.environ, "PYTHONPATH": REPO + os.pathsep + os.environ.get("PYTHONPATH", "")}


# ----------------------------------------------------------------------------- units


def test_help_lists_the_commands_and_sr_help_shows_budgets_and_options(capsys):
  assert cli.main(["--help"]) == 0
  text = capsys.readouterr().out
  for command in ("sr", "train", "infer", "evaluate"):
    assert re.search(rf"^  {command}\s", text, re.M), command
  with pytest.raises(SystemExit) as exit_:
    cli.main(["sr", "--help"])
  assert exit_.value.code == 0
  text = capsys.readouterr().out
  for option in ("--method", "--budget", "--slice-thickness", "--slice-profile", "--device",
                 "--shard", "--shared-model", "RESULTS.md"):
    assert option in text, option
  assert cli.main(["bogus"]) == 2


def test_config_paths_resolve_to_the_installed_configs_from_any_folder(tmp_path, monkeypatch):
  monkeypatch.chdir(tmp_path)
  installed = os.path.join(REPO, "clade_jax", "configs", "smore.py")
  for spec in ("configs/smore.py", "smore", "smore.py"):
    assert train_cli.packaged_config(spec + ":cpu") == installed + ":cpu"
  own = tmp_path / "configs" / "smore.py"  # A user's own file wins.
  own.parent.mkdir()
  own.write_text("")
  assert train_cli.packaged_config("configs/smore.py") == "configs/smore.py"
  assert train_cli.packaged_config("elsewhere/x.py") == "elsewhere/x.py"


def test_inputs_files_folders_globs_and_collisions(tmp_path):
  for name in ("b.nii.gz", "a.nii", "notes.txt"):
    (tmp_path / name).write_bytes(b"")
  (tmp_path / "sub").mkdir()
  (tmp_path / "sub" / "a.nii.gz").write_bytes(b"")
  out = str(tmp_path / "out")
  found = scans.find([str(tmp_path)], out)
  assert [s.name for s in found] == ["a", "b"]
  assert found[0].output == os.path.join(out, "a_sr.nii.gz")
  assert [s.name for s in scans.find([str(tmp_path / "*.nii*")], out)] == ["a", "b"]
  with pytest.raises(scans.InputError, match="two scans are both named 'a'"):
    scans.find([str(tmp_path), str(tmp_path / "sub" / "a.nii.gz")], out)
  with pytest.raises(scans.InputError, match="no such file"):
    scans.find([str(tmp_path / "missing.nii.gz")], out)
  with pytest.raises(scans.InputError, match="not a NIfTI"):
    scans.find([str(tmp_path / "notes.txt")], out)
  (tmp_path / "empty").mkdir()
  with pytest.raises(scans.InputError, match="no NIfTI files"):
    scans.find([str(tmp_path / "empty")], out)


def test_shards_partition_the_scans():
  cohort_scans = [scans.Scan(f"s{i:02d}", f"s{i}.nii", "nifti", f"o{i}") for i in range(7)]
  shards = [scans.shard(cohort_scans[::-1], i, 3) for i in range(3)]
  names = sorted(s.name for shard in shards for s in shard)
  assert names == sorted(s.name for s in cohort_scans)  # Every scan once.
  assert [len(s) for s in shards] == [3, 2, 2]


def test_profile_comes_from_the_command_line_then_metadata_then_the_default():
  from clade_jax.data import acquisition
  meta = acquisition.SliceMetadata(thickness_mm=3.0, spacing_mm=4.0,
                                   thickness_source="scan.json: SliceThickness")
  default = cohort.choose_profile(cohort.Options(), None)
  assert (default.shape, default.thickness_mm) == (cohort.UNKNOWN_PROFILE, None)
  assert "no slice metadata" in default.source
  from_meta = cohort.choose_profile(cohort.Options(), meta)
  assert (from_meta.shape, from_meta.thickness_mm, from_meta.spacing_mm) == ("rect", 3.0, 4.0)
  assert "scan.json" in from_meta.source
  told = cohort.choose_profile(cohort.Options(slice_thickness=2.5, slice_profile="gaussian"),
                               meta)
  assert (told.shape, told.thickness_mm) == ("gaussian", 2.5)
  assert "--slice-thickness" in told.source and "--slice-profile" in told.source
  # ... and reach the config every consumer reads.
  config = cohort.make_config(cohort.Options(), "x.nii.gz", from_meta)
  assert (config.data.slice_profile, config.data.slice_thickness) == ("rect", 3.0)
  assert config.data.root == "x.nii.gz" and not config.data.make_demo


def test_set_overrides_are_typed_and_unknown_fields_named():
  config = cohort.base_config("smore", "standard")
  cohort.apply_overrides(config, [("train.num_steps", "7"), ("data.augment", "false"),
                                  ("train.learning_rate", "1"), ("data.slice_profile", "rect")])
  assert config.train.num_steps == 7 and config.data.augment is False
  assert config.train.learning_rate == 1.0 and isinstance(config.train.learning_rate, float)
  with pytest.raises(cohort.SetupError, match="train.batch_size"):
    cohort.apply_overrides(config, [("train.batchsize", "3")])
  with pytest.raises(cohort.SetupError, match="expected a int"):
    cohort.apply_overrides(config, [("train.num_steps", "'many'")])
  with pytest.raises(cohort.SetupError, match="eval.stride"):
    cohort.check(cohort.Options(overrides=(("eval.stride", "999"),)))


# ----------------------------------------------------------------------------- end to end


def test_sr_writes_an_aligned_output_with_the_profile_from_the_json_sidecar(tmp_path):
  scan = phantoms.thick_slice_volume(tmp_path / "scan.nii.gz", seed=3)
  (tmp_path / "scan.json").write_text(json.dumps({"SliceThickness": 3.0,
                                                  "SpacingBetweenSlices": 4.0}))
  out = tmp_path / "out"
  assert cli.main(["sr", str(scan), "--out", str(out), "--no-progress", *tiny()]) == 0
  output = out / "scan_sr.nii.gz"
  image, source = nib.load(output), nib.load(scan)
  # On top of the input: the same world position for the first voxel and the acquired
  # axes, the thick axis resampled to the in-plane spacing, the codes kept.
  grid = volume_lib.isotropic_geometry(source.shape, source.affine, thick_axis=2)
  np.testing.assert_allclose(image.affine, grid[1], atol=1e-5)
  assert image.shape == tuple(grid[0])
  assert int(image.header["sform_code"]) == int(source.header["sform_code"])
  assert int(image.header["qform_code"]) == (int(source.header["qform_code"]) or 1)
  np.testing.assert_allclose(image.get_qform(), grid[1], atol=1e-4)
  sidecar = json.loads((out / "scan_sr.json").read_text())
  profile = sidecar["inference"]["slice_profile"]
  assert (profile["profile"], profile["thickness_mm"]) == ("rect", 3.0)
  assert "scan.json" in profile["chosen_by"]
  assert sidecar["config"]["data"]["slice_thickness"] == 3.0
  assert (out / "scan_sr_compare.png").stat().st_size > 1000
  row = read_summary(out / "summary.csv")["scan"]
  assert row["status"] == "done" and float(row["seconds"]) > 0
  # The scan's QC page, linked from the cohort's index.
  assert (out / "scan_sr_report.html").exists()
  assert 'href="scan_sr_report.html"' in (out / "report.html").read_text()


def test_a_killed_cohort_resumes_skips_finished_scans_and_lists_the_broken_one(tmp_path):
  data = tmp_path / "data"
  data.mkdir()
  for i, name in enumerate(("a", "b", "c")):
    phantoms.thick_slice_volume(data / f"{name}.nii.gz", seed=i)
  (data / "broken.nii.gz").write_bytes(b"\x1f\x8b not really gzip")
  out = tmp_path / "out"
  # Scan b trains 40 steps with a checkpoint every 2: long enough to kill it mid-way.
  command = [sys.executable, "-m", "clade_jax.cli", "sr", str(data), "--out", str(out),
             *tiny("train.num_steps=40")]
  first = subprocess.Popen(command, env=env(), stdout=subprocess.PIPE,
                           stderr=subprocess.STDOUT)
  work = out / cohort.WORK_FOLDER
  deadline = time.time() + 300
  while time.time() < deadline:
    if list(work.glob("b/*/run/checkpoints/4")):
      break
    assert first.poll() is None, first.communicate()[0].decode()[-3000:]
    time.sleep(0.2)
  else:
    pytest.fail("scan b never reached its checkpoint at step 4")
  os.kill(first.pid, signal.SIGKILL)
  first.wait()
  done_a = (out / "a_sr.nii.gz").stat().st_mtime_ns
  assert not (out / "b_sr.nii.gz").exists()
  summary = read_summary(out / "summary.csv")  # Written after every scan: a's is done.
  assert summary["a"]["status"] == "done" and summary["b"]["status"] == "pending"

  again = subprocess.run(command, env=env(), capture_output=True, text=True, timeout=600)
  assert again.returncode == 1, again.stderr[-3000:]  # One scan failed.
  summary = read_summary(out / "summary.csv")
  assert summary["a"]["status"] == "skipped"
  assert (out / "a_sr.nii.gz").stat().st_mtime_ns == done_a  # Not redone.
  assert summary["b"]["status"] == "done" and summary["c"]["status"] == "done"
  assert summary["broken"]["status"] == "failed"
  assert "broken.nii.gz" in summary["broken"]["reason"]
  assert "\n" not in summary["broken"]["reason"]
  # b resumed from its checkpoint: its bar started past step 0.
  starts = [int(m) for m in re.findall(r"training SMORE:\s+\d+%\|[^|]*\|\s+(\d+)/40",
                                       again.stderr)]
  assert starts and starts[0] >= 4, again.stderr[-2000:]
  index = (out / "report.html").read_text()
  for name in ("a", "b", "c"):
    assert nib.load(out / f"{name}_sr.nii.gz").shape[2] > 10
    assert f'href="{name}_sr_report.html"' in index


def _bids_dataset(root):
  root.mkdir()
  (root / "dataset_description.json").write_text(
      json.dumps({"Name": "tiny", "BIDSVersion": "1.9.0"}))
  paths = [root / "sub-01" / "anat" / "sub-01_T1w.nii.gz",
           root / "sub-02" / "ses-1" / "anat" / "sub-02_ses-1_run-1_T2w.nii.gz"]
  for i, path in enumerate(paths):
    path.parent.mkdir(parents=True)
    phantoms.thick_slice_volume(path, seed=i)
  (root / "sub-01" / "anat" / "sub-01_T1w.json").write_text(json.dumps({"SliceThickness": 4.0}))
  func = root / "sub-01" / "func"
  func.mkdir()
  shutil.copy(paths[0], func / "sub-01_task-rest_bold.nii.gz")  # Not anatomical: left alone.
  return root


def test_bids_dataset_gives_derivatives_that_pybids_indexes(tmp_path):
  import bids
  root = _bids_dataset(tmp_path / "bids")
  assert cli.main(["sr", str(root), "--no-progress", *tiny()]) == 0
  deriv = root / "derivatives" / "clade-jax"
  description = json.loads((deriv / "dataset_description.json").read_text())
  assert description["DatasetType"] == "derivative"
  assert description["GeneratedBy"][0]["Name"] == "clade-jax"
  layout = bids.BIDSLayout(root, derivatives=str(deriv), validate=False)
  found = layout.derivatives["clade-jax"].get(desc="sr", extension=".nii.gz")
  assert sorted((f.entities["subject"], f.entities["suffix"]) for f in found) == [
      ("01", "T1w"), ("02", "T2w")]
  t2 = [f for f in found if f.entities["subject"] == "02"][0]
  assert (t2.entities["session"], t2.entities["run"]) == ("1", 1)
  assert os.path.basename(t2.path) == "sub-02_ses-1_run-1_desc-sr_T2w.nii.gz"
  sidecar = json.loads((deriv / "sub-01" / "anat" / "sub-01_desc-sr_T1w.json").read_text())
  assert sidecar["inference"]["slice_profile"]["thickness_mm"] == 4.0
  assert "sub-01_T1w.json" in sidecar["inference"]["slice_profile"]["chosen_by"]
  assert len(read_summary(deriv / "summary.csv")) == 2  # The bold run is not anatomical.


def test_shared_model_trains_once_and_shards_write_their_own_summary(tmp_path):
  data = tmp_path / "data"
  data.mkdir()
  for i, name in enumerate(("a", "b")):
    phantoms.thick_slice_volume(data / f"{name}.nii.gz", seed=i)
  out = tmp_path / "out"
  assert cli.main(["sr", str(data), "--out", str(out), "--shared-model", "--no-progress",
                   *tiny()]) == 0
  runs = list((out / cohort.WORK_FOLDER / "shared-model").glob("*/run/config.json"))
  assert len(runs) == 1
  config = json.loads(runs[0].read_text())
  assert os.path.isdir(config["data"]["root"])  # Both scans, one model.
  assert sorted(os.listdir(config["data"]["root"])) == ["a.nii.gz", "b.nii.gz"]
  for name in ("a", "b"):
    sidecar = json.loads((out / f"{name}_sr.json").read_text())
    assert sidecar["inference"]["shared_model"]
  assert cli.main(["sr", str(data), "--out", str(out), "--shard", "1/2", "--no-progress",
                   *tiny()]) == 0
  assert list(read_summary(out / "summary-shard-1-of-2.csv")) == ["b"]


def test_pip_install_gives_a_clade_jax_command_that_works_from_any_folder(tmp_path):
  """`pip install .` (not editable): the console script, the configs, from another folder."""
  target = tmp_path / "site"
  build = subprocess.run(
      [sys.executable, "-m", "pip", "install", "--no-deps", "-q",
       "--target", str(target), REPO], capture_output=True, text=True, timeout=600)
  assert build.returncode == 0, build.stderr[-3000:]
  assert (target / "clade_jax" / "configs" / "smore.py").exists()
  script = target / "bin" / "clade-jax"
  assert script.exists()
  elsewhere = tmp_path / "elsewhere"
  elsewhere.mkdir()
  scan = phantoms.thick_slice_volume(elsewhere / "scan.nii.gz", seed=5)
  before = open(scan, "rb").read()
  run_env = {**os.environ, "PYTHONPATH": str(target)}
  done = subprocess.run([sys.executable, str(script), "sr", "scan.nii.gz", "--out", "out/",
                         "--no-progress", *tiny()], cwd=elsewhere, env=run_env,
                        capture_output=True, text=True, timeout=600)
  assert done.returncode == 0, done.stderr[-3000:]
  assert (elsewhere / "out" / "scan_sr.nii.gz").exists()
  sidecar = json.loads((elsewhere / "out" / "scan_sr.json").read_text())
  assert sidecar["inference"]["method"] == "smore"
  # The research programs too, with a config named as in a clone.
  helped = subprocess.run([sys.executable, str(script), "train", "--config=configs/smore.py",
                           "--workdir=w", "--config.train.num_steps=-1"], cwd=elsewhere,
                          env=run_env, capture_output=True, text=True, timeout=300)
  assert helped.returncode != 0 and "train.num_steps" in helped.stderr
  assert open(scan, "rb").read() == before  # Never the input.


def test_a_missing_gpu_is_one_line(tmp_path):
  if shutil.which("nvidia-smi"):
    pytest.skip("this machine has a GPU (nvidia-smi is on PATH)")
  scan = phantoms.thick_slice_volume(tmp_path / "scan.nii.gz")
  done = subprocess.run([sys.executable, "-m", "clade_jax.cli", "sr", scan, "--out",
                         str(tmp_path / "out"), "--device", "gpu"], env=env(),
                        capture_output=True, text=True, timeout=120)
  assert done.returncode == 2
  assert done.stderr.strip().count("\n") == 0 and "--device cpu" in done.stderr


def test_a_dicom_series_is_converted_once_and_its_header_gives_the_profile(tmp_path):
  from clade_jax.data import dicom
  from tests import dicom_series
  body = phantoms.body_phantom((40, 40, 40), seed=2)[:, :, ::4]  # 10 slices, 4 mm apart.
  spec = dicom_series.SeriesSpec(raw=np.round(body * 1000).astype(np.uint16),
                                 row_dir=(1.0, 0.0, 0.0), col_dir=(0.0, 1.0, 0.0),
                                 pixel_spacing=(1.0, 1.0), spacing=4.0, thickness=3.0)
  cohort_dir = tmp_path / "cohort"
  dicom_series.write_series(spec, cohort_dir / "t1_series", np.random.default_rng(0))
  phantoms.thick_slice_volume(cohort_dir / "other.nii.gz", seed=1)
  out = tmp_path / "out"
  found = scans.find([str(cohort_dir)], str(out))
  assert sorted((s.name, s.kind) for s in found) == [("other", "nifti"), ("t1_series", "dicom")]
  assert cli.main(["sr", str(cohort_dir / "t1_series"), "--out", str(out), "--no-progress",
                   *tiny()]) == 0
  sidecar = json.loads((out / "t1_series_sr.json").read_text())
  profile = sidecar["inference"]["slice_profile"]
  assert (profile["profile"], profile["thickness_mm"], profile["spacing_mm"]) == ("rect", 3.0, 4.0)
  assert "SliceThickness" in profile["chosen_by"]
  assert sidecar["inference"]["dicom"]["Modality"] == "MR"
  series = dicom.load_series(str(cohort_dir / "t1_series"))
  shape, affine = volume_lib.isotropic_geometry(series.volume.data.shape, series.volume.affine,
                                                thick_axis=2)[:2]
  image = nib.load(out / "t1_series_sr.nii.gz")
  assert image.shape == tuple(shape)
  np.testing.assert_allclose(image.affine, affine, atol=1e-4)
  converted = out / cohort.WORK_FOLDER / "t1_series" / "input.nii.gz"
  np.testing.assert_array_equal(nib.load(converted).get_fdata(), series.volume.data)
