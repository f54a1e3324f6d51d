"""Sliding-window super-resolution reconstruction (SRR), paper section 4.6.

At inference CLADE runs on full-size 2D slices of an interpolated anisotropic
volume. Each slice is cut into overlapping ``patch_size`` x ``patch_size``
patches at a ``stride``, every patch goes through the generator, the outputs are
stitched back by summation (a scatter-add) and the sum is normalised by the
``coverage``, the number of patches covering each pixel (the paper's Hadamard
product with the reciprocal of the sampling count). That flat average is
``blend='flat'``. With ``blend='taper'`` every patch output is weighted by a
separable raised-cosine window (`blend_window`) before the scatter-add and the sum
is divided by the accumulated weights instead: a pixel then comes mostly from the
patches it is central in, where the generator saw its neighbourhood, and the weight
of each patch fades to almost nothing at its border, so the outputs of neighbouring
patches cross-fade instead of switching at the patch edges (the visible grid of
stride-12 reconstructions). Both are normalised averages, so an identity or a
constant generator is reproduced exactly either way.

Everything from patch extraction to normalisation runs inside one ``jax.jit``;
only the loop over chunks of slices runs on the host. Typical use::

  def apply_fn(params, patches):  # [B, P, P, 1] -> [B, P, P, 1]
    return model.apply({'params': params}, patches)

  bar = tqdm.tqdm(total=len(slices), unit='slice')
  sr_slices = srr.reconstruct_slices(
      apply_fn, params, slices, srr.Window(stride=6), progress=bar.update)

Every setting of the window (patch size, stride, batch size, chunk, mode, blend) is one
frozen `Window`, checked when it is made, from ``infer.py``'s flags
(`volume_srr.SROptions.window`) down to the jitted kernel.

Peak device memory in ``mode='patch'`` is about

  batch_size x (network activations of one patch)
  + about 4 x slices_per_chunk x H x W x 4 bytes

The first term is one network call: the patches of a chunk are flattened across
slices and fed to the network ``batch_size`` at a time inside a ``lax.scan``,
so the full set of patches (6,561 per 512 x 512 slice at stride 6, about 27 MB per
slice in float32 before any activations) is never materialised. The second term is
the input chunk, the float32 accumulator, the chunk's output and the previous chunk's
output waiting to be copied to the host. Neither term depends on the number of slices
in the volume, so ``batch_size`` is the knob that sets the peak. On CPU, XLA's
convolutions take scratch memory outside its own accounting; measured peaks and speeds
are in benchmarks/RESULTS.md (``benchmarks/srr.py``).

``mode='full'`` instead applies the (fully convolutional) network to whole slices,
reflect-padded at the bottom/right to a multiple of ``size_multiple`` (4 for a network
that downsamples twice by 2) and cropped back; its peak is ``slices_per_chunk`` x
(activations of one padded slice). It is faster but not the same image: at patch
borders the network sees reflect padding in patch mode and the neighbouring anatomy in
full mode, and full mode averages nothing.

On GPU, XLA's scatter-add may add overlapping patches in a different order from run to
run, so results can differ in the last float32 bit; set
``XLA_FLAGS=--xla_gpu_deterministic_ops=true`` for bitwise reproducibility.

The volume-level reconstruction (a prepared volume, both low-resolution planes, the
input's units) is `clade_jax.volume_srr`; this module knows nothing of any method.
"""

from collections.abc import Callable
import dataclasses
import functools
from typing import Any, Literal

import jax
from jax import lax
import jax.numpy as jnp
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P
import numpy as np

from clade_jax import distributed

# `apply_fn(params, patches)`: the generator as a pure function of its
# parameters and a float32 NHWC batch; must return the same shape.
ApplyFn = Callable[[Any, jax.Array], jax.Array]
Mode = Literal['patch', 'full']
Blend = Literal['flat', 'taper']
MODES = ('patch', 'full')
BLENDS = ('flat', 'taper')
_DATA_AXIS = 'data'


class WindowError(ValueError):
  """A `Window` setting out of range: "<field> <requirement>"; `field` names it, so
  that a caller can name its own flag or config field instead."""

  def __init__(self, field: str, requirement: str):
    super().__init__(f'{field} {requirement}')
    self.field, self.requirement = field, requirement


