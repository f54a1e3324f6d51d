# The config lives in clade_jax/configs/clade_plus.py (installed with the package); this file
# keeps `--config=configs/clade_plus.py` and `from configs import clade_plus` working in a clone.
from clade_jax.configs.clade_plus import *  # pylint: disable=wildcard-import,unused-wildcard-import
from clade_jax.configs.clade_plus import __doc__  # pylint: disable=redefined-builtin
