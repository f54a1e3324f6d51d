"""Scoring super-resolved volumes: metrics per volume, the paper's tables, statistics, figures.

`evaluate` is the library behind the top-level ``evaluate.py``. For every subject and
method it computes

* without a reference (the paper's section 4.8): mean PIQUE over the 2D slices of
  each requested plane (``pique_<plane>``, lower is better), mean edge sharpness over
  the borders of the ROI file (``es``, mm^-1), and the estimated SNR with its signal
  mean and background standard deviation (``signal``, ``noise``, ``snr``);
* against a ground-truth isotropic volume (beyond the paper): ``psnr`` and 3D
  ``ssim`` within the truth's foreground, and the mean per-slice SSIM of each plane
  (``ssim_<plane>``).

With a truth, the truth itself is also scored by the no-reference metrics (method
``truth``: the value a perfect reconstruction gets, e.g. the true edge sharpness); it is
shown as a reference row and line, never ranked or tested.

It writes ``metrics.csv`` (one row per subject x method), ``table.md`` (mean +/- sd
per method, the layout of the paper's Tables 1-2, best in bold, significance marks),
``boxplots.png`` (like Fig. 5), ``figures/<subject>.png`` (orthogonal slices, methods
side by side, a magnified inset) and ``stats.md`` (section 4.9: one-way repeated
measures ANOVA with Tukey HSD post hoc per metric; Friedman with Nemenyi post hoc on
the per-subject rankings).

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
* The foreground mask of the truth-based metrics comes from the truth
  (`metrics.foreground_mask`), so every method is scored on the same voxels.
"""

from __future__ import annotations

import dataclasses
import functools
import glob
import itertools
import json
import math
import os
import re
import tempfile
import warnings

import numpy as np
import pandas as pd
from scipy import stats as scipy_stats

from clade_jax import metrics
from clade_jax.data.volume import (PLANE_NORMALS, Volume, VolumeError, find_thick_axis,
                                   is_nifti, load_volume, voxel_spacing)

NIFTI_SUFFIX_RE = re.compile(r"\.nii(\.gz)?$")
# Marks of "differs significantly from method j" in table.md, in method order, as the
# paper's Tables 1-2 use them.
SIGNIFICANCE_MARKS = ("*", "#", "†", "‡", "§", "¶", "‖", "**", "##", "††")
ALPHA = 0.05
# metrics.csv/table.md row of the ground truth scored by the no-reference metrics; it
# is a reference, never part of the statistics.
TRUTH_ROW = "truth"


class AlignmentError(VolumeError):
  """An output grid that is not a sub-grid of the ground truth."""


@dataclasses.dataclass(frozen=True)
class MetricInfo:
  """How a metric is labelled and judged.

  Attributes:
    label: column header in table.md.
    higher_is_better: True, False, or None when neither is better (signal, noise).
    decimals: digits after the point in table.md.
  """

  label: str
  higher_is_better: bool | None
  decimals: int


_FIXED_METRICS = {
    "psnr": MetricInfo("PSNR (dB)", True, 2),
    "ssim": MetricInfo("SSIM 3D", True, 4),
    "es": MetricInfo("Edge sharpness (mm⁻¹)", True, 3),
    "signal": MetricInfo("Signal", None, 3),
    "noise": MetricInfo("Noise", None, 4),
    "snr": MetricInfo("SNR", True, 1),
}
# The column order of metrics.csv and table.md: fidelity first, then the paper's.
_ORDER = ("psnr", "ssim", "ssim_", "pique_", "es", "signal", "noise", "snr")


def metric_info(name: str) -> MetricInfo:
  """Label, direction and precision of a metric column (see the module docstring)."""
  if name in _FIXED_METRICS:
    return _FIXED_METRICS[name]
  if name.startswith("pique_"):
    return MetricInfo(f"PIQUE {name[6:]}", False, 1)
  if name.startswith("ssim_"):
    return MetricInfo(f"SSIM {name[5:]} slices", True, 4)
  raise KeyError(f"unknown metric {name!r}")


def metric_columns(columns) -> list[str]:
  """The metric columns among `columns`, in the canonical order."""
  def known(c):
    try:
      metric_info(c)
      return True
    except KeyError:
      return False
  found = [c for c in columns if known(c)]
  def key(c):
    for i, prefix in enumerate(_ORDER):
      if c == prefix or (prefix.endswith("_") and c.startswith(prefix)):
        return (i, c)
    return (len(_ORDER), c)
  return sorted(found, key=key)


