"""Generators, discriminators and weight demodulation."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from clade_jax.models.discriminator import PatchDiscriminator
from clade_jax.models.generator import ResnetGenerator
from clade_jax.models.layers import demodulate
from clade_jax.models import layers


def test_demodulate_gives_each_output_channel_a_unit_norm_kernel():
  kernel = jax.random.normal(jax.random.key(0), (3, 3, 5, 7)) * jnp.arange(1, 8)
  norms = np.sqrt(np.sum(np.square(demodulate(kernel)), axis=(0, 1, 2)))
  np.testing.assert_allclose(norms, np.ones(7), rtol=1e-5)


def test_demodulate_matches_equation_6_elementwise():
  kernel = np.random.default_rng(0).normal(size=(3, 3, 2, 4)).astype(np.float32)
  expected = kernel / np.sqrt(np.sum(kernel**2, axis=(0, 1, 2)) + 1e-8)
  np.testing.assert_allclose(demodulate(jnp.asarray(kernel)), expected, rtol=1e-5)


def test_demodulated_conv_is_invariant_to_kernel_scale():
  x = jax.random.normal(jax.random.key(1), (2, 8, 8, 3))
  conv = layers.Conv(4, 3, padding=1, demodulate=True, use_bias=False)
  params = conv.init(jax.random.key(2), x)
  scaled = jax.tree.map(lambda k: 10.0 * k, params)
  np.testing.assert_allclose(conv.apply(params, x), conv.apply(scaled, x), rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("norm", ["demod", "instance"])
@pytest.mark.parametrize("size", [32, 48])
def test_generator_maps_images_to_same_shape_in_tanh_range(norm, size):
  generator = ResnetGenerator(features=4, num_blocks=1, norm=norm)
  x = jax.random.uniform(jax.random.key(0), (2, size, size, 1), minval=-1, maxval=1)
  params = jax.jit(generator.init)(jax.random.key(1, impl='rbg'), x)
  y = jax.jit(generator.apply)(params, x)
  assert y.shape == x.shape
  assert np.all(np.abs(np.asarray(y)) <= 1.0)


def test_clade_generator_has_no_norm_state_and_cyclegan_differs_only_in_norm():
  x = jnp.zeros((1, 32, 32, 1))
  shapes = {norm: jax.eval_shape(ResnetGenerator(8, 2, norm).init, jax.random.key(0), x)
            for norm in ("demod", "instance")}
  # Instance norm here has no affine params, so both variants have identical params.
  assert shapes["demod"] == shapes["instance"]


def test_paper_sized_generator_has_cyclegan_parameter_count():
  # ngf=64, 6 residual blocks, 1 channel in and out (CycleGAN's resnet_6blocks).
  params = jax.eval_shape(ResnetGenerator().init, jax.random.key(0), jnp.zeros((1, 32, 32, 1)))
  count = sum(np.prod(p.shape) for p in jax.tree.leaves(params))
  expected = (7 * 7 * 1 * 64 + 64) + (3 * 3 * 64 * 128 + 128) + (3 * 3 * 128 * 256 + 256) \
      + 6 * 2 * (3 * 3 * 256 * 256 + 256) + (3 * 3 * 256 * 128 + 128) \
      + (3 * 3 * 128 * 64 + 64) + (7 * 7 * 64 * 1 + 1)
  assert count == expected


def test_patch_discriminator_gives_a_logit_grid():
  disc = PatchDiscriminator(features=4)
  for shape, logits in (((3, 32, 32, 1), (3, 2, 2, 1)), ((1, 70, 70, 1), (1, 6, 6, 1))):
    x = jnp.zeros(shape)
    params = jax.eval_shape(disc.init, jax.random.key(0), x)
    assert jax.eval_shape(disc.apply, params, x).shape == logits


def test_instance_norm_normalises_each_image_and_channel():
  x = jax.random.normal(jax.random.key(0), (2, 6, 6, 3)) * 5 + 3
  y = np.asarray(layers.instance_norm(x))
  np.testing.assert_allclose(y.mean(axis=(1, 2)), 0, atol=1e-5)
  np.testing.assert_allclose(y.std(axis=(1, 2)), 1, atol=1e-3)


@pytest.mark.parametrize("norm", ["demod", "instance"])
def test_residual_generator_starts_at_the_identity_and_can_leave_it(norm):
  generator = ResnetGenerator(features=4, num_blocks=1, norm=norm, residual=True)
  x = jax.random.uniform(jax.random.key(0), (2, 32, 32, 1), minval=-1.2, maxval=1.2)
  params = jax.jit(generator.init)(jax.random.key(1, impl="rbg"), x)
  # Exactly the input, also outside tanh's range: the correction is tanh(0) = 0.
  np.testing.assert_array_equal(np.asarray(jax.jit(generator.apply)(params, x)), x)
  # The zero last layer still gets a gradient, so training moves the output.
  target = jnp.flip(x, axis=1)
  grads = jax.grad(lambda p: jnp.mean((generator.apply(p, x) - target) ** 2))(params)
  last = [k for k in grads["params"] if k.startswith("Conv_")][-1]
  assert float(jnp.abs(grads["params"][last]["kernel"]).max()) > 0


def test_residual_generator_has_the_papers_parameter_shapes():
  x = jnp.zeros((1, 32, 32, 1))
  shapes = [jax.eval_shape(ResnetGenerator(8, 2, residual=r).init, jax.random.key(0), x)
            for r in (False, True)]
  assert shapes[0] == shapes[1]
