"""Convolutions for every network, behind one entry point: `conv` and `conv_transpose`.

Networks call `conv(x, kernel, stride, padding, impl)`; the formulation `impl` is an
attribute of every network that convolves (`conv_impl`, passed down as `dtype` is),
which the methods set to `resolve(config.model.conv_impl)` and which defaults to 'xla',
the reference. All formulations give the same function and gradients
(tests/test_layers_fast.py holds them to 1e-4 relative error of `lax.conv`) and the
same params, so the choice is about speed only:

- 'xla': `lax.conv_general_dilated` / `lax.conv_transpose`. On GPU and TPU these become
  cuDNN / MXU convolutions and are the right choice.
- 'im2col': the k x k input windows are gathered with strided slices into one
  [B, H', W', k*k*C_in] array and contracted with the [k*k*C_in, C_out] kernel in a
  single `dot_general`, which XLA:CPU hands to its GEMM library (YNNPACK). Transposed
  convolutions are one such matmul per output phase (no multiplications by the
  inserted zeros), layers with one or two output channels contract channels first.
  The gather's gradient is written by hand (`col2im`).
- 'winograd': 'im2col', except that the stride-1 3x3 convolutions (the residual
  blocks: 85% of the generator's FLOPs) use Winograd's F(4x4, 3x3), 4 times fewer
  multiplications, with a Winograd backward pass too (`winograd_conv3x3`).
- 'auto': 'winograd' on a CPU backend, 'xla' on any other. XLA:CPU's own
  convolutions, and above all their gradients, are several times slower than the
  matmul formulations on a CPU (benchmarks/RESULTS.md).

Matmuls and convolutions accumulate in float32 and return the input's dtype.
"""

from __future__ import annotations

import functools
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

IMPLS = ("auto", "xla", "im2col", "winograd")
DIMENSION_NUMBERS = ("NHWC", "HWIO", "NHWC")
# Below this many output channels im2col contracts channels before gathering taps.
FEW_OUTPUT_CHANNELS = 8


def check_impl(impl: str) -> None:
  if impl not in IMPLS:
    raise ValueError(f"unknown conv_impl {impl!r}; use one of {IMPLS}")


def resolve(impl: str) -> str:
  """The formulation `impl` names, 'auto' resolved for the default backend.

  Raises:
    ValueError: `impl` is not one of IMPLS.
  """
  check_impl(impl)
  if impl == "auto":
    return "winograd" if jax.default_backend() == "cpu" else "xla"
  return impl


def of_config(model_config) -> str:
  """A run's formulation: its ``model.conv_impl`` resolved for this backend (configs
  written before the field existed mean 'auto')."""
  return resolve(model_config.get("conv_impl", "auto"))


def conv(x: jax.Array, kernel: jax.Array, stride: int = 1, padding: int = 0,
         impl: str = "xla") -> jax.Array:
  """2D convolution, NHWC input and HWIO kernel, symmetric zero padding in pixels.

  Args:
    x: [B, H, W, C_in] activations; the result has their dtype.
    kernel: [k, k, C_in, C_out], already in x's dtype.
    stride: spatial stride.
    padding: zero padding on every side (0 = 'VALID').
    impl: formulation, one of IMPLS.

  Returns:
    [B, H', W', C_out].
  """
  return _conv(x, kernel, stride, padding, resolve(impl))


# Every layer call goes through one jitted function per formulation, so a train step
# traces each distinct (shape, stride, padding) once: the residual blocks, and the
# generators' six passes over same-sized patches, reuse that trace (and its gradient's)
# instead of tracing hundreds of slices and matmuls again. XLA inlines the calls, so
# the compiled step is the same; only tracing and lowering get shorter.
@functools.partial(jax.jit, static_argnums=(2, 3, 4))
def _conv(x, kernel, stride, padding, impl):
  if impl == "winograd" and kernel.shape[0] == 3 and stride == 1:
    if padding:
      x = jnp.pad(x, ((0, 0),) + ((padding, padding),) * 2 + ((0, 0),))
    return winograd_conv3x3(x, kernel)
  if impl in ("im2col", "winograd"):
    return im2col_conv(x, kernel, stride, padding)
  return lax.conv_general_dilated(
      x, kernel, (stride,) * 2, [(padding, padding)] * 2,
      dimension_numbers=DIMENSION_NUMBERS, preferred_element_type=jnp.float32).astype(x.dtype)