# ----------------------------------------------------------------------------- files


def atomic_write_text(path: str, text: str, protected: frozenset[str] = frozenset()) -> None:
  """Writes `text` to `path` via a temporary file and a rename.

  Args:
    path: destination.
    text: content.
    protected: real paths that must never be overwritten (the inputs).

  Raises:
    VolumeError: `path` is one of `protected`.
  """
  if os.path.realpath(path) in protected:
    raise VolumeError(f"{path}: refusing to overwrite an input")
  directory = os.path.dirname(os.path.abspath(path))
  os.makedirs(directory, exist_ok=True)
  fd, tmp = tempfile.mkstemp(dir=directory, prefix=".tmp-")
  try:
    with os.fdopen(fd, "w", encoding="utf-8") as f:
      f.write(text)
    os.replace(tmp, path)
  finally:
    if os.path.exists(tmp):
      os.remove(tmp)


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


def crop_truth(truth: Volume, shape, affine: np.ndarray, atol_mm: float = 1e-3) -> np.ndarray:
  """The truth's voxels at exactly the voxel centres of the grid (shape, affine).

  The grid must be a sub-grid of the truth: each of its voxel axes parallel to the
  truth's same axis with an integer (>= 1) multiple of its step, and its first voxel
  centre on a truth voxel centre, all within `atol_mm` at the far corner.

  Args:
    truth: the ground-truth volume.
    shape: the output grid's 3D shape.
    affine: the output grid's voxel-to-world affine.
    atol_mm: tolerance on world positions (covers float32 affines in NIfTI headers).

  Returns:
    float32 array of `shape` (a strided view copied out of the truth).

  Raises:
    AlignmentError: a different orientation, a non-integer step ratio, an offset that
      is not a whole number of truth voxels, or a grid reaching outside the truth.
  """
  affine = np.asarray(affine, np.float64)
  t_affine = np.asarray(truth.affine, np.float64)
  t_cols = t_affine[:3, :3]
  # The output's axes expressed in truth voxel steps: should be diag(integers).
  steps = np.linalg.solve(t_cols, affine[:3, :3])
  start = np.linalg.solve(t_cols, affine[:3, 3] - t_affine[:3, 3])
  stride = np.rint(np.diag(steps)).astype(int)
  offset = np.rint(start).astype(int)
  extent = np.asarray(shape, np.float64) - 1
  # Errors measured in mm at the far corner of the grid, where they accumulate.
  axis_err = np.abs(steps - np.diag(stride)) @ extent * voxel_spacing(t_affine).max()
  offset_err = np.linalg.norm(t_cols @ (start - offset))
  name = truth.name
  if np.any(stride < 1) or np.any(axis_err > atol_mm):
    raise AlignmentError(
        f"{name}: the output grid is not a sub-grid of the truth: output voxel axes "
        f"{np.round(affine[:3, :3], 4).tolist()} vs truth {np.round(t_cols, 4).tolist()} "
        f"(need the same orientation and whole-number step ratios)")
  if offset_err > atol_mm:
    raise AlignmentError(
        f"{name}: output voxel centres are off the truth's by {offset_err:.3g} mm (first "
        f"output voxel at truth index {np.round(start, 3).tolist()}); the output must "
        f"be resampled on the truth's voxel centres")
  stop = offset + stride * (np.asarray(shape) - 1)
  if np.any(offset < 0) or np.any(stop >= np.asarray(truth.data.shape)):
    raise AlignmentError(
        f"{name}: the output grid covers truth indices {offset.tolist()} to "
        f"{stop.tolist()}, outside the truth's shape {list(truth.data.shape)}")
  index = tuple(slice(o, s + 1, st) for o, s, st in zip(offset, stop, stride))
  return np.array(truth.data[index], dtype=np.float32)


def plane_axis(affine: np.ndarray, plane: str) -> int:
  """The voxel axis whose 2D slices are `plane` ('sagittal', 'coronal', 'axial')."""
  import nibabel as nib  # pylint: disable=g-import-not-at-top
  if plane not in PLANE_NORMALS:
    raise ValueError(f"unknown plane {plane!r}; use {', '.join(PLANE_NORMALS)}")
  codes = nib.aff2axcodes(affine)
  for axis, code in enumerate(codes):
    if code in PLANE_NORMALS[plane]:
      return axis
  raise ValueError(f"no voxel axis is close to the {plane} normal (orientation {codes})")


