"""SMORE's super-resolution network: a residual CNN on the fine grid (EDSR/WDSR-style).

The input is a slice already interpolated onto the fine grid (the cubic-spline volume
inference starts from), so input and output have the same size and there is no
pixel-shuffle upsampling (whose outputs show stripes at the upsampling period). The
network predicts what the interpolation missed:

  output = input + tail(body(head(input)))

head: one 3x3 conv to `features` channels; body: `num_blocks` residual blocks
(3x3 conv to `features * expansion` channels, ReLU, 3x3 conv back, scaled by
`residual_scale`; expansion 1 is EDSR's block, > 1 WDSR's wide activation) and a 3x3
conv, with EDSR's long skip from the head; tail: a 3x3 conv to one channel whose kernel
starts at zero, so an untrained network is exactly the identity (the interpolation)
and training only ever adds detail to it. Zero ('SAME') padding keeps every layer
at the input size, so the network applies to patches and to whole slices of any size.
"""

from __future__ import annotations

import functools

import flax.linen as nn
import jax
import jax.numpy as jnp

from clade_jax.models import convolution

# He initialisation for convolutions followed by ReLU (EDSR's PyTorch default is close).
KERNEL_INIT = nn.initializers.variance_scaling(2.0, "fan_in", "truncated_normal")


class Conv3x3(nn.Module):
  """Stride-1 3x3 convolution with zero padding, through `convolution.conv`.

  Attributes:
    features: output channels.
    kernel_init: initialiser of the HWIO kernel.
    conv_impl: convolution formulation (`convolution.IMPLS`).
  """

  features: int
  kernel_init: nn.initializers.Initializer = KERNEL_INIT
  conv_impl: str = "xla"

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    kernel = self.param("kernel", self.kernel_init, (3, 3, x.shape[-1], self.features))
    bias = self.param("bias", nn.initializers.zeros, (self.features,))
    return (convolution.conv(x, kernel.astype(x.dtype), 1, 1, self.conv_impl)
            + bias.astype(x.dtype))


class ResidualBlock(nn.Module):
  """x + scale * conv(relu(conv(x))), the inner width `expansion` times the outer."""

  features: int
  expansion: int = 1
  residual_scale: float = 1.0
  conv_impl: str = "xla"

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    h = nn.relu(Conv3x3(self.features * self.expansion, conv_impl=self.conv_impl)(x))
    h = Conv3x3(self.features, kernel_init=nn.initializers.variance_scaling(
        1.0, "fan_in", "truncated_normal"), conv_impl=self.conv_impl)(h)
    return x + self.residual_scale * h


class SRNetwork(nn.Module):
  """[B, H, W, 1] interpolated slices -> [B, H, W, 1] super-resolved slices.

  Attributes:
    features: channels between blocks.
    num_blocks: residual blocks.
    expansion: inner-width multiplier of each block (1: EDSR; 2-6: WDSR-style).
    residual_scale: multiplies each block's residual (EDSR uses 0.1 for wide, deep
      networks; 1 is fine for small ones).
    dtype: compute dtype of the activations; params stay float32 and the output is
      float32.
    conv_impl: convolution formulation of every layer (`convolution.IMPLS`; the
      method passes `convolution.resolve(config.model.conv_impl)`).
  """

  features: int = 64
  num_blocks: int = 16
  expansion: int = 1
  residual_scale: float = 1.0
  dtype: str = "float32"
  conv_impl: str = "xla"

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    conv = functools.partial(Conv3x3, conv_impl=self.conv_impl)
    x = x.astype(jnp.float32)
    head = conv(self.features)(x.astype(self.dtype))
    h = head
    for _ in range(self.num_blocks):
      h = ResidualBlock(self.features, self.expansion, self.residual_scale, self.conv_impl)(h)
    h = conv(self.features)(h) + head
    residual = conv(x.shape[-1], kernel_init=nn.initializers.zeros)(h)
    return x + residual.astype(jnp.float32)
