"""Train a method on anisotropic volumes: `python train.py --config=configs/mri.py --workdir=W`.

The same program as `clade-jax train` (clade_jax/cli/train.py, which has the flags).
"""

import time

_STARTED = time.perf_counter()  # The run's start-up (startup_seconds) includes imports.

from clade_jax.cli import train  # pylint: disable=g-import-not-at-top,wrong-import-position

if __name__ == "__main__":
  train.run(started=_STARTED)