def low_resolution_planes(affine: np.ndarray, thick_axis: int) -> list[str]:
  """The anatomical planes containing the thick axis (where SRR is visible)."""
  import nibabel as nib  # pylint: disable=g-import-not-at-top
  codes = nib.aff2axcodes(affine)
  planes = []
  for axis in range(3):
    if axis != thick_axis:
      planes += [p for p, normal in PLANE_NORMALS.items() if codes[axis] in normal]
  return planes


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
    scores = metrics.pique_volume(data, axis, intensity_range=intensity_range)
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
    out_dir: where metrics.csv, table.md, stats.md, boxplots.png and figures/ go.
    truth: directory or glob of ground-truth volumes, or None.
    rois: path of the ROI JSON (`load_rois`), or None.
    planes: planes for PIQUE and per-slice SSIM; default the two low-resolution
      planes (those containing the thick axis).
    thick_axis: the thick voxel axis of the original acquisition; default found from
      any anisotropic input volume of the subject.
    subject_regex: how file names map to subjects (`subject_id`).
    figures: draw the per-subject figures (the slowest part besides PIQUE).
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
      plot_orthogonal_slices(({"truth": gt} if gt is not None else {}) | volumes,
                             figure_path, view_mm=view, title=subject)

  table = pd.DataFrame(rows)
  metric_names = metric_columns(table.columns)
  table = table[["subject", "method", "path", "shape"] + metric_names]
  write_report(table, out_dir, list(methods), alpha=alpha, notes=notes, protected=protected,
               log=log)
  return table


def write_report(table: pd.DataFrame, out_dir: str, methods: list[str], *,
                 alpha: float = ALPHA, notes: list[str] | None = None,
                 protected: frozenset[str] = frozenset(), log=print) -> None:
  """Writes metrics.csv, stats.md, table.md and boxplots.png from the metrics table."""
  metric_names = metric_columns(table.columns)
  os.makedirs(out_dir, exist_ok=True)
  atomic_write_text(os.path.join(out_dir, "metrics.csv"),
                    table.to_csv(index=False, float_format="%.6g"), protected)
  results = {m: compare_methods(table, m, methods, alpha) for m in metric_names}
  atomic_write_text(os.path.join(out_dir, "stats.md"),
                    stats_markdown(results, methods, alpha, table), protected)
  atomic_write_text(os.path.join(out_dir, "table.md"),
                    summary_table_markdown(table, methods, results, alpha, notes), protected)
  plot_boxplots(table, methods, metric_names, os.path.join(out_dir, "boxplots.png"))
  log(f"wrote {out_dir}/metrics.csv, table.md, stats.md, boxplots.png")


# ----------------------------------------------------------------------- statistics


def complete_matrix(table: pd.DataFrame, metric: str, methods: list[str]) -> pd.DataFrame:
  """Subjects x methods values of `metric`, keeping subjects scored by every method."""
  wide = table.pivot(index="subject", columns="method", values=metric)
  wide = wide.reindex(columns=methods)
  return wide.replace([np.inf, -np.inf], np.nan).dropna(axis=0, how="any")


def repeated_measures_anova(matrix: pd.DataFrame) -> dict:
  """One-way repeated-measures ANOVA (statsmodels AnovaRM), method as the factor.

  Args:
    matrix: subjects x methods, complete.

  Returns:
    {'F', 'df_num', 'df_den', 'p'}; F and p are NaN when there is no within-subject
    variation at all (e.g. identical methods).
  """
  from statsmodels.stats.anova import AnovaRM  # pylint: disable=g-import-not-at-top
  values = matrix.to_numpy(np.float64)
  if np.all(np.ptp(values, axis=1) == 0):
    # statsmodels reports F = 0, p = 1 here; there is simply nothing to test.
    k, n = values.shape[1], values.shape[0]
    return {"F": math.nan, "df_num": float(k - 1), "df_den": float((k - 1) * (n - 1)),
            "p": math.nan}
  long = matrix.rename_axis(index="subject", columns="method").stack().rename("value")
  long = long.reset_index()
  long["method"] = long["method"].astype(str)
  long["subject"] = long["subject"].astype(str)
  result = AnovaRM(long, depvar="value", subject="subject", within=["method"]).fit()
  row = result.anova_table.iloc[0]
  return {"F": float(row["F Value"]), "df_num": float(row["Num DF"]),
          "df_den": float(row["Den DF"]), "p": float(row["Pr > F"])}


