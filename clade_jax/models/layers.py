"""Convolution layers with optional weight demodulation (CLADE, paper Eq. 6).

Every network goes through `Conv` / `ConvTranspose` here, so the demodulation lives in
one place; how the convolution itself is computed (XLA, or the fast CPU formulations)
is `convolution.conv`'s business, in the formulation named by each layer's `conv_impl`.

Mixed precision: params are always created in float32. Layers compute in the dtype of
their input (cast the network input to bfloat16 to run in bfloat16), and kernels are
demodulated in float32 before the cast, so the unit-norm constraint of Eq. 6 holds to
float32 precision.
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
from jax import lax

from clade_jax.models import convolution

DEMOD_EPSILON = 1e-8
# CycleGAN's initialisation: N(0, 0.02) for every convolution.
KERNEL_INIT = nn.initializers.normal(stddev=0.02)


def demodulate(kernel: jax.Array, epsilon: float = DEMOD_EPSILON) -> jax.Array:
  """Scales each output channel's kernel to unit L2 norm: w / sqrt(sum w^2 + eps).

  The sum runs over the spatial positions and input channels of each output channel
  (the last axis of an HWIO kernel). This replaces instance normalisation in the
  CLADE generator: the activations' scale is controlled through the weights instead
  of through per-image statistics, which is what produced the patch-wise "blocky"
  artefacts in sliding-window reconstruction.
  """
  sum_sq = jnp.sum(jnp.square(kernel), axis=(0, 1, 2), keepdims=True)
  return kernel * lax.rsqrt(sum_sq + epsilon)


def reflect_pad(x: jax.Array, pad: int) -> jax.Array:
  """Reflect-pads the two spatial axes of an NHWC batch."""
  return jnp.pad(x, ((0, 0), (pad, pad), (pad, pad), (0, 0)), mode="reflect")


def _prepare_kernel(kernel: jax.Array, demod: bool, dtype) -> jax.Array:
  # Demodulate in float32 (params' dtype), then cast: once per call, fused by XLA
  # with the cast; the activations never see a separate normalisation pass.
  return (demodulate(kernel) if demod else kernel).astype(dtype)


class Conv(nn.Module):
  """2D convolution (NHWC, HWIO kernel), demodulated when `demodulate` is set.

  Attributes:
    features: output channels.
    kernel_size: square kernel size.
    strides: spatial stride.
    padding: symmetric zero padding in pixels (0 = 'VALID').
    demodulate: apply Eq. 6 to the kernel before convolving.
    use_bias: add a learned bias after the convolution.
    kernel_init: initialiser of the kernel (CycleGAN's N(0, 0.02) by default).
    conv_impl: convolution formulation (`convolution.IMPLS`); creates no params.
  """

  features: int
  kernel_size: int
  strides: int = 1
  padding: int = 0
  demodulate: bool = False
  use_bias: bool = True
  kernel_init: nn.initializers.Initializer = KERNEL_INIT
  conv_impl: str = "xla"

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    k = self.kernel_size
    kernel = self.param("kernel", self.kernel_init, (k, k, x.shape[-1], self.features))
    y = convolution.conv(x, _prepare_kernel(kernel, self.demodulate, x.dtype),
                         self.strides, self.padding, self.conv_impl)
    if self.use_bias:
      y = y + self.param("bias", nn.initializers.zeros, (self.features,)).astype(x.dtype)
    return y


class ConvTranspose(nn.Module):
  """Stride-2 transposed convolution that doubles H and W, optionally demodulated.

  Demodulation normalises over the same axes as for `Conv` (all kernel taps and input
  channels of one output channel), as the paper applies Eq. 6 to every "ModConv".
  `conv_impl` is the convolution formulation, as for `Conv`.
  """

  features: int
  kernel_size: int = 3
  strides: int = 2
  demodulate: bool = False
  conv_impl: str = "xla"

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    k = self.kernel_size
    kernel = self.param("kernel", KERNEL_INIT, (k, k, x.shape[-1], self.features))
    y = convolution.conv_transpose(x, _prepare_kernel(kernel, self.demodulate, x.dtype),
                                   self.strides, self.conv_impl)
    return y + self.param("bias", nn.initializers.zeros, (self.features,)).astype(x.dtype)


def instance_norm(x: jax.Array, epsilon: float = 1e-5) -> jax.Array:
  """Per-image, per-channel normalisation without affine parameters (CycleGAN's).

  Statistics are computed in float32 whatever the activations' dtype.
  """
  h = x.astype(jnp.float32)
  mean = jnp.mean(h, axis=(1, 2), keepdims=True)
  var = jnp.var(h, axis=(1, 2), keepdims=True)
  return ((h - mean) * lax.rsqrt(var + epsilon)).astype(x.dtype)
