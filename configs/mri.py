# The config lives in clade_jax/configs/mri.py (installed with the package); this file
# keeps `--config=configs/mri.py` and `from configs import mri` working in a clone.
from clade_jax.configs.mri import *  # pylint: disable=wildcard-import,unused-wildcard-import
from clade_jax.configs.mri import __doc__  # pylint: disable=redefined-builtin
