"""Provenance: config, versions, git state, command line, devices; JSON and descrip."""

import datetime
import importlib
import importlib.metadata
import json
import subprocess

import jax
import numpy as np
import pytest

import clade_jax
from clade_jax import provenance
from clade_jax.data import volume as volume_lib


def _git(directory, *args):
  return subprocess.run(["git", "-c", "user.name=t", "-c", "user.email=t@t", *args],
                        cwd=directory, check=True, capture_output=True, text=True).stdout.strip()


def test_collect_records_config_seed_command_line_devices_and_time():
  config = importlib.import_module("configs.mri").get_config()
  config.seed = 17
  argv = ["train.py", "--config=configs/mri.py", "--config.seed=17"]
  before = datetime.datetime.now(datetime.timezone.utc).replace(microsecond=0)
  info = provenance.collect(config, argv=argv)
  assert info["config"]["train"]["batch_size"] == config.train.batch_size
  assert info["config"]["data"]["percentiles"] == [0.5, 99.5]  # Tuples become JSON lists.
  assert info["seed"] == 17
  assert info["command_line"] == argv
  assert info["devices"] == [str(d) for d in jax.devices()]
  assert info["platform"] == jax.default_backend()
  assert info["version"] == clade_jax.__version__
  stamp = datetime.datetime.fromisoformat(info["time_utc"])
  assert stamp.utcoffset() == datetime.timedelta(0) and stamp >= before
  json.dumps(info)  # Serialisable as it is.
  assert provenance.collect()["config"] is None and provenance.collect()["seed"] is None


def test_package_versions_come_from_the_installed_metadata_and_missing_ones_are_null():
  versions = provenance.package_versions(["numpy", "nibabel", "surely-not-installed-xyz"])
  assert versions == {"numpy": importlib.metadata.version("numpy"),
                      "nibabel": importlib.metadata.version("nibabel"),
                      "surely-not-installed-xyz": None}
  assert versions["numpy"] == np.__version__
  assert set(provenance.PACKAGES) <= set(provenance.collect()["packages"])


def test_git_state_reports_the_commit_and_dirtiness_of_a_tracked_tree(tmp_path):
  repo = tmp_path / "repo"
  (repo / "pkg").mkdir(parents=True)
  _git(repo, "init", "-q")
  (repo / "pkg" / "mod.py").write_text("x = 1\n")
  _git(repo, "add", ".")
  _git(repo, "commit", "-qm", "first")
  head = _git(repo, "rev-parse", "HEAD")
  assert provenance.git_state(repo / "pkg") == {"commit": head, "dirty": False}
  (repo / "pkg" / "mod.py").write_text("x = 2\n")
  assert provenance.git_state(repo / "pkg") == {"commit": head, "dirty": True}
  # An untracked directory inside the repository (an installed copy in a venv) and a
  # directory outside any repository have no known commit.
  (repo / "venv" / "site-packages").mkdir(parents=True)
  assert provenance.git_state(repo / "venv" / "site-packages") == {"commit": None,
                                                                  "dirty": None}
  (tmp_path / "plain").mkdir()
  assert provenance.git_state(tmp_path / "plain") == {"commit": None, "dirty": None}


def test_write_is_json_that_reads_back_and_leaves_no_temporary_file(tmp_path):
  info = provenance.collect({"seed": 3, "data": {"percentiles": (1.0, 99.0)}}, argv=["x"])
  path = tmp_path / "run" / "provenance.json"
  provenance.write(path, info)
  assert json.loads(path.read_text()) == info
  assert [p.name for p in path.parent.iterdir()] == ["provenance.json"]


def test_descrip_is_short_ascii_with_version_commit_and_detail():
  info = {"version": "0.1.0", "git": {"commit": "abc1234def5678", "dirty": False}}
  assert provenance.descrip(info, "clade step 300") == "clade-jax 0.1.0 abc1234 clade step 300"
  dirty = {"version": "0.1.0", "git": {"commit": "abc1234def5678", "dirty": True}}
  assert provenance.descrip(dirty) == "clade-jax 0.1.0 abc1234+"
  assert provenance.descrip({"git": {"commit": None}}) == "clade-jax unknown nogit"
  long = provenance.descrip(info, "step 300 of run " + "\u00e9" * 200)
  assert len(long.encode("ascii")) == provenance.DESCRIP_BYTES
  assert long.startswith("clade-jax 0.1.0 abc1234 step 300 of run ??")


def test_descrip_of_a_real_collect_goes_into_a_nifti_header(tmp_path):
  text = provenance.descrip(provenance.collect(), "clade step 300")
  assert text.startswith(f"clade-jax {clade_jax.__version__} ")
  out = tmp_path / "sr.nii.gz"
  volume_lib.save_volume(out, np.zeros((4, 5, 6), np.float32), np.eye(4), descrip=text)
  header = volume_lib.load_volume(out).header
  assert header["descrip"].item().decode("ascii") == text
  with pytest.raises(ValueError, match="80|79"):
    volume_lib.save_volume(out, np.zeros((4, 5, 6), np.float32), np.eye(4), descrip="x" * 80)