@dataclasses.dataclass(frozen=True)
class Window:
  """How slices are cut, batched and stitched: the static settings of `reconstruct_chunk`.

  Frozen and hashable, so one `Window` is one compiled program (with the ``apply_fn``,
  the mesh and the chunk's shape). Checked when made: a bad value raises `WindowError`.

  Attributes:
    patch_size: Side of the square patches (32 in the paper); the network's training
      patch.
    stride: Step between patches, in ``[1, patch_size]`` (a larger stride would leave
      uncovered gaps).
    batch_size: Upper bound on the patches per network call in patch mode (per device
      with a mesh). Sets the peak memory, see the module docstring.
    slices_per_chunk: Slices per jitted call; bounds the accumulator memory. Rounded up
      to a multiple of the mesh size when there is a mesh.
    mode: ``'patch'``: the paper's overlapping sliding-window reconstruction.
      ``'full'``: one network pass over each whole slice, reflect-padded at the
      bottom/right to a multiple of ``size_multiple`` and cropped back. The results
      differ, because near patch borders the network sees padding where in full mode it
      sees the neighbouring anatomy, and no averaging over overlapping patches takes
      place.
    blend: How overlapping patches are averaged: ``'flat'`` (the paper) or ``'taper'``
      (`blend_window`).
    size_multiple: Whole-slice inputs are padded to a multiple of this (the network's
      total downsampling factor; 4 for CycleGAN's ResNet generator).
  """

  patch_size: int = 32
  stride: int = 12
  batch_size: int = 1024
  slices_per_chunk: int = 8
  mode: Mode = 'patch'
  blend: Blend = 'flat'
  size_multiple: int = 1

  def __post_init__(self):
    for field in ('patch_size', 'batch_size', 'slices_per_chunk', 'size_multiple'):
      value = getattr(self, field)
      if not _is_int(value) or value < 1:
        raise WindowError(field, f'must be an integer >= 1, got {value!r}')
    if not _is_int(self.stride) or not 1 <= self.stride <= self.patch_size:
      raise WindowError('stride', f'must be in [1, {self.patch_size}] (the patch size) so '
                                  f'that patches leave no gaps, got {self.stride!r}')
    if self.mode not in MODES:
      raise WindowError('mode', f"must be one of {', '.join(MODES)}, got {self.mode!r}")
    if self.blend not in BLENDS:
      raise WindowError('blend', f"must be one of {', '.join(BLENDS)}, got {self.blend!r}")


def _is_int(value) -> bool:
  return isinstance(value, (int, np.integer)) and not isinstance(value, bool)


def blend_window(patch_size: int, blend: Blend = 'flat') -> np.ndarray:
  """The 1D weight of each pixel of a patch in the stitched average.

  The 2D weight of pixel (i, j) is ``w[i] * w[j]``.

  Args:
    patch_size: Side of the square patch.
    blend: ``'flat'``: every pixel weighs 1 (the paper's average). ``'taper'``:
      the raised cosine ``sin^2(pi (i + 0.5) / patch_size)``, 1 at the centre
      and falling smoothly towards the border; positive everywhere, so a pixel
      covered by a single patch (at the image edge) still gets its value.

  Returns:
    float64 ``[patch_size]`` weights.
  """
  if blend == 'flat':
    return np.ones(patch_size)
  if blend == 'taper':
    return np.sin(np.pi * (np.arange(patch_size) + 0.5) / patch_size) ** 2
  raise ValueError(f"blend must be one of {BLENDS}, got {blend!r}.")


def patch_starts(length: int, patch_size: int, stride: int) -> np.ndarray:
  """Start offsets of the sliding window along one axis.

  Starts are 0, stride, 2 * stride, ... plus a final start flush with the edge
  (``length - patch_size``) when the regular grid does not end there, so every
  pixel is covered and the last patch is never out of bounds.

  Args:
    length: Size of the axis in pixels.
    patch_size: Side of the square patch.
    stride: Step between consecutive starts, in ``[1, patch_size]`` (a larger
      stride would leave uncovered gaps between patches).

  Returns:
    Strictly increasing int32 array of starts, first 0, last
    ``length - patch_size``.

  Raises:
    ValueError: if ``length < patch_size`` (pad the image first, as
      `reconstruct_slices` does) or the stride is out of range.
  """
  if patch_size < 1:
    raise ValueError(f'patch_size must be >= 1, got {patch_size}.')
  if not 1 <= stride <= patch_size:
    raise ValueError(
        f'stride must be in [1, patch_size={patch_size}] so that patches '
        f'leave no gaps, got {stride}.')
  if length < patch_size:
    raise ValueError(
        f'Axis of length {length} is smaller than patch_size={patch_size}; '
        'pad it to at least the patch size first.')
  starts = np.arange(0, length - patch_size + 1, stride)
  if starts[-1] != length - patch_size:
    starts = np.append(starts, length - patch_size)
  return starts.astype(np.int32)


