"""Demo: CLADE on the MNI152 T1 template degraded to 1 x 6 x 1 mm slices (no download).

    python train.py --config=configs/demo.py --workdir=runs/demo

The same as `--config=configs/mri.py:demo` (configs/common.py). The first run writes
demo_data/lr/ (the 6 mm input) and demo_data/truth/ (the 1 mm template). A narrow model
(16 base channels, 4 residual blocks) trains for 300 steps of batch 8: about 2 minutes
of training on 2 CPU cores, plus the install. Expect loss/cycle to fall from about 1.3
to about 0.15, sample grids in runs/demo/samples/ and the held-out slice before/after in
runs/demo/holdout_sr.png. It is a smoke-sized run, not a converged model
(experiments/ground_truth/README.md scores it against the truth; measured times in
benchmarks/RESULTS.md).
"""

from configs import mri


def get_config(arg=None):
  return mri.get_config(",".join(filter(None, ("demo", arg))))
