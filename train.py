"""Train a super-resolution method (CLADE, its ablations, GLADE, ...) on anisotropic NIfTI volumes.

    python train.py --config=configs/mri.py --config.data.root=DIR --workdir=runs/mri

Any config field can be overridden: --config.train.batch_size=16. Re-running the same
command resumes from the latest checkpoint in --workdir.
"""

import sys

from absl import app
from absl import flags
from absl import logging
from ml_collections import config_flags

_CONFIG = config_flags.DEFINE_config_file("config", None, "Training configuration file.",
                                          lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "Directory for checkpoints, metrics and PNGs.")
_MULTIHOST = flags.DEFINE_bool(
    "multihost", False, "Call jax.distributed.initialize() first (one process per host; "
    "the coordinator is found from the cluster environment: TPU pods, SLURM, ...).")
flags.mark_flags_as_required(["config", "workdir"])


def main(argv):
  del argv
  logging.set_verbosity(logging.WARNING)  # Orbax logs every file it writes at INFO.
  import jax

  from clade_jax import checkpointing, methods, train
  from clade_jax.config_validation import ConfigError
  from clade_jax.data import volume

  if _MULTIHOST.value:
    jax.distributed.initialize()
  try:
    train.train_and_evaluate(_CONFIG.value, _WORKDIR.value)
  except (volume.VolumeError, checkpointing.CheckpointError, train.TrainingDiverged,
          ConfigError, methods.UnknownMethodError) as e:
    sys.exit(f"error: {e}")


if __name__ == "__main__":
  app.run(main)
