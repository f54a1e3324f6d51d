"""Super-resolving NIfTI files with a trained workdir, for any method: what ``infer.py`` runs.

`run` loads the input and the run's params, lets the run's method super-resolve the
prepared volume (`methods.<config.method>.super_resolve`), maps the result back to the
input's units (`intensity.to_scan_units`: what lies outside the intensity window comes
from the interpolated input, so no method flattens the brightest or darkest tissue)
and writes it with `volume.save_volume` (atomic, the input's qform/sform
codes kept, never over the input) plus an orthogonal-slice PNG:

    python infer.py --workdir runs/mri --input scan.nii.gz --output scan_srr.nii.gz

Every problem a user can cause (a missing or corrupt file, a directory that is not a
training workdir or has no checkpoint, a checkpoint that does not fit its config, an
isotropic volume, an output path equal to the input, an option out of range) raises
`VolumeError`, `CheckpointError` or `UsageError` with a one-line message, so the CLI
can print it without a traceback.
"""

from __future__ import annotations

import dataclasses
import os
import time

import jax
import numpy as np

from clade_jax import checkpointing
from clade_jax import distributed
from clade_jax import methods
from clade_jax import plotting
from clade_jax import provenance
from clade_jax import qc_maps as qc_maps_lib
from clade_jax import report as report_lib
from clade_jax import train_state
from clade_jax.data import consistency
from clade_jax.data import intensity
from clade_jax.data import patches
from clade_jax.data import preprocess
from clade_jax.data import profile_estimation
from clade_jax.data import slice_profile
from clade_jax.data import volume as volume_lib
from clade_jax.volume_srr import OptionsError
from clade_jax.volume_srr import SROptions


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
  options: SROptions  # As used: resolved against the run's config (`SROptions.resolve`).
  method: str
  seconds: float
  residual_before: dict[str, float] | None  # `consistency.residual` of the method's output
  residual_after: dict[str, float] | None  # after the projection; None when off
  intensity: dict | None = None  # `intensity.report`: input/output ranges, the window
  report: str | None = None  # the QC page (`report.write_scan_report`) when asked for
  truth_metrics: dict | None = None  # `truth_metrics` against `run`'s truth, when given
  qc_maps: dict[str, str] | None = None  # `qc_maps.paths` written, when asked for


def _stem(output: str) -> str:
  for suffix in sorted(volume_lib.NIFTI_SUFFIXES, key=len, reverse=True):
    if output.endswith(suffix):
      return output[:-len(suffix)]
  return output


def figure_path(output: str) -> str:
  """``<output stem>_compare.png`` beside ``output`` (stem without .nii/.nii.gz)."""
  return _stem(output) + '_compare.png'


def provenance_path(output: str) -> str:
  """``<output stem>.json`` beside ``output``: how it was made (a BIDS-style sidecar)."""
  return _stem(output) + '.json'


def _same_file(a: str, b: str) -> bool:
  if os.path.exists(a) and os.path.exists(b):
    return os.path.samefile(a, b)
  return os.path.abspath(a) == os.path.abspath(b)


def _flat_shapes(tree) -> dict[str, tuple[int, ...]]:
  leaves = jax.tree_util.tree_flatten_with_path(tree)[0]
  return {'/'.join(str(getattr(k, 'key', k)) for k in path): tuple(np.shape(leaf))
          for path, leaf in leaves}


def expected_params(config):
  """The shapes (`jax.ShapeDtypeStruct`) of what inference gets from a ``config``'s run.

  The method's train state traced abstractly (nothing computed), with XLA's own
  convolution: every formulation takes the same kernels, and it traces in a fraction
  of the time of the default one on CPU.
  """
  method = methods.of(config)
  traced = config.copy_and_resolve_references()
  if 'model' in traced:
    with traced.unlocked():
      traced.model.conv_impl = 'xla'
  abstract = jax.eval_shape(lambda: method.init_state(traced, jax.random.key(0, impl='rbg')))
  return train_state.params_for_inference(method, abstract)


