"""CLADE for anisotropic abdominal MRI (paper Sec. 4.4.1): the base configuration.

    python train.py --config=configs/mri.py --config.data.root=DIR --workdir=runs/mri

DIR holds the training NIfTI volumes (thick-slice, e.g. 1.2 x 1.2 x 6.6 mm VIBE). The
paper's weights: lambda_cyc = 1, lambda_ident = 1, lambda_gmap = 5; 32x32 patches, four
per slice per epoch, Adam 2e-4 (beta1 0.5), 10 epochs (the paper kept epoch 9). On an
RTX A6000 the authors needed about 36 h for 10 epochs on 45 volumes. Watch
`loss/cycle` and `loss/gmap` fall and the sample grids in WORKDIR/samples.

Variants import this file and change only what differs. `--config=configs/mri.py:small`
shrinks the networks and the run for a laptop check, `:demo` trains on the bundled
MNI152 demo volumes (configs/common.py).
"""

import ml_collections

from clade_jax.configs import common


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  parts = common.parse_arg(arg)
  config = ml_collections.ConfigDict()
  config.method = "clade"  # clade_jax/methods/clade.py: CLADE, its ablations and GLADE.
  config.seed = 0

  config.data = ml_collections.ConfigDict()
  config.data.root = ""  # A NIfTI file, a directory of them, or a glob.
  config.data.make_demo = False  # Write the bundled demo volumes into `root` first.
  # The isotropic ground truth of the first volume, if known (a simulation, the demo):
  # the end of training then scores the held-out slice against it (clade_jax/holdout.py).
  config.data.truth = ""
  config.data.thick_axis = -1  # Voxel axis of the thick slices; -1 detects it.
  config.data.lr_plane = "auto"  # LR slices: auto (first in-plane axis), sagittal, coronal, axial.
  # Domain X: 'trained' (slices of the lr_plane only, the paper) or 'both' (also of the
  # other plane that contains the thick axis, turned to match: the paper's future work).
  config.data.lr_planes = "trained"
  config.data.target_spacing = 0.0  # Isotropic spacing in mm; 0 = finest in-plane spacing.
  # A 4D file: which volume to use (-1: the file must hold one). Complex data: 'refuse'
  # or 'magnitude' (|z|, the phase dropped).
  config.data.volume_index = -1
  config.data.complex = "refuse"
  # The acquisition's slice profile along the thick axis, for data consistency: NIfTI
  # stores the slice spacing, not the thickness. Thickness 0 = the spacing (no gap).
  config.data.slice_thickness = 0.0
  # 'gaussian' (FWHM = thickness), 'rect', or 'estimate': from the scan before training
  # (clade_jax/data/profile_estimation.py; a slice_thickness given is then kept).
  config.data.slice_profile = "gaussian"
  config.data.patch_size = 32
  config.data.patches_per_slice = 4
  # A patch is used if at least `min_foreground` of its pixels are brighter than
  # `background_level` of the robust intensity range; slices with no such patch are
  # skipped.
  config.data.min_foreground = 0.3
  config.data.background_level = 0.05
  # The intensity window mapped to [-1, 1] for the networks: 'percentile' (these robust
  # percentiles of each scan) or 'window' (intensity_window, in the scan's units: HU for
  # CT, see configs/ct.py). Voxels beyond it bypass the networks (eval.outside_window).
  config.data.normalization = "percentile"
  config.data.percentiles = (0.5, 99.5)
  config.data.intensity_window = (-1024.0, 2048.0)  # Used with normalization='window'.
  # HR-plane (domain Y) slices: 'acquired' uses only slices at the acquired thick-axis
  # positions (interpolated slices between them are blurred, not high-resolution);
  # 'all' uses every slice of the interpolated volume.
  config.data.hr_slices = "acquired"
  config.data.num_threads = 4  # Patch-sampling threads.
  config.data.prefetch = 8  # Batches prefetched ahead of the train step.

  config.model = ml_collections.ConfigDict()
  config.model.generator_norm = "demod"  # 'demod' (CLADE) or 'instance' (CycleGAN).
  config.model.features = 64
  config.model.num_blocks = 6
  config.model.disc_features = 64
  config.model.disc_layers = 3
  # 'auto' (winograd on CPU, XLA's convolutions elsewhere), 'xla', 'im2col', 'winograd'.
  config.model.conv_impl = "auto"
  config.model.dtype = "float32"  # Activations' dtype; 'bfloat16' on GPU/TPU. Params stay float32.
  # Not in the paper (configs/clade_plus.py turns it on): G_X, the super-resolving
  # generator, predicts a correction to its input, starting at the identity.
  config.model.residual = False

  config.loss = ml_collections.ConfigDict()
  config.loss.gan = "log"  # 'log' (paper Eq. 1) or 'lsgan'.
  config.loss.cyc = 1.0
  config.loss.ident = 1.0
  config.loss.gmap = 5.0
  # Not in the paper: > 0 adds |G_X(y re-acquired with the slice profile) - y| with this
  # weight (paired, from the acquired high-resolution slices; data/simulated_pairs.py).
  config.loss.degradation = 0.0

  config.train = ml_collections.ConfigDict()
  config.train.batch_size = 32  # Global batch of (x, y) patch pairs; not given in the paper.
  config.train.epochs = 10
  config.train.num_steps = 0  # > 0 overrides `epochs`.
  config.train.learning_rate = 2e-4
  config.train.beta1 = 0.5
  config.train.beta2 = 0.999
  # Not in the paper: > 0 keeps an exponential moving average of the generators'
  # weights with this decay (warmed up), used for samples and inference.
  config.train.ema_decay = 0.0
  config.train.log_every = 50
  config.train.sample_every = 500  # PNG grid of LR -> SR -> cycled patches.

  config.ckpt = ml_collections.ConfigDict()
  config.ckpt.every = 1000
  config.ckpt.keep = 3

  config.eval = ml_collections.ConfigDict()
  config.eval.stride = 12  # Sliding-window stride at inference (paper Table 7).
  config.eval.mode = "patch"  # 'patch' (sliding window) or 'full' (whole slice).
  # How overlapping patches are averaged: 'flat' (the paper) or 'taper' (a raised
  # cosine that fades each patch out towards its border: no visible patch grid).
  config.eval.blend = "flat"
  config.eval.tta = False  # Average G_X over the 4 flips of each patch (4x the time).
  # Planes to super-resolve: 'trained' (lr_plane), 'both' (both low-resolution planes,
  # averaged; twice the time) or 'auto' (those of data.lr_planes).
  config.eval.planes = "auto"
  config.eval.batch_size = 256  # Patches per generator call at inference.
  # Project the output onto the volumes that re-acquired with the slice profile give
  # the acquired slices (clade_jax/data/consistency.py). Off: the paper has no such step.
  config.eval.data_consistency = False
  config.eval.consistency_regularisation = 0.0  # 0: exact; > 0: within the noise.
  # Voxels at or beyond the intensity window: 'restore' takes them from the interpolated
  # input, so the output keeps the scan's range (clade_jax/data/intensity.py); 'clip'
  # maps the networks' output straight back, flattening them to the window (the paper).
  config.eval.outside_window = "restore"

  common.resize(config, parts)
  return config
