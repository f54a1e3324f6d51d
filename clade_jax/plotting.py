"""Pictures people look at: patch grids, slice comparisons, orthogonal slices."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import nibabel as nib  # noqa: E402
import numpy as np  # noqa: E402

from clade_jax import atomic  # noqa: E402
from clade_jax import display  # noqa: E402
from clade_jax.data.volume import Volume  # noqa: E402


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
    inset: (row, col, size) of the square to magnify; default where the first image
      has the most structure (`display.structure_point`).
    vrange: (lo, hi) display window; default the first image's first
      `display.windows` (CT: brain; MRI: robust percentiles).
  """
  names = list(images)
  first = np.asarray(images[names[0]])
  if vrange is None:
    vrange = display.windows(first)[0][1]
  if inset is None:
    size = max(8, min(first.shape) // 4)
    row, col = display.structure_point(first, size, mask=display.foreground(first),
                                       window=vrange)
    row = int(np.clip(row - size // 2, 0, max(first.shape[0] - size, 0)))
    col = int(np.clip(col - size // 2, 0, max(first.shape[1] - size, 0)))
    inset = (row, col, size)
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


def _canonical(volume: Volume) -> tuple[np.ndarray, np.ndarray]:
  """Data and affine reoriented to the closest RAS voxel order, for display."""
  ornt = nib.orientations.io_orientation(volume.affine)
  data = nib.orientations.apply_orientation(np.asarray(volume.data), ornt)
  affine = volume.affine @ nib.orientations.inv_ornt_aff(ornt, volume.data.shape)
  return data, affine


def orthogonal_slices(volumes: dict[str, Volume], path: str, *,
                           view_mm=None, inset_fraction: float = 0.22,
                           title: str = "", window=None) -> None:
  """Sagittal, coronal and axial slices through one world point, one column per volume.

  Each panel is drawn in world mm (so grids of different spacing line up) with a
  magnified inset of the square around the view point, and a box marking where it
  comes from.

  Args:
    volumes: name -> Volume (the truth first when there is one).
    path: PNG path.
    view_mm: world point (mm) to cut through; default where the first volume has the
      most structure (`display.structure_point`: the most gradient energy within the
      display window, in the foreground), so the insets show edges, not flat tissue.
    inset_fraction: side of the magnified square as a fraction of the smaller field
      of view.
    title: figure title.
    window: (lo, hi) display window; default the first volume's first
      `display.windows` (CT: brain W80 L40; MRI: robust percentiles).
  """
  names = list(volumes)
  canon = {n: _canonical(v) for n, v in volumes.items()}
  first_data, first_affine = canon[names[0]]
  lo, hi = window if window is not None else display.windows(first_data)[0][1]
  if view_mm is None:
    size = max(3, int(inset_fraction * min(first_data.shape)))
    index = display.structure_point(first_data, size, mask=display.foreground(first_data),
                                    window=(lo, hi))
    view_mm = (first_affine @ np.append(index, 1.0))[:3]
  view_mm = np.asarray(view_mm, np.float64)
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
  save_figure(fig, path)
