"""Train a super-resolution method (CLADE, its ablations, GLADE, ...) on anisotropic NIfTI volumes.

    python train.py --config=configs/mri.py --config.data.root=DIR --workdir=runs/mri
    clade-jax train --config=configs/mri.py --config.data.root=DIR --workdir=runs/mri

Any config field can be overridden: --config.train.batch_size=16. Re-running the same
command resumes from the latest checkpoint in --workdir, and loads the compiled train
step from the --jit_cache directory instead of compiling it again.

Several processes (hosts, or one per GPU): start the same command in each with
--multihost (SLURM, Cloud TPU: nothing else), or with --coordinator_address=HOST:PORT
--num_processes=N --process_id=I; docs/scale-out.md has the recipes.
"""

import os
import sys
import time

_STARTED = time.perf_counter()  # The run's start-up (startup_seconds) includes imports.

# pylint: disable=g-import-not-at-top,wrong-import-position
from absl import app
from absl import flags
from absl import logging
from ml_collections import config_flags

from clade_jax import config_validation

_CONFIG = config_flags.DEFINE_config_file("config", None, "Training configuration file.",
                                          lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "Directory for checkpoints, metrics and PNGs.")
_MULTIHOST = flags.DEFINE_bool(
    "multihost", False, "Start JAX's distributed runtime first (one process per host, or "
    "per GPU): the three flags below, else $JAX_COORDINATOR_ADDRESS, $JAX_NUM_PROCESSES and "
    "$JAX_PROCESS_ID, else what JAX detects (SLURM, Open MPI, Cloud TPU).")
_COORDINATOR = flags.DEFINE_string(
    "coordinator_address", None, "host:port of process 0 (implies --multihost).")
_NUM_PROCESSES = flags.DEFINE_integer(
    "num_processes", None, "Number of processes (implies --multihost).")
_PROCESS_ID = flags.DEFINE_integer(
    "process_id", None, "This process's index in [0, num_processes) (implies --multihost).")
_JIT_CACHE = flags.DEFINE_string(
    "jit_cache", None, "Persistent cache of compiled programs (default "
    "$JAX_COMPILATION_CACHE_DIR or ~/.cache/clade_jax/jax; 'none' turns it off).")
flags.mark_flags_as_required(["config", "workdir"])


_started = _STARTED


def main(argv):
  del argv
  logging.set_verbosity(logging.WARNING)  # Orbax logs every file it writes at INFO.

  from clade_jax import checkpointing, compilation_cache, distributed, methods, train
  from clade_jax.data import volume

  try:
    config = _CONFIG.value
    config.get("method")  # config_flags reports a file that failed to load only on use.
  except OSError as e:
    reason = [line.strip() for line in str(e).splitlines() if line.strip()][-1]
    sys.exit(f"error: --config: cannot load the config file ({reason})")
  compilation_cache.enable(_JIT_CACHE.value)
  try:
    distributed.start(_MULTIHOST.value, _COORDINATOR.value, _NUM_PROCESSES.value,
                      _PROCESS_ID.value)
  except distributed.DistributedError as e:
    sys.exit(f"error: {e}")
  try:
    train.train_and_evaluate(config, _WORKDIR.value, started=_started)
  except config_validation.ConfigError as e:
    sys.exit("\n".join(f"error: {problem}" for problem in e.problems))
  except (volume.VolumeError, checkpointing.CheckpointError, train.TrainingDiverged,
          methods.UnknownMethodError) as e:
    sys.exit(f"error: {e}")


def packaged_config(spec: str) -> str:
  """`configs/NAME.py[:ARG]` (or `NAME[:ARG]`) from any folder: the installed config.

  A path that exists is used as it is, so a user's own config file always wins.
  """
  path, sep, arg = spec.partition(":")
  if os.path.exists(path):
    return spec
  name = os.path.basename(path)
  name = name[:-3] if name.endswith(".py") else name
  here = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "configs")
  candidate = os.path.join(here, name + ".py")
  if (path in (name, name + ".py", f"configs/{name}.py") and name.isidentifier()
      and os.path.exists(candidate)):
    return candidate + sep + arg
  return spec


def run(argv: list[str] | None = None, started: float | None = None) -> None:
  """Runs the command on `argv` (default sys.argv); `started` counts start-up from then."""
  global _started
  if started is not None:
    _started = started
  argv = list(sys.argv if argv is None else argv)
  for i, arg in enumerate(argv):
    if arg.startswith("--config="):
      argv[i] = "--config=" + packaged_config(arg[len("--config="):])
    elif arg == "--config" and i + 1 < len(argv):
      argv[i + 1] = packaged_config(argv[i + 1])
  app.run(main, argv=argv, flags_parser=config_validation.parse_flags)


if __name__ == "__main__":
  run()
