# The config lives in clade_jax/configs/demo.py (installed with the package); this file
# keeps `--config=configs/demo.py` and `from configs import demo` working in a clone.
from clade_jax.configs.demo import *  # pylint: disable=wildcard-import,unused-wildcard-import
from clade_jax.configs.demo import __doc__  # pylint: disable=redefined-builtin
