"""Pictures people look at: patch grids during training and slice comparisons."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from clade_jax import atomic  # noqa: E402


def save_figure(fig, path: str) -> None:
  """Saves atomically (temp file + rename) and closes the figure."""
  try:
    with atomic.atomic_path(path, suffix=".png") as tmp:
      fig.savefig(tmp, dpi=fig.dpi, bbox_inches="tight")
  finally:
    plt.close(fig)


def for_display(image: np.ndarray) -> np.ndarray:
  """A slice [a, b] (voxel order) shown with b running upwards and a to the right.

  For RAS-like volumes this puts superior at the top of sagittal and coronal slices and
  anterior at the top of axial ones.
  """
  return np.flipud(np.asarray(image).T)


def patch_grid(columns: dict[str, np.ndarray], path: str, title: str = "") -> None:
  """One row per sample, one column per named stage ([N, P, P] or [N, P, P, 1] in [-1, 1])."""
  names = list(columns)
  n = len(next(iter(columns.values())))
  fig, axes = plt.subplots(n, len(names), figsize=(1.3 * len(names), 1.3 * n + 0.4),
                           squeeze=False, dpi=100)
  for c, name in enumerate(names):
    for r in range(n):
      ax = axes[r, c]
      ax.imshow(np.squeeze(columns[name][r]), cmap="gray", vmin=-1, vmax=1,
                interpolation="nearest")
      ax.set_xticks([])
      ax.set_yticks([])
      if r == 0:
        ax.set_title(name, fontsize=8)
  if title:
    fig.suptitle(title, fontsize=9)
  save_figure(fig, path)


def slice_comparison(images: dict[str, np.ndarray], path: str, *, title: str = "",
                     inset: tuple[int, int, int] | None = None, vrange=None) -> None:
  """Images side by side (2D, display orientation) with a magnified inset row.

  Args:
    images: name -> 2D image; all the same shape.
    path: PNG path.
    title: figure title.
    inset: (row, col, size) of the square to magnify; default the image centre.
    vrange: (lo, hi) display window; default the 1st-99.5th percentile of the first.
  """
  names = list(images)
  first = np.asarray(images[names[0]])
  if vrange is None:
    vrange = np.percentile(first, [1, 99.5])
  if inset is None:
    size = max(8, min(first.shape) // 4)
    inset = (first.shape[0] // 2 - size // 2, first.shape[1] // 2 - size // 2, size)
  r0, c0, size = inset
  fig, axes = plt.subplots(2, len(names), figsize=(3.2 * len(names), 6.0), squeeze=False,
                           dpi=110, gridspec_kw={"height_ratios": [first.shape[0] / first.shape[1], 1]})
  for c, name in enumerate(names):
    image = np.asarray(images[name])
    axes[0, c].imshow(image, cmap="gray", vmin=vrange[0], vmax=vrange[1])
    axes[0, c].add_patch(plt.Rectangle((c0 - 0.5, r0 - 0.5), size, size, fill=False,
                                       edgecolor="deepskyblue", linewidth=1.2))
    axes[0, c].set_title(name, fontsize=9)
    axes[1, c].imshow(image[r0:r0 + size, c0:c0 + size], cmap="gray", vmin=vrange[0],
                      vmax=vrange[1], interpolation="nearest")
    for ax in axes[:, c]:
      ax.set_xticks([])
      ax.set_yticks([])
  if title:
    fig.suptitle(title, fontsize=10)
  save_figure(fig, path)