def _check_starts(length: int, starts, patch_size: int) -> np.ndarray:
  starts = np.asarray(starts)
  if starts.size and (starts.min() < 0 or starts.max() > length - patch_size):
    raise ValueError(
        f'Patch starts must lie in [0, {length - patch_size}], got '
        f'[{starts.min()}, {starts.max()}].')
  return starts


def _coverage_1d(length: int, starts, patch_size: int) -> np.ndarray:
  """Number of windows ``[s, s + patch_size)`` covering each index."""
  starts = _check_starts(length, starts, patch_size)
  # Difference array: +1 where a window opens, -1 one past where it closes.
  edges = np.zeros(length + 1, np.int64)
  np.add.at(edges, starts, 1)
  np.add.at(edges, starts + patch_size, -1)
  return np.cumsum(edges)[:length]


def _weight_1d(length: int, starts, window: np.ndarray) -> np.ndarray:
  """Sum over the windows of their weights at each index (float64)."""
  starts = _check_starts(length, starts, window.size)
  total = np.zeros(length)
  for start in starts:
    total[start:start + window.size] += window
  return total


def coverage(
    shape: tuple[int, int],
    starts_r: np.ndarray,
    starts_c: np.ndarray,
    patch_size: int,
    blend: Blend = 'flat',
) -> np.ndarray:
  """Number of patches covering each pixel (the normaliser of section 4.6).

  The patches form the Cartesian grid ``starts_r x starts_c``, so the count
  factorises into the outer product of the per-axis counts.

  Args:
    shape: ``(height, width)`` of the image.
    starts_r: Row starts of the patch grid, e.g. from `patch_starts`.
    starts_c: Column starts of the patch grid.
    patch_size: Side of the square patch.
    blend: ``'flat'`` counts patches; ``'taper'`` sums their `blend_window`
      weights instead (the normaliser of the tapered average).

  Returns:
    float32 array ``[height, width]`` of counts (or summed weights).
  """
  height, width = shape
  return np.outer(*_per_axis_normaliser((height, width), starts_r, starts_c,
                                        patch_size, blend)).astype(np.float32)


def _per_axis_normaliser(shape, starts_r, starts_c, patch_size, blend):
  """The row and column factors of `coverage` (float64)."""
  if blend == 'flat':
    return (_coverage_1d(shape[0], starts_r, patch_size).astype(np.float64),
            _coverage_1d(shape[1], starts_c, patch_size).astype(np.float64))
  window = blend_window(patch_size, blend)
  return (_weight_1d(shape[0], starts_r, window),
          _weight_1d(shape[1], starts_c, window))


def _grid_corners(starts_r, starts_c) -> tuple[np.ndarray, np.ndarray]:
  """Top-left corners of the patch grid, row-major, as two flat arrays."""
  rows, cols = np.meshgrid(
      np.asarray(starts_r, np.int32), np.asarray(starts_c, np.int32),
      indexing='ij')
  return rows.ravel(), cols.ravel()


def _extract(array: jax.Array, starts: jax.Array, sizes) -> jax.Array:
  """Windows of ``array`` of shape ``sizes`` at each row of ``starts``.

  Args:
    array: Array to cut windows from.
    starts: int ``[N, array.ndim]`` window origins.
    sizes: Static window shape, one entry per axis of ``array``.

  Returns:
    ``[N, *sizes]`` windows.
  """
  # vmap of dynamic_slice lowers to a single gather. dynamic_slice clamps its
  # starts, which the padded batch slots in `_reconstruct_patch_mode` rely on.
  return jax.vmap(lambda start: lax.dynamic_slice(array, start, sizes))(starts)


