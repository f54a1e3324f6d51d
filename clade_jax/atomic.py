"""Atomic file writes: nothing half-written is ever left at a destination.

Everything the project writes (volumes, figures, reports, configs) goes to a temporary
file beside its destination and is renamed into place, which is atomic on POSIX.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from typing import Iterator


def _new_file_mode() -> int:
  """What `open(path, "w")` would give a new file: 0o666 less the umask.

  mkstemp creates 0o600 files; renamed into place as they are, outputs would be
  unreadable to the rest of a lab's group.
  """
  umask = os.umask(0)
  os.umask(umask)
  return 0o666 & ~umask


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, suffix: str = "") -> Iterator[str]:
  """Yields a temporary path to write to; renames it onto `path` if the block succeeds.

  Args:
    path: the destination; missing parent directories are created.
    suffix: the temporary file's suffix, for writers that choose a format by name
      (nibabel's '.nii.gz', matplotlib's '.png').
  """
  directory = os.path.dirname(os.path.abspath(path))
  os.makedirs(directory, exist_ok=True)
  fd, tmp = tempfile.mkstemp(dir=directory, prefix=".tmp-", suffix=suffix)
  os.close(fd)
  try:
    yield tmp
    # An existing destination keeps its permissions; a new one gets the umask's.
    os.chmod(tmp, os.stat(path).st_mode & 0o7777 if os.path.exists(path) else _new_file_mode())
    os.replace(tmp, path)
  finally:
    if os.path.exists(tmp):
      os.remove(tmp)


def write_text(path: str | os.PathLike, text: str) -> None:
  with atomic_path(path) as tmp, open(tmp, "w", encoding="utf-8") as f:
    f.write(text)
