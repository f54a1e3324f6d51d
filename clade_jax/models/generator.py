"""ResNet generators: CLADE (weight demodulation) and the conventional CycleGAN.

The shape follows Zhu et al.'s CycleGAN generator (paper Fig. 2): an encoder
(7x7 conv, two stride-2 convs), `num_blocks` residual blocks, a decoder (two stride-2
transposed convs, 7x7 conv) and tanh, with reflect padding. The paper's switch is how
activations are normalised: 'demod' demodulates every kernel (CLADE, no norm layers),
'instance' uses plain kernels followed by instance norm (conventional CycleGAN).

`residual=True` (not in the paper) makes the network predict a correction to its input:
output = input + tanh(last conv). The last conv is then a plain convolution with a zero
kernel and bias, so the untrained generator is the identity (the cubic-spline input the
paper starts from) and training only has to learn what differs from it. It is not
demodulated: Eq. 6 scales a kernel to unit norm, which a zero kernel has no direction
for (and its gradient there is 1 / sqrt(1e-8)); the demodulated layers before it keep
what demodulation is for, activations without per-patch statistics.
"""

from __future__ import annotations

import functools

import flax.linen as nn
import jax
import jax.numpy as jnp

from clade_jax.models import layers

NORMS = ("demod", "instance")


class ResidualBlock(nn.Module):
  features: int
  norm: str = "demod"
  conv_impl: str = "xla"

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    conv = functools.partial(layers.Conv, self.features, 3, demodulate=self.norm == "demod",
                             conv_impl=self.conv_impl)
    h = conv()(layers.reflect_pad(x, 1))
    h = nn.relu(_normalise(h, self.norm))
    h = conv()(layers.reflect_pad(h, 1))
    return x + _normalise(h, self.norm)


class ResnetGenerator(nn.Module):
  """Image-to-image generator for [B, H, W, C] inputs in [-1, 1]; H and W divisible by 4.

  Attributes:
    features: channels of the first layer (ngf; 64 in the paper).
    num_blocks: residual blocks (6 in the paper).
    norm: 'demod' (CLADE) or 'instance' (conventional CycleGAN).
    out_channels: output channels; default the input's.
    residual: predict a correction to the input, starting at the identity (see the
      module docstring); needs out_channels equal to the input's.
    dtype: compute dtype of the activations, e.g. 'bfloat16' on accelerators. Params
      stay float32; the output is float32 whatever this is.
    conv_impl: convolution formulation of every layer (`convolution.IMPLS`; the
      methods pass `convolution.resolve(config.model.conv_impl)`).
  """

  features: int = 64
  num_blocks: int = 6
  norm: str = "demod"
  out_channels: int | None = None
  residual: bool = False
  dtype: str = "float32"
  conv_impl: str = "xla"

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    if self.norm not in NORMS:
      raise ValueError(f"unknown generator norm {self.norm!r}; use one of {NORMS}")
    conv = functools.partial(layers.Conv, demodulate=self.norm == "demod",
                             conv_impl=self.conv_impl)
    f = self.features
    h = conv(f, 7)(layers.reflect_pad(x.astype(self.dtype), 3))
    h = nn.relu(_normalise(h, self.norm))
    for mult in (2, 4):
      h = conv(f * mult, 3, strides=2, padding=1)(h)
      h = nn.relu(_normalise(h, self.norm))
    for _ in range(self.num_blocks):
      h = ResidualBlock(f * 4, self.norm, self.conv_impl)(h)
    for mult in (2, 1):
      h = layers.ConvTranspose(f * mult, demodulate=self.norm == "demod",
                               conv_impl=self.conv_impl)(h)
      h = nn.relu(_normalise(h, self.norm))
    out = self.out_channels or x.shape[-1]
    if not self.residual:
      h = conv(out, 7)(layers.reflect_pad(h, 3))
      return nn.tanh(h.astype(jnp.float32))
    if out != x.shape[-1]:
      raise ValueError(f"a residual generator maps {x.shape[-1]} channels to as many, "
                       f"not {out}")
    h = layers.Conv(out, 7, kernel_init=nn.initializers.zeros,
                    conv_impl=self.conv_impl)(layers.reflect_pad(h, 3))
    return x.astype(jnp.float32) + nn.tanh(h.astype(jnp.float32))


def _normalise(h: jax.Array, norm: str) -> jax.Array:
  return layers.instance_norm(h) if norm == "instance" else h
