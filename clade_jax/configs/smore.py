"""SMORE (Zhao et al., IEEE TMI 2021): self-supervised, one network per volume.

    python train.py --config=configs/smore.py --config.data.root=scan.nii.gz --workdir=runs/scan
    python infer.py --workdir runs/scan --input scan.nii.gz --output scan_smore.nii.gz

No training data but the scan itself: the acquired slices, degraded along an in-plane
axis like the thick axis was, teach a residual CNN to undo the degradation, which is
then applied to both low-resolution planes (clade_jax/methods/smore.py). Give the
acquisition's slice profile: NIfTI stores the slice spacing, not the thickness, so
`--config.data.slice_thickness=MM` when they differ (a gap: thickness < spacing),
`--config.data.slice_profile=rect` for a rectangular profile, or
`--config.data.slice_kernel="(w0, ..., wn)"` for a measured one (odd length, in output
voxels).

The default is sized for a GPU: EDSR's baseline network (64 channels, 16 residual
blocks), 48x48 patches, batch 32, 20,000 Adam steps with a cosine decay. `:cpu` is the
budget this project measures on 2 CPU cores (experiments/ground_truth/README.md): a
narrow network (32 channels, 6 blocks), batch 16, 2,500 steps; `:demo` is that on the
bundled MNI152 volume with 600 steps, `:small` a laptop check. Watch `loss/l1` fall
below `loss/l1_input` (what the interpolation alone scores) and the sample grids.

`:quick`, `:standard` and `:thorough` are the per-scan budgets of `clade-jax sr
--budget` (clade_jax/budgets.py lists what each costs and buys on the MNI152 protocol,
measured by benchmarks/time_to_quality.py on 2 CPU cores): each sets the network,
patch, steps and learning rate of `BUDGETS`, a checkpoint every 500 steps and one
sample grid at the end, and combines with `demo` (the data) but not with `cpu`/`small`
(other sizes).

The fields every method shares (seed, data, train, ckpt, eval) are documented in
clade_jax/configs/base.py; this file sets SMORE's own and the values that differ.
"""

import ml_collections

from clade_jax.configs import base
from clade_jax.configs import common

# Per-scan budgets on a CPU (clade_jax/budgets.py): network, patch, steps and rate.
BUDGETS = {
    "quick": dict(features=16, num_blocks=4, batch_size=16, patch_size=32, num_steps=300,
                  learning_rate=1e-3, warmup_steps=20),
    "standard": dict(features=16, num_blocks=4, batch_size=16, patch_size=32, num_steps=2000,
                     learning_rate=1e-3, warmup_steps=50),
    "thorough": dict(features=24, num_blocks=4, batch_size=16, patch_size=32, num_steps=3000,
                     learning_rate=1e-3, warmup_steps=100),
}


def budget_preset(budget: dict) -> dict:
  """A budget as a preset: sized for one scan on a CPU, a checkpoint every 500 steps
  and one picture at the end."""
  return {
      "model.features": budget["features"],
      "model.num_blocks": budget["num_blocks"],
      "model.residual_scale": 1.0,
      "data.patch_size": budget["patch_size"],
      "train.batch_size": budget["batch_size"],
      "train.num_steps": budget["num_steps"],
      "train.learning_rate": budget["learning_rate"],
      "train.warmup_steps": budget["warmup_steps"],
      "train.log_every": 50,
      "train.sample_every": budget["num_steps"],
      # A checkpoint every 500 steps (quick: at the end only): a cohort killed mid-scan
      # resumes that scan from its last one for under a second of saving each.
      "ckpt.every": min(500, budget["num_steps"]),
      "ckpt.keep": 1,
  }


# The size arguments, applied in this order: `cpu`, `demo` (`cpu`'s network on the demo
# volume), `small`, then at most one budget (which excludes `cpu` and `small`).
_CPU = {
    "model.features": 32,
    "model.num_blocks": 6,
    "model.residual_scale": 1.0,
    "train.batch_size": 16,
    "train.num_steps": 2_500,
    "ckpt.every": 500,
}
SIZES = {
    "cpu": _CPU,
    "demo": {
        **_CPU,
        **common.DEMO_DATA,
        "train.num_steps": 600,
        "train.log_every": 10,
        "train.sample_every": 200,
        "ckpt.every": 200,
    },
    "small": {
        **common.SMALL_RUN,
        "model.features": 16,
        "model.num_blocks": 2,
        "model.residual_scale": 1.0,
    },
    **{name: budget_preset(budget) for name, budget in BUDGETS.items()},
}


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  parts = common.parse_arg(arg, extra=("cpu", *BUDGETS))
  budget = parts & set(BUDGETS)
  if len(budget) > 1 or (budget and parts & {"cpu", "small"}):
    raise ValueError(f"config arguments {', '.join(sorted(budget | (parts & {'cpu', 'small'})))} "
                     "exclude each other: a budget sets the size")
  config = base.get_config("smore")  # clade_jax/methods/smore.py

  # data.root is the scan (a directory or glob: one network for all of its scans). The
  # slice profile makes the training pairs as well as serving data consistency; a
  # measured one, in output voxels, wins over slice_profile and slice_thickness.
  config.data.slice_kernel = ()
  config.data.patch_size = 48
  config.data.patches_per_slice = 16  # Examples per acquired slice per epoch.
  config.data.augment = True  # Rotations by 90 degrees and flips of each slice.
  config.data.min_foreground = 0.2
  # Give the simulated inputs the scan's own noise (measured in its air), which the
  # degradation averages down: the network then trains on inputs as noisy as the
  # low-resolution planes it is applied to (clade_jax/data/inplane_pairs.py).
  config.data.match_noise = True

  config.model = ml_collections.ConfigDict()
  config.model.features = 64
  config.model.num_blocks = 16
  config.model.expansion = 1  # Inner width of a block / features: 1 EDSR, > 1 WDSR-style.
  # EDSR's 0.1 for its deep networks: at 1.0 the 16-block network's features grow
  # about 1.5x per block and the first Adam steps throw the loss from 0.05 to 3.6
  # (measured on the demo volume); the 6-block `:cpu` network trains at 1.0.
  config.model.residual_scale = 0.1
  # XLA's own convolutions: for these 3x3 stride-1 layers they beat Winograd and im2col
  # on CPU too (a 32-channel, 8-block train step: 0.68 s vs 0.93 s and 2.8 s).
  config.model.conv_impl = "xla"
  config.model.dtype = "float32"

  # SMORE trains for a number of iterations (its learning-rate schedule ends at the
  # last one), so train.num_steps must be > 0 and train.epochs is not used.
  config.train.num_steps = 20_000
  config.train.learning_rate = 5e-4
  config.train.schedule = "cosine"  # 'constant' or 'cosine' (to zero at the last step).
  config.train.warmup_steps = 100
  config.train.beta1 = 0.9
  config.train.sample_every = 1000

  config.eval.mode = "full"  # Whole slices: the network is fully convolutional.
  config.eval.stride = 24  # Sliding-window stride with --mode patch.
  config.eval.batch_size = 64  # Patches per network call with --mode patch.
  config.eval.planes = "both"  # SMORE combines the two low-resolution planes.
  config.eval.combine = "mean"  # 'mean' or 'fourier' (burst accumulation, power below).
  config.eval.fourier_power = 4.0

  common.apply_presets(config, SIZES, parts)
  return config
