"""`python -m clade_jax.cli ...`: the `clade-jax` command without the console script."""

import sys

from clade_jax.cli import main

if __name__ == "__main__":
  sys.exit(main())
