"""A persistent JAX compilation cache, so a re-run or resume does not compile again.

The paper-sized train step takes over a minute to compile on a CPU; with the cache a
second run of the same config loads the compiled programs from disk instead
(benchmarks/RESULTS.md has the measured start-up times). The command lines turn it on;
library users keep whatever their program set.
"""

from __future__ import annotations

import os

import jax

ENV = "JAX_COMPILATION_CACHE_DIR"  # JAX's own variable: set, it wins.


def default_directory() -> str:
  """``$XDG_CACHE_HOME/clade_jax/jax`` (``~/.cache/clade_jax/jax``)."""
  base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
  return os.path.join(base, "clade_jax", "jax")


def enable(directory: str | None = None) -> str | None:
  """Turns the cache on in `directory`, `$JAX_COMPILATION_CACHE_DIR` or the default.

  Args:
    directory: where compiled programs go; "" or "none" turns the cache off.

  Returns:
    The directory in use, or None when off or when it cannot be created (a read-only
    home, say): compiling again is slower, never wrong.
  """
  directory = directory if directory is not None else (os.environ.get(ENV)
                                                       or default_directory())
  if directory.lower() in ("", "none"):
    return None
  try:
    os.makedirs(directory, exist_ok=True)
  except OSError:
    return None
  jax.config.update("jax_compilation_cache_dir", directory)
  # Programs that compile in under a second are not worth a disk round trip.
  jax.config.update("jax_persistent_cache_min_compile_time_secs", 1.0)
  return directory
