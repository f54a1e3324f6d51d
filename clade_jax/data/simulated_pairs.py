"""High-resolution patches and what the acquisition would have made of them.

A patch of an acquired high-resolution slice (CLADE's domain Y) has in-plane detail at
the resolution the super-resolved volume should have. Acquired along one of its axes
the way the thick axis was acquired (the slice profile of `slice_profile`, a slice every
`factor` fine voxels) and upsampled back with the cubic spline `preprocess` uses on the
thick axis, it looks like a patch of the low-resolution plane (domain X) whose truth is
known: the patch itself. `loss.degradation` in `clade_jax.methods.clade` trains G_X on
such pairs, next to CLADE's unpaired losses (the idea of SMORE, Zhao et al. 2020).

Both steps are linear along the degraded axis, so a whole line goes through one matrix
(`line_operator`): re-acquisition `consistency.acquisition_matrix` (the profile code of
the simulator and of the data-consistency projection), then the interpolating spline
through the slice values (`volume.resample_thick_axis`'s). The line is taken `margin`
voxels longer at both ends than the patch, so the patch's own rows see the profile and
the spline as they would inside a volume.
"""

from __future__ import annotations

import dataclasses
import functools
import math

import numpy as np
from scipy import interpolate

from clade_jax.data import consistency


def line_operator(length: int, factor: float, phase: float, thickness_vox: float,
                  profile: str = "gaussian", margin: int = 0) -> np.ndarray:
  """The matrix that acquires a line with thick slices and cubic-upsamples it back.

  Args:
    length: voxels of the fine line (the patch plus `margin` at both ends).
    factor: slice spacing in fine voxels (> 1).
    phase: the first slice centre, a continuous fine index in [0, factor).
    thickness_vox: slice thickness in fine voxels (Gaussian FWHM or box width).
    profile: 'gaussian' or 'rect'.
    margin: fine voxels at each end whose output rows are dropped.

  Returns:
    float64 [length - 2 margin, length]: row i gives fine voxel ``margin + i`` of
    the upsampled line as a combination of the fine voxels of the original line.
  """
  if not factor > 1:
    raise ValueError(f"the slice spacing must exceed the fine spacing, got factor {factor}")
  if not 0 <= phase < factor:
    raise ValueError(f"phase must be in [0, {factor}), got {phase}")
  centres = np.arange(phase, length - 1 + 1e-9, factor)
  if centres.size < 2:
    raise ValueError(f"a {length}-voxel line holds fewer than 2 slices {factor} apart")
  acquire = consistency.acquisition_matrix(length, centres, thickness_vox, profile)
  spline = interpolate.make_interp_spline(np.arange(centres.size), np.eye(centres.size),
                                          k=min(3, centres.size - 1), axis=0)
  upsample = spline((np.arange(length) - phase) / factor)  # [length, n_slices]
  return (upsample @ acquire)[margin:length - margin]


@dataclasses.dataclass(frozen=True)
class Simulator:
  """Makes (low-resolution-plane-like, high-resolution) patch pairs from HR slices.

  Attributes:
    patch_size: side of the square patches.
    factor: slice spacing over the isotropic spacing (e.g. 6 for 6 mm onto 1 mm).
    thickness_vox: slice thickness in isotropic voxels.
    profile: 'gaussian' or 'rect'.
    degraded_axis: image axis (0 rows, 1 columns) of the HR slices that plays the
      thick axis: the axis the low-resolution plane shares with them.
    transpose: whether the pair must be transposed so that the degraded axis lies
      where the thick axis lies in the low-resolution plane's slices.
  """

  patch_size: int
  factor: float
  thickness_vox: float
  profile: str
  degraded_axis: int
  transpose: bool

  @property
  def margin(self) -> int:
    """Fine voxels of context beyond the patch: the profile's and the spline's reach."""
    return int(math.ceil(2.5 * self.factor))

  @functools.lru_cache(maxsize=64)
  def _operator(self, phase: float) -> np.ndarray:
    length = self.patch_size + 2 * self.margin
    return line_operator(length, self.factor, phase, self.thickness_vox, self.profile,
                         self.margin).astype(np.float32)

  def draw_phase(self, rng: np.random.Generator) -> float:
    """Where the first slice falls: a whole voxel when the factor is whole, as scans are
    resampled here (slice centres on fine voxels), otherwise anywhere."""
    whole = round(self.factor)
    if abs(self.factor - whole) < 1e-6:
      return float(rng.integers(whole))
    return round(float(rng.uniform(0.0, self.factor)), 3)

  def pair(self, image: np.ndarray, row: int, col: int,
           rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """(simulated low-resolution patch, HR patch) at (row, col) of an HR slice.

    Args:
      image: [H, W] HR slice.
      row, col: the patch's top-left corner.
      rng: draws the slice phase.

    Returns:
      Two float32 [P, P] patches, transposed as `transpose` says.
    """
    p, m = self.patch_size, self.margin
    hr = image[row:row + p, col:col + p]
    padding = [(0, 0), (0, 0)]
    padding[self.degraded_axis] = (m, m)
    padded = np.pad(image, padding, mode="reflect")  # Row/col r is padded's r + m.
    if self.degraded_axis == 0:
      line = padded[row:row + p + 2 * m, col:col + p]
      lr = self._operator(self.draw_phase(rng)) @ line
    else:
      line = padded[row:row + p, col:col + p + 2 * m]
      lr = line @ self._operator(self.draw_phase(rng)).T
    if self.transpose:
      hr, lr = hr.T, lr.T
    return lr.astype(np.float32), hr.astype(np.float32)
