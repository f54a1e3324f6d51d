"""The held-out check at the end of training: one slice never trained on, super-resolved.

The central low-resolution slice of the first training volume is kept out of training
(`holdout_slice`) by every method that can (`held_out`: the method's `holds_out`; one
training on in-plane slices cannot, since each crosses it, and the check then names the
slice without calling it held out). After the last step the run's method
super-resolves it as inference would (the run's stride, blending and flips; projected
onto the acquired slices when ``eval.data_consistency`` is on) and `check` writes
``holdout_sr.png``: the cubic-spline input, the output and, where the run knows the
truth, the truth side by side.

A truth is a NIfTI volume named by ``data.truth``: the isotropic ground truth of the
first training volume (the bundled demo's is ``demo_data/truth/``; a simulation's is the
volume it was degraded from), on a grid of which the run's isotropic grid is a sub-grid
(`evaluation.scoring.crop_truth`). Then `check` also prints and writes to
``holdout.json`` the PSNR and SSIM of the cubic spline and of the method on the slice,
inside the truth's foreground (`metrics.fidelity`, as experiments/ground_truth/ scores
whole volumes). It works for any method: it only calls `method.super_resolve`.
`super_resolve_slices` and `score_slices` do the same for any set of slices
(experiments/quality/).
"""

from __future__ import annotations

import dataclasses
import json
import os

import numpy as np

from clade_jax import atomic
from clade_jax import distributed
from clade_jax import volume_srr
from clade_jax.data import consistency
from clade_jax.data import patches as patches_lib
from clade_jax.data import volume as volume_lib
from clade_jax.metrics import fidelity

FIGURE = "holdout_sr.png"
SCORES = "holdout.json"


def holdout_slice(volumes) -> tuple[int, int]:
  """The central low-resolution slice of the first volume: never trained on."""
  first = volumes[0]
  return 0, first.scan.isotropic.shape[first.lr_axis] // 2


def holds_out(method) -> bool:
  """Whether `method` keeps `holdout_slice` out of training (its `holds_out`, default True)."""
  return getattr(method, "holds_out", True)


def held_out(method, volumes) -> list[tuple[int, int]]:
  """The (volume, slice) pairs `method.make_source` must keep out of training."""
  return [holdout_slice(volumes)] if holds_out(method) else []


@dataclasses.dataclass(frozen=True)
class Truth:
  """A ground truth on a run's isotropic grid, in scan units.

  Attributes:
    grid: the truth at the voxel centres of the grid.
    mask: its foreground (`fidelity.foreground_mask`).
    data_range: the truth volume's max - min (the PSNR/SSIM range).
    path: where it was read from.
  """

  grid: np.ndarray
  mask: np.ndarray
  data_range: float
  path: str


def read_truth(path: str, scan, what: str = "data.truth") -> Truth:
  """The truth volume at `path` on the isotropic grid of `scan` (a PreparedInput).

  Raises:
    VolumeError: it cannot be read, or `scan`'s grid is not a sub-grid of it; the
      message names `what`.
  """
  try:
    truth = volume_lib.load_volume(path)
    grid = volume_lib.crop_truth(truth, scan.isotropic.shape, scan.affine)
  except volume_lib.VolumeError as e:
    raise volume_lib.VolumeError(f"{what}={path!r} does not fit the volume: {e}") from None
  data_range = float(truth.data.max() - truth.data.min())
  return Truth(grid, fidelity.foreground_mask(grid), data_range or 1.0, path)


def load_truth(config, volumes) -> Truth | None:
  """``config.data.truth`` on the first volume's grid; None when the field is empty.

  Called before training, so a truth that does not fit fails before any work.

  Raises:
    VolumeError: see `read_truth`.
  """
  path = config.data.get("truth", "")
  if not path:
    return None
  v, _ = holdout_slice(volumes)
  try:
    return read_truth(path, volumes[v].scan)
  except volume_lib.VolumeError as e:
    raise volume_lib.VolumeError(f"{e} ({volumes[v].path})") from None


def super_resolve_slices(method, params, config, scan, indices) -> np.ndarray:
  """The method's output on slices `indices` of the trained plane: [n, H, W], scan units."""
  options = volume_srr.SROptions(lr_slices=list(indices), progress=False)
  output = method.super_resolve(params, config, scan, options)
  slices = volume_lib.plane_slices(output, scan.lr_axis)[np.asarray(indices)]
  return scan.normalizer.inverse(slices)


