"""Demo: CLADE+ on the MNI152 T1 template degraded to 1 x 6 x 1 mm slices (no download).

    python train.py --config=configs/demo.py --workdir=runs/demo
    python train.py --config=configs/mri.py:demo --workdir=runs/demo_paper  # the paper's CLADE

The same as `--config=configs/clade_plus.py:demo` (configs/common.py): the recommended
config (configs/clade_plus.py) with a narrow model (16 base channels, 4 residual blocks)
trained for 300 steps of batch 8: about 3 minutes on 2 idle CPU cores (5 when they
are shared) plus the install. The
first run writes demo_data/lr/ (the 6 mm input) and demo_data/truth/ (the 1 mm template).
Expect loss/cycle to fall from about 1.3 to about 0.1 and loss/degradation from 0.075 to
about 0.04, sample grids in runs/demo/samples/, and at the end the held-out slice scored
against the truth (printed, runs/demo/holdout.json, runs/demo/holdout_sr.png: input,
output and truth side by side). Measured on the shared 2-core CPU (experiments/quality/):

    cubic spline                      PSNR  24.15 dB   SSIM 0.7437
    CLADE+ (stride 12)                PSNR  24.94 dB   SSIM 0.7634
    cubic spline + consistency        PSNR  24.93 dB   SSIM 0.7659
    CLADE+ (stride 12) + consistency  PSNR  25.28 dB   SSIM 0.7751

(the paper's CLADE, `configs/mri.py:demo`: 21.42 dB, 24.98 dB with data consistency).
It is a smoke-sized run, not a converged model.
"""

from clade_jax.configs import clade_plus


def get_config(arg=None):
  return clade_plus.get_config(",".join(filter(None, ("demo", arg))))
