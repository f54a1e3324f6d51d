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
"""

import ml_collections

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


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  parts = common.parse_arg(arg, extra=("cpu", *BUDGETS))
  config = ml_collections.ConfigDict()
  config.method = "smore"  # clade_jax/methods/smore.py
  config.seed = 0

  config.data = ml_collections.ConfigDict()
  config.data.root = ""  # The scan: a NIfTI file (or a directory/glob: one network for all).
  config.data.make_demo = False
  config.data.thick_axis = -1  # Voxel axis of the thick slices; -1 detects it.
  config.data.lr_plane = "auto"  # The plane whose slices come first; both are used.
  config.data.target_spacing = 0.0  # Isotropic spacing in mm; 0 = finest in-plane spacing.
  config.data.volume_index = -1
  config.data.complex = "refuse"
  # The slice profile that made the thick slices, used for the training pairs and for
  # data consistency. Thickness 0 = the slice spacing (contiguous slices).
  config.data.slice_thickness = 0.0
  # 'gaussian' (FWHM = thickness), 'rect', or 'estimate': from the scan before training
  # (clade_jax/data/profile_estimation.py; a slice_thickness given is then kept).
  config.data.slice_profile = "gaussian"
  config.data.slice_kernel = ()  # A measured profile in output voxels; wins over the two above.
  config.data.patch_size = 48
  config.data.patches_per_slice = 16  # Examples per acquired slice per epoch.
  config.data.augment = True  # Rotations by 90 degrees and flips of each slice.
  config.data.min_foreground = 0.2
  config.data.background_level = 0.05
  config.data.percentiles = (0.5, 99.5)  # Robust range mapped to [-1, 1].
  config.data.num_threads = 4
  config.data.prefetch = 8

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

  config.train = ml_collections.ConfigDict()
  config.train.batch_size = 32
  config.train.num_steps = 20_000
  config.train.learning_rate = 5e-4
  config.train.schedule = "cosine"  # 'constant' or 'cosine' (to zero at the last step).
  config.train.warmup_steps = 100
  config.train.beta1 = 0.9
  config.train.beta2 = 0.999
  config.train.log_every = 50
  config.train.sample_every = 1000

  config.ckpt = ml_collections.ConfigDict()
  config.ckpt.every = 1000
  config.ckpt.keep = 3

  config.eval = ml_collections.ConfigDict()
  config.eval.mode = "full"  # Whole slices: the network is fully convolutional.
  config.eval.stride = 24  # Sliding-window stride with --mode patch.
  config.eval.batch_size = 64  # Patches per network call with --mode patch.
  config.eval.planes = "both"  # SMORE combines the two low-resolution planes.
  config.eval.combine = "mean"  # 'mean' or 'fourier' (burst accumulation, power below).
  config.eval.fourier_power = 4.0
  config.eval.data_consistency = False
  config.eval.consistency_regularisation = 0.0

  if parts & {"cpu", "demo"}:
    config.model.features = 32
    config.model.num_blocks = 6
    config.model.residual_scale = 1.0
    config.train.batch_size = 16
    config.train.num_steps = 2_500
    config.ckpt.every = 500
  if "demo" in parts:
    common.use_demo_data(config)
    config.train.num_steps = 600
    config.train.log_every = 10
    config.train.sample_every = 200
    config.ckpt.every = 200
  if "small" in parts:
    config.model.features = 16
    config.model.num_blocks = 2
    config.model.residual_scale = 1.0
    config.train.batch_size = 8
    config.train.num_steps = 200
    config.train.log_every = 10
    config.train.sample_every = 100
    config.ckpt.every = 100
  budget = parts & set(BUDGETS)
  if len(budget) > 1 or (budget and parts & {"cpu", "small"}):
    raise ValueError(f"config arguments {', '.join(sorted(budget | (parts & {'cpu', 'small'})))} "
                     "exclude each other: a budget sets the size")
  if budget:
    use_budget(config, BUDGETS[budget.pop()])
  return config


def use_budget(config: ml_collections.ConfigDict, budget: dict) -> None:
  """Sizes `config` for one scan on a CPU: a checkpoint every 500 steps, a picture at the end."""
  config.model.features = budget["features"]
  config.model.num_blocks = budget["num_blocks"]
  config.model.residual_scale = 1.0
  config.data.patch_size = budget["patch_size"]
  config.train.batch_size = budget["batch_size"]
  config.train.num_steps = budget["num_steps"]
  config.train.learning_rate = budget["learning_rate"]
  config.train.warmup_steps = budget["warmup_steps"]
  config.train.log_every = 50
  config.train.sample_every = budget["num_steps"]
  # A checkpoint every 500 steps (quick: at the end only): a cohort killed mid-scan
  # resumes that scan from its last one for under a second of saving each.
  config.ckpt.every = min(500, budget["num_steps"])
  config.ckpt.keep = 1