def tukey_hsd(matrix: pd.DataFrame, alpha: float = ALPHA) -> pd.DataFrame:
  """Tukey HSD over all method pairs (statsmodels pairwise_tukeyhsd).

  As in the paper (statsmodels), this treats the methods as independent groups: it
  does not use the pairing by subject, so it is conservative next to the ANOVA.

  Returns:
    One row per pair: group1, group2, meandiff (group2 - group1), p, lower, upper,
    reject.
  """
  from statsmodels.stats.multicomp import pairwise_tukeyhsd  # pylint: disable=g-import-not-at-top
  methods = list(matrix.columns)
  values = np.concatenate([matrix[m].to_numpy(np.float64) for m in methods])
  # Integer codes keep the method order (statsmodels sorts group labels).
  groups = np.repeat(np.arange(len(methods)), len(matrix))
  result = pairwise_tukeyhsd(values, groups, alpha=alpha)
  rows = []
  for (i, j), diff, p, (lo, hi), reject in zip(
      itertools.combinations(result.groupsunique, 2), result.meandiffs, result.pvalues,
      result.confint, result.reject):
    rows.append({"group1": methods[int(i)], "group2": methods[int(j)], "meandiff": diff,
                 "p": float(p), "lower": lo, "upper": hi, "reject": bool(reject)})
  return pd.DataFrame(rows)


def rank_matrix(matrix: pd.DataFrame, higher_is_better: bool | None) -> pd.DataFrame:
  """Per-subject ranks, 1 = best (ties share the mean rank).

  When neither direction is better, rank 1 is the highest value.
  """
  sign = 1.0 if higher_is_better is False else -1.0
  ranks = np.apply_along_axis(scipy_stats.rankdata, 1, sign * matrix.to_numpy(np.float64))
  return pd.DataFrame(ranks, index=matrix.index, columns=matrix.columns)


def friedman(matrix: pd.DataFrame) -> dict:
  """Friedman chi-squared test over methods (scipy), subjects as blocks.

  scipy needs at least 3 methods; with 2 the Wilcoxon signed-rank test is the paired
  alternative and is returned instead (test='wilcoxon').

  Returns:
    {'test', 'statistic', 'p'}.
  """
  columns = [matrix[m].to_numpy(np.float64) for m in matrix.columns]
  if len(columns) >= 3:
    result = scipy_stats.friedmanchisquare(*columns)
    return {"test": "friedman", "statistic": float(result.statistic),
            "p": float(result.pvalue)}
  diff = columns[1] - columns[0]
  if not np.any(diff):
    return {"test": "wilcoxon", "statistic": math.nan, "p": math.nan}
  result = scipy_stats.wilcoxon(columns[0], columns[1])
  return {"test": "wilcoxon", "statistic": float(result.statistic), "p": float(result.pvalue)}


# The studentized range distribution is a numerical integral (a root search for the
# quantile), ~10 ms a call; metrics of one report share k and often the same ranks.
@functools.lru_cache(maxsize=1024)
def _studentized_range_sf(q: float, k: int) -> float:
  return min(1.0, float(scipy_stats.studentized_range.sf(q, k, np.inf)))


@functools.lru_cache(maxsize=64)
def _studentized_range_quantile(p: float, k: int) -> float:
  return float(scipy_stats.studentized_range.ppf(p, k, np.inf))


def nemenyi_critical_difference(k: int, n: int, alpha: float = ALPHA) -> float:
  """Demšar's (2006) Nemenyi critical difference of mean ranks.

  ``CD = q_alpha * sqrt(k (k + 1) / (6 n))`` with ``q_alpha`` the studentized range
  quantile for k groups and infinite degrees of freedom, divided by sqrt(2).

  Args:
    k: number of methods.
    n: number of subjects.
    alpha: significance level.
  """
  q = _studentized_range_quantile(1 - alpha, k) / math.sqrt(2)
  return float(q * math.sqrt(k * (k + 1) / (6.0 * n)))


def nemenyi(ranks: pd.DataFrame) -> pd.DataFrame:
  """Nemenyi post hoc p-values of every pair of methods from per-subject ranks.

  The mean-rank difference divided by ``sqrt(k (k + 1) / (6 n))`` times sqrt(2)
  follows the studentized range distribution (k groups, infinite df) under the
  null; the p-value is its survival function.

  Returns:
    methods x methods p-values (1 on the diagonal).
  """
  n, k = ranks.shape
  mean = ranks.mean(axis=0).to_numpy()
  se = math.sqrt(k * (k + 1) / (6.0 * n))
  p = np.ones((k, k))
  for i, j in itertools.combinations(range(k), 2):
    q = abs(mean[i] - mean[j]) / se * math.sqrt(2)
    if q > 0:
      p[i, j] = p[j, i] = _studentized_range_sf(round(q, 12), k)
  return pd.DataFrame(p, index=ranks.columns, columns=ranks.columns)


