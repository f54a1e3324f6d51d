"""Scoring every method on every subject: input files, truth geometry, ROIs, metrics.

`evaluate` is the driver: it matches the files of each method (and the truth) by
subject, scores each volume (`score_volume`) and writes the report (`report`) and
figures (`figures`).

Ground truth. A method's output must sit on a sub-grid of the truth: the same voxel
axes, each an integer multiple of the truth's step, voxel centres on truth voxel
centres. `crop_truth` then cuts the truth to exactly the output's voxels by affine
arithmetic alone (no interpolation), which is what `data.degrade.degrade` followed by
`baselines.upsample` or CLADE inference produces.

Conventions chosen here (the paper does not say):
* The intensity scale of PIQUE and the data range of PSNR/SSIM are shared by all
  methods of a subject: the truth's min-max when a truth is given, else the min-max
  of the first method listed (put the low-resolution input first). Values outside
  are clipped for PIQUE, so overshoot does not change the gray scale of the others.
  PIQUE is given this range as its fixed gray scale and the centre/surround split of
  the 14 columns outside the block centre, not MATLAB piqe's defaults (the input type's
  range, piqe.m's surround columns), so the evaluation's numbers are unchanged.
* The foreground mask of the truth-based metrics comes from the truth
  (`metrics.foreground_mask`), so every method is scored on the same voxels.
"""

from __future__ import annotations

import dataclasses
import glob
import html
import json
import math
import os
import re

import numpy as np
import pandas as pd

from clade_jax import metrics
from clade_jax import report
# AlignmentError and crop_truth live with the volumes (training loads a truth without
# pandas); they are re-exported here, where the evaluation has always named them.
from clade_jax.data.volume import (AlignmentError, Volume, VolumeError, crop_truth,  # noqa: F401
                                   find_thick_axis, is_nifti, load_volume, plane_axis,
                                   plane_name)
from clade_jax.evaluation.metric_table import TRUTH_ROW, metric_columns
from clade_jax.evaluation.report import write_report
from clade_jax.plotting import orthogonal_slices
from clade_jax.evaluation.statistics import ALPHA

NIFTI_SUFFIX_RE = re.compile(r"\.nii(\.gz)?$")


# ----------------------------------------------------------------------------- files


def subject_id(path: str, pattern: str | None = None) -> str:
  """The subject a file belongs to: its name without .nii/.nii.gz, or a regex match.

  Args:
    path: a NIfTI file path.
    pattern: optional regex searched in that name; its first group (or the whole
      match) is the id, e.g. ``r"(sub-\\d+)"`` to match ``sub-01_clade.nii.gz`` with
      ``sub-01.nii.gz``.

  Raises:
    ValueError: the pattern does not match.
  """
  stem = NIFTI_SUFFIX_RE.sub("", os.path.basename(path))
  if pattern is None:
    return stem
  match = re.search(pattern, stem)
  if match is None:
    raise ValueError(f"{path}: subject pattern {pattern!r} does not match {stem!r}")
  return match.group(1) if match.groups() else match.group(0)


def find_volumes(spec: str, pattern: str | None = None) -> dict[str, str]:
  """NIfTI files named by a directory (its files, not recursive) or a glob, by subject.

  Args:
    spec: a directory or a glob pattern.
    pattern: subject-id regex (see `subject_id`).

  Returns:
    subject id -> path, sorted by id.

  Raises:
    VolumeError: nothing found, or two files with the same subject id.
  """
  if os.path.isdir(spec):
    paths = [os.path.join(spec, name) for name in os.listdir(spec)]
  else:
    paths = glob.glob(os.path.expanduser(spec))
  paths = sorted(p for p in paths if is_nifti(p) and os.path.isfile(p)
                 and not os.path.basename(p).startswith(".tmp-"))
  if not paths:
    raise VolumeError(f"{spec}: no NIfTI volumes (.nii, .nii.gz) found")
  found: dict[str, str] = {}
  for path in paths:
    sid = subject_id(path, pattern)
    if sid in found:
      raise VolumeError(f"{spec}: {found[sid]} and {path} both have subject id {sid!r}")
    found[sid] = path
  return dict(sorted(found.items()))


