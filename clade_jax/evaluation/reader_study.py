"""A blinded reader study, as the paper's radiologist ranking (its section 4.9 and Table 3).

`make_kit` writes, for every subject and low-resolution plane, one PNG panel with the
methods side by side in a random order, labelled A, B, C, ... (the same slices of every
method, a few slices spread over the volume, one shared gray window), a scoring sheet
``scores.csv`` with one row per reader x panel x question and an empty rank column per
letter, and the key (which letter is which method in each panel) in a separate file that
the readers do not get. Readers rank each panel's letters, 1 = best, ties allowed (the
paper's questions: overall image quality, sharpest anatomical edges).

`rankings` decodes a filled-in sheet with the key; `ranking_report` averages the
readers' ranks per subject (as the paper does) and, per plane and question, runs the
Friedman test across methods with Nemenyi post hoc comparisons (`statistics`), giving the
markdown table that ``evaluate.py --reader-scores`` writes.
"""

from __future__ import annotations

import csv
import io
import os
import string

import numpy as np
import pandas as pd

from clade_jax import atomic
from clade_jax.plotting import for_display, plt, save_figure
from clade_jax.data.volume import VolumeError, find_thick_axis, load_volume, plane_axis
from clade_jax.evaluation import statistics
from clade_jax.evaluation.scoring import find_volumes, low_resolution_planes, match_subjects

QUESTIONS = ("overall_quality", "edge_sharpness")
KEY_COLUMNS = ("panel", "subject", "plane", "letter", "method")


def panel_id(subject: str, plane: str) -> str:
  return f"{subject}_{plane}"


def _write_csv(path: str, header, rows) -> None:
  text = io.StringIO()
  writer = csv.writer(text, lineterminator="\n")
  writer.writerow(header)
  writer.writerows(rows)
  atomic.write_text(path, text.getvalue())


def _panel_png(images: list[np.ndarray], letters: list[str], path: str, title: str) -> None:
  """Rows = slices, columns = letters; one gray window for every image."""
  stack = np.stack(images)  # [letters, slices, h, w]
  lo, hi = np.percentile(stack, [0.5, 99.5])
  n_letters, n_slices = stack.shape[:2]
  h, w = for_display(stack[0, 0]).shape  # As drawn (for_display transposes).
  scale = 3.2 / max(h, w)
  header = 0.7  # Inches for the title and the letters.
  fig, axes = plt.subplots(n_slices, n_letters, squeeze=False, dpi=120,
                           figsize=(n_letters * w * scale * 1.04,
                                    n_slices * h * scale * 1.04 + header))
  for c, letter in enumerate(letters):
    for r in range(n_slices):
      ax = axes[r, c]
      ax.imshow(for_display(stack[c, r]), cmap="gray", vmin=lo, vmax=hi,
                interpolation="nearest")
      ax.set_xticks([])
      ax.set_yticks([])
    axes[0, c].set_title(letter, fontsize=14, fontweight="bold")
  fig.suptitle(title, fontsize=9)
  fig.subplots_adjust(left=0.01, right=0.99, bottom=0.01, top=1 - header / fig.get_figheight(),
                      wspace=0.04, hspace=0.04)
  save_figure(fig, path)


def panel_geometry(data: np.ndarray, normal: int, n_slices: int,
                   margin: float = 0.05) -> tuple[np.ndarray, tuple[slice, ...]]:
  """Where a panel cuts `data` and what it shows: anatomy, not background.

  The anatomy is what exceeds a tenth of the robust maximum. Slices are spread evenly
  over the middle 60% of its extent along `normal`; every image is cropped to its
  bounding box in the other two axes, widened by `margin` of the box's size.

  Returns:
    (slice indices along `normal`, the crop of the 2-D images, one slice per remaining
    axis in order).
  """
  mask = data > 0.1 * np.percentile(data, 99.5)
  if not mask.any():
    mask = np.ones(data.shape, bool)
  found = np.argwhere(mask)
  lo, hi = found.min(axis=0), found.max(axis=0)
  picks = np.linspace(lo[normal] + 0.2 * (hi[normal] - lo[normal]),
                      lo[normal] + 0.8 * (hi[normal] - lo[normal]), n_slices)
  crop = []
  for axis in range(data.ndim):
    if axis != normal:
      pad = int(np.ceil(margin * (hi[axis] - lo[axis] + 1)))
      crop.append(slice(max(0, lo[axis] - pad), min(data.shape[axis], hi[axis] + pad + 1)))
  return picks.round().astype(int), tuple(crop)


