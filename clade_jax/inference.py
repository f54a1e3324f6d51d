"""Super-resolving NIfTI files with a trained workdir: what ``infer.py`` runs.

`run` loads the input and the run's G_X, calls `srr.reconstruct_volume` and
writes the float32 result with `volume.save_volume` (atomic, the input's
qform/sform codes kept, never over the input) plus an orthogonal-slice PNG:

    python infer.py --workdir runs/mri --input scan.nii.gz --output scan_srr.nii.gz

Every problem a user can cause (a missing or corrupt file, a directory that is
not a training workdir or has no checkpoint, a checkpoint that does not fit its
config, an isotropic volume, an output path equal to the input, an option out
of range) raises `VolumeError`, `CheckpointError` or `UsageError` with a
one-line message, so the CLI can print it without a traceback.
"""

from __future__ import annotations

import dataclasses
import os
import time

import matplotlib.pyplot as plt
import nibabel as nib
import numpy as np

from clade_jax import checkpointing
from clade_jax import plotting
from clade_jax import srr
from clade_jax.data import preprocess
from clade_jax.data import volume as volume_lib

class UsageError(ValueError):
  """An option that cannot work with this run (e.g. a stride above the patch)."""


@dataclasses.dataclass(frozen=True)
class Result:
  """What `run` wrote and how it was made."""

  output: str
  figure: str | None
  shape: tuple[int, ...]
  spacing: tuple[float, ...]
  step: int
  stride: int
  mode: str
  planes: str
  seconds: float


def figure_path(output: str) -> str:
  """``<output stem>_compare.png`` beside ``output`` (stem without .nii/.nii.gz)."""
  for suffix in sorted(volume_lib.NIFTI_SUFFIXES, key=len, reverse=True):
    if output.endswith(suffix):
      return output[:-len(suffix)] + '_compare.png'
  return output + '_compare.png'


def _same_file(a: str, b: str) -> bool:
  if os.path.exists(a) and os.path.exists(b):
    return os.path.samefile(a, b)
  return os.path.abspath(a) == os.path.abspath(b)


def load_generator(workdir: str, step: int | None = None):
  """A run's params and config, checked against each other.

  Args:
    workdir: A training workdir (``config.json`` and ``checkpoints/``).
    step: Checkpoint step; default the latest.

  Returns:
    ``(params, config, step)``.

  Raises:
    CheckpointError: not a workdir, no checkpoint (or not ``step``), an
      unreadable checkpoint, or parameters that do not fit the model
      ``config.json`` describes (a checkpoint from another config).
  """
  params, config = checkpointing.restore_params(workdir, step)
  if step is None:
    step = checkpointing.checkpoint_steps(workdir)[-1]
  try:
    srr.check_generator_params(params['G_X'], config.model, config.data.patch_size)
  except srr.GeneratorMismatchError as e:
    raise checkpointing.CheckpointError(
        f'{workdir}: checkpoint {step} is from another config than its config.json: '
        f'{e}') from None
  return params, config, step


def _check_options(config, stride, batch_size, mode, planes) -> None:
  patch = config.data.patch_size
  if stride is not None and not 1 <= stride <= patch:
    raise UsageError(
        f'--stride must be in [1, {patch}] (the patch size), got {stride}')
  if batch_size is not None and batch_size < 1:
    raise UsageError(f'--batch-size must be >= 1, got {batch_size}')
  if mode not in (None, 'patch', 'full'):
    raise UsageError(f"--mode must be 'patch' or 'full', got {mode!r}")
  if planes not in ('trained', 'both'):
    raise UsageError(f"--planes must be 'trained' or 'both', got {planes!r}")


