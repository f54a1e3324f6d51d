"""Maps of what a super-resolution method did, on the output grid: for the QC report and
for any NIfTI viewer (``infer.py --qc-maps``).

* The **added detail** is the output minus the cubic-spline input the methods start
  from (`preprocess.prepare_input`), voxel by voxel on the output grid: positive where
  the method brightened the image, negative where it darkened it, exactly zero where it
  changed nothing (beyond the intensity window, for instance, see
  `intensity.to_scan_units`).
* The **slice residual** is the re-acquired output minus the acquired slices
  (``A x - lr``, `consistency`): what the output says the scanner should have measured,
  minus what it did measure. It lives on the acquired slices; on the output grid each
  voxel shows the residual of its nearest acquired slice along the thick axis (the
  same nearest-neighbour placement as the report's "input (nearest)" panel), so it
  overlays the output. Near zero everywhere after data consistency.
"""

from __future__ import annotations

import numpy as np

from clade_jax.data import consistency
from clade_jax.data import volume as volume_lib


def added_detail(output: np.ndarray, cubic: np.ndarray) -> np.ndarray:
  """``output - cubic`` in float32, both on the output grid (same shape).

  Raises:
    ValueError: the shapes differ.
  """
  output, cubic = np.asarray(output), np.asarray(cubic)
  if output.shape != cubic.shape:
    raise ValueError(f"output {output.shape} and cubic input {cubic.shape} are not on one grid")
  return (output.astype(np.float32) - cubic.astype(np.float32)).astype(np.float32)


def nearest_slice_index(acquisition: consistency.Acquisition) -> np.ndarray:
  """For each output index along the thick axis, the index of its nearest acquired slice."""
  fine = np.arange(acquisition.n_fine)
  return np.abs(fine[:, None] - acquisition.centres[None, :]).argmin(axis=1)


def slice_residual(output: np.ndarray, acquired: np.ndarray,
                   acquisition: consistency.Acquisition) -> np.ndarray:
  """Re-acquired output minus acquired slices, placed on the output grid (float32).

  Args:
    output: the output volume on the grid of ``acquisition``.
    acquired: the acquired slices (the input scan's data).
    acquisition: the slice profile on the output grid (`inference.acquisition_model`).

  Returns:
    An array of ``output``'s shape: at every voxel, ``(A x - lr)`` of its nearest
    acquired slice along ``acquisition.thick_axis``.
  """
  axis = acquisition.thick_axis
  lines = np.moveaxis(np.asarray(output, np.float64), axis, 0)
  slices = np.moveaxis(np.asarray(acquired, np.float64), axis, 0)
  shape = lines.shape
  reacquired = acquisition.matrix @ lines.reshape(shape[0], -1)
  difference = reacquired - slices.reshape(slices.shape[0], -1)
  placed = difference[nearest_slice_index(acquisition)].reshape(shape)
  return np.moveaxis(placed, 0, axis).astype(np.float32)


def paths(output_path: str) -> dict[str, str]:
  """Where ``--qc-maps`` writes the maps: ``<stem>_added.nii.gz``, ``<stem>_residual.nii.gz``."""
  stem = output_path
  for suffix in sorted(volume_lib.NIFTI_SUFFIXES, key=len, reverse=True):
    if stem.endswith(suffix):
      stem = stem[:-len(suffix)]
      break
  return {"added": stem + "_added.nii.gz", "residual": stem + "_residual.nii.gz"}