def check_params(params, config) -> None:
  """Checks parameter names and shapes against the networks ``config`` describes.

  Raises:
    ValueError: naming the first differences and the method's architecture fields.
  """
  method = methods.of(config)
  expected, actual = _flat_shapes(expected_params(config)), _flat_shapes(params)
  problems = [f'{k} is missing' for k in expected if k not in actual]
  problems += [f'{k} is not in the model' for k in actual if k not in expected]
  problems += [f'{k} has shape {actual[k]}, the model expects {expected[k]}'
               for k in expected if k in actual and actual[k] != expected[k]]
  if problems:
    shown = '; '.join(problems[:3])
    more = f' (and {len(problems) - 3} more)' if len(problems) > 3 else ''
    fields = ', '.join(f'{f.split(".")[-1]}={checkpointing.get_field(config, f)!r}'
                       for f in method.architecture_fields)
    raise ValueError(f'parameters do not fit the {method.describe(config)} networks of the '
                     f'config ({fields}): {shown}{more}')


def method_of(workdir: str, config):
  """The method a workdir's config names; CheckpointError when it names none."""
  try:
    return methods.of(config)
  except methods.UnknownMethodError as e:
    raise checkpointing.CheckpointError(f'{workdir}: {e}') from None


def load_params(workdir: str, step: int | None = None):
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
  method_of(workdir, config)
  try:
    check_params(params, config)
  except ValueError as e:
    raise checkpointing.CheckpointError(
        f'{workdir}: checkpoint {step} is from another config than its config.json: '
        f'{e}') from None
  return params, config, step


def super_resolve(volume: np.ndarray, affine: np.ndarray, params, config,
                  options: SROptions = SROptions(), *,
                  data_consistency: bool | None = None) -> tuple[np.ndarray, np.ndarray]:
  """Super-resolves an anisotropic volume with a trained run's params.

  The volume is prepared as in training (`preprocess.prepare_input`: thick axis
  cubic-spline resampled to isotropic, its intensity window mapped to [-1, 1]), the
  run's method super-resolves it, the result is mapped back to the input's intensity
  scale (`intensity.to_scan_units`: voxels beyond the window keep the interpolated
  input's values unless ``config.eval.outside_window='clip'``) and, with data
  consistency, projected so that re-acquiring it gives the acquired slices. From a notebook::

    params, config, _ = inference.load_params('runs/mri')
    vol = volume.load_volume('scan.nii.gz')
    sr, sr_affine = inference.super_resolve(vol.data, vol.affine, params, config)

  Args:
    volume: raw 3D array in the input's intensity units.
    affine: its 4x4 voxel-to-world affine (mm).
    params: the run's params ({network: params}).
    config: the run's config.
    options: stride, mode, planes, ... (`volume_srr.SROptions`); unset fields take
      the run's ``config.eval`` values.
    data_consistency: project onto the acquired slices; default
      ``config.eval.data_consistency``.

  Returns:
    ``(volume, affine)``: float32 isotropic volume and the affine of its grid
    (`volume_lib.isotropic_geometry`), on which every original sample keeps its world
    position.

  Raises:
    VolumeError: the volume cannot be prepared (e.g. it is isotropic).
  """
  source = volume_lib.Volume(np.asarray(volume, np.float32), np.asarray(affine, np.float64))
  prepared = preprocess.prepare_input(source.data, source.affine, config.data)
  output, _ = _super_resolve_prepared(source, prepared, params, config, options,
                                      data_consistency)
  return output, prepared.affine


def outside_window(config, override: str | None = None) -> str:
  """How voxels beyond the intensity window come back: ``override`` or the run's
  ``eval.outside_window`` ('restore' for runs that predate the field)."""
  return override or config.eval.get('outside_window', 'restore')


