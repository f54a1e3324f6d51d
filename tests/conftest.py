"""Test set-up: two fake CPU devices so data-parallel code paths are exercised.

A persistent compilation cache lets tests that rebuild the same jitted step (a run and
its resume) compile it once.
"""

import os
import tempfile

# Two fake CPU devices; on a GPU, deterministic scatter-adds and reductions, so that a
# run and its resume (or the CLI and the API) agree to float rounding, as on CPU.
os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=2 "
                      "--xla_gpu_deterministic_ops=true")
os.environ.setdefault("JAX_PLATFORMS", "cpu")
os.environ.setdefault("MPLBACKEND", "Agg")
os.environ.setdefault("JAX_COMPILATION_CACHE_DIR",
                      os.path.join(tempfile.gettempdir(), "clade_jax_test_jit_cache"))
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "1")

import pytest  # noqa: E402

from tests import phantoms  # noqa: E402


@pytest.fixture(scope="module")
def data_root(tmp_path_factory):
  """Two small thick-slice phantoms (tests.phantoms), the training data of end-to-end tests."""
  root = tmp_path_factory.mktemp("data")
  phantoms.thick_slice_volume(root / "a.nii.gz", seed=0)
  phantoms.thick_slice_volume(root / "b.nii.gz", seed=1)
  return root
