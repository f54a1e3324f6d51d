"""Atomic writes: the destination appears whole, with the permissions a plain write gives."""

import os
import stat

import pytest

from clade_jax import atomic


def test_write_text_replaces_whole_and_leaves_no_temporary(tmp_path):
  path = tmp_path / "sub" / "report.md"
  atomic.write_text(path, "first")
  atomic.write_text(path, "second")
  assert path.read_text() == "second"
  assert os.listdir(path.parent) == ["report.md"]


def test_a_failed_write_keeps_the_old_file_and_removes_the_temporary(tmp_path):
  path = tmp_path / "volume.nii.gz"
  path.write_text("old")
  with pytest.raises(RuntimeError), atomic.atomic_path(path) as tmp:
    open(tmp, "w").write("half")
    raise RuntimeError("writer died")
  assert path.read_text() == "old" and os.listdir(tmp_path) == ["volume.nii.gz"]


def test_new_files_follow_the_umask_and_existing_ones_keep_their_mode(tmp_path):
  old = os.umask(0o027)
  try:
    atomic.write_text(tmp_path / "new.md", "x")
    open(tmp_path / "plain.md", "w").close()
    plain = stat.S_IMODE(os.stat(tmp_path / "plain.md").st_mode)
    assert stat.S_IMODE(os.stat(tmp_path / "new.md").st_mode) == plain == 0o640
    os.chmod(tmp_path / "new.md", 0o604)
    atomic.write_text(tmp_path / "new.md", "y")
    assert stat.S_IMODE(os.stat(tmp_path / "new.md").st_mode) == 0o604
  finally:
    os.umask(old)
