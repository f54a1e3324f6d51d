"""Demo: CLADE on the MNI152 T1 template degraded to 1 x 6 x 1 mm slices (no download).

    python train.py --config=configs/demo.py --workdir=runs/demo

The first run writes demo_data/lr/ (the 6 mm input) and demo_data/truth/ (the 1 mm
template). A narrow model (16 base channels, 4 residual blocks) trains for 300 steps of
batch 8: about 2 minutes of training on 2 CPU cores, plus the install
(2m08s for `python train.py --config=configs/demo.py`, measured 2026-11-22). Expect
loss/cycle to fall from about 1.3 to about 0.15 and
loss/generator from about 9.5 to about 4, sample grids in runs/demo/samples/ and the
held-out slice before/after in runs/demo/holdout_sr.png. It is a smoke-sized run, not a
converged model (experiments/ground_truth/README.md scores it against the truth).
"""

from configs import mri


def get_config(arg=None):
  config = mri.get_config(arg)
  config.data.root = "demo_data/lr"
  config.data.make_demo = True  # Write the demo volumes if they are missing.
  config.data.num_threads = 2
  config.model.features = 16
  config.model.num_blocks = 4
  config.model.disc_features = 16
  # 300 steps: im2col's train step compiles in 40 s, Winograd's (the CPU default) in
  # about 2 minutes, which only pays back after about 1500 steps (benchmarks/RESULTS.md).
  config.model.conv_impl = "im2col"
  config.train.batch_size = 8
  config.train.num_steps = 300
  config.train.log_every = 10
  config.train.sample_every = 100
  config.ckpt.every = 100
  return config
