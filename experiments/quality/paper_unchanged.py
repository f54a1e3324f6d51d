"""Checks that the paper's CLADE trains and super-resolves exactly as at another commit.

The options of configs/clade_plus.py are off in configs/mri.py; this runs the same
tiny paper-config training (tests/test_train.py's `tiny_config`, 6 steps on a phantom,
2 fake CPU devices) and super-resolution in this checkout and in `--base` (exported
with `git archive`), and compares every parameter and the output voxel for voxel:

    python experiments/quality/paper_unchanged.py --base 8155c0a

Prints the largest absolute difference (0.0: bitwise the same) and exits 1 otherwise.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))

# Runs inside a checkout (cwd) and writes its params and output to argv[1].
_RUN = r"""
import os, sys
os.environ["XLA_FLAGS"] = "--xla_force_host_platform_device_count=2"
os.environ["JAX_PLATFORMS"] = "cpu"
sys.path.insert(0, os.getcwd())
import jax, numpy as np
from clade_jax import inference, train
from clade_jax.data import volume as volume_lib
from clade_jax.volume_srr import SROptions
from tests import phantoms
from tests.test_train import tiny_config
out = sys.argv[1]
os.makedirs(out + "_data", exist_ok=True)
path = phantoms.thick_slice_volume(os.path.join(out + "_data", "a.nii.gz"), seed=0)
config = tiny_config(out + "_data")
config.train.num_steps = 6
state = train.train_and_evaluate(config, out + "_run")
params, config, _ = inference.load_params(out + "_run")
scan = volume_lib.load_volume(path)
sr, _ = inference.super_resolve(scan.data, scan.affine, params, config, SROptions(progress=False))
leaves = jax.tree_util.tree_flatten_with_path(state.params)[0]
np.savez(out + ".npz", output=sr,
         **{"/".join(str(getattr(k, "key", k)) for k in p): np.asarray(v) for p, v in leaves})
"""


def run(checkout: str, out: str) -> None:
  env = {**os.environ, "PYTHONPATH": checkout}
  result = subprocess.run([sys.executable, "-c", _RUN, out], cwd=checkout, env=env,
                          capture_output=True, text=True)
  if result.returncode:
    sys.exit(f"{checkout}: the run failed:\n{result.stderr[-3000:]}")


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("--base", required=True, help="git commit to compare with")
  args = parser.parse_args(argv)
  import numpy as np

  with tempfile.TemporaryDirectory() as tmp:
    base = os.path.join(tmp, "base")
    os.makedirs(base)
    archive = subprocess.run(["git", "archive", args.base], cwd=ROOT, check=True,
                             capture_output=True).stdout
    subprocess.run(["tar", "-x", "-C", base], input=archive, check=True)
    run(base, os.path.join(tmp, "before"))
    run(ROOT, os.path.join(tmp, "after"))
    before = np.load(os.path.join(tmp, "before.npz"))
    after = np.load(os.path.join(tmp, "after.npz"))
    if sorted(before.files) != sorted(after.files):
      print(f"different arrays: {sorted(set(before.files) ^ set(after.files))}")
      return 1
    worst = max(float(np.abs(before[k] - after[k]).max()) for k in before.files)
  print(f"{len(before.files) - 1} parameter arrays and the output: largest difference {worst}")
  return 0 if worst == 0.0 else 1


if __name__ == "__main__":
  sys.exit(main())