def match_subjects(methods: dict[str, dict[str, str]],
                   truth: dict[str, str] | None = None) -> tuple[list[str], list[str]]:
  """Subjects present for every method (and in the truth, when given).

  Returns:
    (subject ids, notes about the files left out).

  Raises:
    VolumeError: no subject is common to all of them.
  """
  sets = {name: set(files) for name, files in methods.items()}
  if truth is not None:
    sets["truth"] = set(truth)
  common = sorted(set.intersection(*sets.values()))
  notes = []
  for name, ids in sets.items():
    extra = sorted(ids - set(common))
    if extra:
      notes.append(f"{name}: skipped {len(extra)} volume(s) missing elsewhere: "
                   f"{', '.join(extra[:5])}{' ...' if len(extra) > 5 else ''}")
  if not common:
    listing = "; ".join(f"{n}: {', '.join(sorted(ids)[:3])}" for n, ids in sets.items())
    raise VolumeError(
        f"no subject is common to all inputs (files are matched by name without "
        f".nii/.nii.gz, or by --subject-regex); first ids: {listing}")
  return common, notes


# ------------------------------------------------------------------------- geometry


def low_resolution_planes(affine: np.ndarray, thick_axis: int) -> list[str]:
  """The anatomical planes containing the thick axis (where SRR is visible)."""
  return [plane_name(affine, axis) for axis in range(3) if axis != thick_axis]


# ----------------------------------------------------------------------------- ROIs


def load_rois(path: str) -> dict:
  """Reads the ROI file: per-subject signal/background ROIs, edge borders, view point.

  Format (world mm; every key optional; "*" holds defaults that a subject's own
  entry overrides key by key)::

    {"*":      {"signal":     {"box": [[x0, y0, z0], [x1, y1, z1]]},
                "background": {"sphere": {"centre": [x, y, z], "radius": r}},
                "borders":    [[[x, y, z], [x, y, z]], ...],
                "view":       [x, y, z]},
     "sub-01": {"borders": [...]}}

  `borders` are (p0, p1) segments across an edge, for edge sharpness; `view` is the
  point the orthogonal-slice figure cuts through and magnifies.

  Raises:
    VolumeError: unreadable JSON or an unknown key.
  """
  try:
    with open(path, encoding="utf-8") as f:
      rois = json.load(f)
  except (OSError, json.JSONDecodeError) as e:
    raise VolumeError(f"{path}: cannot read ROI file ({e})") from None
  if not isinstance(rois, dict):
    raise VolumeError(f"{path}: expected a JSON object keyed by subject id")
  allowed = {"signal", "background", "borders", "view", "comment"}
  for subject, entry in rois.items():
    if not isinstance(entry, dict) or set(entry) - allowed:
      raise VolumeError(f"{path}: entry {subject!r} must be an object with keys among "
                        f"{sorted(allowed)}")
  return rois


def rois_for(rois: dict | None, subject: str) -> dict:
  """The ROI entry of `subject`: the "*" defaults updated by its own entry."""
  if not rois:
    return {}
  entry = dict(rois.get("*", {}))
  entry.update(rois.get(subject, {}))
  return entry


def roi_mask(roi: dict, shape, affine: np.ndarray) -> np.ndarray:
  """Boolean mask of a {"box": ...} or {"sphere": {...}} ROI on a grid."""
  if "box" in roi:
    return metrics.box_roi(shape, affine, *roi["box"])
  if "sphere" in roi:
    sphere = roi["sphere"]
    return metrics.sphere_roi(shape, affine, sphere.get("centre", sphere.get("center")),
                              sphere["radius"])
  raise ValueError(f"ROI {roi} must have a 'box' or a 'sphere'")


# -------------------------------------------------------------------------- scoring


