"""Data consistency: make a super-resolved volume reproduce the acquired slices.

Any method (CLADE, SMORE, an interpolation baseline) writes a volume x on the
isotropic grid of `volume.isotropic_geometry`. Re-acquiring x with the scanner's
slice profile is a linear map along the thick axis: each line of x (the voxels that
share in-plane coordinates) becomes ``A x``, with row j of A the profile of slice j
on the fine grid. The acquired slices ``lr`` say what ``A x`` should be, so the
output is corrected, line by line, to the nearest volume (in the Euclidean norm)
that does reproduce them::

  x' = x + A^T (A A^T + lam I)^-1 (lr - A x)

With lam = 0 this is the orthogonal projection onto the affine set {x : A x = lr}:
only the part of x that the slices see changes, the null space of A (the detail
between and within slices that the method invented) is kept. With lam > 0 it is
the MAP estimate under a Gaussian prior centred on x (see `project`), which matches
the slices only within the noise.

Geometry conventions.
  * Slice k of the LR volume sits at the continuous output index
    ``k * spacing_lr / spacing_out`` (`isotropic_geometry`): whole voxels when the
    ratio is an integer, fractional otherwise (5.5 mm onto 1 mm: 0, 5.5, 11, ...);
    the profile is integrated over each fine voxel either way (`slice_profile`).
  * The output grid starts on the first slice and ends at or before the last, so
    the first and last slices' profiles reach beyond it. Those indices are clamped
    onto the edge voxel (edge replication, as `degrade` does at the truth's edges):
    the model assumes the volume continues as its edge plane. This is the only
    assumption available (nothing is known beyond the grid), but it is not what the
    scanner saw, so for a real or simulated acquisition the end slices' rows are an
    approximation; the interior rows are exact.
  * A gap (thickness < spacing) simply gives rows with disjoint supports; overlapping
    slices (thickness > spacing) give overlapping rows, which makes A A^T
    ill-conditioned when the overlap is large (see `project`).

The profile code is `slice_profile`, the same as the degradation simulator's.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np

from clade_jax.data import slice_profile as slice_profile_lib
from clade_jax.data.volume import Volume, isotropic_geometry, voxel_spacing

# Singular values of A below this fraction of the largest are treated as zero: the
# slices do not determine those directions (in practice only heavily overlapping
# slices have them). The correction along a direction is residual / s, so even a
# noise-free float32 LR, rounded to ~6e-8 of its range, would be amplified to
# 6e-8 / rcond of the range; at 1e-4 that stays below 1e-3 (invisible, > 60 dB).
# Data with real noise needs `regularisation`, not a cutoff.
_RCOND = 1e-4

# How far (in fine voxels) a whole-voxel slice centre computed from the affines may
# drift through floating-point noise before it is treated as fractional.
_WHOLE_VOXEL_TOLERANCE = 1e-6

# Affines read back from NIfTI are float32: allow that much disagreement (mm) when
# checking that the output grid is the LR volume's isotropic grid.
_AFFINE_TOLERANCE_MM = 1e-4

# `project_within`: at most this many rounds of (project, clip), stopping once the
# slice residual's rms is below PROJECTION_TOLERANCE of the range; the projection step
# over-relaxed by PROJECTION_RELAXATION (any factor in (0, 2) converges). Measured on a
# sharp-edged phantom with a zero background (48^3, 4 mm slices; the cubic spline, and
# the spline plus heavy noise, as the output): POCS converges slowly for a Gaussian
# profile (residual ~1/sqrt(rounds)); 1.5 beat 1.0 and 1.9 in residual and PSNR at 20,
# 50 and 100 rounds, and every round added PSNR against the truth (0.2-1.7 dB over one
# projection after the clip at 20 rounds). 1e-3 of the range is ~60 dB down.
PROJECTION_ITERATIONS = 100
PROJECTION_TOLERANCE = 1e-3
PROJECTION_RELAXATION = 1.5

# Robust intensity range of the LR used to express the residual as a fraction.
_RANGE_PERCENTILES = (0.5, 99.5)


@dataclasses.dataclass(frozen=True, eq=False)
class Acquisition:
  """How an output grid's lines along the thick axis are re-acquired as LR slices.

  Attributes:
    matrix: float64 [n_slices, n_fine]; row j is slice j's profile on the output grid
      (rows sum to 1).
    thick_axis: voxel axis (0, 1 or 2) along which `matrix` acts.
    centres: float64 [n_slices], slice centres as continuous output indices.
  """

  matrix: np.ndarray
  thick_axis: int
  centres: np.ndarray

  def __post_init__(self):
    if self.thick_axis not in (0, 1, 2):
      raise ValueError(f"thick_axis must be 0, 1 or 2, got {self.thick_axis}")
    if np.ndim(self.matrix) != 2 or np.shape(self.centres) != (np.shape(self.matrix)[0],):
      raise ValueError(
          f"matrix must be [n_slices, n_fine] and centres [n_slices], got "
          f"{np.shape(self.matrix)} and {np.shape(self.centres)}")

  @property
  def n_slices(self) -> int:
    return self.matrix.shape[0]

  @property
  def n_fine(self) -> int:
    return self.matrix.shape[1]


def acquisition_matrix(n_fine: int, centres, thickness_vox: float | None = None,
                       profile: str | np.ndarray = "gaussian") -> np.ndarray:
  """The slice profiles sampled on a fine grid of `n_fine` voxels.

  Args:
    n_fine: voxels of the fine grid along the thick axis.
    centres: slice centres as continuous fine indices; each within one voxel of the
      grid, i.e. in (-1, n_fine). (The isotropic grid ends less than one voxel before
      the last slice when the spacing ratio is fractional.)
    thickness_vox: slice thickness in fine voxels (Gaussian FWHM or box width); None
      for an explicit kernel.
    profile: 'gaussian', 'rect', or a 1D kernel in fine voxels (odd length). At a
      fractional centre a kernel's taps are treated as constant densities over one
      voxel each and integrated like the named profiles (`slice_profile.weights_at`).

  Returns:
    float64 [len(centres), n_fine], rows summing to 1. Profile weight that falls
    beyond the grid is added to the edge voxel (edge replication, as `degrade`).

  Raises:
    ValueError: a bad profile or thickness, or a centre off the grid.
  """
  n_fine = int(n_fine)
  if n_fine < 1:
    raise ValueError(f"n_fine must be >= 1, got {n_fine}")
  centres = np.asarray(centres, dtype=np.float64)
  if centres.ndim != 1 or centres.size == 0:
    raise ValueError(f"centres must be a non-empty 1D array, got shape {centres.shape}")
  if not np.all((centres > -1.0) & (centres < n_fine)):
    raise ValueError(
        f"slice centres must lie within one voxel of the {n_fine}-voxel grid, i.e. in "
        f"(-1, {n_fine}); got [{centres.min():g}, {centres.max():g}]")
  matrix = np.zeros((centres.size, n_fine))
  for j, centre in enumerate(centres):
    first, weights = slice_profile_lib.weights_at(profile, centre, thickness_vox)
    index = np.clip(np.arange(first, first + weights.size), 0, n_fine - 1)
    np.add.at(matrix[j], index, weights)
  return matrix


def for_grid(lr_shape, lr_affine, out_shape, out_affine, thick_axis: int,
             thickness_mm: float | None = None,
             profile: str | np.ndarray = "gaussian") -> Acquisition:
  """The acquisition model of an LR volume, expressed on its isotropic output grid.

  Args:
    lr_shape: 3D shape of the acquired (thick-slice) volume.
    lr_affine: its 4x4 voxel-to-world affine (mm).
    out_shape: 3D shape of the output grid.
    out_affine: its affine; the grid must be `isotropic_geometry(lr_shape, lr_affine,
      thick_axis, s)` with s its own spacing along `thick_axis`.
    thick_axis: the thick voxel axis.
    thickness_mm: slice thickness (Gaussian FWHM or box width); default the LR
      spacing along `thick_axis` (contiguous slices). Smaller leaves a gap between
      slices, larger makes them overlap. Must be None for an explicit kernel.
    profile: 'gaussian', 'rect', or a 1D kernel in voxels of the output grid.

  Returns:
    The Acquisition: slice k centred at output index ``k * spacing_lr / spacing_out``
    (snapped to the whole voxel when within float noise of one).

  Raises:
    ValueError: the output grid is not the LR volume's isotropic grid (wrong number
      of voxels, different in-plane geometry, origin or orientation), or a bad
      profile or thickness.
  """
  if thick_axis not in (0, 1, 2):
    raise ValueError(f"thick_axis must be 0, 1 or 2, got {thick_axis}")
  lr_affine = np.asarray(lr_affine, dtype=np.float64)
  out_affine = np.asarray(out_affine, dtype=np.float64)
  lr_spacing = float(voxel_spacing(lr_affine)[thick_axis])
  out_spacing = float(voxel_spacing(out_affine)[thick_axis])
  expected_shape, expected_affine, _ = isotropic_geometry(
      tuple(lr_shape), lr_affine, thick_axis, out_spacing)
  if tuple(out_shape) != tuple(expected_shape):
    raise ValueError(
        f"output shape {tuple(out_shape)} is not the isotropic grid of the LR volume "
        f"{tuple(lr_shape)} at {out_spacing:g} mm along axis {thick_axis}: expected "
        f"{tuple(expected_shape)}")
  difference = np.abs(out_affine - expected_affine)
  if difference.max() > _AFFINE_TOLERANCE_MM:
    what = ("origin" if difference[:3, :3].max() <= _AFFINE_TOLERANCE_MM
            else "voxel axes (in-plane spacing or orientation)")
    raise ValueError(
        f"output affine is not the isotropic grid of the LR volume: its {what} differ "
        f"by up to {difference.max():.3g} mm\noutput:\n{out_affine}\nexpected:\n"
        f"{expected_affine}")

  centres = np.arange(lr_shape[thick_axis]) * (lr_spacing / out_spacing)
  whole = np.rint(centres)
  centres = np.where(np.abs(centres - whole) < _WHOLE_VOXEL_TOLERANCE, whole, centres)
  if isinstance(profile, str):
    thickness_vox = (lr_spacing if thickness_mm is None else float(thickness_mm)) / out_spacing
  else:
    if thickness_mm is not None:
      raise ValueError("the explicit kernel sets the thickness; pass thickness_mm=None")
    thickness_vox = None
  matrix = acquisition_matrix(out_shape[thick_axis], centres, thickness_vox, profile)
  return Acquisition(matrix=matrix, thick_axis=thick_axis, centres=centres)


def _lines(data: np.ndarray, axis: int) -> tuple[np.ndarray, tuple[int, ...]]:
  """[n, everything else] float64 copy of `data` with `axis` first, and that shape.

  Always a copy: `project` updates it in place, and for a float64 input a view would
  write through to the caller's array.
  """
  moved = np.moveaxis(np.array(data, dtype=np.float64), axis, 0)
  return moved.reshape(moved.shape[0], -1), moved.shape


def _check_pair(volume, lr, acquisition: Acquisition) -> None:
  volume_shape, lr_shape = np.shape(volume), np.shape(lr)
  axis = acquisition.thick_axis
  if len(volume_shape) != 3 or len(lr_shape) != 3:
    raise ValueError(f"volume and lr must be 3D, got {volume_shape} and {lr_shape}")
  expected_volume = tuple(acquisition.n_fine if a == axis else s for a, s in enumerate(lr_shape))
  if (volume_shape[axis] != acquisition.n_fine or lr_shape[axis] != acquisition.n_slices
      or tuple(volume_shape) != expected_volume):
    raise ValueError(
        f"shapes do not match the acquisition ({acquisition.n_slices} slices of "
        f"{acquisition.n_fine} voxels along axis {axis}): volume {volume_shape}, "
        f"lr {lr_shape}")
  for name, array in (("volume", volume), ("lr", lr)):
    if not np.all(np.isfinite(array)):
      raise ValueError(f"{name} has NaN or Inf values")


def _correction_operator(matrix: np.ndarray, regularisation: float) -> np.ndarray:
  """A^T (A A^T + lam I)^-1 as an [n_fine, n_slices] matrix.

  Computed from the SVD of A, A = U S V^T, as V diag(s / (s^2 + lam)) U^T, rather
  than from a Cholesky factorisation of A A^T: the SVD works with the condition
  number of A instead of its square, and one formula covers lam = 0, lam > 0 and a
  rank-deficient A (near-duplicate rows from heavily overlapping slices), where the
  directions with s < _RCOND * s_max are left uncorrected (the pseudo-inverse)
  instead of failing or amplifying noise. A is at most a few hundred by a few
  hundred, so the cost does not matter.
  """
  u, s, vt = np.linalg.svd(matrix, full_matrices=False)
  keep = s > _RCOND * s[0]
  gain = np.where(keep, s / np.where(keep, s * s + regularisation, 1.0), 0.0)
  return vt.T @ (gain[:, None] * u.T)


def _projection_problem(volume, lr, acquisition: Acquisition, regularisation: float):
  """Checked inputs of a projection: (volume lines, slice lines, moved shape, correction)."""
  if not (math.isfinite(regularisation) and regularisation >= 0):
    raise ValueError(f"regularisation must be finite and >= 0, got {regularisation}")
  _check_pair(volume, lr, acquisition)
  x, moved_shape = _lines(volume, acquisition.thick_axis)
  slices, _ = _lines(lr, acquisition.thick_axis)
  return x, slices, moved_shape, _correction_operator(acquisition.matrix, regularisation)


def project(volume: np.ndarray, lr: np.ndarray, acquisition: Acquisition, *,
            regularisation: float = 0.0) -> np.ndarray:
  """Corrects `volume` so that re-acquiring it reproduces the slices `lr`.

  Every line along the thick axis becomes ``x + A^T (A A^T + lam I)^-1 (lr - A x)``.

  With ``regularisation`` lam = 0 this is the orthogonal projection onto
  {x : A x = lr}: the smallest change (Euclidean norm, per line) after which the
  slices are reproduced to float precision, leaving the part of x that the slices
  cannot see untouched. (For heavily overlapping slices, where some combinations of
  slices are numerically undetermined, those combinations are left uncorrected
  rather than divided by a near-zero singular value; `residual` shows what is left.)

  With lam > 0 it is the MAP estimate when the slices are noisy, ``lr = A x_true +
  n`` with n ~ N(0, sigma^2 I), and the method's output is a prior on the truth,
  ``x_true ~ N(x, tau^2 I)`` per voxel: it minimises ``|x' - x|^2 / tau^2 +
  |A x' - lr|^2 / sigma^2``, so lam = sigma^2 / tau^2, dimensionless. In words: the
  noise variance of the acquired slices over the expected squared error per voxel of
  the method's output (e.g. 2 % noise and a 10 % RMS error: lam = 0.04). A residual
  component along a singular direction of A with singular value s is shrunk by
  lam / (s^2 + lam) instead of removed; for contiguous slices s^2 is of the order of
  1 / (slice thickness in voxels), so lam well below that trusts the slices, lam well
  above it trusts the output.

  Magnitude-MRI noise is Rician, biased upwards in dark regions; projecting onto
  noisy slices imports that bias along with the information.

  Args:
    volume: [.., n_fine, ..] the output on the grid of `acquisition` (any float).
    lr: [.., n_slices, ..] the acquired slices, same in-plane shape.
    acquisition: from `for_grid` (or built from `acquisition_matrix`).
    regularisation: lam >= 0, see above.

  Returns:
    float32 array of the volume's shape (computed in float64).

  Raises:
    ValueError: shapes that do not match the acquisition, non-finite values, or a
      negative regularisation.
  """
  x, slices, moved_shape, correction = _projection_problem(volume, lr, acquisition,
                                                          regularisation)
  x += correction @ (slices - acquisition.matrix @ x)
  return np.moveaxis(x.reshape(moved_shape), 0, acquisition.thick_axis).astype(np.float32)


def project_within(volume: np.ndarray, lr: np.ndarray, acquisition: Acquisition,
                   limits: tuple[float, float] | None, *, regularisation: float = 0.0,
                   iterations: int = PROJECTION_ITERATIONS,
                   tolerance: float = PROJECTION_TOLERANCE) -> np.ndarray:
  """`project`, kept within ``limits``: alternating projections, ending in range.

  The projection alone can leave what the scan holds: its correction spreads each
  slice's residual over the slice's whole profile, so next to a sharp edge on a zero
  background it undershoots below zero (11 % negative voxels on an MNI152 case).
  Alternating between the consistent set {x : A x = lr} (`project`, over-relaxed by
  `PROJECTION_RELAXATION`) and the box ``[lo, hi]`` (a clip) converges to a volume in
  both when one exists (POCS: both sets are convex, and a volume built from the
  acquired slices lies in both). The last step is always the clip, so the result is
  within range; the slice residual left is what the last clip took away.

  Args:
    volume: the output on the grid of `acquisition`.
    lr: the acquired slices.
    acquisition: from `for_grid`.
    limits: (lo, hi) the output must stay within (the acquired range); None: plain
      `project`.
    regularisation: as for `project` (with lam > 0 the first set is the MAP step).
    iterations: at most this many rounds of (project, clip).
    tolerance: stop once the slice residual's rms is below this fraction of
      ``hi - lo`` (or a clip changes nothing).

  Returns:
    float32 array of the volume's shape, within ``limits``.

  Raises:
    ValueError: as `project`, or limits that are not increasing.
  """
  if limits is None:
    return project(volume, lr, acquisition, regularisation=regularisation)
  lo, hi = float(limits[0]), float(limits[1])
  if not (math.isfinite(lo) and math.isfinite(hi) and lo <= hi):
    raise ValueError(f"limits must be finite (lo, hi) with lo <= hi, got {limits}")
  x, slices, moved_shape, correction = _projection_problem(volume, lr, acquisition,
                                                          regularisation)
  axis = acquisition.thick_axis
  # The first round is the plain projection; later ones are over-relaxed.
  relaxation = 1.0
  for _ in range(max(1, int(iterations))):
    difference = slices - acquisition.matrix @ x
    if relaxation > 1.0 and np.sqrt(np.mean(np.square(difference))) <= tolerance * (hi - lo):
      break
    x += relaxation * (correction @ difference)
    clipped = np.clip(x, lo, hi)
    if np.array_equal(clipped, x):
      break
    x, relaxation = clipped, PROJECTION_RELAXATION
  x = np.clip(x, lo, hi)
  return np.moveaxis(x.reshape(moved_shape), 0, axis).astype(np.float32)


def residual(volume: np.ndarray, lr: np.ndarray, acquisition: Acquisition) -> dict[str, float]:
  """How far re-acquiring `volume` is from the acquired slices.

  Args:
    volume: the output on the grid of `acquisition`.
    lr: the acquired slices.
    acquisition: as for `project`.

  Returns:
    {'rms', 'max_abs'}: of ``lr - A x`` over every slice voxel, in the volume's
    intensity units; {'rms_relative', 'max_abs_relative'}: the same divided by the
    LR's robust range (0.5th to 99.5th percentile), NaN for a constant LR.

  Raises:
    ValueError: as `project`.
  """
  _check_pair(volume, lr, acquisition)
  x, _ = _lines(volume, acquisition.thick_axis)
  slices, _ = _lines(lr, acquisition.thick_axis)
  difference = slices - acquisition.matrix @ x
  rms = float(np.sqrt(np.mean(np.square(difference))))
  max_abs = float(np.max(np.abs(difference)))
  lo, hi = np.percentile(slices, _RANGE_PERCENTILES)
  scale = float(hi - lo) if hi > lo else float("nan")
  return {"rms": rms, "max_abs": max_abs, "rms_relative": rms / scale,
          "max_abs_relative": max_abs / scale}


def project_volume(output: Volume, lr: Volume, thick_axis: int, *,
                   thickness_mm: float | None = None, profile: str | np.ndarray = "gaussian",
                   regularisation: float = 0.0) -> Volume:
  """`for_grid` then `project`, for an output Volume and the LR Volume it came from.

  Args:
    output: a method's output on the isotropic grid of `lr`.
    lr: the acquired volume.
    thick_axis: the thick voxel axis.
    thickness_mm: slice thickness; default the LR spacing (see `for_grid`).
    profile: the slice profile (see `for_grid`).
    regularisation: see `project`.

  Returns:
    `output` with its data projected (float32, same affine and header).

  Raises:
    ValueError: as `for_grid` and `project`.
  """
  acquisition = for_grid(lr.data.shape, lr.affine, output.data.shape, output.affine, thick_axis,
                         thickness_mm, profile)
  data = project(output.data, lr.data, acquisition, regularisation=regularisation)
  return dataclasses.replace(output, data=data)
