"""CLADE for anisotropic abdominal MRI (paper Sec. 4.4.1): the base configuration.

    python train.py --config=configs/mri.py --config.data.root=DIR --workdir=runs/mri

DIR holds the training NIfTI volumes (thick-slice, e.g. 1.2 x 1.2 x 6.6 mm VIBE). The
paper's weights: lambda_cyc = 1, lambda_ident = 1, lambda_gmap = 5; 32x32 patches, four
per slice per epoch, Adam 2e-4 (beta1 0.5), 10 epochs (the paper kept epoch 9). On an
RTX A6000 the authors needed about 36 h for 10 epochs on 45 volumes. Watch
`loss/cycle` and `loss/gmap` fall and the sample grids in WORKDIR/samples.

Variants import this file and change only what differs. `--config=configs/mri.py:small`
shrinks the networks and the run for a laptop check, `:demo` trains on the bundled
MNI152 demo volumes (`SIZES` below; configs/common.py).

The fields every method shares (seed, data, train, ckpt, eval) are documented in
clade_jax/configs/base.py; this file sets CLADE's own and the values that differ.
"""

import ml_collections

from clade_jax.configs import base
from clade_jax.configs import common

# The `small` and `demo` arguments (configs/common.py).
SIZES = {
    "small": {
        **common.SMALL_RUN,
        "model.features": 16,
        "model.disc_features": 16,
    },
    "demo": {
        **common.DEMO_DATA,
        # The 1 mm template the demo input was made from: the run ends scored against it.
        "data.truth": "demo_data/truth/mni152_t1_1mm.nii.gz",
        "model.features": 16,
        "model.num_blocks": 4,
        "model.disc_features": 16,
        # 300 steps: im2col's train step compiles in 40 s, Winograd's (the CPU default) in
        # about 2 minutes, which only pays back after about 1500 steps (benchmarks/RESULTS.md).
        "model.conv_impl": "im2col",
        "train.batch_size": 8,
        "train.num_steps": 300,
        "train.log_every": 10,
        "train.sample_every": 100,
        "ckpt.every": 100,
    },
}


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  parts = common.parse_arg(arg)
  # clade_jax/methods/clade.py: CLADE, its ablations and GLADE. The base's defaults are
  # CLADE's: the paper's 32x32 patches, four per slice per epoch, Adam 2e-4 (beta1 0.5)
  # for 10 epochs, and a batch of 32 (x, y) patch pairs, which the paper does not give.
  config = base.get_config("clade")

  # HR-plane (domain Y) slices: 'acquired' uses only slices at the acquired thick-axis
  # positions (interpolated slices between them are blurred, not high-resolution);
  # 'all' uses every slice of the interpolated volume.
  config.data.hr_slices = "acquired"
  # Domain X: 'trained' (slices of the lr_plane only, the paper) or 'both' (also of the
  # other plane that contains the thick axis, turned to match: the paper's future work).
  config.data.lr_planes = "trained"

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

  # Not in the paper: > 0 keeps an exponential moving average of the generators'
  # weights with this decay (warmed up), used for samples and inference.
  config.train.ema_decay = 0.0

  # The base's sliding window at inference ('patch' mode, 256 patches per call).
  config.eval.stride = 12  # Sliding-window stride (paper Table 7).
  # How overlapping patches are averaged: 'flat' (the paper) or 'taper' (a raised
  # cosine that fades each patch out towards its border: no visible patch grid).
  config.eval.blend = "flat"
  config.eval.tta = False  # Average G_X over the 4 flips of each patch (4x the time).
  # Planes to super-resolve: 'trained' (lr_plane), 'both' (both low-resolution planes,
  # averaged; twice the time) or 'auto' (those of data.lr_planes).
  config.eval.planes = "auto"

  common.apply_presets(config, SIZES, parts)
  return config