@dataclasses.dataclass
class Comparison:
  """Statistics of one metric across methods; `skipped` says why when not computed."""

  metric: str
  n_subjects: int
  skipped: str | None = None
  anova: dict | None = None
  tukey: pd.DataFrame | None = None
  friedman: dict | None = None
  mean_ranks: pd.Series | None = None
  nemenyi_p: pd.DataFrame | None = None
  critical_difference: float | None = None

  def differs(self, a: str, b: str, alpha: float = ALPHA) -> bool:
    """Whether Tukey HSD separates methods a and b (after a significant ANOVA)."""
    if self.tukey is None or self.anova is None or not self.anova["p"] < alpha:
      return False
    pair = self.tukey[((self.tukey.group1 == a) & (self.tukey.group2 == b))
                      | ((self.tukey.group1 == b) & (self.tukey.group2 == a))]
    return bool(len(pair)) and bool(pair.p.iloc[0] < alpha)


def compare_methods(table: pd.DataFrame, metric: str, methods: list[str],
                    alpha: float = ALPHA) -> Comparison:
  """Runs the section-4.9 statistics for one metric (or says why it cannot)."""
  matrix = complete_matrix(table, metric, methods)
  result = Comparison(metric=metric, n_subjects=len(matrix))
  if len(methods) < 2:
    result.skipped = "needs at least 2 methods"
  elif len(matrix) < 2:
    result.skipped = (f"needs at least 2 subjects scored by every method "
                      f"(have {len(matrix)})")
  if result.skipped:
    return result
  # Degenerate inputs (identical methods, a zero-noise column) make statsmodels and
  # scipy divide by zero; their NaN results are reported as "not computable".
  with warnings.catch_warnings(), np.errstate(divide="ignore", invalid="ignore"):
    warnings.simplefilter("ignore", RuntimeWarning)
    _run_tests(result, matrix, metric, methods, alpha)
  return result


def _run_tests(result: Comparison, matrix: pd.DataFrame, metric: str, methods: list[str],
               alpha: float) -> None:
  result.anova = repeated_measures_anova(matrix)
  result.tukey = tukey_hsd(matrix, alpha)
  ranks = rank_matrix(matrix, metric_info(metric).higher_is_better)
  result.friedman = friedman(matrix)
  result.mean_ranks = ranks.mean(axis=0)
  result.nemenyi_p = nemenyi(ranks)
  result.critical_difference = nemenyi_critical_difference(len(methods), len(matrix), alpha)


# ------------------------------------------------------------------------- markdown


def _fmt_p(p: float) -> str:
  if not np.isfinite(p):
    return "n/a"
  return "< 0.001" if p < 0.001 else f"{p:.3f}"


def _p_equals(p: float) -> str:
  text = _fmt_p(p)
  return f"p {text}" if text.startswith("<") else f"p = {text}"


def _markdown_table(header: list[str], rows: list[list[str]]) -> str:
  lines = ["| " + " | ".join(header) + " |", "|" + "|".join(["---"] * len(header)) + "|"]
  lines += ["| " + " | ".join(row) + " |" for row in rows]
  return "\n".join(lines)


def _escape_marks(text: str) -> str:
  """Backslash-escapes * and # so markdown shows them instead of emphasis/headings."""
  return text.replace("*", "\\*").replace("#", "\\#")


def _collapse_notes(notes: list[str]) -> list[str]:
  """Merges "<subject> / <method>: message" notes that share a message."""
  merged: dict[str, list[str]] = {}
  for note in notes:
    where, sep, message = note.partition(": ")
    if sep and " / " in where:
      merged.setdefault(message, []).append(where)
    else:
      merged.setdefault(note, [])
  out = []
  for message, where in merged.items():
    if not where:
      out.append(message)
    elif len(where) == 1:
      out.append(f"{where[0]}: {message}")
    else:
      out.append(f"{message} ({len(where)} volumes, e.g. {where[0]})")
  return out


