"""Provenance: what produced a workdir or an output, recorded beside it.

`collect` gathers the resolved config, seed, package versions, the git commit of the
code that ran (flagged dirty when it had uncommitted changes), the command line, the
devices, host and time. `write` stores it as JSON (atomically) in a workdir or next to
an output; `descrip` condenses it to the 80-byte ``descrip`` field of a NIfTI header,
so a volume found on its own still says which code made it.
"""

from __future__ import annotations

import datetime
import importlib.metadata
import json
import os
import socket
import subprocess
import sys
from typing import Any, Sequence

import clade_jax
from clade_jax import atomic

# Distributions whose versions decide the numbers a run produces.
PACKAGES = ("clade-jax", "jax", "jaxlib", "flax", "optax", "orbax-checkpoint", "grain",
            "nibabel", "numpy", "scipy", "ml_collections")

# NIfTI-1 ``descrip`` is char[80]; keep one byte for the terminating NUL that C
# readers expect.
DESCRIP_BYTES = 79

_GIT_TIMEOUT_S = 5.0


def package_versions(names: Sequence[str] = PACKAGES) -> dict[str, str | None]:
  """Installed version of each distribution; None for one that is not installed."""
  versions = {}
  for name in names:
    try:
      versions[name] = importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
      versions[name] = None
  return versions


def _git(directory: str, *args: str) -> str | None:
  try:
    result = subprocess.run(["git", *args], cwd=directory, capture_output=True, text=True,
                            timeout=_GIT_TIMEOUT_S, check=False)
  except (OSError, subprocess.SubprocessError):
    return None  # No git, or it hung (a network filesystem): provenance is best effort.
  return result.stdout.strip() if result.returncode == 0 else None


def git_state(directory: str | os.PathLike | None = None) -> dict[str, Any]:
  """The commit of the source tree `directory` belongs to, and whether it was modified.

  Args:
    directory: a directory of tracked source files; default this package's.

  Returns:
    {"commit": full hash or None, "dirty": bool or None}. Both are None when the
    directory is not tracked by git (an installed package, even one inside some
    other repository, e.g. a virtual environment in a checkout).
  """
  directory = os.fspath(directory or os.path.dirname(os.path.abspath(__file__)))
  unknown = {"commit": None, "dirty": None}
  # `git ls-files` is empty for an untracked directory, which rev-parse alone would
  # not notice when an enclosing repository exists.
  if not _git(directory, "ls-files", "--", "."):
    return unknown
  commit = _git(directory, "rev-parse", "HEAD")
  if commit is None:
    return unknown
  status = _git(directory, "status", "--porcelain", "--untracked-files=no")
  return {"commit": commit, "dirty": None if status is None else bool(status)}


def _jsonable(value: Any) -> Any:
  """Tuples to lists and unknown leaves to their repr, so json.dumps never fails."""
  if isinstance(value, dict):
    return {str(k): _jsonable(v) for k, v in value.items()}
  if isinstance(value, (list, tuple)):
    return [_jsonable(v) for v in value]
  if value is None or isinstance(value, (bool, int, float, str)):
    return value
  return repr(value)


def _devices() -> tuple[list[str] | None, str | None]:
  try:
    import jax  # Imported here: a backend starts on first use, only when asked.
    return [str(d) for d in jax.devices()], jax.default_backend()
  except Exception as e:  # Any backend failure: record it rather than fail the run.
    return [f"unavailable ({type(e).__name__}: {e})"], None


def collect(config: Any = None, argv: Sequence[str] | None = None) -> dict[str, Any]:
  """Everything needed to tell what produced a result.

  Args:
    config: the resolved config (an ml_collections ConfigDict or a dict), or None.
    argv: the command line; default ``sys.argv``.

  Returns:
    A JSON-serialisable dict: version (of the clade_jax code that ran, which can
    differ from the installed distribution's under an editable install or PYTHONPATH),
    config, seed, packages, git (commit, dirty), command_line, devices, platform,
    python, hostname, time_utc.
  """
  if config is not None and hasattr(config, "to_dict"):
    config = config.to_dict()
  config = _jsonable(config) if config is not None else None
  devices, platform = _devices()
  return {
      "version": clade_jax.__version__,
      "config": config,
      "seed": config.get("seed") if isinstance(config, dict) else None,
      "packages": package_versions(),
      "git": git_state(),
      "command_line": list(sys.argv if argv is None else argv),
      "devices": devices,
      "platform": platform,
      "python": sys.version.split()[0],
      "hostname": socket.gethostname(),
      "time_utc": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
  }


def write(path: str | os.PathLike, info: dict[str, Any]) -> None:
  """Writes `info` as indented JSON, atomically (never a half-written file)."""
  atomic.write_text(path, json.dumps(_jsonable(info), indent=2) + "\n")


def descrip(info: dict[str, Any], detail: str = "") -> str:
  """A NIfTI ``descrip``: package version, short commit and `detail`, at most 79 bytes.

  Args:
    info: a dict from `collect`.
    detail: what made the file, e.g. "clade step 300".

  Returns:
    ASCII text like "clade-jax 0.1.0 abc1234 clade step 300"; the commit gets a '+'
    when the tree was dirty and reads "nogit" when unknown. Cut to `DESCRIP_BYTES`.
  """
  version = info.get("version") or "unknown"
  git = info.get("git") or {}
  commit = (git.get("commit") or "nogit")[:7] + ("+" if git.get("dirty") else "")
  text = " ".join(part for part in ("clade-jax", version, commit, detail) if part)
  return text.encode("ascii", errors="replace").decode("ascii")[:DESCRIP_BYTES]
