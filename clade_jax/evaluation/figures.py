"""The figures: box plots per metric (paper Fig. 5) and orthogonal slices per subject."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from clade_jax.data.volume import Volume
from clade_jax.evaluation.metric_table import TRUTH_ROW, metric_info


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