def project_slices(slices: np.ndarray, indices, source: volume_lib.Volume, scan,
                   config) -> np.ndarray:
  """The data-consistency projection of slices of the trained plane (scan units).

  The plane contains the thick axis, so its lines along that axis are whole lines of
  the volume and its slices can be projected on their own (`consistency.project`).

  Args:
    slices: [n, H, W] slices `indices` of the trained plane, on `scan`'s grid.
    indices: their indices along ``scan.lr_axis``.
    source: the acquired volume `scan` was prepared from.
    scan: the `preprocess.PreparedInput`.
    config: the run's config (slice profile, thickness, regularisation).

  Returns:
    [n, H, W] float32.
  """
  thickness = config.data.get("slice_thickness", 0.0) or None
  acquisition = consistency.for_grid(
      source.data.shape, source.affine, scan.isotropic.shape, scan.affine, scan.thick_axis,
      thickness, config.data.get("slice_profile", "gaussian"))
  axis = scan.lr_axis
  lr = np.take(source.data, np.asarray(indices), axis=axis)
  projected = consistency.project_within(
      volume_lib.from_plane_slices(np.asarray(slices), axis), lr, acquisition,
      (float(np.min(source.data)), float(np.max(source.data))),
      regularisation=config.eval.get("consistency_regularisation", 0.0))
  return volume_lib.plane_slices(projected, axis)


def score_slices(slices: np.ndarray, truth: Truth, axis: int, indices) -> dict[str, float]:
  """PSNR (dB) over the slices' foreground voxels and their mean 2D SSIM.

  Args:
    slices: [n, H, W] slices `indices` along `axis` of the truth's grid.
    truth: the `Truth`.
    axis: the voxel axis the slices are perpendicular to.
    indices: their indices.
  """
  target = volume_lib.plane_slices(truth.grid, axis)[np.asarray(indices)]
  mask = volume_lib.plane_slices(truth.mask, axis)[np.asarray(indices)]
  return {"psnr": fidelity.psnr(slices, target, truth.data_range, mask),
          "ssim": float(np.nanmean(fidelity.ssim_per_slice(slices, target, 0,
                                                           truth.data_range, mask)))}


def check(method, params, volumes, config, workdir, truth: Truth | None = None,
          log=print) -> dict[str, dict[str, float]]:
  """Super-resolves the held-out slice, writes the figure and, with a truth, the scores.

  Args:
    method: the run's method module.
    params: the params to super-resolve with (`train_state.inference_params`).
    volumes: the prepared training volumes.
    config: the run's config.
    workdir: where ``holdout_sr.png`` (and ``holdout.json``) go.
    truth: from `load_truth`, or None.
    log: where the score lines go.

  Returns:
    {row name: {'psnr', 'ssim'}}; empty without a truth.
  """
  v, s = holdout_slice(volumes)
  prepared = volumes[v]
  scan = prepared.scan
  cubic = volume_lib.plane_slices(scan.isotropic, scan.lr_axis)[[s]]
  output = super_resolve_slices(method, params, config, scan, [s])
  if not distributed.is_main():  # Every process reconstructs; process 0 reports.
    return {}
  how = volume_srr.SROptions().with_defaults(config.eval).describe()
  name = f"{method.describe(config)} ({how})"
  rows = {"cubic spline": cubic, name: output}
  shown = ["cubic spline", name]  # The figure: the input and what inference writes.
  if config.eval.get("data_consistency", False):
    source = volume_lib.load_volume(prepared.path, **patches_lib.load_options(config.data))
    for row in ("cubic spline", name):
      rows[f"{row} + consistency"] = project_slices(rows[row], [s], source, scan, config)
    shown[1] = f"{name} + consistency"

  what = f"slice {s} of {os.path.basename(prepared.path)}"
  if holds_out(method):
    what = f"held-out {what}"
  else:
    what = f"{what} (not held out: {method.describe(config)} trains on slices crossing it)"
  results = {}
  if truth is not None:
    results = {row: score_slices(image, truth, scan.lr_axis, [s])
               for row, image in rows.items()}
    width = max(map(len, results))
    log(f"{what} against data.truth (inside its foreground):")
    for row, values in results.items():
      log(f"  {row:<{width}}  PSNR {values['psnr']:6.2f} dB   SSIM {values['ssim']:.4f}")
    atomic.write_text(os.path.join(workdir, SCORES), json.dumps(
        {"volume": prepared.path, "slice": s, "axis": scan.lr_axis, "truth": truth.path,
         "scores": results}, indent=2))

  def label(row):
    if row not in results:
      return row
    return f"{row}\nPSNR {results[row]['psnr']:.2f} dB, SSIM {results[row]['ssim']:.3f}"

  images = {label(row): rows[row][0] for row in shown}
  if truth is not None:
    images["truth"] = volume_lib.plane_slices(truth.grid, scan.lr_axis)[s]
  forward = scan.normalizer.forward
  # matplotlib is imported here, after training, not before a run's first step.
  from clade_jax import plotting  # pylint: disable=g-import-not-at-top
  plotting.slice_comparison(
      {k: plotting.for_display(forward(image)) for k, image in images.items()},
      os.path.join(workdir, FIGURE),
      title=what, vrange=(-1, 1))
  return results