def make_kit(methods: dict[str, str], out_dir: str, key_path: str, *,
             readers: tuple[str, ...] = ("reader1", "reader2"),
             questions: tuple[str, ...] = QUESTIONS, slices_per_panel: int = 3,
             thick_axis: int | None = None, seed: int = 0,
             subject_regex: str | None = None) -> dict[str, str]:
  """Writes the blinded panels and the scoring sheet to `out_dir`, the key to `key_path`.

  Args:
    methods: method name -> its volumes (a directory or a glob; matched by subject as in
      `evaluation.evaluate`). Every method's volumes of a subject must have one shape.
    out_dir: the kit handed to the readers: ``panels/<subject>_<plane>.png``,
      ``scores.csv``.
    key_path: where the key goes (CSV, `KEY_COLUMNS`); refused inside `out_dir`, so the
      kit folder can be shared as it is.
    readers: reader ids, one block of sheet rows each.
    questions: what each reader ranks every panel for.
    slices_per_panel: slices per panel, evenly spread over the middle 60% of the
      anatomy (`panel_geometry`), each cropped to it.
    thick_axis: voxel axis that was thick; default found from the first anisotropic
      input, else required.
    seed: the letter order of every panel is a permutation drawn from it.

  Returns:
    panel id -> PNG path.

  Raises:
    VolumeError: no common subjects, mismatched shapes, or the key inside the kit.
  """
  if len(methods) < 2 or len(methods) > len(string.ascii_uppercase):
    raise VolumeError(f"a reader study needs 2 to 26 methods, got {len(methods)}")
  if os.path.abspath(key_path).startswith(os.path.abspath(out_dir) + os.sep):
    raise VolumeError(f"{key_path}: keep the key outside the kit folder {out_dir} "
                      f"(readers must not see it)")
  files = {name: find_volumes(spec, subject_regex) for name, spec in methods.items()}
  subjects, _ = match_subjects(files)
  rng = np.random.default_rng(seed)
  names = list(methods)
  letters = list(string.ascii_uppercase[:len(names)])
  panels, key_rows, sheet_rows = {}, [], []
  for subject in subjects:
    volumes = {name: load_volume(files[name][subject]) for name in names}
    shapes = {v.data.shape for v in volumes.values()}
    if len(shapes) != 1:
      raise VolumeError(f"subject {subject}: methods have different shapes {sorted(shapes)}; "
                        f"compare volumes on one grid (e.g. every output of infer.py)")
    axis = thick_axis
    if axis is None:
      for v in volumes.values():
        try:
          axis = find_thick_axis(v.spacing, name=v.name)
          break
        except VolumeError:
          continue
    if axis is None:
      raise VolumeError(f"subject {subject}: every volume is isotropic, so the "
                        "low-resolution planes are unknown: pass --thick-axis (the acquisition's "
                        "thick voxel axis)")
    reference = volumes[names[0]]
    for plane in low_resolution_planes(reference.affine, axis):
      normal = plane_axis(reference.affine, plane)
      picks, crop = panel_geometry(reference.data, normal, slices_per_panel)
      order = rng.permutation(len(names))
      pid = panel_id(subject, plane)
      images = [np.stack([np.take(volumes[names[i]].data, k, axis=normal)[crop] for k in picks])
                for i in order]
      path = os.path.join(out_dir, "panels", f"{pid}.png")
      _panel_png(images, letters, path, f"{pid}: rank A-{letters[-1]}, 1 = best, ties allowed")
      panels[pid] = path
      key_rows += [(pid, subject, plane, letters[j], names[i]) for j, i in enumerate(order)]
      sheet_rows += [(reader, pid, q) + ("",) * len(letters)
                     for reader in readers for q in questions]
  _write_csv(os.path.join(out_dir, "scores.csv"), ("reader", "panel", "question", *letters),
             sheet_rows)
  _write_csv(key_path, KEY_COLUMNS, key_rows)
  return panels


