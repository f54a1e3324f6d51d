# The config lives in clade_jax/configs/ae_interp.py (installed with the package); this file
# keeps `--config=configs/ae_interp.py` and `from configs import ae_interp` working in a clone.
from clade_jax.configs.ae_interp import *  # pylint: disable=wildcard-import,unused-wildcard-import
from clade_jax.configs.ae_interp import __doc__  # pylint: disable=redefined-builtin
