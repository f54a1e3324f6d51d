# The config lives in clade_jax/configs/smore.py (installed with the package); this file
# keeps `--config=configs/smore.py` and `from configs import smore` working in a clone.
from clade_jax.configs.smore import *  # pylint: disable=wildcard-import,unused-wildcard-import
from clade_jax.configs.smore import __doc__  # pylint: disable=redefined-builtin
