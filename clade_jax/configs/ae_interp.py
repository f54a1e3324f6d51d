"""Autoencoder latent-space interpolation (Sander et al., arXiv:2010.13172): paper defaults.

    python train.py --config=configs/ae_interp.py --config.data.root=DIR --workdir=runs/ae
    python infer.py --workdir runs/ae --input scan.nii.gz --output scan_ae.nii.gz

The paper's autoencoder (four blocks, 32 kernels doubling per block, a 256- and a
16-channel 3x3 convolution, leaky ReLU, batch norm; clade_jax/models/autoencoder.py)
trained on random 128x128 patches of the acquired in-plane slices with 90-degree
rotations and random intensity changes, MSE, Adam at 1e-5
(clade_jax/methods/ae_interp.py). The paper's inference decodes the mixed code
(``eval.interpolation = 'latent'``); the default here is the bias-corrected variant
('corrected', not in the paper), which measured better (experiments/ae_interp/README.md). Not given in the paper, chosen here: batch 16, 8
patches per slice per epoch, 100 epochs, the intensity change (gain 1 +- 0.1 about
the background, offset +- 0.1 in [-1, 1] units), Adam's betas (PyTorch's defaults).
Watch `loss/mse` fall and the reconstructions in WORKDIR/samples.

`:demo` trains on the bundled MNI152 demo volume in about 3-4 minutes on 2 CPU cores
(1500 steps of batch 8), not with the paper's settings: 16 kernels in the first block,
three blocks instead of four (codes at 1/8 of the slice size instead of 1/16, which
at this budget reconstructs far better), 64x64 patches, and a learning rate of 1e-3
instead of the paper's 1e-5 (which would barely move in so few steps). Expect
loss/mse to fall from about 0.6 to about 0.015. It is a smoke-sized run, not a
converged model: experiments/ae_interp/README.md measures it against interpolation.
`:small` shrinks everything for a quick check.

The fields every method shares (seed, data, train, ckpt, eval: data.root, thick_axis,
percentiles, the slice profile for data consistency, ...) are documented in
clade_jax/configs/base.py; this file sets the autoencoder's own and the values that differ.
"""

import ml_collections

from clade_jax.configs import base
from clade_jax.configs import common

# The `small` and `demo` arguments (configs/common.py).
SIZES = {
    "small": {
        **common.SMALL_RUN,
        "data.patch_size": 32,
        "model.features": 8,
        "model.num_blocks": 2,
    },
    "demo": {
        **common.DEMO_DATA,
        "data.patch_size": 64,
        "model.features": 16,
        "model.num_blocks": 3,
        # XLA's convolutions: the train step compiles in about 40 s on 2 cores, Winograd's
        # (the CPU default) in about 3 minutes, more than this run trains.
        "model.conv_impl": "xla",
        "train.batch_size": 8,
        "train.learning_rate": 1e-3,  # Not the paper's 1e-5: a few hundred steps only.
        "train.num_steps": 1500,
        "train.log_every": 50,
        "train.sample_every": 500,
        "ckpt.every": 500,
    },
}


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  parts = common.parse_arg(arg)
  config = base.get_config("ae_interp")  # clade_jax/methods/ae_interp.py

  config.data.patch_size = 128
  config.data.patches_per_slice = 8
  config.data.min_foreground = 0.1  # Edge slices have little anatomy but are needed too.
  # Random intensity change of each patch, in normalised units (background -1):
  # x -> (x + 1) * gain - 1 + offset, gain in 1 +- scale, offset in +- shift.
  config.data.intensity_scale = 0.1
  config.data.intensity_shift = 0.1

  config.model = ml_collections.ConfigDict()
  config.model.features = 32  # Kernels of the first block, doubled per block.
  config.model.num_blocks = 4  # Each halves H and W: inputs padded to 2**4 = 16.
  config.model.latent_features = 16  # Channels of the code.
  config.model.negative_slope = 0.01  # Leaky ReLU (PyTorch's default; not in the paper).
  # 'auto' (winograd on CPU, XLA's convolutions elsewhere), 'xla', 'im2col', 'winograd'.
  config.model.conv_impl = "auto"

  # One loss, the MSE; no group for it.

  config.train.batch_size = 16
  config.train.epochs = 100
  config.train.learning_rate = 1e-5
  config.train.beta1 = 0.9
  config.train.sample_every = 500  # PNG grid of patches and their reconstructions.

  config.eval.mode = "full"  # Whole slices are encoded (recorded in the output's provenance).
  config.eval.batch_size = 8  # Slices per encoder/decoder call.
  # At acquired positions (alpha = 0): the acquired slice itself (True) or its
  # reconstruction D(E(x)) (False, the paper's pipeline). experiments/ae_interp/README.md
  # measures both.
  config.eval.keep_acquired = True
  # 'latent': the paper's D((1 - a) z_n + a z_{n+1}). 'corrected' (not in the paper, the
  # default by measurement): base + D(mix of codes) - mix of D(z_n), D(z_{n+1}), so the
  # autoencoder's reconstruction bias cancels (clade_jax/methods/ae_interp.py); base
  # 'cubic' (the cubic-spline input) or 'linear' (of the acquired slices). Measured in
  # experiments/ae_interp/README.md; --config.eval.interpolation=latent for the paper's.
  config.eval.interpolation = "corrected"
  config.eval.correction_base = "cubic"

  common.apply_presets(config, SIZES, parts)
  return config