def conv_transpose(x: jax.Array, kernel: jax.Array, stride: int = 2,
                   impl: str = "xla") -> jax.Array:
  """`lax.conv_transpose(x, kernel, (stride,) * 2, 'SAME')`: H and W grow `stride` times.

  Args:
    x: [B, H, W, C_in].
    kernel: [k, k, C_in, C_out] in x's dtype.
    stride: upsampling factor.
    impl: formulation, one of IMPLS.
  """
  return _conv_transpose(x, kernel, stride, resolve(impl))


@functools.partial(jax.jit, static_argnums=(2, 3))
def _conv_transpose(x, kernel, stride, impl):
  if impl in ("im2col", "winograd"):
    return im2col_conv_transpose(x, kernel, stride)
  return lax.conv_transpose(
      x, kernel, (stride,) * 2, "SAME", dimension_numbers=DIMENSION_NUMBERS,
      preferred_element_type=jnp.float32).astype(x.dtype)


def _contract_channels(patches: jax.Array, kernel: jax.Array, dtype=None) -> jax.Array:
  """[..., K] x [K, N] -> [..., N], accumulated in float32, returned in `dtype`.

  `dtype` defaults to the patches' dtype.
  """
  out = lax.dot_general(patches, kernel, (((patches.ndim - 1,), (0,)), ((), ())),
                        preferred_element_type=jnp.float32)
  return out.astype(dtype or patches.dtype)


class Windows(NamedTuple):
  """Strided k x k windows of an NHWC image: the index map of an im2col.

  Window position (m, n) and tap t read input pixel (i_t + stride * m, j_t + stride * n),
  where (i_t, j_t) = offsets[t].

  Attributes:
    in_size: (rows, cols) of the (already padded) input.
    offsets: (row, col) of each tap, in the order the kernel's taps are flattened.
    out_size: (rows, cols) of window positions.
    stride: step between window positions.
  """

  in_size: tuple[int, int]
  offsets: tuple[tuple[int, int], ...]
  out_size: tuple[int, int]
  stride: int

  def view(self, x: jax.Array, t: int) -> jax.Array:
    """Tap t of every window: [B, *in_size, C] -> [B, *out_size, C] (a strided slice)."""
    (i, j), (rows, cols), s = self.offsets[t], self.out_size, self.stride
    b, _, _, c = x.shape
    return lax.slice(x, (0, i, j, 0), (b, i + (rows - 1) * s + 1, j + (cols - 1) * s + 1, c),
                     (1, s, s, 1))

  def place(self, g: jax.Array) -> list[jax.Array]:
    """For each tap t, `g` [B, *out_size, C] put where `view(., t)` reads, zeros elsewhere.

    The transpose of `view`. Built as one zero-dilating pad of `g` and one slice of it
    per tap: XLA then fuses the taps' sum (or concatenation) into one loop, where a
    separate pad per tap would be materialised tap by tap.
    """
    s = self.stride
    low = [max(i for i, _ in self.offsets), max(j for _, j in self.offsets)]
    high = [max(0, n - (m - 1) * s - 1) for n, m in zip(self.in_size, self.out_size)]
    spread = lax.pad(g, jnp.zeros((), g.dtype), ((0, 0, 0), (low[0], high[0], s - 1),
                                                 (low[1], high[1], s - 1), (0, 0, 0)))
    b, _, _, c = g.shape
    return [lax.slice(spread, (0, low[0] - i, low[1] - j, 0),
                      (b, low[0] - i + self.in_size[0], low[1] - j + self.in_size[1], c))
            for i, j in self.offsets]


@functools.partial(jax.custom_vjp, nondiff_argnums=(1,))
def im2col(x: jax.Array, windows: Windows) -> jax.Array:
  """[B, H, W, C] -> [B, H', W', taps * C]: every window's pixels, tap-major.

  Its gradient is `col2im`, written by hand: differentiating the slices would give one
  zero-padded full-size array per tap, which XLA:CPU materialises one by one.
  """
  views = [windows.view(x, t) for t in range(len(windows.offsets))]
  return views[0] if len(views) == 1 else jnp.concatenate(views, axis=-1)