def score_volume(volume: Volume, *, planes: dict[str, int], intensity_range,
                 roi: dict | None = None, truth: np.ndarray | None = None,
                 foreground: np.ndarray | None = None, data_range: float | None = None
                 ) -> tuple[dict[str, float], list[str]]:
  """All metrics of one volume.

  Args:
    volume: the method's output.
    planes: plane name -> the voxel axis its slices are perpendicular to.
    intensity_range: (lo, hi) gray scale shared with the other methods (PIQUE).
    roi: the subject's ROI entry (`rois_for`), or None.
    truth: the truth cropped to the volume's grid (`crop_truth`), or None.
    foreground: boolean mask of the truth's foreground on that grid.
    data_range: intensity range of the truth for PSNR/SSIM.

  Returns:
    (metric name -> value, notes on metrics that could not be computed).
  """
  data = np.asarray(volume.data, np.float32)
  values: dict[str, float] = {}
  notes: list[str] = []
  for plane, axis in planes.items():
    # A fixed gray scale shared by every method (raw intensities are not on MATLAB's
    # [0, 1], and per-volume scales would make methods incomparable) and the centre
    # surround the reported PIQUE numbers were computed with; both deliberately not
    # the MATLAB defaults of `metrics.pique` (see its module docstring).
    scores = metrics.pique_volume(data, axis, gray_scale=intensity_range, surround="centre")
    values[f"pique_{plane}"] = float(np.nanmean(scores)) if np.any(np.isfinite(scores)) \
        else math.nan
  roi = roi or {}
  if roi.get("borders"):
    try:
      values["es"] = float(metrics.mean_edge_sharpness(data, volume.affine, roi["borders"]))
    except ValueError as e:
      values["es"] = math.nan
      notes.append(f"edge sharpness: {e}")
  if "signal" in roi and "background" in roi:
    signal = roi_mask(roi["signal"], data.shape, volume.affine)
    background = roi_mask(roi["background"], data.shape, volume.affine)
    values["signal"] = float(data[signal].mean())
    values["noise"] = float(data[background].std(ddof=1))
    try:
      values["snr"] = float(metrics.snr(data, signal, background))
    except ValueError as e:
      values["snr"] = math.nan
      notes.append(f"snr: {e}")
  if truth is not None:
    values["psnr"] = float(metrics.psnr(data, truth, data_range, mask=foreground))
    values["ssim"] = float(metrics.ssim(data, truth, data_range, mask=foreground))
    for plane, axis in planes.items():
      per_slice = np.asarray(metrics.ssim_per_slice(data, truth, axis, data_range,
                                                    mask=foreground), np.float64)
      values[f"ssim_{plane}"] = float(np.nanmean(per_slice)) \
          if np.any(np.isfinite(per_slice)) else math.nan
  return values, notes


def _resolve_planes(volume: Volume, planes: list[str] | None, thick_axis: int | None,
                    ) -> dict[str, int]:
  if not planes:
    if thick_axis is None:
      raise VolumeError(
          f"{volume.name}: cannot tell which planes are low-resolution: no input volume "
          f"is anisotropic; pass --thick-axis or --plane")
    planes = low_resolution_planes(volume.affine, thick_axis)
  return {plane: plane_axis(volume.affine, plane) for plane in planes}


def _guess_thick_axis(volumes: list[Volume]) -> int | None:
  for volume in volumes:
    try:
      return find_thick_axis(volume.spacing, name=volume.name)
    except VolumeError:
      continue
  return None