def rankings(scores_path: str, key_path: str) -> pd.DataFrame:
  """A filled-in sheet decoded with the key.

  Returns:
    One row per reader x panel x question x method: reader, subject, plane, question,
    method, rank.

  Raises:
    VolumeError: a panel the key does not know, a rank missing or not a positive number.
  """
  for path in (scores_path, key_path):
    if not os.path.isfile(path):
      raise VolumeError(f"{path}: no such file")
  key = pd.read_csv(key_path, dtype=str)
  if list(key.columns) != list(KEY_COLUMNS):
    raise VolumeError(f"{key_path}: not a reader-study key (columns {', '.join(KEY_COLUMNS)})")
  sheet = pd.read_csv(scores_path, dtype=str, keep_default_na=False)
  lookup = {(r.panel, r.letter): r for r in key.itertuples()}
  rows = []
  for line, record in enumerate(sheet.to_dict("records"), start=2):
    letters = [c for c in sheet.columns if (record["panel"], c) in lookup]
    if not letters:
      raise VolumeError(f"{scores_path}:{line}: panel {record['panel']!r} is not in {key_path}")
    for letter in letters:
      text = record[letter].strip()
      try:
        rank = float(text)
      except ValueError:
        rank = float("nan")
      if not rank >= 1:
        raise VolumeError(f"{scores_path}:{line}: rank of {letter} is {text!r}; fill in "
                          f"1 (best) .. {len(letters)} for every letter (ties allowed)")
      entry = lookup[(record["panel"], letter)]
      rows.append((record["reader"], entry.subject, entry.plane, record["question"],
                   entry.method, rank))
  return pd.DataFrame(rows, columns=["reader", "subject", "plane", "question", "method", "rank"])


def ranking_report(table: pd.DataFrame, alpha: float = statistics.ALPHA) -> str:
  """Markdown: mean rank per method (readers averaged per subject), Friedman, Nemenyi."""
  lines = ["# Reader study: ranks (1 = best)", "",
           "Readers' ranks averaged per subject, then Friedman across methods (subjects as "
           "blocks) with Nemenyi post hoc tests on the per-subject rank means.", ""]
  for (plane, question), group in table.groupby(["plane", "question"], sort=True):
    matrix = group.pivot_table(index="subject", columns="method", values="rank",
                               aggfunc="mean")
    methods = list(matrix.columns)
    lines += [f"## {plane}: {question}", "",
              f"{len(matrix)} subject(s), {group.reader.nunique()} reader(s)", "",
              "| method | mean rank | sd |", "| --- | --- | --- |"]
    for m in matrix.mean().sort_values().index:
      lines.append(f"| {m} | {matrix[m].mean():.2f} | {matrix[m].std(ddof=1):.2f} |")
    lines.append("")
    if len(matrix) < 2 or len(methods) < 2:
      lines += ["Statistics need at least 2 subjects and 2 methods.", ""]
      continue
    test = statistics.friedman(matrix)
    lines.append(f"{test['test'].capitalize()}: statistic {test['statistic']:.3f}, "
                 f"p = {test['p']:.4g}")
    ranks = statistics.rank_matrix(matrix, higher_is_better=False)
    p = statistics.nemenyi(ranks)
    pairs = [f"{a} vs {b} (p = {p.loc[a, b]:.3g})" for i, a in enumerate(methods)
             for b in methods[i + 1:] if p.loc[a, b] < alpha]
    lines += [f"Nemenyi, p < {alpha}: " + ("; ".join(pairs) if pairs else "none"), ""]
  return "\n".join(lines)
