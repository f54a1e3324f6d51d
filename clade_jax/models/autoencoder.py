"""The convolutional autoencoder of Sander et al. (latent-space interpolation, Sec. 4).

Encoder: `num_blocks` blocks of two 3x3 convolutions (leaky ReLU), batch norm and 2x2
average pooling, `features` kernels in the first block, doubled in the first
convolution of every later block; then a 3x3 convolution as wide as the last block
(256 in the paper) and a 3x3 convolution to `latent_features` channels (16), which is
the latent code: no nonlinearity. Decoder: the reverse, blocks of two 3x3 convolutions
(leaky ReLU), batch norm and 2x2 nearest-neighbour upsampling, the width halved after
each upsampling; then a 3x3 convolution (leaky ReLU) and a 3x3 convolution to the
image channels, linear. Every convolution zero-pads by 1, so H and W must be
multiples of ``2 ** num_blocks`` and the code is ``[H / 2^n, W / 2^n, latent]``.

Choices the paper leaves open: leaky ReLU slope `negative_slope` (PyTorch's default
0.01), batch norm with PyTorch's defaults (momentum 0.1 of the new batch, i.e. flax
momentum 0.9; epsilon 1e-5), PyTorch's default initialisation (uniform in
+-1/sqrt(fan_in) for kernels and biases; the paper used PyTorch). The convolutions go
through `convolution.conv` in the formulation `conv_impl` names, which the method sets
from `model.conv_impl` as for every other network.

Batch norm: ``train=True`` normalises with the batch statistics and updates the
running averages (collection ``batch_stats``, to be applied with
``mutable=['batch_stats']``); ``train=False`` uses the running averages, so a slice's
code does not depend on the other slices it is batched with.
"""

from __future__ import annotations

import functools

import flax.linen as nn
import jax
import jax.numpy as jnp

from clade_jax.models import convolution

BN_MOMENTUM = 0.9  # PyTorch's momentum=0.1: the running average keeps 0.9 of itself.
BN_EPSILON = 1e-5


def _fan_in_uniform(fan_in: int):
  """PyTorch's default Conv2d initialiser: uniform in +-1/sqrt(fan_in)."""
  bound = fan_in ** -0.5

  def init(key, shape, dtype=jnp.float32):
    return jax.random.uniform(key, shape, dtype, -bound, bound)

  return init


class Conv3x3(nn.Module):
  """3x3 convolution with zero padding 1 and a bias (H and W kept), in formulation
  `conv_impl` (`convolution.IMPLS`)."""

  features: int
  conv_impl: str = "xla"

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    fan_in = 9 * x.shape[-1]
    kernel = self.param("kernel", _fan_in_uniform(fan_in), (3, 3, x.shape[-1], self.features))
    bias = self.param("bias", _fan_in_uniform(fan_in), (self.features,))
    return (convolution.conv(x, kernel.astype(x.dtype), 1, 1, self.conv_impl)
            + bias.astype(x.dtype))


def _batch_norm(train: bool) -> nn.BatchNorm:
  return nn.BatchNorm(use_running_average=not train, momentum=BN_MOMENTUM,
                      epsilon=BN_EPSILON)


def upsample_nearest(x: jax.Array, factor: int = 2) -> jax.Array:
  """Nearest-neighbour upsampling of the two spatial axes of an NHWC batch."""
  return jnp.repeat(jnp.repeat(x, factor, axis=1), factor, axis=2)


class Encoder(nn.Module):
  """[B, H, W, C] images -> [B, H / 2^n, W / 2^n, latent_features] codes."""

  features: int = 32
  num_blocks: int = 4
  latent_features: int = 16
  negative_slope: float = 0.01
  conv_impl: str = "xla"

  @nn.compact
  def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
    act = lambda h: nn.leaky_relu(h, self.negative_slope)
    conv = functools.partial(Conv3x3, conv_impl=self.conv_impl)
    h = x
    for block in range(self.num_blocks):
      width = self.features * 2 ** block
      h = act(conv(width)(h))
      h = act(conv(width)(h))
      h = _batch_norm(train)(h)
      h = nn.avg_pool(h, (2, 2), strides=(2, 2))
    h = act(conv(self.features * 2 ** (self.num_blocks - 1))(h))
    return conv(self.latent_features)(h)


class Decoder(nn.Module):
  """[B, h, w, latent] codes -> [B, h 2^n, w 2^n, out_channels] images."""

  features: int = 32
  num_blocks: int = 4
  out_channels: int = 1
  negative_slope: float = 0.01
  conv_impl: str = "xla"

  @nn.compact
  def __call__(self, z: jax.Array, train: bool = False) -> jax.Array:
    act = lambda h: nn.leaky_relu(h, self.negative_slope)
    conv = functools.partial(Conv3x3, conv_impl=self.conv_impl)
    h = z
    for block in reversed(range(self.num_blocks)):
      width = self.features * 2 ** block
      h = act(conv(width)(h))
      h = act(conv(width)(h))
      h = _batch_norm(train)(h)
      h = upsample_nearest(h)
    h = act(conv(self.features)(h))
    return conv(self.out_channels)(h)


class Autoencoder(nn.Module):
  """Encoder and decoder; `encode` and `decode` are separately applicable methods.

  Attributes:
    features: kernels of the first encoder block (32 in the paper).
    num_blocks: encoder (and decoder) blocks (4); each halves H and W.
    latent_features: channels of the code (16).
    negative_slope: leaky ReLU slope.
    conv_impl: convolution formulation of every layer (`convolution.IMPLS`; the
      method passes `convolution.resolve(config.model.conv_impl)`).
  """

  features: int = 32
  num_blocks: int = 4
  latent_features: int = 16
  negative_slope: float = 0.01
  conv_impl: str = "xla"

  @property
  def size_multiple(self) -> int:
    """H and W of an input must be multiples of this."""
    return 2 ** self.num_blocks

  def setup(self):
    self.encoder = Encoder(self.features, self.num_blocks, self.latent_features,
                           self.negative_slope, self.conv_impl)
    self.decoder = Decoder(self.features, self.num_blocks, 1, self.negative_slope,
                           self.conv_impl)

  def encode(self, x: jax.Array, train: bool = False) -> jax.Array:
    return self.encoder(x, train)

  def decode(self, z: jax.Array, train: bool = False) -> jax.Array:
    return self.decoder(z, train)

  def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
    m = self.size_multiple
    if x.shape[1] % m or x.shape[2] % m:
      raise ValueError(f"autoencoder input {x.shape[1]}x{x.shape[2]} must have sides "
                       f"divisible by {m} (2 ** num_blocks)")
    return self.decode(self.encode(x, train), train)