def evaluate(methods: dict[str, str], out_dir: str, *, truth: str | None = None,
             rois: str | None = None, planes: list[str] | None = None,
             thick_axis: int | None = None, subject_regex: str | None = None,
             figures: bool = True, alpha: float = ALPHA, log=print) -> pd.DataFrame:
  """Scores every method on every subject and writes the report files to `out_dir`.

  Args:
    methods: method name -> directory or glob of its output volumes, in the order
      the table lists them (put the baseline/low-resolution first: significance
      marks refer to earlier methods).
    out_dir: where metrics.csv, table.md, stats.md, boxplots.png, figures/ and
      reports/ (a QC page per subject and index.html) go.
    truth: directory or glob of ground-truth volumes, or None.
    rois: path of the ROI JSON (`load_rois`), or None.
    planes: planes for PIQUE and per-slice SSIM; default the two low-resolution
      planes (those containing the thick axis).
    thick_axis: the thick voxel axis of the original acquisition; default found from
      any anisotropic input volume of the subject.
    subject_regex: how file names map to subjects (`subject_id`).
    figures: draw the per-subject figures and pages (the slowest part besides PIQUE).
    alpha: significance level of the statistics.
    log: progress printer.

  Returns:
    The metrics table (one row per subject x method).
  """
  if not methods:
    raise ValueError("give at least one method")
  if TRUTH_ROW in methods:
    raise ValueError(f"{TRUTH_ROW!r} is reserved for the ground-truth reference row; "
                     f"rename that method")
  files = {name: find_volumes(spec, subject_regex) for name, spec in methods.items()}
  truth_files = find_volumes(truth, subject_regex) if truth else None
  subjects, notes = match_subjects(files, truth_files)
  roi_table = load_rois(rois) if rois else None
  protected = frozenset(os.path.realpath(p) for f in list(files.values()) + [truth_files or {}]
                        for p in f.values())
  if rois:
    protected |= {os.path.realpath(rois)}

  rows = []
  pages = []
  for subject in subjects:
    volumes = {name: load_volume(files[name][subject]) for name in methods}
    gt = load_volume(truth_files[subject]) if truth_files else None
    axis = thick_axis if thick_axis is not None else _guess_thick_axis(list(volumes.values()))
    reference = gt if gt is not None else next(iter(volumes.values()))
    intensity_range = (float(reference.data.min()), float(reference.data.max()))
    data_range = intensity_range[1] - intensity_range[0]
    roi = rois_for(roi_table, subject)
    shapes = set()
    for name, volume in volumes.items():
      log(f"scoring {subject} / {name}")
      plane_axes = _resolve_planes(volume, planes, axis)
      truth_crop = foreground = None
      if gt is not None:
        truth_crop = crop_truth(gt, volume.data.shape, volume.affine)
        foreground = metrics.foreground_mask(truth_crop)
      values, volume_notes = score_volume(
          volume, planes=plane_axes, intensity_range=intensity_range, roi=roi,
          truth=truth_crop, foreground=foreground, data_range=data_range)
      notes += [f"{subject} / {name}: {n}" for n in volume_notes]
      shapes.add(volume.data.shape)
      rows.append({"subject": subject, "method": name, "path": volume.path,
                   "shape": "x".join(map(str, volume.data.shape)), **values})
    if len(shapes) > 1:
      notes.append(f"{subject}: methods are on different grids {sorted(shapes)}; each is "
                   f"scored on its own voxels")
    if gt is not None:
      # The truth itself, by the no-reference metrics only, on the largest output grid:
      # the value a perfect reconstruction would get (e.g. the true edge sharpness).
      grid = max(volumes.values(), key=lambda v: v.data.size)
      crop = dataclasses.replace(
          grid, data=crop_truth(gt, grid.data.shape, grid.affine), path=gt.path)
      log(f"scoring {subject} / {TRUTH_ROW} (reference)")
      values, volume_notes = score_volume(
          crop, planes=_resolve_planes(crop, planes, axis), intensity_range=intensity_range,
          roi=roi)
      notes += [f"{subject} / {TRUTH_ROW}: {n}" for n in volume_notes]
      rows.append({"subject": subject, "method": TRUTH_ROW, "path": gt.path,
                   "shape": "x".join(map(str, crop.data.shape)), **values})
    if figures:
      figure_path = os.path.join(out_dir, "figures", f"{subject}.png")
      view = roi.get("view")
      orthogonal_slices(({"truth": gt} if gt is not None else {}) | volumes,
                        figure_path, view_mm=view, title=subject)
      pages.append(_subject_page(out_dir, subject, gt, volumes,
                                 [r for r in rows if r["subject"] == subject]))

  table = pd.DataFrame(rows)
  metric_names = metric_columns(table.columns)
  table = table[["subject", "method", "path", "shape"] + metric_names]
  write_report(table, out_dir, list(methods), alpha=alpha, notes=notes, protected=protected,
               log=log)
  if pages:
    index = report.write_cohort_index(
        os.path.join(out_dir, "reports", "index.html"),
        [{"name": subject, "status": "done", "link": page} for subject, page in pages],
        title="clade-jax evaluation")
    log(f"wrote {index} (a page per subject: linked viewers of every method)")
  return table


def _metric_html(rows: list[dict]) -> str:
  """The subject's metrics as an HTML table (methods as rows)."""
  columns = metric_columns(rows[0].keys()) if rows else []
  head = "".join(f"<th>{html.escape(c)}</th>" for c in ["method"] + columns)
  body = "".join(
      "<tr><td>" + html.escape(str(r["method"])) + "</td>"
      + "".join(f'<td class="num">{r[c]:.4g}</td>' if isinstance(r.get(c), (int, float))
                else f"<td>{html.escape(str(r.get(c, '')))}</td>" for c in columns) + "</tr>"
      for r in rows)
  return f"<h2>Metrics</h2><table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _subject_page(out_dir: str, subject: str, gt: Volume | None, volumes: dict,
                  rows: list[dict]) -> tuple[str, str]:
  """(subject, page): linked viewers of the truth and every method's volume."""
  path = os.path.join(out_dir, "reports", f"{subject}_report.html")
  shown = ({"truth": gt} if gt is not None else {}) | volumes
  facts = [(name, html.escape(str(v.path or ""))) for name, v in shown.items()]
  report.write_comparison_page(path, shown, title=subject, subtitle="clade-jax evaluation",
                               facts=facts, table_html=_metric_html(rows))
  return subject, path
