"""Losses against hand-computed values."""

import math

import jax.numpy as jnp
import numpy as np
import pytest

from clade_jax import losses


def ramp(rows, cols, slope_x=0.0, slope_y=0.0):
  r, c = np.meshgrid(np.arange(rows), np.arange(cols), indexing="ij")
  return jnp.asarray((slope_x * c + slope_y * r)[None, :, :, None], jnp.float32)


def test_sobel_of_a_ramp_is_eight_times_the_slope():
  gx, gy = losses.sobel(ramp(6, 7, slope_x=0.5, slope_y=-2.0))
  assert gx.shape == gy.shape == (1, 4, 5, 1)
  # [-1 0 1; -2 0 2; -1 0 1] applied to a*c: (1 + 2 + 1) * 2a = 8a.
  np.testing.assert_allclose(gx, 4.0)
  np.testing.assert_allclose(gy, -16.0)


def test_l1_is_the_mean_absolute_difference():
  a = jnp.array([[1.0, -2.0], [3.0, 0.5]])
  b = jnp.array([[0.0, 0.0], [1.0, 0.5]])
  assert float(losses.l1(a, b)) == pytest.approx((1 + 2 + 2 + 0) / 4)


def test_gradient_map_loss_hand_computed():
  inputs = ramp(5, 5, slope_x=1.0)  # S_x = 8, S_y = 0
  cycled = ramp(5, 5, slope_x=0.25, slope_y=0.5)  # S_x = 2, S_y = 4
  # |(2 - 8) + (4 - 0)| = 2 everywhere.
  assert float(losses.gradient_map_loss(inputs, cycled)) == pytest.approx(2.0)


def test_gradient_map_loss_ignores_intensity_offsets_and_is_zero_for_identity():
  x = jnp.asarray(np.random.default_rng(0).uniform(-1, 1, (2, 8, 8, 1)), jnp.float32)
  assert float(losses.gradient_map_loss(x, x)) == 0.0
  assert float(losses.gradient_map_loss(x, x + 0.3)) == pytest.approx(0.0, abs=1e-5)


def test_gradient_map_loss_sums_x_and_y_before_the_norm():
  # Opposite gradient errors in x and y cancel inside the norm (paper Eq. 7 / GLADE Eq. 1).
  inputs = ramp(5, 5)
  cycled = ramp(5, 5, slope_x=1.0, slope_y=-1.0)
  assert float(losses.gradient_map_loss(inputs, cycled)) == pytest.approx(0.0, abs=1e-6)


def test_log_adversarial_losses_at_chance():
  zeros = jnp.zeros((2, 2, 2, 1))
  assert float(losses.generator_adversarial_loss(zeros, "log")) == pytest.approx(math.log(2))
  assert float(losses.discriminator_loss(zeros, zeros, "log")) == pytest.approx(math.log(2))


def test_log_adversarial_losses_hand_computed():
  real, fake = jnp.array([2.0]), jnp.array([-1.0])
  softplus = lambda t: math.log1p(math.exp(t))
  # -log sigmoid(z) = softplus(-z); -log(1 - sigmoid(z)) = softplus(z).
  assert float(losses.generator_adversarial_loss(fake)) == pytest.approx(softplus(1.0))
  expected = 0.5 * (softplus(-2.0) + softplus(-1.0))
  assert float(losses.discriminator_loss(real, fake)) == pytest.approx(expected, rel=1e-6)


def test_lsgan_losses_hand_computed():
  real, fake = jnp.array([0.5, 1.0]), jnp.array([0.0, 2.0])
  assert float(losses.generator_adversarial_loss(fake, "lsgan")) == pytest.approx((1 + 1) / 2)
  expected = 0.5 * ((0.25 + 0) / 2 + (0 + 4) / 2)
  assert float(losses.discriminator_loss(real, fake, "lsgan")) == pytest.approx(expected)


def test_unknown_gan_loss_is_rejected():
  with pytest.raises(ValueError, match="unknown GAN loss"):
    losses.generator_adversarial_loss(jnp.zeros(1), "wgan")