def run(
    workdir: str,
    input_path: str,
    output_path: str,
    *,
    step: int | None = None,
    stride: int | None = None,
    batch_size: int | None = None,
    mode: str | None = None,
    planes: str = 'trained',
    figure: bool = True,
    progress: bool = True,
) -> Result:
  """Super-resolves ``input_path`` into ``output_path`` (and a comparison PNG).

  Cheap checks come first (paths, config, volume geometry), so bad input fails
  before the checkpoint is read or anything compiles.

  Args:
    workdir: The training workdir.
    input_path: Anisotropic NIfTI volume.
    output_path: Where to write the float32 isotropic NIfTI; never the input.
    step: Checkpoint step; default the latest.
    stride: Sliding-window stride; default the run's ``eval.stride``.
    batch_size: Patches per generator call; default ``eval.batch_size``.
    mode: ``'patch'`` or ``'full'``; default ``eval.mode``.
    planes: ``'trained'`` or ``'both'`` (see `srr.super_resolve`).
    figure: Also write `figure_path(output_path)`.
    progress: Show a progress bar over slices.

  Returns:
    A `Result`.

  Raises:
    VolumeError, CheckpointError, UsageError: see the module docstring.
  """
  start = time.perf_counter()
  if not volume_lib.is_nifti(output_path):
    raise volume_lib.VolumeError(
        f'{output_path}: output must end in {" or ".join(volume_lib.NIFTI_SUFFIXES)}')
  if _same_file(output_path, input_path):
    raise volume_lib.VolumeError(
        f'{output_path}: refusing to overwrite the input volume; choose another --output')
  if not os.path.isdir(workdir):
    raise checkpointing.CheckpointError(f'{workdir}: no such directory')
  config = checkpointing.load_config(workdir)
  _check_options(config, stride, batch_size, mode, planes)
  source = volume_lib.load_volume(input_path)
  prepared = preprocess.prepare_input(source.data, source.affine, config.data, name=input_path)
  params, config, step = load_generator(workdir, step)

  output = srr.reconstruct_volume(
      prepared, params, config, stride=stride, mode=mode, planes=planes,
      batch_size=batch_size, progress=progress)
  volume_lib.save_volume(output_path, output, prepared.affine, like=source)
  mode = mode or config.eval.mode
  stride = config.eval.stride if stride is None else stride
  figure_file = None
  if figure:
    figure_file = figure_path(output_path)
    how = 'whole slices' if mode == 'full' else f'stride {stride}'
    write_comparison_figure(
        source, prepared, output, figure_file,
        title=f'{os.path.basename(input_path)}: CLADE G_X step {step} ({how}, '
              f'{planes} plane{"s" if planes == "both" else ""})')
  return Result(
      output=output_path, figure=figure_file, shape=output.shape,
      spacing=tuple(float(s) for s in volume_lib.voxel_spacing(prepared.affine)),
      step=step, stride=stride, mode=mode, planes=planes,
      seconds=time.perf_counter() - start)


def nearest_upsampled(source: volume_lib.Volume, prepared: preprocess.PreparedInput) -> np.ndarray:
  """The acquired slices repeated onto the isotropic grid (what was measured)."""
  axis = prepared.thick_axis
  factor = (volume_lib.voxel_spacing(prepared.affine)[axis]
            / volume_lib.voxel_spacing(source.affine)[axis])
  index = np.rint(np.arange(prepared.isotropic.shape[axis]) * factor).astype(int)
  return np.take(source.data, index, axis=axis)


def write_comparison_figure(source: volume_lib.Volume, prepared: preprocess.PreparedInput,
                            output: np.ndarray, path: str, *, title: str = '') -> None:
  """Three orthogonal planes through the centre: input vs output, with insets.

  Rows come in pairs per plane (whole slice, then the magnified centre square
  outlined in blue); columns are the acquired slices (nearest-neighbour
  upsampled), the cubic-spline interpolation CLADE starts from, and CLADE.
  Every column of a plane shares one display window.
  """
  columns = {
      'input (nearest neighbour)': nearest_upsampled(source, prepared),
      'input (cubic spline)': prepared.isotropic,
      'CLADE': output,
  }
  spacing = volume_lib.voxel_spacing(prepared.affine)
  codes = nib.aff2axcodes(prepared.affine)
  fig, axes = plt.subplots(6, len(columns), figsize=(3.2 * len(columns), 18), dpi=100,
                           squeeze=False)
  for axis in range(3):
    rows_axis, cols_axis = [a for a in range(3) if a != axis]
    centre = output.shape[axis] // 2
    shown = {name: plotting.for_display(np.take(vol, centre, axis=axis))
             for name, vol in columns.items()}
    reference = shown['input (cubic spline)']
    vrange = np.percentile(reference, [1, 99.5])
    size = max(8, min(reference.shape) // 4)
    r0, c0 = reference.shape[0] // 2 - size // 2, reference.shape[1] // 2 - size // 2
    # for_display puts voxel axis `cols_axis` on screen rows, `rows_axis` on columns.
    aspect = spacing[cols_axis] / spacing[rows_axis]
    name = next(plane for plane, normal in volume_lib.PLANE_NORMALS.items()
                if codes[axis] in normal)
    for c, (label, image) in enumerate(shown.items()):
      top, bottom = axes[2 * axis, c], axes[2 * axis + 1, c]
      top.imshow(image, cmap='gray', vmin=vrange[0], vmax=vrange[1], aspect=aspect)
      top.add_patch(plt.Rectangle((c0 - 0.5, r0 - 0.5), size, size, fill=False,
                                  edgecolor='deepskyblue', linewidth=1.0))
      bottom.imshow(image[r0:r0 + size, c0:c0 + size], cmap='gray', vmin=vrange[0],
                    vmax=vrange[1], aspect=aspect, interpolation='nearest')
      top.set_title(f'{label}\n{name} slice {centre}' if axis == 0 else
                    f'{name} slice {centre}', fontsize=8)
      for ax in (top, bottom):
        ax.set_xticks([])
        ax.set_yticks([])
  fig.tight_layout(rect=(0, 0, 1, 0.975 if title else 1))
  if title:
    fig.suptitle(title, fontsize=10, y=0.995)
  plotting.save_figure(fig, path)
