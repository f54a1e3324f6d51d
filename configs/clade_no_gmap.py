# The config lives in clade_jax/configs/clade_no_gmap.py (installed with the package); this file
# keeps `--config=configs/clade_no_gmap.py` and `from configs import clade_no_gmap` working in a clone.
from clade_jax.configs.clade_no_gmap import *  # pylint: disable=wildcard-import,unused-wildcard-import
from clade_jax.configs.clade_no_gmap import __doc__  # pylint: disable=redefined-builtin
