"""Atomic file writes: nothing half-written is ever left at a destination.

Everything the project writes (volumes, figures, reports, configs) goes to a temporary
file beside its destination and is renamed into place, which is atomic on POSIX.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from typing import Iterator


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
    os.replace(tmp, path)
  finally:
    if os.path.exists(tmp):
      os.remove(tmp)


def write_text(path: str | os.PathLike, text: str) -> None:
  with atomic_path(path) as tmp, open(tmp, "w", encoding="utf-8") as f:
    f.write(text)
