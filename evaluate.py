"""Score super-resolved volumes (and a reader study): `python evaluate.py --method N=DIR --out D`.

The same program as `clade-jax evaluate` (clade_jax/cli/evaluate.py, which has the options).
"""

import sys

from clade_jax.cli.evaluate import *  # pylint: disable=wildcard-import,unused-wildcard-import
from clade_jax.cli.evaluate import main

if __name__ == "__main__":
  sys.exit(main())
