"""How a raw volume becomes the generator's input, identically in training and inference.

The thick axis is resampled to isotropic with a cubic spline (paper Sec. 4.5) and the
intensity window, robust percentiles of the acquired samples or a fixed window such as
CT's HU (`intensity.fit_normalizer`), is mapped to [-1, 1]. Training and inference both
call `prepare_input`, so they cannot drift apart. The way back, which keeps what lies
outside the window, is `intensity.to_scan_units`.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from clade_jax.data import intensity
from clade_jax.data import volume as volume_lib


@dataclasses.dataclass(frozen=True)
class PreparedInput:
  """A volume on the grid the generator works on, as training prepares it.

  Attributes:
    isotropic: float32 ``[I, J, K]`` in the input's intensity units, the thick
      axis cubic-spline resampled to isotropic.
    affine: 4x4 voxel-to-world affine of ``isotropic`` (from
      `volume_lib.isotropic_geometry`): every original sample keeps its world
      position.
    thick_axis: The voxel axis that was thick.
    lr_axis: The voxel axis to slice along for the low-resolution plane the
      generator was trained on.
    normalizer: The intensity window mapped onto ``[-1, 1]``: robust
      percentiles of the acquired samples, or ``data.intensity_window``.
    acquired_range: ``(min, max)`` of the acquired samples: what the scan holds,
      which the cubic spline overshoots at sharp edges; None when unknown.
    slice_spacing: mm between the acquired slices (``affine`` holds the new
      spacing only); None where unknown.
    acquired: The input samples themselves, float32 on their own grid (the input
      array, not a copy): methods that work from the acquired slices rather than
      from the spline (latent interpolation) read them here. None when built by
      hand without them.
    acquired_affine: 4x4 voxel-to-world affine of ``acquired``.
  """

  isotropic: np.ndarray
  affine: np.ndarray
  thick_axis: int
  lr_axis: int
  normalizer: volume_lib.Normalizer
  acquired_range: tuple[float, float] | None = None
  slice_spacing: float | None = None
  acquired: np.ndarray | None = None
  acquired_affine: np.ndarray | None = None

  @property
  def lr_axes(self) -> tuple[int, int]:
    """Both low-resolution planes" slicing axes, the trained one first."""
    other = 3 - self.thick_axis - self.lr_axis
    return self.lr_axis, other


def prepare_input(
    volume: np.ndarray, affine: np.ndarray, data_config, *, name: str = "volume"
) -> PreparedInput:
  """Resamples and fits the normaliser exactly as training does (section 4.5).

  Args:
    volume: Raw 3D array in its own intensity units.
    affine: Its 4x4 voxel-to-world affine (mm).
    data_config: The run's ``config.data``: ``thick_axis`` (-1 detects it),
      ``target_spacing`` (0 = finest in-plane spacing), ``normalization``,
      ``percentiles``, ``intensity_window``, ``lr_plane``.
    name: What to call the volume in error messages (e.g. its path).

  Returns:
    The `PreparedInput`.

  Raises:
    VolumeError: not 3D, no thick axis (an isotropic volume), constant
      intensities, a bad intensity window, or the trained low-resolution plane
      does not contain this volume's thick axis.
  """
  data = np.asarray(volume, np.float32)
  affine = np.asarray(affine, np.float64)
  if data.ndim != 3 or affine.shape != (4, 4):
    raise volume_lib.VolumeError(
        f"{name}: expected a 3D volume and a 4x4 affine, got shapes "
        f"{data.shape} and {affine.shape}")
  source = volume_lib.Volume(data=data, affine=affine, path=name)
  thick_axis = data_config.thick_axis
  if thick_axis < 0:
    spacing = source.spacing
    try:
      thick_axis = volume_lib.find_thick_axis(spacing, name=name)
    except volume_lib.VolumeError:
      raise volume_lib.VolumeError(
          f"{name}: nothing to super-resolve: no thick-slice axis (voxel sizes "
          f"{np.round(spacing, 3).tolist()} mm); CLADE needs a volume with one "
          "axis at least 1.5x coarser than the others") from None
  iso = volume_lib.resample_thick_axis(
      source, thick_axis, data_config.target_spacing or None)
  # Fitted on the acquired samples, as training does: the spline's overshoot
  # at sharp edges must not set the scale.
  normalizer = intensity.fit_normalizer(data, data_config, name=name)
  try:
    lr_axis = volume_lib.lr_slice_axis(affine, thick_axis, data_config.lr_plane)
  except ValueError as e:
    raise volume_lib.VolumeError(f"{name}: {e}") from None
  return PreparedInput(iso.data, iso.affine, thick_axis, lr_axis, normalizer,
                       (float(data.min()), float(data.max())),
                       float(source.spacing[thick_axis]), acquired=data, acquired_affine=affine)
