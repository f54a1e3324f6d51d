"""Super-resolve a volume with a trained workdir: `python infer.py --workdir W --input X --output Y`.

The same program as `clade-jax infer` (clade_jax/cli/infer.py, which has the options).
"""

import sys

from clade_jax.cli.infer import *  # pylint: disable=wildcard-import,unused-wildcard-import
from clade_jax.cli.infer import main

if __name__ == "__main__":
  sys.exit(main())
