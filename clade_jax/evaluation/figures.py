"""The figures: box plots per metric (paper Fig. 5) and orthogonal slices per subject."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from clade_jax.evaluation.metric_table import TRUTH_ROW, metric_info


def plot_boxplots(table: pd.DataFrame, methods: list[str], metric_names: list[str],
                  path: str) -> None:
  """One box plot per metric, methods side by side, subjects as dots (paper Fig. 5)."""
  from clade_jax import plotting  # pylint: disable=g-import-not-at-top
  import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top
  n = max(1, len(metric_names))
  cols = min(n, 4)
  rows = math.ceil(n / cols)
  # Panels widen with the number of methods so the slanted names stay apart.
  width = 3.2 + 0.22 * max(0, len(methods) - 5)
  fig, axes = plt.subplots(rows, cols, figsize=(width * cols, 3.4 * rows), squeeze=False,
                           dpi=110)
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
    plt.setp(ax.get_xticklabels(), rotation=40, ha="right", rotation_mode="anchor", fontsize=8)
    ax.tick_params(axis="y", labelsize=8)
  for ax in list(axes.flat)[len(metric_names):]:
    ax.axis("off")
  # Fixed margins: tight_layout would draw the figure once more just to measure it.
  fig.subplots_adjust(left=0.07, right=0.98, bottom=0.16 / rows, top=1 - 0.08 / rows,
                      wspace=0.35, hspace=0.75)
  plotting.save_figure(fig, path)
