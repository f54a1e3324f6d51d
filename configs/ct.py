# The config lives in clade_jax/configs/ct.py (installed with the package); this file
# keeps `--config=configs/ct.py` and `from configs import ct` working in a clone.
from clade_jax.configs.ct import *  # pylint: disable=wildcard-import,unused-wildcard-import
from clade_jax.configs.ct import __doc__  # pylint: disable=redefined-builtin
