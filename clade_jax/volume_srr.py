"""Volume-level super-resolution: a prepared volume and a per-slice function -> isotropic.

A per-slice method (CLADE and its relatives) maps 2D slices of a low-resolution plane,
the planes that contain the thick axis, to super-resolved slices. `reconstruct_planes`
cuts the normalised isotropic volume into those slices, with the thick direction on the
image axis where training had it, runs the method's `slice_fn` and puts the results
back; with both low-resolution planes it averages the two. Methods that need the whole
volume at once (e.g. latent interpolation) do not use it: the contract is only
`methods.<name>.super_resolve`, see `clade_jax.methods`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from typing import Any, Literal

import jax
import numpy as np
import tqdm

from clade_jax import srr
from clade_jax.data import preprocess
from clade_jax.data import volume as volume_lib

Planes = Literal['trained', 'both']
# slice_fn(slices [S, H, W] normalised, progress) -> [S, H, W]; progress, when not
# None, is called with the number of slices finished.
SliceFn = Callable[[np.ndarray, Callable[[int], Any] | None], np.ndarray]


# Where a user sets each field of `SROptions`: ``infer.py``'s flag (a value given) and the
# run's config field (a value left None), so that an error names what to change.
FLAGS = {'stride': '--stride', 'batch_size': '--batch-size', 'mode': '--mode',
         'blend': '--blend', 'planes': '--planes', 'slices_per_chunk': 'slices_per_chunk'}


class OptionsError(ValueError):
  """An option that cannot work with this run; the message names its flag or config field."""


@dataclasses.dataclass(frozen=True)
class SROptions:
  """How to super-resolve, from ``infer.py``'s flags to the sliding window (`srr.Window`).

  None fields take the run's ``config.eval`` value (`resolve`).

  Attributes:
    stride: sliding-window stride in pixels (patch-based methods).
    mode: 'patch' (sliding window) or 'full' (whole slices).
    blend: how a sliding window averages overlapping patches, 'flat' or 'taper'
      (`srr.blend_window`).
    batch_size: examples per network call; sets the peak memory.
    planes: 'trained' (the trained low-resolution plane) or 'both' (the two
      low-resolution planes, combined by the method; averaged here). None: the run's
      ``eval.planes`` where its config has one, else 'trained'.
    slices_per_chunk: slices per jitted call.
    lr_slices: only these slices of the trained plane are super-resolved, the others
      keep the input (for the held-out figure and checks); needs planes='trained'.
    progress: a tqdm bar over slices.
  """

  stride: int | None = None
  mode: str | None = None
  blend: str | None = None
  batch_size: int | None = None
  planes: Planes | None = None
  slices_per_chunk: int = 8
  lr_slices: Sequence[int] | None = None
  progress: bool = True

  def with_defaults(self, eval_config) -> 'SROptions':
    """None fields filled from `eval_config` (the run's config.eval) where it has them."""
    filled = {f.name: eval_config.get(f.name) for f in dataclasses.fields(self)
              if getattr(self, f.name) is None and eval_config.get(f.name) is not None}
    if self.planes is None and (self.lr_slices is not None or 'planes' not in filled):
      filled['planes'] = 'trained'  # Chosen slices exist in the trained plane only.
    return dataclasses.replace(self, **filled)

  def resolve(self, config) -> 'SROptions':
    """`with_defaults` from ``config.eval``, every value checked against the run.

    Raises:
      OptionsError: a value out of range; a value given here is named by its
        ``infer.py`` flag, one from the run by its config field (``eval.stride``).
    """
    filled = self.with_defaults(config.eval)

    def name(field):
      if getattr(self, field, None) is not None:
        return FLAGS.get(field, field)
      return 'data.patch_size' if field == 'patch_size' else f'eval.{field}'

    if filled.planes not in ('trained', 'both'):
      raise OptionsError(f"{name('planes')} must be 'trained' or 'both', got "
                         f'{filled.planes!r}')
    if filled.lr_slices is not None and filled.planes != 'trained':
      raise OptionsError("lr_slices needs planes='trained'")
    try:
      filled.window(config.data.patch_size)
    except srr.WindowError as e:
      raise OptionsError(f'{name(e.field)} {e.requirement}') from None
    return filled

  def describe(self) -> str:
    """'whole slices' or 'stride N' (of options filled by `resolve`), for titles and logs."""
    return 'whole slices' if self.mode == 'full' else f'stride {self.stride}'

  def window(self, patch_size: int, size_multiple: int = 1) -> srr.Window:
    """The sliding window of these options (filled by `resolve`) for a network.

    Args:
      patch_size: the network's training patch (``config.data.patch_size``).
      size_multiple: the network's total downsampling factor (`srr.Window`).

    Raises:
      srr.WindowError: a value out of range.
    """
    # Fields a run's config leaves None (a whole-slice method's) keep the window's own
    # defaults; the stride at most the patch, where it is unused.
    given = {field: getattr(self, field) for field in
             ('stride', 'batch_size', 'slices_per_chunk', 'mode', 'blend')
             if getattr(self, field) is not None}
    given.setdefault('stride', min(srr.Window.stride, patch_size))
    return srr.Window(patch_size=patch_size, size_multiple=size_multiple, **given)


def default_mesh() -> jax.sharding.Mesh | None:
  """A 'data' mesh over all devices (of all processes) when there are several, else None.

  With several processes, every process must then run the reconstruction, on the same
  input: each reconstructs its share of the slices and all receive the whole result.
  """
  if jax.device_count() > 1:
    # Auto axes, as in training: with the default (Explicit) axes a method's own jitted
    # code fails on reshapes of sharded batches (the Winograd kernel's tiles).
    return jax.make_mesh((jax.device_count(),), ('data',),
                         axis_types=(jax.sharding.AxisType.Auto,))
  return None


def lr_stack(data: np.ndarray, axis: int, thick_axis: int,
             thick_rows: bool) -> tuple[np.ndarray, bool]:
  """Slices along ``axis`` with the thick direction on rows iff ``thick_rows``.

  A network learned a degradation along one image direction, so slices of the second
  low-resolution plane are transposed when needed to put the thick direction where
  the trained plane has it.

  Returns:
    ``[S, H, W]`` slices and whether they were transposed.
  """
  slices = volume_lib.plane_slices(data, axis)
  in_plane = [a for a in range(3) if a != axis]
  transpose = (in_plane[0] == thick_axis) != thick_rows
  return (np.swapaxes(slices, 1, 2) if transpose else slices), transpose


def thick_on_rows(prepared: preprocess.PreparedInput) -> bool:
  """Whether the trained plane's slices have the thick direction on their rows."""
  return min(a for a in range(3) if a != prepared.lr_axis) == prepared.thick_axis


def reconstruct_planes(prepared: preprocess.PreparedInput, slice_fn: SliceFn,
                       options: SROptions) -> np.ndarray:
  """Runs `slice_fn` over the low-resolution plane(s) of a prepared volume.

  Args:
    prepared: the volume on its isotropic grid (`preprocess.prepare_input`).
    slice_fn: the method's per-slice super-resolution, in normalised units.
    options: `planes`, `lr_slices` and `progress` are used here.

  Returns:
    float32 normalised volume of ``prepared.isotropic``'s shape.
  """
  planes = options.planes or 'trained'
  if planes not in ('trained', 'both'):
    raise ValueError(f"planes must be 'trained' or 'both', got {options.planes!r}.")
  if options.lr_slices is not None and planes != 'trained':
    raise ValueError("lr_slices needs planes='trained'.")
  normalised = prepared.normalizer.forward(prepared.isotropic)
  axes = prepared.lr_axes if planes == 'both' else prepared.lr_axes[:1]
  rows = thick_on_rows(prepared)
  chosen = None if options.lr_slices is None else np.asarray(options.lr_slices, int)
  count = sum(normalised.shape[a] for a in axes) if chosen is None else chosen.size
  bar = tqdm.tqdm(total=count, desc='super-resolving', unit='slice', dynamic_ncols=True,
                  disable=not options.progress)
  try:
    total = np.zeros(normalised.shape, np.float32)
    for axis in axes:
      slices, transposed = lr_stack(normalised, axis, prepared.thick_axis, rows)
      if chosen is None:
        out = slice_fn(slices, bar.update if options.progress else None)
      else:
        out = slices.copy()
        out[chosen] = slice_fn(slices[chosen], bar.update if options.progress else None)
      if transposed:
        out = np.swapaxes(out, 1, 2)
      total += volume_lib.from_plane_slices(out, axis)
  finally:
    bar.close()
  return total / len(axes)