def summary_table_markdown(table: pd.DataFrame, methods: list[str],
                           comparisons: dict[str, Comparison] | None = None,
                           alpha: float = ALPHA, notes: list[str] | None = None) -> str:
  """Mean +/- sd per method and metric, the paper's Tables 1-2 layout.

  The best mean per metric is bold (by the metric's direction; metrics with no
  better direction are not bolded). A mark after a value says the method differs
  significantly (Tukey HSD after a significant repeated-measures ANOVA, p < alpha)
  from the earlier method that mark stands for.

  Returns:
    Markdown text.
  """
  comparisons = comparisons or {}
  metric_names = metric_columns(table.columns)
  marks = dict(zip(methods, SIGNIFICANCE_MARKS))
  header = ["Method"]
  for m in metric_names:
    info = metric_info(m)
    arrow = {True: " ↑", False: " ↓", None: ""}[info.higher_is_better]
    header.append(info.label + arrow)
  grouped = table.groupby("method")
  rows = []
  best = {}
  for m in metric_names:
    means = grouped[m].mean().reindex(methods)
    direction = metric_info(m).higher_is_better
    finite = means[np.isfinite(means)]
    if direction is None or finite.empty:
      best[m] = set()
    else:
      target = finite.max() if direction else finite.min()
      best[m] = set(finite.index[np.isclose(finite, target, rtol=1e-12, atol=0)])
  used_marks = set()
  for method in methods:
    row = [method]
    for m in metric_names:
      values = table.loc[table.method == method, m].to_numpy(np.float64)
      values = values[np.isfinite(values)]
      decimals = metric_info(m).decimals
      if values.size == 0:
        row.append("–")
        continue
      sd = values.std(ddof=1) if values.size > 1 else math.nan
      text = f"{values.mean():.{decimals}f}"
      if np.isfinite(sd):
        text += f" ± {sd:.{decimals}f}"
      if method in best[m]:
        text = f"**{text}**"
      comparison = comparisons.get(m)
      if comparison is not None:
        sig = "".join(marks[other] for other in methods[:methods.index(method)]
                      if other in marks and comparison.differs(method, other, alpha))
        if sig:
          used_marks.update(o for o in methods[:methods.index(method)]
                            if comparison.differs(method, o, alpha))
          text += f"<sup>{_escape_marks(sig)}</sup>"
      row.append(text)
    rows.append(row)
  reference = table[table.method == TRUTH_ROW]
  if len(reference):
    row = [f"*{TRUTH_ROW} (reference)*"]
    for m in metric_names:
      values = reference[m].to_numpy(np.float64)
      values = values[np.isfinite(values)]
      decimals = metric_info(m).decimals
      if values.size == 0:
        row.append("–")
      else:
        sd = f" ± {values.std(ddof=1):.{decimals}f}" if values.size > 1 else ""
        row.append(f"*{values.mean():.{decimals}f}{sd}*")
    rows.append(row)
  n_subjects = table.loc[table.method != TRUTH_ROW, "subject"].nunique()
  lines = [f"Mean ± sd over {n_subjects} volume(s); ↑ higher is better, ↓ lower is better; "
           f"best mean in bold.", "", _markdown_table(header, rows), ""]
  if len(reference):
    lines.append(f"*{TRUTH_ROW} (reference)*: the ground truth on the output grid, scored by "
                 f"the no-reference metrics only (what a perfect reconstruction would get); "
                 f"not part of the ranking or statistics.  ")
  for method in methods:
    if method in used_marks:
      lines.append(f"<sup>{_escape_marks(marks[method])}</sup> differs from {method} (Tukey "
                   f"HSD after repeated-measures ANOVA, p < {alpha:g}).  ")
  skipped = [f"{metric_info(m).label}: {c.skipped}" for m, c in comparisons.items()
             if c.skipped]
  if skipped:
    lines += ["", "Statistics skipped: " + "; ".join(skipped) + "."]
  if notes:
    lines += ["", "Notes:", ""] + [f"- {n}" for n in _collapse_notes(notes)]
  return "\n".join(lines).rstrip() + "\n"