def _scatter_add(
    accumulator: jax.Array, starts: jax.Array, windows: jax.Array
) -> jax.Array:
  """Adds each window into ``accumulator`` at its origin; adjoint of `_extract`.

  Args:
    accumulator: Array to add into.
    starts: int ``[N, accumulator.ndim]`` window origins.
    windows: ``[N, *sizes]`` values to add.

  Returns:
    ``accumulator`` plus every window. Overlaps add up. Windows with any index
    out of bounds are dropped, which is how padded batch slots are discarded.
  """
  # One XLA scatter whose updates are whole windows: the transpose of the
  # gather that `_extract` lowers to. Compared with `.at[]` on per-pixel
  # index arrays it needs no [N, *sizes] index tensors and compiles faster.
  dimension_numbers = lax.ScatterDimensionNumbers(
      update_window_dims=tuple(range(1, windows.ndim)),
      inserted_window_dims=(),
      scatter_dims_to_operand_dims=tuple(range(accumulator.ndim)))
  return lax.scatter_add(
      accumulator, starts, windows, dimension_numbers,
      mode=lax.GatherScatterMode.FILL_OR_DROP)


def extract_patches(
    image: jax.Array, starts_r, starts_c, patch_size: int
) -> jax.Array:
  """Cuts the patch grid ``starts_r x starts_c`` out of one image.

  Args:
    image: ``[H, W]`` or ``[H, W, C]`` image.
    starts_r: Row starts of the grid, e.g. from `patch_starts`.
    starts_c: Column starts of the grid.
    patch_size: Side of the square patch.

  Returns:
    ``[N, patch_size, patch_size, C]`` patches (C = 1 for a 2D image), N =
    ``len(starts_r) * len(starts_c)``, in row-major grid order.
  """
  image = jnp.asarray(image)
  if image.ndim == 2:
    image = image[..., None]
  rows, cols = _grid_corners(starts_r, starts_c)
  return _extract_grid(image, rows, cols, patch_size)


# Jitted so that the eager API runs as one program, not op by op; the corners
# are traced, so only their number and the image shape trigger a recompile.
@functools.partial(jax.jit, static_argnames='patch_size')
def _extract_grid(image, rows, cols, patch_size):
  starts = jnp.stack([rows, cols, jnp.zeros_like(rows)], axis=1)
  return _extract(image, starts, (patch_size, patch_size, image.shape[2]))


def stitch_patches(
    patches: jax.Array, starts_r, starts_c, shape: tuple[int, int]
) -> jax.Array:
  """Sums patches back into an image by scatter-add, without normalising.

  Dividing the result by `coverage` gives the sliding-window reconstruction.

  Args:
    patches: ``[N, P, P, C]`` patches in the row-major order of
      `extract_patches`.
    starts_r: Row starts of the grid.
    starts_c: Column starts of the grid.
    shape: ``(height, width)`` of the image.

  Returns:
    float32 ``[height, width, C]`` sum of the patches.
  """
  rows, cols = _grid_corners(starts_r, starts_c)
  return _stitch_grid(jnp.asarray(patches), rows, cols, tuple(shape))


@functools.partial(jax.jit, static_argnames='shape')
def _stitch_grid(patches, rows, cols, shape):
  starts = jnp.stack([rows, cols, jnp.zeros_like(rows)], axis=1)
  accumulator = jnp.zeros(shape + patches.shape[3:], jnp.float32)
  return _scatter_add(accumulator, starts, patches.astype(jnp.float32))


def _pad_end(slices: jax.Array, height: int, width: int) -> jax.Array:
  """Reflect-pads ``[S, h, w]`` slices at the bottom/right to ``[S, H, W]``.

  Reflection keeps image-like texture at the border, where edge padding would
  create flat streaks the generator never saw in training. Padding only at
  the end keeps pixel (0, 0) where it was, so cropping back is ``[:h, :w]``.
  """
  return jnp.pad(
      slices,
      ((0, 0), (0, height - slices.shape[1]), (0, width - slices.shape[2])),
      mode='reflect')


def _check_output(outputs: jax.Array, expected_shape) -> None:
  if outputs.shape != tuple(expected_shape):
    raise ValueError(
        f'apply_fn must map {tuple(expected_shape)} to the same shape, got '
        f'{outputs.shape}.')