def col2im(patches: jax.Array, windows: Windows) -> jax.Array:
  """The transpose of `im2col`: adds every window's pixels back where they came from."""
  c = patches.shape[-1] // len(windows.offsets)
  spread = windows.place(patches)
  return functools.reduce(jnp.add, [p[..., t * c:(t + 1) * c] for t, p in enumerate(spread)])


im2col.defvjp(lambda x, windows: (im2col(x, windows), None),
              lambda windows, _, g: (col2im(g, windows),))


@functools.partial(jax.custom_vjp, nondiff_argnums=(1,))
def sum_taps(planes: jax.Array, windows: Windows) -> jax.Array:
  """[B, H, W, taps * C] -> [B, H', W', C]: sum over t of tap t's plane read at tap t.

  With planes = x @ (kernel as [C_in, taps * C_out]) this is the convolution.
  """
  c = planes.shape[-1] // len(windows.offsets)
  views = [windows.view(planes[..., t * c:(t + 1) * c], t) for t in range(len(windows.offsets))]
  return functools.reduce(jnp.add, views)


sum_taps.defvjp(lambda planes, windows: (sum_taps(planes, windows), None),
                lambda windows, _, g: (jnp.concatenate(windows.place(g), axis=-1),))


def im2col_conv(x: jax.Array, kernel: jax.Array, stride: int, padding: int) -> jax.Array:
  """`lax.conv_general_dilated` (NHWC, HWIO, symmetric zero padding) as one matmul.

  With few output channels (the generator's last layer has one) a [.., k*k*C_in] x
  [k*k*C_in, C_out] matmul is a matrix-vector product, which runs at a small fraction
  of the machine's speed. Those layers contract the input channels first, with every
  (tap, output channel) pair as an output column, and then add the k*k shifted tap
  planes: the same sum in the other order.
  """
  kh, kw, c_in, c_out = kernel.shape
  if padding:
    x = jnp.pad(x, ((0, 0), (padding, padding), (padding, padding), (0, 0)))
  in_size = x.shape[1:3]
  windows = Windows(in_size, tuple((i, j) for i in range(kh) for j in range(kw)),  # HWIO order
                    ((in_size[0] - kh) // stride + 1, (in_size[1] - kw) // stride + 1), stride)
  if c_out < FEW_OUTPUT_CHANNELS:
    # [B, H, W, (tap, C_out)]: every tap's contribution at every input position.
    planes = _contract_channels(x, kernel.transpose(2, 0, 1, 3).reshape(c_in, -1), jnp.float32)
    return sum_taps(planes, windows).astype(x.dtype)
  return _contract_channels(im2col(x, windows), kernel.reshape(kh * kw * c_in, c_out))


def _transpose_taps(kernel_size: int, stride: int) -> tuple[int, list[list[tuple[int, int]]]]:
  """Kernel taps and input offsets of each output phase of a 'SAME' transposed conv.

  `lax.conv_transpose(..., 'SAME')` zero-dilates the input by `stride`, pads it by
  (pad_before, ...) and correlates with the kernel: y[o] = sum_t dilated[o + t - pad]
  * w[t]. Output o = stride * m + r (phase r) only meets real input samples at taps t
  with (r + t - pad) % stride == 0, namely x[m + (r + t - pad) // stride]. Computing
  each phase from those taps alone skips the (stride^2 - 1) / stride^2 of the
  multiplications that would hit inserted zeros.

  Returns:
    pad_before and, for each phase r, the list of (tap t, input offset).
  """
  pad_len = kernel_size + stride - 2
  pad_before = kernel_size - 1 if stride > kernel_size - 1 else -(-pad_len // 2)
  phases = [[(t, (r + t - pad_before) // stride) for t in range(kernel_size)
             if (r + t - pad_before) % stride == 0] for r in range(stride)]
  return pad_before, phases


def im2col_conv_transpose(x: jax.Array, kernel: jax.Array, stride: int) -> jax.Array:
  """`lax.conv_transpose(x, kernel, (stride,) * 2, 'SAME')` (NHWC, HWIO) as matmuls.

  One matmul per output phase (stride^2 of them) over the taps that phase uses; the
  phases are then interleaved into the stride-times larger output.
  """
  k, _, _, c_out = kernel.shape
  _, phases = _transpose_taps(k, stride)
  if any(not taps for taps in phases):
    raise ValueError(f"im2col transposed conv needs kernel_size >= stride, got {k} < {stride}")
  offsets = [off for taps in phases for _, off in taps]
  lo, hi = max(0, -min(offsets)), max(0, max(offsets))
  b, h, w, _ = x.shape
  x = jnp.pad(x, ((0, 0), (lo, hi), (lo, hi), (0, 0)))
  rows = []
  for row_taps in phases:
    row = []
    for col_taps in phases:
      windows = Windows(x.shape[1:3], tuple((lo + di, lo + dj) for _, di in row_taps
                                            for _, dj in col_taps), (h, w), 1)
      patches = im2col(x, windows)
      tap_kernel = kernel[np.array([t for t, _ in row_taps])][:, np.array([t for t, _ in col_taps])]
      row.append(_contract_channels(patches, tap_kernel.reshape(-1, c_out)))
    rows.append(jnp.stack(row, axis=3))  # [B, H, W, stride (col phase), C]
  y = jnp.stack(rows, axis=2)  # [B, H, stride (row phase), W, stride, C]
  return y.reshape(b, h * stride, w * stride, c_out)


class Winograd(NamedTuple):
  """Winograd's minimal filtering F(m x m, 3 x 3) (Lavin & Gray, "Fast Algorithms for
  Convolutional Neural Networks", 2016).

  Each m x m output tile is A^T [(G g G^T) * (B^T d B)] A, with d the (m + 2)^2 input
  tile (tiles overlap by 2) and g the 3x3 kernel: (m + 2)^2 multiplications per tile
  and (input, output) channel pair instead of 9 m^2.

  Attributes:
    bt: B^T, [m + 2, m + 2].
    g: G, [m + 2, 3].
    at: A^T, [m, m + 2].
  """

  bt: tuple[tuple[float, ...], ...]
  g: tuple[tuple[float, ...], ...]
  at: tuple[tuple[float, ...], ...]

  @property
  def tile(self) -> int:
    """m: output pixels per tile side."""
    return len(self.at)


# Points 0, +-1 and infinity: 2.25 times fewer multiplications than a direct
# convolution, rounding within a few ulps of it.
WINOGRAD_F2 = Winograd(
    bt=((1, 0, -1, 0), (0, 1, 1, 0), (0, -1, 1, 0), (0, 1, 0, -1)),
    g=((1, 0, 0), (0.5, 0.5, 0.5), (0.5, -0.5, 0.5), (0, 0, 1)),
    at=((1, 1, 1, 0), (0, 1, -1, -1)))
# Points 0, +-1, +-2 and infinity: 4 times fewer multiplications; rounding error about
# 1e-5 of the output's scale in float32 (what cuDNN and NNPACK use for 3x3 layers).
WINOGRAD_F4 = Winograd(
    bt=((4, 0, -5, 0, 1, 0), (0, -4, -4, 1, 1, 0), (0, 4, -4, -1, 1, 0),
        (0, -2, -1, 2, 1, 0), (0, 2, -1, -2, 1, 0), (0, 4, 0, -5, 0, 1)),
    g=((1 / 4, 0, 0), (-1 / 6, -1 / 6, -1 / 6), (-1 / 6, 1 / 6, -1 / 6),
       (1 / 24, 1 / 12, 1 / 6), (1 / 24, -1 / 12, 1 / 6), (0, 0, 1)),
    at=((1, 1, 1, 1, 1, 0), (0, 1, -1, 2, -2, 0), (0, 1, 1, 4, 4, 0), (0, 1, -1, 8, -8, 1)))


def _sandwich(left, right, blocks) -> list[list[jax.Array]]:
  """L X R^T for a grid X of arrays: out[a][b] = sum_ij left[a][i] right[b][j] X[i][j].

  Every output is written as its own sum of the (few non-zero) terms, with no shared
  partial sums: XLA then fuses each output, with the slices feeding it, into one loop
  instead of materialising the intermediate L X.
  """
  def entry(a, b):
    terms = [(left[a][i] * right[b][j], x) for i, row in enumerate(blocks)
             for j, x in enumerate(row) if left[a][i] * right[b][j]]
    return functools.reduce(jnp.add, [x if c == 1 else -x if c == -1 else c * x
                                      for c, x in terms])
  return [[entry(a, b) for b in range(len(right))] for a in range(len(left))]


def _overlap_add(grid: list[list[jax.Array]], stride: int) -> jax.Array:
  """The adjoint of reading n x n tiles at `stride` (n <= 2 * stride): grid[i][j]
  [B, rows, cols, C] holds pixel (i, j) of every tile, which lands at
  (stride * row + i, stride * col + j).

  One axis at a time: pixel j < stride of a tile is added to pixel j - stride of the
  tile before, shifted one tile along, and the stride pixels are interleaved by a
  reshape. Each output pixel then reads two inputs; zero-dilating pads (the plain
  transpose of strided slices) made XLA read all n^2 of them for every pixel.
  """
  def along(parts, axis):  # parts: n arrays; returns them overlap-added along `axis`.
    def pad_tile(a, before):
      config = [(0, 0)] * 4
      config[axis] = (1, 0) if before else (0, 1)
      return jnp.pad(a, config)
    n = len(parts)
    merged = [pad_tile(parts[j], False) + pad_tile(parts[j + stride], True)
              if j + stride < n else pad_tile(parts[j], False) for j in range(stride)]
    y = jnp.stack(merged, axis=axis + 1)  # [..., tiles + 1, stride, ...]
    shape = list(parts[0].shape)
    shape[axis] = (shape[axis] + 1) * stride
    size = stride * (parts[0].shape[axis] - 1) + n
    return lax.slice_in_dim(y.reshape(shape), 0, size, axis=axis)

  return along([along(row, 2) for row in grid], 1)


def _pad_to_tiles(a: jax.Array, m: int, halo: int) -> tuple[jax.Array, tuple[int, int]]:
  """`a` zero-padded at the bottom/right so that its outputs (its size less `halo`) fill
  whole m x m tiles, and the tile grid."""
  rows, cols = a.shape[1] - halo, a.shape[2] - halo
  tiles = (-(-rows // m), -(-cols // m))
  return jnp.pad(a, ((0, 0), (0, m * tiles[0] - rows), (0, m * tiles[1] - cols), (0, 0))), tiles


def _combine(matrix, stacked: jax.Array) -> jax.Array:
  """out[p] = sum_q matrix[p][q] stacked[q], [Q, ...] -> [P, ...], as one matmul.

  For the transforms whose results feed a matmul as its transposed operand. XLA fuses
  an elementwise transform into the transposing copy and then evaluates it once per
  output element across channels, which in a train step cost ten times the matmuls
  themselves; a matmul's result is always materialised, and transposing it is a copy.
  """
  matrix = jnp.asarray(np.asarray(matrix, np.float32), stacked.dtype)
  out = lax.dot_general(matrix, stacked.reshape(stacked.shape[0], -1), (((1,), (0,)), ((), ())),
                        preferred_element_type=jnp.float32)
  return out.astype(stacked.dtype).reshape(-1, *stacked.shape[1:])


@functools.partial(jax.custom_vjp, nondiff_argnums=(2,))
def winograd_conv3x3(x: jax.Array, kernel: jax.Array,
                     transform: Winograd = WINOGRAD_F4) -> jax.Array:
  """Stride-1 'VALID' 3x3 convolution (NHWC, HWIO) by Winograd's F(m x m, 3 x 3).

  The n^2 = (m + 2)^2 transformed positions of the tiles are one batched
  [n^2] x [tiles, C_in] x [C_in, C_out] matmul. The input transform is sums and
  differences of strided slices that XLA fuses into the stacked array. With F(4x4, 3x3)
  the matmuls do 4 times fewer FLOPs than im2col's and the transformed input is 2.25
  times the input's size where im2col's patches are 9 times. One batched matmul rather
  than n^2 separate ones runs as fast (a few % faster) and leaves XLA:CPU n^2 times
  fewer matmul kernels, whose deserialisation is quadratic in their number: 36
  matmuls a layer made loading the paper-sized train step from the compilation cache
  take as long as compiling it (benchmarks/RESULTS.md).

  The backward pass is the adjoint of the same algorithm, with the same matmul sizes:
  the output gradient goes through A, the matmuls with the transposed transformed
  kernel, then B and an overlap-add of the tiles; the kernel gradient is
  G^T [M^T V] G. Its transforms are small matmuls (`_combine`).
  """
  return _winograd_fwd(x, kernel, transform)[0]


def _winograd_fwd(x, kernel, transform: Winograd):
  m, n = transform.tile, transform.tile + 2
  out_size = (x.shape[1] - 2, x.shape[2] - 2)
  x, tiles = _pad_to_tiles(x, m, halo=2)
  windows = Windows(x.shape[1:3], tuple((i, j) for i in range(n) for j in range(n)), tiles, m)
  d = [[windows.view(x, n * i + j) for j in range(n)] for i in range(n)]
  v = _sandwich(transform.bt, transform.bt, d)  # B^T d B, n x n of [B, *tiles, C_in]
  v = jnp.stack([position for row in v for position in row])  # [n^2, B, *tiles, C_in]
  c_in, c_out = kernel.shape[2:]
  taps, g_kron = kernel.astype(x.dtype).reshape(9, c_in, c_out), np.kron(transform.g, transform.g)
  u = _combine(g_kron, taps)  # G g G^T: [n^2, C_in, C_out].
  prod = lax.dot_general(v, u, (((4,), (1,)), ((0,), (0,))),
                         preferred_element_type=jnp.float32).astype(x.dtype)
  # The backward pass multiplies by u transposed; YNNPACK's matmul with a transposed
  # right operand ran at half speed, so transform the transposed kernel as well.
  u_t = _combine(g_kron, taps.swapaxes(1, 2))
  y = _sandwich(transform.at, transform.at,  # m x m of [B, *tiles, C_out]
                [[prod[n * a + b] for b in range(n)] for a in range(n)])
  y = jnp.stack([jnp.stack(row, axis=3) for row in y], axis=2)  # [B, tr, m, tc, m, C]
  y = y.reshape(x.shape[0], m * tiles[0], m * tiles[1], c_out)
  return y[:, :out_size[0], :out_size[1]], (v, u_t, kernel)


def _winograd_bwd(transform: Winograd, residuals, dy):
  v, u_t, kernel = residuals
  m, n = transform.tile, transform.tile + 2
  b, rows, cols, c = dy.shape
  dy, tiles = _pad_to_tiles(dy, m, halo=0)
  # [m^2, B, *tiles, C]: pixel (p, q) of every output tile.
  dy = dy.reshape(b, tiles[0], m, tiles[1], m, c).transpose(2, 4, 0, 1, 3, 5).reshape(
      m * m, b, *tiles, c)
  at = np.asarray(transform.at)
  dprod = _combine(np.kron(at.T, at.T), dy)  # A dy A^T: [n^2, B, *tiles, C_out]
  # M^T V per position: [n^2, C_out, C_in] (v as the right operand: its contracted
  # axes, the tiles, are then major, as a GEMM wants them).
  du = lax.dot_general(dprod, v, (((1, 2, 3), (1, 2, 3)), ((0,), (0,))),
                       preferred_element_type=jnp.float32).astype(dy.dtype)
  g = np.asarray(transform.g)
  dkernel = _combine(np.kron(g.T, g.T), du).reshape(3, 3, c, -1).swapaxes(2, 3)
  dv = lax.dot_general(dprod, u_t, (((4,), (1,)), ((0,), (0,))),
                       preferred_element_type=jnp.float32).astype(dy.dtype)
  bt = np.asarray(transform.bt)
  dd = _combine(np.kron(bt.T, bt.T), dv)  # B dv B^T: [n^2, B, *tiles, C_in]
  dx = _overlap_add([[dd[n * i + j] for j in range(n)] for i in range(n)], m)
  return dx[:, :rows + 2, :cols + 2], dkernel.astype(kernel.dtype)


winograd_conv3x3.defvjp(_winograd_fwd, _winograd_bwd)