def stats_markdown(comparisons: dict[str, Comparison], methods: list[str], alpha: float,
                   table: pd.DataFrame | None = None) -> str:
  """The statistics of every metric as markdown (section 4.9 of the paper)."""
  lines = ["# Statistics", "",
           f"Methods (in order): {', '.join(methods)}. Significance level {alpha:g}.", "",
           "Per metric: one-way repeated-measures ANOVA (statsmodels `AnovaRM`, method as "
           "the within-subject factor) with Tukey HSD post hoc (statsmodels "
           "`pairwise_tukeyhsd`, which treats methods as independent groups, as the paper "
           "did); Friedman test on the per-subject values (scipy; Wilcoxon signed-rank "
           "for 2 methods) with the Nemenyi post hoc on mean ranks (rank 1 = best; "
           "studentized range, infinite df; Demšar 2006).", ""]
  for metric, c in comparisons.items():
    info = metric_info(metric)
    lines += [f"## {info.label} (`{metric}`)", ""]
    if c.skipped:
      lines += [f"Skipped: {c.skipped}.", ""]
      continue
    a = c.anova
    verdict = ("no within-subject variation (identical values): not computable"
               if not np.isfinite(a["p"]) else
               ("significant" if a["p"] < alpha else "not significant"))
    lines += [f"Repeated-measures ANOVA over {c.n_subjects} subjects: "
              f"F({a['df_num']:g}, {a['df_den']:g}) = {a['F']:.3f}, {_p_equals(a['p'])} "
              f"({verdict}).", "", "Tukey HSD:", ""]
    lines.append(_markdown_table(
        ["group1", "group2", "mean diff (2 - 1)", "95% CI", "p-adj", "reject"],
        [[r.group1, r.group2, f"{r.meandiff:.4g}", f"[{r.lower:.4g}, {r.upper:.4g}]",
          _fmt_p(r.p), "yes" if r.reject else "no"] for r in c.tukey.itertuples()]))
    f = c.friedman
    name = "Friedman chi²" if f["test"] == "friedman" else "Wilcoxon W"
    lines += ["", f"{name} = {f['statistic']:.3f}, {_p_equals(f['p'])}. Nemenyi "
              f"critical difference of mean ranks: {c.critical_difference:.3f}.", ""]
    header = ["method", "mean rank"] + methods
    rows = [[m, f"{c.mean_ranks[m]:.2f}"] + [
        "–" if m == o else _fmt_p(c.nemenyi_p.loc[m, o]) for o in methods] for m in methods]
    lines += ["Nemenyi p-values:", "", _markdown_table(header, rows), ""]
  return "\n".join(lines).rstrip() + "\n"


# -------------------------------------------------------------------------- figures


def plot_boxplots(table: pd.DataFrame, methods: list[str], metric_names: list[str],
                  path: str) -> None:
  """One box plot per metric, methods side by side, subjects as dots (paper Fig. 5)."""
  from clade_jax import plotting  # pylint: disable=g-import-not-at-top
  import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top
  n = max(1, len(metric_names))
  cols = min(n, 4)
  rows = math.ceil(n / cols)
  fig, axes = plt.subplots(rows, cols, figsize=(3.2 * cols, 3.2 * rows), squeeze=False, dpi=110)
  rng = np.random.default_rng(0)
  for ax, metric in zip(axes.flat, metric_names):
    data = [table.loc[table.method == m, metric].to_numpy(np.float64) for m in methods]
    data = [d[np.isfinite(d)] for d in data]
    ax.boxplot(data, tick_labels=methods, showfliers=False)
    for i, d in enumerate(data, start=1):
      ax.scatter(i + rng.uniform(-0.12, 0.12, d.size), d, s=10, color="tab:blue", alpha=0.7,
                 zorder=3)
    reference = table.loc[table.method == TRUTH_ROW, metric].to_numpy(np.float64)
    reference = reference[np.isfinite(reference)]
    if reference.size:
      ax.axhline(reference.mean(), color="gray", linestyle="--", linewidth=1,
                 label=f"{TRUTH_ROW} (mean)")
      ax.legend(fontsize=7, loc="best", frameon=False)
    if not any(d.size for d in data):
      ax.text(0.5, 0.5, "no finite values", ha="center", va="center",
              transform=ax.transAxes, fontsize=8, color="gray")
    info = metric_info(metric)
    arrow = {True: " (↑ better)", False: " (↓ better)", None: ""}[info.higher_is_better]
    ax.set_title(info.label + arrow, fontsize=9)
    ax.tick_params(axis="x", labelrotation=30, labelsize=8)
    ax.tick_params(axis="y", labelsize=8)
  for ax in list(axes.flat)[len(metric_names):]:
    ax.axis("off")
  # Fixed margins: tight_layout would draw the figure once more just to measure it.
  fig.subplots_adjust(left=0.07, right=0.98, bottom=0.12 / rows, top=1 - 0.08 / rows,
                      wspace=0.35, hspace=0.6)
  plotting.save_figure(fig, path)


