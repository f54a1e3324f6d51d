# The config lives in clade_jax/configs/common.py (installed with the package); this file
# keeps `--config=configs/common.py` and `from configs import common` working in a clone.
from clade_jax.configs.common import *  # pylint: disable=wildcard-import,unused-wildcard-import
from clade_jax.configs.common import __doc__  # pylint: disable=redefined-builtin