def _super_resolve_prepared(source, prepared, params, config, options, data_consistency,
                            outside=None):
  """(output in scan units, (residual before, residual after or None))."""
  output = methods.of(config).super_resolve(params, config, prepared, options)
  output = intensity.to_scan_units(output, prepared.isotropic, prepared.normalizer,
                                   outside=outside_window(config, outside),
                                   limits=prepared.acquired_range)
  if data_consistency is None:
    data_consistency = config.eval.get("data_consistency", False)
  try:
    acquisition = acquisition_model(source, prepared, config.data)
  except volume_lib.VolumeError:
    if data_consistency:
      raise
    return output, (None, None)  # The residual is a report; without a model, none.
  before = consistency.residual(output, source.data, acquisition)
  if not data_consistency:
    return output, (before, None)
  # Alternating with the acquired range, so the projection's undershoot at sharp
  # edges cannot leave what the scan holds (negative magnitudes).
  output = consistency.project_within(
      output, source.data, acquisition, prepared.acquired_range,
      regularisation=config.eval.get("consistency_regularisation", 0.0))
  return output, (before, consistency.residual(output, source.data, acquisition))


def slice_profile_of(source: volume_lib.Volume, data_config) -> tuple:
  """(profile, thickness mm or None, where it came from) for ``config.data``.

  A training run resolves ``data.slice_profile='estimate'`` before it saves its config
  (`profile_estimation.resolve_config`), so its inference uses the profile it trained
  with; a config that still asks for an estimate gets one from `source`.

  Raises:
    VolumeError: a profile the config cannot describe, or a volume it cannot estimate.
  """
  if (data_config.get("slice_profile", "gaussian") == profile_estimation.ESTIMATE
      and not tuple(data_config.get("slice_kernel", ()) or ())):
    estimate = profile_estimation.estimate_volume(source, data_config)
    told = float(data_config.get("slice_thickness", 0.0) or 0.0)
    return estimate.profile, told or estimate.thickness_mm, estimate.as_dict()
  try:
    profile, thickness = slice_profile.from_config(data_config)
  except ValueError as e:
    raise volume_lib.VolumeError(f"{source.name}: {e}") from None
  return profile, thickness, "config"


def acquisition_model(source: volume_lib.Volume, prepared: preprocess.PreparedInput,
                      data_config) -> consistency.Acquisition:
  """The slice profile of ``config.data`` on the output grid (thickness 0 = spacing)."""
  profile, thickness, _ = slice_profile_of(source, data_config)
  try:
    return consistency.for_grid(
        source.data.shape, source.affine, prepared.isotropic.shape, prepared.affine,
        prepared.thick_axis, thickness, profile)
  except ValueError as e:
    raise volume_lib.VolumeError(f"{source.name}: {e}") from None


def _check_outside(outside: str | None) -> None:
  if outside not in (None, *intensity.OUTSIDE_MODES):
    raise UsageError(f"--outside-window must be one of {', '.join(intensity.OUTSIDE_MODES)}, "
                     f"got {outside!r}")


