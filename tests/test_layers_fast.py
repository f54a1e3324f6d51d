"""The fast convolution formulations compute what lax.conv computes (values and gradients)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax import lax

from clade_jax.models.discriminator import PatchDiscriminator
from clade_jax.models.generator import ResnetGenerator
from clade_jax.models import convolution
from clade_jax.models import layers

RTOL = 1e-4  # Relative to the largest reference value.
FAST_IMPLS = ("im2col", "winograd")


@pytest.fixture(autouse=True)
def _full_float32_matmuls():
  """The formulations' algebra is under test, not the accelerator's matmul rounding.

  On GPUs XLA runs float32 matmuls in TF32 by default (about 1e-3 relative error),
  which the im2col and Winograd formulations, matmuls all the way, would inherit.
  """
  with jax.default_matmul_precision("highest"):
    yield


def assert_close(actual, expected, rtol=RTOL):
  actual, expected = np.asarray(actual), np.asarray(expected)
  assert actual.shape == expected.shape
  scale = np.max(np.abs(expected))
  np.testing.assert_array_less(np.max(np.abs(actual - expected)), rtol * scale)


def reference_conv(x, kernel, stride, padding):
  return lax.conv_general_dilated(x, kernel, (stride, stride), [(padding, padding)] * 2,
                                  dimension_numbers=convolution.DIMENSION_NUMBERS,
                                  precision=lax.Precision.HIGHEST)


def values_and_grads(fn, x, kernel):
  """fn(x, kernel) and its gradients for a random cotangent, as one jitted program."""

  @jax.jit
  def run(x, kernel):
    y, vjp = jax.vjp(fn, x, kernel)
    return (y, *vjp(jax.random.normal(jax.random.key(9), y.shape)))

  return run(x, kernel)


@pytest.mark.parametrize("kernel_size,stride,padding,c_out", [
    (3, 1, 0, 6),  # Residual blocks (reflect-padded outside).
    (3, 2, 1, 6),  # Generator downsampling.
    (4, 2, 1, 6),  # PatchGAN.
    (4, 1, 1, 1),  # PatchGAN logits: the few-output-channel path.
    (7, 1, 3, 2),  # Generator output layer (7x7, padded outside, one channel).
    (3, 2, 0, 1),
])
@pytest.mark.parametrize("impl", FAST_IMPLS)
def test_conv_function_matches_lax_conv(impl, kernel_size, stride, padding, c_out):
  x = jax.random.normal(jax.random.key(0), (2, 11, 9, 5))
  kernel = jax.random.normal(jax.random.key(1), (kernel_size, kernel_size, 5, c_out))
  conv = lambda x, k: convolution.conv(x, k, stride, padding, impl=impl)
  expected = values_and_grads(lambda x, k: reference_conv(x, k, stride, padding), x, kernel)
  for got, want in zip(values_and_grads(conv, x, kernel), expected):
    assert_close(got, want)


@pytest.mark.parametrize("demodulate", [False, True])
def test_conv_module_matches_xla_module(demodulate):
  x = jax.random.normal(jax.random.key(2), (2, 10, 10, 4))
  settings = [(1, 0), (1, 1), (2, 0), (2, 1)]  # (stride, padding)
  make = lambda stride, padding, impl="xla": layers.Conv(8, 3, stride, padding,
                                                        demodulate=demodulate, conv_impl=impl)
  params = make(1, 0).init(jax.random.key(3), x)
  params = jax.tree.map(lambda p: p + 0.1, params)  # Non-zero bias.

  @jax.jit
  def outputs(params, x):
    return {(impl, *s): make(*s, impl).apply(params, x)
            for impl in ("xla", *FAST_IMPLS) for s in settings}

  out = outputs(params, x)
  for impl in FAST_IMPLS:
    for s in settings:
      assert_close(out[(impl, *s)], out[("xla", *s)])


@pytest.mark.parametrize("kernel_size", [3, 4])
@pytest.mark.parametrize("demodulate", [False, True])
def test_conv_transpose_matches_lax_conv_transpose(kernel_size, demodulate):
  x = jax.random.normal(jax.random.key(4), (2, 5, 6, 3))
  layer = lambda impl="xla": layers.ConvTranspose(4, kernel_size, demodulate=demodulate,
                                                  conv_impl=impl)
  params = layer().init(jax.random.key(5), x)

  def apply(impl):
    def fn(x, k):
      return layer(impl).apply({"params": {"kernel": k, "bias": params["params"]["bias"]}}, x)
    return fn
  kernel = params["params"]["kernel"]
  expected = values_and_grads(apply("xla"), x, kernel)
  for impl in FAST_IMPLS:
    for got, want in zip(values_and_grads(apply(impl), x, kernel), expected):
      assert_close(got, want)


@pytest.mark.parametrize("transform", [convolution.WINOGRAD_F2, convolution.WINOGRAD_F4],
                         ids=["F2", "F4"])
def test_winograd_transforms_are_exact_in_one_dimension(transform):
  # A^T [(G g) * (B^T d)] = the correlation of d with g, in float64: the constants are right.
  bt, g, at = (np.array(m, np.float64) for m in transform)
  rng = np.random.default_rng(0)
  d, w = rng.normal(size=len(bt)), rng.normal(size=3)
  np.testing.assert_allclose(at @ ((g @ w) * (bt @ d)), np.correlate(d, w, "valid"),
                             rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("transform", [convolution.WINOGRAD_F2, convolution.WINOGRAD_F4],
                         ids=["F2", "F4"])
@pytest.mark.parametrize("shape", [(1, 9, 12, 2), (1, 5, 4, 3), (2, 10, 10, 16), (1, 13, 7, 4)])
def test_winograd_handles_odd_and_tiny_outputs(transform, shape):
  x = jax.random.normal(jax.random.key(6), shape)
  kernel = jax.random.normal(jax.random.key(7), (3, 3, shape[-1], 5))
  expected = values_and_grads(lambda x, k: reference_conv(x, k, 1, 0), x, kernel)
  winograd = lambda x, k: convolution.winograd_conv3x3(x, k, transform)
  for got, want in zip(values_and_grads(winograd, x, kernel), expected):
    assert_close(got, want)


def test_winograd_f4_error_at_the_residual_blocks_size():
  # The generator's residual blocks: 256 channels on 8x8 maps. Rounding grows with the
  # contraction length; F(4x4, 3x3) stays within 1e-4 of the largest value there too.
  x = jax.random.normal(jax.random.key(14), (2, 10, 10, 256))
  kernel = 0.02 * jax.random.normal(jax.random.key(15), (3, 3, 256, 256))
  expected = values_and_grads(lambda x, k: reference_conv(x, k, 1, 0), x, kernel)
  for got, want in zip(values_and_grads(convolution.winograd_conv3x3, x, kernel), expected):
    assert_close(got, want)


@pytest.mark.parametrize("norm", ["demod", "instance"])
def test_generator_and_discriminator_agree_across_impls(norm):
  x = jax.random.uniform(jax.random.key(8), (2, 32, 32, 1), minval=-1, maxval=1)
  params = jax.jit(ResnetGenerator(4, 1, norm).init)(jax.random.key(9), x)
  params = jax.tree.map(lambda p: p + 0.01, params)
  d_params = jax.jit(PatchDiscriminator(4).init)(jax.random.key(10), x)

  @jax.jit
  def outputs(params, d_params, x):
    return {impl: (ResnetGenerator(4, 1, norm, conv_impl=impl).apply(params, x),
                   PatchDiscriminator(4, conv_impl=impl).apply(d_params, x))
            for impl in ("xla", *FAST_IMPLS, "auto")}

  out = outputs(params, d_params, x)
  for impl in (*FAST_IMPLS, "auto"):
    for got, want in zip(out[impl], out["xla"]):
      assert_close(got, want)


def test_bfloat16_keeps_float32_params_and_outputs_and_stays_close():
  x = jax.random.uniform(jax.random.key(11), (2, 32, 32, 1), minval=-1, maxval=1)
  f32, bf16 = ResnetGenerator(4, 1), ResnetGenerator(4, 1, dtype="bfloat16")
  params = jax.jit(bf16.init)(jax.random.key(12), x)
  assert all(p.dtype == jnp.float32 for p in jax.tree.leaves(params))
  y = jax.jit(bf16.apply)(params, x)
  assert y.dtype == jnp.float32
  np.testing.assert_allclose(y, jax.jit(f32.apply)(params, x), atol=0.05)
  disc = PatchDiscriminator(4, dtype="bfloat16")
  logits = jax.eval_shape(disc.apply, jax.eval_shape(disc.init, jax.random.key(13), x), x)
  assert logits.dtype == jnp.float32


def test_unknown_conv_impl_is_rejected():
  with pytest.raises(ValueError, match="unknown conv_impl 'fft'"):
    convolution.resolve("fft")
  with pytest.raises(ValueError, match="unknown conv_impl 'fft'"):
    convolution.conv(jnp.zeros((1, 8, 8, 1)), jnp.zeros((3, 3, 1, 1)), impl="fft")
  with pytest.raises(ValueError, match="unknown conv_impl 'fft'"):
    layers.Conv(1, 3, conv_impl="fft").init(jax.random.key(0), jnp.zeros((1, 8, 8, 1)))


def test_auto_resolves_per_backend_and_the_others_to_themselves():
  expected = "winograd" if jax.default_backend() == "cpu" else "xla"
  assert convolution.resolve("auto") == expected
  assert [convolution.resolve(impl) for impl in FAST_IMPLS + ("xla",)] == [*FAST_IMPLS, "xla"]


def test_the_formulation_creates_no_params():
  # A checkpoint written with one formulation loads, unchanged, into any other.
  x = jnp.zeros((1, 16, 16, 1))
  params = {impl: jax.jit(ResnetGenerator(4, 1, conv_impl=impl).init)(jax.random.key(0), x)
            for impl in ("xla", *FAST_IMPLS)}
  for impl in FAST_IMPLS:
    jax.tree.map(np.testing.assert_array_equal, params[impl], params["xla"])