def _reconstruct_patch_mode(
    apply_fn: ApplyFn, params: Any, slices: jax.Array, window: Window
) -> jax.Array:
  """Sliding-window reconstruction of ``[S, H, W]`` slices (traced in jit)."""
  num_slices, height, width = slices.shape
  patch_size = window.patch_size
  # Slices smaller than a patch are padded up to it and cropped back at the
  # end, so the generator always sees patch-sized inputs, as in training.
  padded_height, padded_width = max(height, patch_size), max(width, patch_size)
  padded = _pad_end(slices, padded_height, padded_width)

  starts_r = patch_starts(padded_height, patch_size, window.stride)
  starts_c = patch_starts(padded_width, patch_size, window.stride)
  rows, cols = _grid_corners(starts_r, starts_c)
  patches_per_slice = rows.size
  # Patches of all slices in the chunk are flattened into one list, so the
  # generator batch is at most `window.batch_size` whatever the number of slices.
  # Spreading them evenly over the batches keeps the padding below one
  # patch per batch instead of up to a whole batch.
  num_patches = num_slices * patches_per_slice
  num_batches = -(-num_patches // window.batch_size)
  batch_size = -(-num_patches // num_batches)
  rows, cols = jnp.asarray(rows), jnp.asarray(cols)
  # The flat average multiplies by nothing, so it stays the paper's arithmetic.
  weights = None
  if window.blend != 'flat':
    weights_1d = blend_window(patch_size, window.blend)
    weights = jnp.asarray(np.outer(weights_1d, weights_1d), jnp.float32)

  def add_batch(accumulator, batch_index):
    item = batch_index * batch_size + jnp.arange(batch_size, dtype=jnp.int32)
    # Slots past the last patch get slice index >= num_slices: `_extract`
    # clamps them onto a real patch (harmless work) and `_scatter_add` drops
    # their outputs because the index is out of bounds.
    slice_index = item // patches_per_slice
    patch_index = item % patches_per_slice
    starts = jnp.stack([slice_index, rows[patch_index], cols[patch_index]], 1)
    patches = _extract(padded, starts, (1, patch_size, patch_size))
    patches = patches.reshape(batch_size, patch_size, patch_size, 1)
    outputs = apply_fn(params, patches)
    _check_output(outputs, patches.shape)
    outputs = outputs.reshape(batch_size, 1, patch_size, patch_size)
    outputs = outputs.astype(jnp.float32)
    if weights is not None:
      outputs = outputs * weights
    return _scatter_add(accumulator, starts, outputs), None

  # zeros_like, not zeros: under shard_map it inherits the mesh axes the
  # slices vary over, which the scan carry's input and output must share.
  accumulator = jnp.zeros_like(padded, jnp.float32)
  accumulator, _ = lax.scan(
      add_batch, accumulator, jnp.arange(num_batches, dtype=jnp.int32))
  # Coverage is separable, so build it from the two per-axis counts on
  # device rather than embedding an H x W constant in the program.
  rows_total, cols_total = _per_axis_normaliser(
      (padded_height, padded_width), starts_r, starts_c, patch_size, window.blend)
  pixel_coverage = (jnp.asarray(rows_total, jnp.float32)[:, None]
                    * jnp.asarray(cols_total, jnp.float32)[None, :])
  return (accumulator / pixel_coverage)[:, :height, :width]


def _reconstruct_full_mode(
    apply_fn: ApplyFn, params: Any, slices: jax.Array, window: Window
) -> jax.Array:
  """Whole-slice network pass on ``[S, H, W]`` slices (traced in jit)."""
  _, height, width = slices.shape
  size_multiple = window.size_multiple
  padded = _pad_end(
      slices,
      -(-height // size_multiple) * size_multiple,
      -(-width // size_multiple) * size_multiple)[..., None]
  outputs = apply_fn(params, padded)
  _check_output(outputs, padded.shape)
  return outputs[:, :height, :width, 0].astype(jnp.float32)


@functools.partial(jax.jit, static_argnames=('apply_fn', 'window', 'mesh'))
def reconstruct_chunk(
    params: Any,
    slices: jax.Array,
    *,
    apply_fn: ApplyFn,
    window: Window = Window(),
    mesh: jax.sharding.Mesh | None = None,
) -> jax.Array:
  """Super-resolves one chunk of slices in a single jitted call.

  Compiled once per (``apply_fn``, ``window``, ``mesh``, chunk shape): the generator
  weights are an argument, not constants baked into the program, so new params or a
  new chunk of the same shape reuse the compiled program. Pass the same ``apply_fn``
  object every time (a function defined once, not a fresh lambda per call), since it
  is part of the compilation cache key.

  Args:
    params: Generator parameters, passed through to ``apply_fn``.
    slices: float32 ``[S, H, W]`` low-resolution slices.
    apply_fn: ``apply_fn(params, x)`` maps an NHWC float32 batch
      ``[B, h, w, 1]`` to the same shape. It must treat batch entries
      independently (no batch statistics): padded batch slots hold copies of
      real patches.
    window: The patch size, stride, batch size, mode and blend (`Window`);
      ``slices_per_chunk`` is `reconstruct_slices`'s.
    mesh: Optional mesh with a ``'data'`` axis; slices are then split over it
      (S must be divisible by its size), each device reconstructs its own
      slices and params are replicated. No communication is needed.

  Returns:
    float32 ``[S, H, W]`` reconstructed slices.
  """
  reconstruct = functools.partial(
      _reconstruct_patch_mode if window.mode == 'patch' else _reconstruct_full_mode,
      apply_fn, window=window)

  slices = jnp.asarray(slices, jnp.float32)
  if slices.ndim != 3:
    raise ValueError(f'slices must be [S, H, W], got shape {slices.shape}.')
  if mesh is not None:
    # Slices are independent, so each device runs the whole single-device
    # algorithm on its own share with no communication.
    reconstruct = jax.shard_map(
        reconstruct, mesh=mesh, in_specs=(P(), P(_DATA_AXIS)),
        out_specs=P(_DATA_AXIS))
  return reconstruct(params, slices)


def make_slice_reconstructor(
    apply_fn: ApplyFn,
    window: Window = Window(),
    *,
    mesh: jax.sharding.Mesh | None = None,
) -> Callable[[Any, jax.Array], jax.Array]:
  """Binds the static settings of `reconstruct_chunk`.

  Returns:
    A jitted ``reconstruct(params, slices [S, H, W]) -> [S, H, W]``.
  """
  return functools.partial(reconstruct_chunk, apply_fn=apply_fn, window=window, mesh=mesh)


def reconstruct_slices(
    apply_fn: ApplyFn,
    params: Any,
    slices,
    window: Window = Window(),
    *,
    mesh: jax.sharding.Mesh | None = None,
    progress: Callable[[int], Any] | None = None,
) -> np.ndarray:
  """Super-resolves a stack of 2D slices, ``window.slices_per_chunk`` per jitted call.

  Every chunk has the same shape (the last one is zero-padded and cropped),
  so the reconstruction compiles once per slice size. The next chunk is
  dispatched before the previous one is copied to the host, which overlaps
  the transfer with compute. Results do not depend on ``slices_per_chunk``
  or ``batch_size`` beyond float rounding of the scatter-add order.

  Args:
    apply_fn: Generator ``apply_fn(params, x)``, see `reconstruct_chunk`.
    params: Generator parameters.
    slices: float32 ``[S, H, W]`` slices (numpy or jax).
    window: How to cut, batch and stitch (`Window`).
    mesh: Optional mesh with a ``'data'`` axis to split each chunk over. A mesh
      spanning several processes needs every process to call this with the same
      slices; each receives the whole result.
    progress: Called with the number of slices finished after each chunk,
      e.g. ``tqdm_bar.update``.

  Returns:
    float32 numpy ``[S, H, W]`` reconstructed slices.
  """
  slices = np.asarray(slices, np.float32)
  if slices.ndim != 3:
    raise ValueError(f'slices must be [S, H, W], got shape {slices.shape}.')
  num_slices = slices.shape[0]
  outputs = np.empty_like(slices)
  if num_slices == 0:
    return outputs
  reconstruct = make_slice_reconstructor(apply_fn, window, mesh=mesh)

  chunk_size = min(window.slices_per_chunk, num_slices)
  if mesh is not None:
    num_shards = mesh.shape[_DATA_AXIS]
    chunk_size = -(-chunk_size // num_shards) * num_shards
    slice_sharding = NamedSharding(mesh, P(_DATA_AXIS))
    params = distributed.replicate(params, mesh)

  def collect(start, stop, result):
    outputs[start:stop] = distributed.to_host(result)[:stop - start]
    if progress is not None:
      progress(stop - start)

  in_flight = None
  for start in range(0, num_slices, chunk_size):
    stop = min(start + chunk_size, num_slices)
    chunk = slices[start:stop]
    if stop - start < chunk_size:
      chunk = np.concatenate(
          [chunk, np.zeros((chunk_size - (stop - start),) + chunk.shape[1:],
                           chunk.dtype)])
    if mesh is not None:
      chunk = jax.device_put(chunk, slice_sharding)
    result = reconstruct(params, chunk)
    if in_flight is not None:
      collect(*in_flight)
    in_flight = (start, stop, result)
  if in_flight is not None:
    collect(*in_flight)
  return outputs