def run(
    workdir: str,
    input_path: str,
    output_path: str,
    *,
    options: SROptions = SROptions(),
    step: int | None = None,
    data_consistency: bool | None = None,
    volume_index: int | None = None,
    complex_mode: str | None = None,
    outside: str | None = None,
    overwrite: bool = False,
    figure: bool = True,
    report: bool = False,
    qc_maps: bool = False,
    truth: str | None = None,
) -> Result:
  """Super-resolves ``input_path`` into ``output_path`` (and a comparison PNG).

  Cheap checks come first (paths, config, volume geometry), so bad input fails
  before the checkpoint is read or anything compiles.

  Args:
    workdir: The training workdir.
    input_path: Anisotropic NIfTI volume.
    output_path: Where to write the float32 isotropic NIfTI; never the input.
    options: How to super-resolve (`volume_srr.SROptions`: stride, batch size, mode,
      blend, planes, progress bar), e.g. ``SROptions(stride=6, blend='taper')``; None
      fields take the run's ``config.eval`` values (``eval.planes``: SMORE both; CLADE
      the planes it trained on, ``data.lr_planes``; else ``'trained'``).
    step: Checkpoint step; default the latest.
    data_consistency: Project onto the acquired slices; default the run's
      ``eval.data_consistency``.
    volume_index: Which volume of a 4D file; default the run's ``data.volume_index``.
    complex_mode: 'refuse' or 'magnitude' for complex data; default the run's
      ``data.complex``.
    outside: 'restore' or 'clip' (`intensity.to_scan_units`); default the run's
      ``eval.outside_window``.
    overwrite: Replace an existing output (never the input).
    figure: Also write `figure_path(output_path)`.
    report: Also write the QC page, ``<stem>_report.html`` and its folder
      ``<stem>_report/`` (`report.report_paths`).
    qc_maps: Also write the added-detail map and the slice residual as NIfTI on the
      output grid (`qc_maps.paths`: ``<stem>_added.nii.gz``, ``<stem>_residual.nii.gz``).
    truth: An isotropic truth of the scan (a simulation's) whose grid contains the
      output's voxel centres: PSNR/SSIM of the output and of the cubic spline go to
      the sidecar (``inference.truth``), the report and `Result.truth_metrics`.

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
  if os.path.exists(output_path) and not overwrite:
    raise UsageError(
        f'{output_path}: exists already; pass --overwrite to replace it, or choose another '
        '--output')
  if not os.path.isdir(workdir):
    raise checkpointing.CheckpointError(f'{workdir}: no such directory')
  config = checkpointing.load_config(workdir)
  method = method_of(workdir, config)
  if hasattr(method, 'resolve_config'):  # 'auto' fields of a config.json not from train.py.
    method.resolve_config(config)
  try:
    options = options.resolve(config)  # Checked before anything is read or compiled.
  except OptionsError as e:
    raise UsageError(str(e)) from None
  _check_outside(outside)
  load = patches.load_options(config.data)
  if volume_index is not None:
    load['volume_index'] = volume_index
  if complex_mode is not None:
    load['complex_mode'] = complex_mode
  source = volume_lib.load_volume(input_path, **load)
  prepared = preprocess.prepare_input(source.data, source.affine, config.data, name=input_path)
  truth_crop = None
  if truth is not None:
    truth_crop = volume_lib.crop_truth(volume_lib.load_volume(truth), prepared.isotropic.shape,
                                       prepared.affine)
  params, config, step = load_params(workdir, step)

  output, (before, after) = _super_resolve_prepared(source, prepared, params, config,
                                                    options, data_consistency, outside)
  label = method.describe(config)
  info = provenance.collect(config)
  ranges = intensity.report(source.data, output, prepared.normalizer)
  ranges['normalization'] = config.data.get('normalization', 'percentile')
  ranges['outside_window'] = outside_window(config, outside)
  seconds = time.perf_counter() - start
  scores = None if truth_crop is None else truth_metrics(output, prepared.isotropic, truth_crop)
  profile, thickness, origin = slice_profile_of(source, config.data)
  info['inference'] = {'input': os.path.abspath(input_path), 'step': step, 'method': label,
                       'slice_profile': {
                           'profile': profile if isinstance(profile, str) else 'kernel',
                           'thickness_mm': thickness, 'from': origin},
                       'options': dataclasses.asdict(options),
                       'residual_before': before, 'residual_after': after,
                       'intensity': ranges, 'seconds': seconds}
  if scores is not None:
    info['inference']['truth'] = {'path': os.path.abspath(truth), **scores}
  write = distributed.is_main()  # Other processes helped compute; process 0 writes.
  if write:
    volume_lib.save_volume(output_path, output, prepared.affine, like=source,
                           descrip=provenance.descrip(
                               info, f'{config.get("method", "clade")} step {step}'))
    provenance.write(provenance_path(output_path), info)
  figure_file = None
  if figure and write:
    figure_file = figure_path(output_path)
    write_comparison_figure(
        source, prepared, output, figure_file, label=label,
        title=f'{os.path.basename(input_path)}: {label}, step {step} ({options.describe()}, '
              f'{options.planes} plane{"s" if options.planes == "both" else ""})')
  map_files = None
  if qc_maps and write:
    map_files = write_qc_maps(source, prepared, output, output_path, config.data)
  report_file = None
  if report and write:
    report_file = report_lib.report_paths(output_path)[0]
    report_lib.write_scan_report(
        report_file, acquired=(source.data, source.affine), cubic=prepared.isotropic,
        output=output, affine=prepared.affine, sidecar=info,
        title=os.path.basename(output_path), seconds=seconds,
        slice_spacing=prepared.slice_spacing, figure=figure_file, qc_map_files=map_files,
        truth_metrics=scores)
  return Result(
      output=output_path, figure=figure_file, shape=output.shape,
      spacing=tuple(float(s) for s in volume_lib.voxel_spacing(prepared.affine)),
      step=step, options=options, method=label,
      seconds=time.perf_counter() - start, residual_before=before, residual_after=after,
      intensity=ranges, report=report_file, qc_maps=map_files, truth_metrics=scores)


def truth_metrics(output: np.ndarray, cubic: np.ndarray, truth: np.ndarray) -> dict:
  """PSNR and 3D SSIM of the output and of the cubic spline against a truth on their grid.

  As ``evaluate.py`` scores them: in the truth's foreground (`metrics.foreground_mask`),
  with the truth's intensity span as the data range.

  Returns:
    ``{'output': {'psnr', 'ssim'}, 'cubic': {'psnr', 'ssim'}}``.
  """
  # Imported here: the metrics package loads PIQUE and friends, which only a truth needs.
  from clade_jax import metrics  # pylint: disable=g-import-not-at-top
  truth = np.asarray(truth, np.float32)
  mask = metrics.foreground_mask(truth)
  span = float(truth.max() - truth.min()) or 1.0
  return {name: {'psnr': float(metrics.psnr(data, truth, span, mask=mask)),
                 'ssim': float(metrics.ssim(data, truth, span, mask=mask))}
          for name, data in (('output', output), ('cubic', cubic))}


def write_qc_maps(source: volume_lib.Volume, prepared: preprocess.PreparedInput,
                  output: np.ndarray, output_path: str, data_config) -> dict[str, str]:
  """Writes `qc_maps.added_detail` and `qc_maps.slice_residual` beside the output.

  Both are float32 NIfTI on the output grid (its affine and the input's qform/sform
  codes), so any viewer overlays them on the output. The residual is left out when the
  geometry has no acquisition model (see `acquisition_model`).

  Returns:
    ``{'added': path, 'residual': path}`` of what was written.
  """
  paths = qc_maps_lib.paths(output_path)
  written = {}
  volume_lib.save_volume(paths['added'], qc_maps_lib.added_detail(output, prepared.isotropic),
                         prepared.affine, like=source, descrip='clade-jax: output - cubic')
  written['added'] = paths['added']
  try:
    acquisition = acquisition_model(source, prepared, data_config)
  except volume_lib.VolumeError:
    return written
  volume_lib.save_volume(
      paths['residual'], qc_maps_lib.slice_residual(output, source.data, acquisition),
      prepared.affine, like=source, descrip='clade-jax: reacquired - acquired')
  written['residual'] = paths['residual']
  return written


def nearest_upsampled(source: volume_lib.Volume, prepared: preprocess.PreparedInput) -> np.ndarray:
  """The acquired slices repeated onto the isotropic grid (what was measured)."""
  axis = prepared.thick_axis
  factor = (volume_lib.voxel_spacing(prepared.affine)[axis]
            / volume_lib.voxel_spacing(source.affine)[axis])
  index = np.rint(np.arange(prepared.isotropic.shape[axis]) * factor).astype(int)
  return np.take(source.data, index, axis=axis)


def write_comparison_figure(source: volume_lib.Volume, prepared: preprocess.PreparedInput,
                            output: np.ndarray, path: str, *, label: str,
                            title: str = '') -> None:
  """Three orthogonal planes through the centre: input vs output, with insets.

  Columns are the acquired slices (nearest-neighbour upsampled), the cubic-spline
  interpolation the methods start from, and the output, all on the output grid.
  """
  grid = lambda data: volume_lib.Volume(np.asarray(data, np.float32), prepared.affine)
  plotting.orthogonal_slices(
      {'input (nearest neighbour)': grid(nearest_upsampled(source, prepared)),
       'input (cubic spline)': grid(prepared.isotropic), label: grid(output)},
      path, title=title)
