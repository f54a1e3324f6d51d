# The config lives in clade_jax/configs/cyclegan.py (installed with the package); this file
# keeps `--config=configs/cyclegan.py` and `from configs import cyclegan` working in a clone.
from clade_jax.configs.cyclegan import *  # pylint: disable=wildcard-import,unused-wildcard-import
from clade_jax.configs.cyclegan import __doc__  # pylint: disable=redefined-builtin
