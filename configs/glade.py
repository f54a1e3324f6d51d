# The config lives in clade_jax/configs/glade.py (installed with the package); this file
# keeps `--config=configs/glade.py` and `from configs import glade` working in a clone.
from clade_jax.configs.glade import *  # pylint: disable=wildcard-import,unused-wildcard-import
from clade_jax.configs.glade import __doc__  # pylint: disable=redefined-builtin
