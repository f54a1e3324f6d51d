"""CycleGAN/CLADE losses: adversarial, cycle, identity and Sobel gradient mapping.

Images are NHWC batches in [-1, 1]; every loss is a mean over all elements, so values
do not depend on batch or patch size.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import optax
from jax import lax

GAN_LOSSES = ("log", "lsgan")

# Sobel kernels as TensorFlow's tf.image.sobel_edges uses them (the paper's framework):
# S_x differentiates along columns (x, image width), S_y along rows (y, height).
SOBEL_X = jnp.array([[-1.0, 0.0, 1.0], [-2.0, 0.0, 2.0], [-1.0, 0.0, 1.0]])
SOBEL_Y = SOBEL_X.T


def l1(a: jax.Array, b: jax.Array) -> jax.Array:
  return jnp.mean(jnp.abs(a - b))


def sobel(images: jax.Array) -> tuple[jax.Array, jax.Array]:
  """Sobel gradients (S_x, S_y) of [B, H, W, C] images, 'valid' region [B, H-2, W-2, C].

  Valid convolution keeps padding artefacts at the patch border out of the loss.
  """
  channels = images.shape[-1]
  kernels = jnp.stack([SOBEL_X, SOBEL_Y], axis=-1)[:, :, None, :]  # HWIO, O = (x, y)
  kernels = jnp.tile(kernels, (1, 1, 1, channels)).astype(images.dtype)
  grads = lax.conv_general_dilated(
      images, kernels, (1, 1), "VALID",
      dimension_numbers=("NHWC", "HWIO", "NHWC"), feature_group_count=channels)
  return grads[..., 0::2], grads[..., 1::2]


def gradient_map_loss(inputs: jax.Array, cycled: jax.Array) -> jax.Array:
  """|| (S_x(cycled) - S_x(input)) + (S_y(cycled) - S_y(input)) ||_1 for one cycle.

  GLADE Eq. 1 applies this to both cycles, x -> G_Y(G_X(x)) and y -> G_X(G_Y(y)); the
  CLADE preprint's Eq. 7 writes G_Y(G_X(y)) and G_X(G_Y(y)), which applies a generator
  to the wrong domain. We follow GLADE: the caller sums this over both cycles.
  """
  gx_in, gy_in = sobel(inputs)
  gx_cyc, gy_cyc = sobel(cycled)
  return jnp.mean(jnp.abs((gx_cyc - gx_in) + (gy_cyc - gy_in)))


def generator_adversarial_loss(fake_logits: jax.Array, kind: str = "log") -> jax.Array:
  """Generator's adversarial loss on discriminator logits of generated images.

  'log' is the non-saturating form of the paper's log-likelihood loss (Eq. 2-3),
  -log D(G(x)); 'lsgan' is (D(G(x)) - 1)^2, as in the CycleGAN reference code.
  """
  if kind == "log":
    return jnp.mean(optax.sigmoid_binary_cross_entropy(fake_logits, jnp.ones_like(fake_logits)))
  if kind == "lsgan":
    return jnp.mean(jnp.square(fake_logits - 1.0))
  raise ValueError(f"unknown GAN loss {kind!r}; use one of {GAN_LOSSES}")


def discriminator_loss(real_logits: jax.Array, fake_logits: jax.Array,
                       kind: str = "log") -> jax.Array:
  """Discriminator's loss, halved as in CycleGAN so D learns slower than G."""
  if kind == "log":
    real = optax.sigmoid_binary_cross_entropy(real_logits, jnp.ones_like(real_logits))
    fake = optax.sigmoid_binary_cross_entropy(fake_logits, jnp.zeros_like(fake_logits))
  elif kind == "lsgan":
    real, fake = jnp.square(real_logits - 1.0), jnp.square(fake_logits)
  else:
    raise ValueError(f"unknown GAN loss {kind!r}; use one of {GAN_LOSSES}")
  return 0.5 * (jnp.mean(real) + jnp.mean(fake))
