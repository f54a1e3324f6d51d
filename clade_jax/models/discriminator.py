"""PatchGAN discriminator (Isola et al.), with instance norm as in CycleGAN.

CLADE keeps instance norm here: the block artefacts it removes from the generator come
from generation, not from discrimination (paper Sec. 4.2).
"""

from __future__ import annotations

import functools

import flax.linen as nn
import jax
import jax.numpy as jnp

from clade_jax.models import layers


class PatchDiscriminator(nn.Module):
  """Maps [B, H, W, C] images to a grid of real/fake logits [B, h, w, 1].

  Attributes:
    features: channels of the first layer (ndf; 64 in CycleGAN).
    num_layers: stride-2 layers (3 gives the 70x70 PatchGAN; a 32x32 patch gives 2x2).
    dtype: compute dtype of the activations; params and the logits stay float32.
    conv_impl: convolution formulation of every layer (`convolution.IMPLS`).
  """

  features: int = 64
  num_layers: int = 3
  dtype: str = "float32"
  conv_impl: str = "xla"

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    conv = functools.partial(layers.Conv, kernel_size=4, padding=1, conv_impl=self.conv_impl)
    h = conv(self.features, strides=2)(x.astype(self.dtype))
    h = nn.leaky_relu(h, 0.2)
    for n in range(1, self.num_layers + 1):
      stride = 2 if n < self.num_layers else 1
      # Bias is redundant before a mean-subtracting norm.
      h = conv(self.features * min(2**n, 8), strides=stride, use_bias=False)(h)
      h = nn.leaky_relu(layers.instance_norm(h), 0.2)
    return conv(1, strides=1)(h).astype(jnp.float32)
