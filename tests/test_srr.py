"""Tests for the sliding-window super-resolution reconstruction (srr.py)."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from clade_jax import srr

PATCH = 32
STRIDES = [1, 5, 6, 12, 32]


def _identity(params, patches):
  del params
  return patches


def _affine(params, patches):
  del params
  return patches * 2.0 + 1.0


def _random_slices(num_slices, height, width, seed=0):
  rng = np.random.default_rng(seed)
  return rng.uniform(-1.0, 1.0, (num_slices, height, width)).astype(np.float32)


def _loop_coverage(height, width, starts_r, starts_c, patch_size):
  """Independent reference: count patches per pixel with explicit loops."""
  counts = np.zeros((height, width), np.int64)
  for r in starts_r:
    for c in starts_c:
      for i in range(r, r + patch_size):
        for j in range(c, c + patch_size):
          counts[i, j] += 1
  return counts


class TinyGenerator(nn.Module):
  """Generator stand-in: a zero-padded conv, so it depends on position."""

  @nn.compact
  def __call__(self, x):
    return jnp.tanh(nn.Conv(1, (3, 3))(x))


@pytest.fixture(scope='module')
def tiny():
  """A tiny flax generator and its patch- and full-mode reconstructions.

  Module-scoped so that each configuration compiles once for all tests.
  """
  model = TinyGenerator()
  # Parameters drawn in numpy on the shapes flax would make: compiling flax's
  # own random initialisers costs seconds on CPU.
  shapes = jax.eval_shape(model.init, jax.random.key(0),
                          jnp.zeros((1, PATCH, PATCH, 1)))['params']
  rng = np.random.default_rng(3)
  params = jax.tree.map(
      lambda leaf: rng.normal(0.0, 0.5, leaf.shape).astype(np.float32), shapes)

  def apply_fn(p, x):
    return model.apply({'params': p}, x)

  slices = _random_slices(3, 45, 70)
  return dict(
      apply_fn=apply_fn, params=params, slices=slices,
      patch=srr.reconstruct_slices(apply_fn, params, slices, srr.Window(stride=12)),
      full=srr.reconstruct_slices(apply_fn, params, slices, srr.Window(mode='full')))


# ----------------------------------------------------------------- patch_starts


@pytest.mark.parametrize('length', [32, 33, 45, 70, 97, 512])
@pytest.mark.parametrize('stride', STRIDES)
def test_patch_starts_flush_increasing_and_covering(length, stride):
  starts = srr.patch_starts(length, PATCH, stride)
  assert starts[0] == 0
  assert starts[-1] == length - PATCH
  assert np.all(np.diff(starts) > 0)
  assert np.all(np.diff(starts) <= stride)
  covered = np.zeros(length, bool)
  for s in starts:
    covered[s:s + PATCH] = True
  assert covered.all()


def test_patch_starts_values():
  np.testing.assert_array_equal(srr.patch_starts(45, 32, 5), [0, 5, 10, 13])
  np.testing.assert_array_equal(srr.patch_starts(70, 32, 12),
                                [0, 12, 24, 36, 38])
  np.testing.assert_array_equal(srr.patch_starts(64, 32, 32), [0, 32])
  np.testing.assert_array_equal(srr.patch_starts(32, 32, 6), [0])
  # 512 at stride 6: the paper's CT setting, 81 x 81 = 6,561 patches a slice.
  assert len(srr.patch_starts(512, 32, 6)) == 81


@pytest.mark.parametrize('length,stride', [(31, 6), (45, 0), (45, 33)])
def test_patch_starts_rejects_bad_arguments(length, stride):
  with pytest.raises(ValueError):
    srr.patch_starts(length, PATCH, stride)


# --------------------------------------------------------------------- coverage


@pytest.mark.parametrize('shape', [(45, 70), (33, 97), (32, 32), (64, 40)])
@pytest.mark.parametrize('stride', [5, 6, 12, 32])
def test_coverage_matches_loop_count(shape, stride):
  starts_r = srr.patch_starts(shape[0], PATCH, stride)
  starts_c = srr.patch_starts(shape[1], PATCH, stride)
  counts = srr.coverage(shape, starts_r, starts_c, PATCH)
  expected = _loop_coverage(*shape, starts_r, starts_c, PATCH)
  np.testing.assert_array_equal(counts, expected)
  assert counts.dtype == np.float32
  assert counts.min() >= 1
  # Corners are reached only by the corner patches of the grid.
  for corner in [(0, 0), (0, -1), (-1, 0), (-1, -1)]:
    assert counts[corner] == 1


def test_coverage_edges_by_hand():
  # Columns 0..39, starts [0, 8]: single cover at both ends, double between.
  starts_c = srr.patch_starts(40, PATCH, 8)
  counts = srr.coverage((32, 40), [0], starts_c, PATCH)
  expected_row = np.array([1] * 8 + [2] * 24 + [1] * 8)
  np.testing.assert_array_equal(counts, np.tile(expected_row, (32, 1)))


def test_coverage_is_one_when_stride_equals_patch():
  shape = (96, 64)
  counts = srr.coverage(shape, srr.patch_starts(96, PATCH, PATCH),
                        srr.patch_starts(64, PATCH, PATCH), PATCH)
  np.testing.assert_array_equal(counts, np.ones(shape))


# ------------------------------------------------------- extraction / stitching


@pytest.mark.parametrize('channels', [None, 3])
def test_extract_patches_matches_slicing(channels):
  shape = (45, 70) if channels is None else (45, 70, channels)
  image = np.random.default_rng(1).normal(size=shape).astype(np.float32)
  starts_r = srr.patch_starts(45, PATCH, 6)
  starts_c = srr.patch_starts(70, PATCH, 12)
  patches = np.asarray(srr.extract_patches(image, starts_r, starts_c, PATCH))
  assert patches.shape == (len(starts_r) * len(starts_c), PATCH, PATCH,
                           channels or 1)
  index = 0
  for r in starts_r:
    for c in starts_c:
      expected = image[r:r + PATCH, c:c + PATCH]
      np.testing.assert_array_equal(patches[index],
                                    expected.reshape(patches[index].shape))
      index += 1


def test_stitch_of_extract_is_image_times_coverage():
  image = _random_slices(1, 45, 70)[0]
  starts_r = srr.patch_starts(45, PATCH, 5)
  starts_c = srr.patch_starts(70, PATCH, 6)
  patches = srr.extract_patches(image, starts_r, starts_c, PATCH)
  summed = np.asarray(srr.stitch_patches(patches, starts_r, starts_c, (45, 70)))
  counts = srr.coverage((45, 70), starts_r, starts_c, PATCH)
  np.testing.assert_allclose(summed[..., 0], image * counts, rtol=1e-6)


# ------------------------------------------------------------ patch-mode SRR


# Every size meets several strides and every stride several sizes; the full
# grid would add compiles (~0.3 s each on CPU) without new edge cases.
IDENTITY_CASES = (
    [((45, 70), stride) for stride in STRIDES]
    + [((33, 97), stride) for stride in (1, 6, 12)]
    + [((32, 32), stride) for stride in (5, 32)]
    + [((20, 50), stride) for stride in (1, 6, 32)])


@pytest.mark.parametrize('shape,stride', IDENTITY_CASES)
def test_identity_generator_returns_input(shape, stride):
  slices = _random_slices(2, *shape)
  out = srr.reconstruct_slices(_identity, None, slices, srr.Window(stride=stride, batch_size=256))
  assert out.shape == slices.shape and out.dtype == np.float32
  # rtol as np.allclose: at stride 1 a pixel averages up to 1,024 float32
  # copies of itself, which rounds to a few 1e-6 for values near 1.
  np.testing.assert_allclose(out, slices, atol=1e-6, rtol=1e-5)


def test_position_dependent_generator_by_hand():
  # Output = column within the patch. One row of patches at columns [0, 8].
  def column_in_patch(params, patches):
    del params
    return jnp.broadcast_to(
        jnp.arange(PATCH, dtype=jnp.float32)[None, None, :, None],
        patches.shape)

  out = srr.reconstruct_slices(column_in_patch, None, np.zeros((1, 32, 40), np.float32),
                               srr.Window(stride=8))
  x = np.arange(40, dtype=np.float32)
  # Covered by patch 0 only (x), by both ((x + x - 8) / 2), by patch 8 only.
  expected_row = np.where(x < 8, x, np.where(x < 32, x - 4, x - 8))
  np.testing.assert_allclose(out[0], np.tile(expected_row, (32, 1)), atol=1e-6)


def test_position_dependent_generator_matches_loop_average():
  height, width, stride = 45, 70, 12
  weights = np.random.default_rng(2).normal(size=(PATCH, PATCH))
  weights = weights.astype(np.float32)

  def weighted(params, patches):
    del params
    return patches * weights[None, :, :, None] + 0.5

  slices = _random_slices(1, height, width)
  out = srr.reconstruct_slices(weighted, None, slices, srr.Window(stride=stride, batch_size=5))
  total = np.zeros((height, width))
  counts = np.zeros((height, width))
  for r in srr.patch_starts(height, PATCH, stride):
    for c in srr.patch_starts(width, PATCH, stride):
      window = slices[0, r:r + PATCH, c:c + PATCH]
      total[r:r + PATCH, c:c + PATCH] += window * weights + 0.5
      counts[r:r + PATCH, c:c + PATCH] += 1
  np.testing.assert_allclose(out[0], total / counts, atol=1e-5)


def test_chunked_equals_unchunked(tiny):
  # Chunks of 2 slices (the last one padded) and 7 patches per generator
  # call against one chunk of 3 slices and all 3 x 24 patches in one call.
  chunked = srr.reconstruct_slices(
      tiny['apply_fn'], tiny['params'], tiny['slices'],
      srr.Window(stride=12, slices_per_chunk=2, batch_size=7))
  np.testing.assert_allclose(chunked, tiny['patch'], atol=1e-6)


def test_patch_mode_differs_from_full_mode_for_a_conv_generator(tiny):
  # The zero-padded conv sees patch borders in patch mode, so the overlaps
  # average different values and the result is not the full-slice pass.
  assert np.isfinite(tiny['patch']).all() and np.isfinite(tiny['full']).all()
  assert np.abs(tiny['patch'] - tiny['full']).max() > 1e-3


def _identity_recording(seen):
  """An identity generator that appends each traced batch shape to `seen` (it runs
  at trace time only, so `len(seen)` counts compilations)."""

  def identity(params, patches):
    del params
    seen.append(patches.shape)
    return patches

  return identity


def test_compiled_once_across_chunks():
  traces = []
  counting_identity = _identity_recording(traces)
  slices = _random_slices(5, 33, 40)
  bar = []
  out = srr.reconstruct_slices(counting_identity, None, slices,
                               srr.Window(stride=6, slices_per_chunk=2),
                               progress=bar.append)
  np.testing.assert_allclose(out, slices, atol=1e-6)
  assert len(traces) == 1
  assert bar == [2, 2, 1]


def test_batch_size_bounds_the_generator_batch():
  batch_sizes = []

  def recording_identity(params, patches):
    batch_sizes.append(patches.shape[0])
    return patches

  srr.reconstruct_slices(recording_identity, None, _random_slices(3, 45, 70),
                         srr.Window(stride=6, batch_size=10, slices_per_chunk=3))
  assert batch_sizes and max(batch_sizes) <= 10


def test_rejects_generator_changing_shape():
  with pytest.raises(ValueError, match='same shape'):
    srr.reconstruct_slices(lambda p, x: x[..., :16, :], None,
                           _random_slices(1, 40, 40))


@pytest.mark.parametrize('settings, field', [
    (dict(mode='tiles'), 'mode'), (dict(blend='median'), 'blend'),
    (dict(stride=0), 'stride'), (dict(patch_size=16, stride=17), 'stride'),
    (dict(stride=1.5), 'stride'), (dict(batch_size=0), 'batch_size'),
    (dict(slices_per_chunk=0), 'slices_per_chunk'), (dict(size_multiple=0), 'size_multiple'),
    (dict(patch_size=True), 'patch_size')])
def test_window_rejects_a_bad_setting_naming_it(settings, field):
  with pytest.raises(srr.WindowError, match=f'^{field} must ') as error:
    srr.Window(**settings)
  assert error.value.field == field
  assert f'got {settings[field]!r}' in str(error.value)


def test_equal_windows_share_one_compiled_program():
  traces = []
  counting_identity = _identity_recording(traces)
  slices = _random_slices(2, 40, 40)
  for _ in range(2):  # Two equal Window objects: one cache entry.
    srr.reconstruct_slices(counting_identity, None, slices, srr.Window(stride=9))
  assert len(traces) == 1
  assert srr.Window(stride=9) == srr.Window(stride=9)
  assert hash(srr.Window(stride=9)) == hash(srr.Window(stride=9))


# ------------------------------------------------------------------ full mode


@pytest.mark.parametrize('shape', [(45, 70), (32, 32), (21, 50)])
@pytest.mark.parametrize('multiple', [1, 4])
def test_full_mode_pointwise_generator(shape, multiple):
  seen = []

  def pointwise(params, x):
    del params
    seen.append(x.shape)  # Runs at trace time only.
    return jnp.tanh(3.0 * x) + 0.5

  slices = _random_slices(3, *shape)
  out = srr.reconstruct_slices(
      pointwise, None, slices,
      srr.Window(mode='full', slices_per_chunk=2, size_multiple=multiple))
  np.testing.assert_allclose(out, np.tanh(3.0 * slices) + 0.5, atol=1e-6)
  # Reflect-padded up to the size multiple (4 for two downsamplings by 2).
  padded = tuple(-(-side // multiple) * multiple for side in shape)
  assert seen == [(2, *padded, 1)]


@pytest.mark.parametrize('mode', ['patch', 'full'])
def test_affine_generator_in_both_modes(mode):
  # A pointwise generator has no receptive field, so the border conditions
  # that separate the two modes do not matter: both give 2x + 1.
  slices = _random_slices(2, 45, 70)
  out = srr.reconstruct_slices(_affine, None, slices, srr.Window(mode=mode, stride=6))
  np.testing.assert_allclose(out, slices * 2 + 1, atol=1e-5)


def test_full_mode_flax_generator_shape(tiny):
  assert tiny['full'].shape == tiny['slices'].shape


# ------------------------------------------------------------------- sharding


@pytest.mark.parametrize('mode', ['patch', 'full'])
def test_sharded_over_data_mesh(tiny, mode):
  mesh = jax.make_mesh((jax.device_count(),), ('data',))
  apply_fn, params = tiny['apply_fn'], tiny['params']
  # slices_per_chunk=1 is rounded up to the mesh size; 3 slices -> 2 chunks.
  sharded = srr.reconstruct_slices(
      apply_fn, params, tiny['slices'],
      srr.Window(stride=12, mode=mode, slices_per_chunk=1), mesh=mesh)
  np.testing.assert_allclose(sharded, tiny[mode], atol=1e-6)

  chunk = jax.device_put(tiny['slices'][:2],
                         jax.sharding.NamedSharding(mesh, jax.P('data')))
  reconstruct = srr.make_slice_reconstructor(apply_fn, srr.Window(stride=12, mode=mode), mesh=mesh)
  out = reconstruct(params, chunk)
  assert len(out.sharding.device_set) == jax.device_count()
  np.testing.assert_allclose(np.asarray(out), tiny[mode][:2], atol=1e-6)


# ------------------------------------------------------------------- blending


def test_blend_window_values():
  np.testing.assert_array_equal(srr.blend_window(PATCH, 'flat'), np.ones(PATCH))
  taper = srr.blend_window(PATCH, 'taper')
  i = np.arange(PATCH)
  np.testing.assert_allclose(taper, np.sin(np.pi * (i + 0.5) / PATCH) ** 2)
  np.testing.assert_allclose(taper, taper[::-1])  # Symmetric.
  assert taper.min() > 0 and taper.max() <= 1  # Every pixel keeps some weight.
  with pytest.raises(ValueError, match='blend'):
    srr.blend_window(PATCH, 'gaussian')


@pytest.mark.parametrize('shape', [(45, 70), (32, 32)])
@pytest.mark.parametrize('stride', [6, 12])
def test_taper_coverage_is_the_sum_of_the_weights(shape, stride):
  window = srr.blend_window(PATCH, 'taper')
  starts_r = srr.patch_starts(shape[0], PATCH, stride)
  starts_c = srr.patch_starts(shape[1], PATCH, stride)
  expected = np.zeros(shape)
  for r in starts_r:
    for c in starts_c:
      expected[r:r + PATCH, c:c + PATCH] += np.outer(window, window)
  np.testing.assert_allclose(
      srr.coverage(shape, starts_r, starts_c, PATCH, blend='taper'), expected, rtol=1e-6)


@pytest.mark.parametrize('shape,stride', [((45, 70), 12), ((45, 70), 1), ((33, 97), 6),
                                          ((20, 50), 32)])
def test_taper_reproduces_identity_and_constant_generators(shape, stride):
  slices = _random_slices(2, *shape)
  out = srr.reconstruct_slices(_identity, None, slices, srr.Window(stride=stride, blend='taper'))
  np.testing.assert_allclose(out, slices, atol=1e-6, rtol=1e-5)
  constant = srr.reconstruct_slices(lambda p, x: jnp.full_like(x, 0.37), None, slices,
                                    srr.Window(stride=stride, blend='taper'))
  np.testing.assert_allclose(constant, 0.37, rtol=1e-5)  # float32 sums, as above.


def test_taper_matches_loop_weighted_average():
  height, width, stride = 45, 70, 12
  weights = np.random.default_rng(2).normal(size=(PATCH, PATCH)).astype(np.float32)

  def weighted(params, patches):
    del params
    return patches * weights[None, :, :, None] + 0.5

  slices = _random_slices(1, height, width)
  out = srr.reconstruct_slices(weighted, None, slices,
                               srr.Window(stride=stride, batch_size=5, blend='taper'))
  window = np.outer(*(2 * [srr.blend_window(PATCH, 'taper')]))
  total, norm = np.zeros((height, width)), np.zeros((height, width))
  for r in srr.patch_starts(height, PATCH, stride):
    for c in srr.patch_starts(width, PATCH, stride):
      patch = slices[0, r:r + PATCH, c:c + PATCH] * weights + 0.5
      total[r:r + PATCH, c:c + PATCH] += window * patch
      norm[r:r + PATCH, c:c + PATCH] += window
  np.testing.assert_allclose(out[0], total / norm, atol=1e-5)


def _seam_jumps(image, boundaries):
  """Largest |difference of adjacent rows| across the given row boundaries."""
  jumps = np.abs(np.diff(image, axis=0))
  return jumps[np.asarray(boundaries) - 1].max()


def test_taper_removes_the_steps_of_patch_wise_offsets():
  # A generator that shifts each patch by its own mean (the blockiness of
  # per-patch statistics): a flat average switches between patch offsets where
  # a patch starts or ends, the taper fades them in.
  def offset_by_mean(params, patches):
    del params
    return patches + jnp.mean(patches, axis=(1, 2, 3), keepdims=True)

  height = 96
  ramp = np.linspace(-1, 1, height, dtype=np.float32)[:, None]
  slices = np.broadcast_to(ramp * ramp * 3, (1, height, 40)).copy()
  starts = srr.patch_starts(height, PATCH, 12)
  edges = sorted({int(s) for s in starts[1:]} | {int(s) + PATCH for s in starts[:-1]})
  smooth = _seam_jumps(slices[0], edges)  # The input's own slope.
  flat = srr.reconstruct_slices(offset_by_mean, None, slices, srr.Window(stride=12))[0]
  taper = srr.reconstruct_slices(offset_by_mean, None, slices,
                                 srr.Window(stride=12, blend='taper'))[0]
  assert _seam_jumps(flat, edges) > 3 * smooth
  assert _seam_jumps(taper, edges) < 0.3 * _seam_jumps(flat, edges)


def test_rejects_unknown_blend():
  with pytest.raises(ValueError, match='blend'):
    srr.reconstruct_slices(_identity, None, _random_slices(1, 40, 40), srr.Window(blend='median'))