def _canonical(volume: Volume) -> tuple[np.ndarray, np.ndarray]:
  """Data and affine reoriented to the closest RAS voxel order, for display."""
  import nibabel as nib  # pylint: disable=g-import-not-at-top
  ornt = nib.orientations.io_orientation(volume.affine)
  data = nib.orientations.apply_orientation(np.asarray(volume.data), ornt)
  affine = volume.affine @ nib.orientations.inv_ornt_aff(ornt, volume.data.shape)
  return data, affine


def plot_orthogonal_slices(volumes: dict[str, Volume], path: str, *,
                           view_mm=None, inset_fraction: float = 0.22,
                           title: str = "") -> None:
  """Sagittal, coronal and axial slices through one world point, one column per volume.

  Each panel is drawn in world mm (so grids of different spacing line up) with a
  magnified inset of the square around the view point, and a box marking where it
  comes from.

  Args:
    volumes: name -> Volume (the truth first when there is one).
    path: PNG path.
    view_mm: world point (mm) to cut through; default the centre of the first volume's
      above-mean voxels.
    inset_fraction: side of the magnified square as a fraction of the smaller field
      of view.
    title: figure title.
  """
  from clade_jax import plotting  # pylint: disable=g-import-not-at-top
  import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top
  names = list(volumes)
  canon = {n: _canonical(v) for n, v in volumes.items()}
  first_data, first_affine = canon[names[0]]
  if view_mm is None:
    index = np.argwhere(first_data > first_data.mean()).mean(axis=0)
    view_mm = (first_affine @ np.append(index, 1.0))[:3]
  view_mm = np.asarray(view_mm, np.float64)
  lo, hi = np.percentile(first_data, [0.5, 99.5])
  # Panel rows: (title, slicing axis in RAS order, displayed x axis, displayed y axis).
  planes = [("sagittal", 0, 1, 2), ("coronal", 1, 0, 2), ("axial", 2, 0, 1)]
  fig, axes = plt.subplots(3, len(names), figsize=(2.8 * len(names), 8.4), squeeze=False,
                           dpi=110)
  for c, name in enumerate(names):
    data, affine = canon[name]
    spacing = np.diag(affine)[:3]
    origin = affine[:3, 3]
    index = np.rint(np.linalg.solve(affine, np.append(view_mm, 1.0))[:3]).astype(int)
    index = np.clip(index, 0, np.asarray(data.shape) - 1)
    for r, (plane, axis, ax_x, ax_y) in enumerate(planes):
      # The slice keeps the other two axes in order (ax_x, ax_y); rows must be y.
      image = np.take(data, index[axis], axis=axis).T
      def edges(a, n):
        ends = origin[a] + spacing[a] * np.array([-0.5, n - 0.5])
        return sorted(ends)
      x0, x1 = edges(ax_x, data.shape[ax_x])
      y0, y1 = edges(ax_y, data.shape[ax_y])
      # With a negative step the first voxel is at the far end of the axis.
      if spacing[ax_x] < 0:
        image = image[:, ::-1]
      if spacing[ax_y] < 0:
        image = image[::-1]
      ax = axes[r, c]
      kwargs = dict(cmap="gray", vmin=lo, vmax=hi, origin="lower", extent=(x0, x1, y0, y1),
                    interpolation="nearest")
      ax.imshow(image, **kwargs)
      half = inset_fraction * min(x1 - x0, y1 - y0) / 2
      cx, cy = view_mm[ax_x], view_mm[ax_y]
      inset = ax.inset_axes([0.58, 0.58, 0.42, 0.42])
      inset.imshow(image, **kwargs)
      inset.set_xlim(cx - half, cx + half)
      inset.set_ylim(cy - half, cy + half)
      inset.set_xticks([])
      inset.set_yticks([])
      for spine in inset.spines.values():
        spine.set_edgecolor("gold")
      ax.indicate_inset_zoom(inset, edgecolor="gold")
      ax.set_xticks([])
      ax.set_yticks([])
      if r == 0:
        ax.set_title(name, fontsize=9)
      if c == 0:
        ax.set_ylabel(plane, fontsize=9)
  if title:
    fig.suptitle(title, fontsize=10)
  # Fixed spacing instead of tight_layout: the panels have no tick labels, and the
  # layout pass costs more than drawing the images.
  fig.subplots_adjust(left=0.04, right=0.99, bottom=0.01, top=0.93, wspace=0.04, hspace=0.04)
  plotting.save_figure(fig, path)
