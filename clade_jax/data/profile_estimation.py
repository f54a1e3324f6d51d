"""The slice profile from the scan alone, when no header says how thick the slices were.

NIfTI stores the slice spacing, not the thickness or the profile, and the whole gain
of SMORE or CLADE+ over interpolation can hinge on them (issue 27: +0.26 dB with the
default Gaussian, +3.26 dB told the true 3 mm rectangle every 4 mm). The in-plane axes
of the same scan show what the through-plane axis would look like at full
resolution, so (in the spirit of ESPRESO, but without training anything):

1. Lines along each in-plane axis (those that reach the foreground, within its
   bounding box, which ignores the few noise voxels in the air above the foreground
   threshold) are re-acquired with a candidate profile, a family (Gaussian or
   rectangle) and a thickness, at the slice spacing: the acquisition matrix of
   `consistency`, so any spacing ratio, whole or not, and gaps are covered.
2. Their mean power spectrum (Welch: Hann windowed segments, as many samples as the
   through-plane lines, so both are equally resolved and equally leaky) is compared
   with the through-plane lines', in log power up to the slices' Nyquist frequency:
   the mean squared difference after removing the mean (a free gain: the in-plane
   lines of a thick-slice scan are themselves averaged through the slice). The
   lowest 15 % of that band is left out: there |H|^2 ~ 1 carries no profile, and
   the head's shape (which differs between directions) dominates.
3. Noise, modelled exactly: its sigma from the air around the head, where a
   magnitude image is Rayleigh distributed (no air, or air set to exactly zero: the
   in-plane spectrum's floor instead). The acquired slices carry white noise of that
   variance (Rayleigh's smaller (2 - pi/2) sigma^2 in the air voxels of the lines);
   the re-acquired in-plane lines carry it filtered by the candidate's matrix
   (`_welch_of_white`), which the model swaps for the slices' own.
4. The best thickness of each family on a log grid (then refined), and the family
   with the smaller error, with one physical prior: a rectangle is never wider than
   the spacing (2D multi-slice acquisitions have a gap or none; overlapping slices
   come from reconstructions, whose profiles are smooth: Gaussian).

Why the prior: below the slices' Nyquist frequency a rectangle of width t and a
Gaussian of FWHM ~0.7 t have nearly the same response, so the spectra alone hardly
tell the families apart (without the prior the rectangle fits a Gaussian's data
better in 10 of 12 cases of the MNI152 protocol, at ~1.3x its FWHM: an overlapping
rectangle). What remains ambiguous is a Gaussian with a gap, which a contiguous
rectangle mimics; the runner-up is reported with the winner.

What is not solved (experiments/profile_estimation/README.md has the measurements):
the in-plane lines of a thick-slice scan are themselves blurred through the slice,
which steepens their spectrum (a shape change the free gain cannot undo) and biases
the thickness low. On the MNI152 template that bias is largely cancelled along L-R by
the template's exact left-right symmetry (its L-R lines alias coherently at the
sampling phase used); on the template cut to break the symmetry, the estimates are
10-45 % thin (as were the previous estimator's).
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np

from clade_jax.data import slice_profile as slice_profile_lib
from clade_jax.data.consistency import acquisition_matrix as consistency_matrix

FAMILIES = slice_profile_lib.PROFILES  # ('gaussian', 'rect')

# Candidate thicknesses, as fractions of the slice spacing: from thin slices with wide
# gaps to heavy overlap, log-spaced (~7 % apart), then refined around the best. A
# rectangle stops at the spacing (the module docstring's prior), exactly: contiguous
# rectangular slices are the commonest acquisition.
THICKNESS_RANGE = (0.25, 2.0)
THICKNESS_CANDIDATES = 32
RECT_MAX = 1.0
_REFINE = 11
# Lines per direction used (a random subset, seeded): enough for a stable mean
# spectrum (with 2,000 the hard case's estimate moved between 2.62 and 2.99 mm over
# six noise draws, with 8,000 it stayed at 3.03 mm), few enough for seconds.
_MAX_LINES = 8000

# The foreground: voxels above this fraction of the robust max (99.5th percentile).
FOREGROUND = 0.1
# Its bounding box ignores slabs holding fewer foreground voxels than this fraction
# of the fullest one: a few noise voxels in the air must not stretch it to the edges.
_BOX_FRACTION = 1e-3
# The band's lowest fraction, left out of the comparison (the module docstring).
_LOW_BAND = 0.15
# Air noise: the histogram of the voxels below the foreground threshold, its mode
# (a Rayleigh's mode is sigma) refined by the mean square below twice sigma, which
# for a Rayleigh is 2 sigma^2 (1 - 3 e^-2) / (1 - e^-2).
_AIR_BINS = 200
_AIR_MIN_VOXELS = 1000
_RAYLEIGH_MEAN_SQUARE_BELOW_2_SIGMA = 2 * (1 - 3 * math.exp(-2)) / (1 - math.exp(-2))
_RAYLEIGH_VARIANCE = 2 - math.pi / 2  # per sigma^2: the air's magnitude noise
# The noise floor: the median of the in-plane spectrum over this top fraction of
# frequencies. Deliberately no `transfer`-style analytic model: re-acquiring real
# lines with `consistency`'s matrix measured better (experiments/profile_estimation).
_FLOOR_BAND = 0.2
_TINY = 1e-12


@dataclasses.dataclass(frozen=True)
class ProfileEstimate:
  """What `estimate_profile` found.

  Attributes:
    profile: 'gaussian' (thickness = FWHM) or 'rect' (thickness = width).
    thickness_mm: the slice thickness.
    kernel: the profile's weights on a grid of the in-plane spacing (odd length,
      summing to 1; `slice_profile.centred_weights`), usable as ``data.slice_kernel``
      when the output grid has the in-plane spacing.
    spacing_mm: the slice spacing it was estimated at.
    noise_floor: the white-noise variance per voxel assumed (intensity^2): sigma^2
      of the air background's Rayleigh noise, or without usable air the in-plane
      spectrum's floor.
    error: the winner's mean squared log10-power difference.
    runner_up: {'profile', 'thickness_mm', 'error'} of the best candidate of the other
      family: how decisive the family choice was.
  """

  profile: str
  thickness_mm: float
  kernel: np.ndarray | None
  spacing_mm: float
  noise_floor: float
  error: float
  runner_up: dict

  def as_dict(self) -> dict:
    """JSON-friendly, for logs and sidecars."""
    return {"profile": self.profile, "thickness_mm": round(self.thickness_mm, 4),
            "spacing_mm": round(self.spacing_mm, 4),
            "kernel": None if self.kernel is None else [round(float(w), 6) for w in self.kernel],
            "noise_floor": self.noise_floor, "error": self.error,
            "runner_up": self.runner_up, "method": "spectral match to the in-plane axes"}


def _foreground_box(mask: np.ndarray) -> tuple[slice, ...]:
  if not mask.any():
    return tuple(slice(None) for _ in mask.shape)
  box = []
  for axis in range(mask.ndim):
    counts = mask.sum(axis=tuple(a for a in range(mask.ndim) if a != axis))
    hit = np.flatnonzero(counts > _BOX_FRACTION * counts.max())
    box.append(slice(int(hit[0]), int(hit[-1]) + 1))
  return tuple(box)


def air_noise_sigma(volume: np.ndarray, threshold: float) -> float | None:
  """The noise sigma of a magnitude image from its air (Rician there is Rayleigh).

  Args:
    volume: the magnitude image.
    threshold: the foreground threshold; the air lies below it.

  Returns:
    sigma, or None when there is no air to measure: fewer than a thousand voxels
    below the threshold, or their mode in the lowest bin (air set to zero: a masked
    or noise-free image).
  """
  air = volume[volume < threshold]
  if air.size < _AIR_MIN_VOXELS:
    return None
  counts, edges = np.histogram(air, bins=_AIR_BINS, range=(0.0, threshold))
  mode = int(np.argmax(counts))
  if mode == 0:
    return None
  sigma = 0.5 * float(edges[mode] + edges[mode + 1])
  for _ in range(20):  # a fixed point: the bins are coarse, the voxels many
    below = air[air < 2.0 * sigma]
    sigma = math.sqrt(float(np.mean(below ** 2)) / _RAYLEIGH_MEAN_SQUARE_BELOW_2_SIGMA)
  return sigma


def _welch(lines: np.ndarray, segment: int) -> np.ndarray:
  """Mean periodogram of [n_lines, n] lines in half-overlapping Hann segments."""
  n = lines.shape[-1]
  window = np.hanning(segment + 2)[1:-1]  # no zero end taps: every sample counts
  power = np.zeros(segment // 2 + 1)
  starts = range(0, n - segment + 1, max(1, segment // 2))
  for start in starts:
    piece = lines[:, start:start + segment]
    piece = piece - piece.mean(axis=1, keepdims=True)
    power += np.mean(np.abs(np.fft.rfft(piece * window, axis=1)) ** 2, axis=0)
  return power / (len(starts) * np.sum(window ** 2))


def _welch_of_white(matrix: np.ndarray, segment: int) -> np.ndarray:
  """`_welch` of ``matrix @ noise`` for unit white noise, exactly (its expectation)."""
  window = np.hanning(segment + 2)[1:-1]
  frequencies = np.arange(segment // 2 + 1)
  analysis = np.exp(-2j * np.pi * np.outer(frequencies, np.arange(segment)) / segment) * window
  analysis = analysis - analysis.mean(axis=1, keepdims=True)  # `_welch` removes each mean
  starts = range(0, matrix.shape[0] - segment + 1, max(1, segment // 2))
  power = sum(np.sum(np.abs(analysis @ matrix[start:start + segment]) ** 2, axis=1)
              for start in starts)
  return power / (len(starts) * np.sum(window ** 2))


def _lines(volume: np.ndarray, axis: int, limit: int, threshold: float,
           seed: int = 0) -> np.ndarray:
  lines = np.moveaxis(volume, axis, -1).reshape(-1, volume.shape[axis])
  lines = lines[lines.max(axis=1) > threshold]  # lines all in the air carry only noise
  if lines.shape[0] > limit:
    lines = lines[np.random.default_rng(seed).choice(lines.shape[0], limit, replace=False)]
  return lines


def estimate_profile(volume: np.ndarray, spacing_mm, thick_axis: int, *,
                     families: tuple[str, ...] = FAMILIES) -> ProfileEstimate:
  """Estimates the slice profile and thickness of a thick-slice scan from the scan.

  Args:
    volume: the acquired 3D volume (its own grid: thick slices along `thick_axis`).
    spacing_mm: its voxel spacing (3 values, mm).
    thick_axis: the through-plane voxel axis.
    families: the profile families to consider.

  Returns:
    The `ProfileEstimate`.

  Raises:
    ValueError: not 3D, a bad axis or spacing, too few slices or in-plane voxels to
      measure a spectrum, or constant intensities.
  """
  volume = np.asarray(volume, np.float64)
  spacing = [float(s) for s in spacing_mm]
  if volume.ndim != 3 or len(spacing) != 3:
    raise ValueError(f"need a 3D volume and 3 spacings, got shape {volume.shape} and "
                     f"{spacing_mm}")
  if thick_axis not in (0, 1, 2):
    raise ValueError(f"thick_axis must be 0, 1 or 2, got {thick_axis}")
  if not all(math.isfinite(s) and s > 0 for s in spacing):
    raise ValueError(f"voxel spacings must be positive, got {spacing_mm}")
  if not np.all(np.isfinite(volume)) or np.ptp(volume) == 0:
    raise ValueError("the volume is constant or has NaN/Inf values: no spectrum to match")
  unknown = [f for f in families if f not in FAMILIES]
  if unknown or not families:
    raise ValueError(f"families must be among {FAMILIES}, got {families}")
  threshold = FOREGROUND * float(np.percentile(volume, 99.5))
  sigma = air_noise_sigma(volume, threshold)
  volume = volume[_foreground_box(volume > threshold)]
  inplane = [a for a in range(3) if a != thick_axis]
  if volume.shape[thick_axis] < 8 or min(volume.shape[a] for a in inplane) < 16:
    raise ValueError(
        f"too few voxels to estimate the slice profile: {volume.shape} in the foreground "
        f"(thick axis {thick_axis}); at least 8 slices and 16 in-plane voxels are needed")
  slice_spacing = spacing[thick_axis]
  thick_lines = _lines(volume, thick_axis, _MAX_LINES, threshold)
  # In-plane lines re-acquired as slices every slice_spacing: the acquisition matrix
  # of each candidate (any spacing ratio) applied to them.
  references = []
  for axis in inplane:
    ratio = slice_spacing / spacing[axis]
    n = volume.shape[axis]
    centres = np.arange(0.0, n - 1, ratio)
    references.append((_lines(volume, axis, _MAX_LINES, threshold), centres, spacing[axis]))
  segment = min([thick_lines.shape[1]] + [c.size for _, c, _ in references])
  if segment < 8:
    raise ValueError(f"{segment} slices along a line are too few to estimate the slice "
                     "profile")
  measured = _welch(thick_lines, segment)[1:]
  measured = np.maximum(measured, _TINY * measured.max())
  log_measured = np.log10(measured)
  if sigma is not None:
    variance = sigma ** 2
    # The slices' noise: sigma^2 in the tissue, Rayleigh's smaller variance in the air.
    air = float(np.mean(thick_lines < threshold))
    slice_noise = variance * ((1.0 - air) + _RAYLEIGH_VARIANCE * air)
  else:
    # No air to measure: the in-plane spectrum's floor near its Nyquist frequency,
    # where the anatomy has faded (per sample, so the same in every direction).
    variance = slice_noise = float(np.mean([
        np.median(spectrum[-max(2, int(_FLOOR_BAND * spectrum.size)):])
        for spectrum in (_welch(lines, lines.shape[1]) for lines, _, _ in references)]))
  band = slice(int(_LOW_BAND * measured.size), None)

  def score(family, thickness):
    error = 0.0
    for lines, centres, fine in references:
      matrix = consistency_matrix(lines.shape[1], centres, thickness / fine, family)
      simulated = _welch(lines @ matrix.T, segment)[1:]
      # The simulation carries the in-plane noise filtered by the matrix; the slices
      # carry their own, white: one swapped for the other.
      filtered = slice_noise * _welch_of_white(matrix, segment)[1:]
      model = np.log10(np.maximum(simulated - filtered + slice_noise, 0.0)
                       + _TINY * measured.max())
      # A free gain: the in-plane lines of a thick-slice scan are themselves averaged
      # through the slice, which lowers their power but not its spectral shape much.
      difference = (model - log_measured)[band]
      error += float(np.mean((difference - difference.mean()) ** 2))
    return error / len(references)

  best = {}
  for family in families:
    grid = _candidates(family, slice_spacing)
    errors = [score(family, t) for t in grid]
    i = int(np.argmin(errors))
    # Refine between the neighbours of the coarse best.
    fine_grid = np.geomspace(grid[max(i - 1, 0)], grid[min(i + 1, grid.size - 1)],
                             _REFINE)
    fine_errors = [score(family, t) for t in fine_grid]
    j = int(np.argmin(fine_errors))
    best[family] = (float(fine_grid[j]), float(fine_errors[j]))
  winner = min(best, key=lambda name: best[name][1])
  others = [name for name in best if name != winner]
  runner_up = ({"profile": others[0], "thickness_mm": round(best[others[0]][0], 4),
                "error": best[others[0]][1]} if others else {})
  thickness, error = best[winner]
  fine = min(spacing[a] for a in inplane)
  kernel = slice_profile_lib.centred_weights(winner, thickness / fine)
  return ProfileEstimate(profile=winner, thickness_mm=thickness, kernel=kernel,
                         spacing_mm=slice_spacing, noise_floor=variance, error=error,
                         runner_up=runner_up)


def _candidates(family: str, slice_spacing: float) -> np.ndarray:
  """The coarse thickness grid of a family (~7 % apart; a rectangle up to RECT_MAX)."""
  low, high = THICKNESS_RANGE
  if family == "rect":
    high = min(high, RECT_MAX)
  step = (THICKNESS_RANGE[1] / THICKNESS_RANGE[0]) ** (1.0 / (THICKNESS_CANDIDATES - 1))
  count = int(round(math.log(high / low) / math.log(step))) + 1
  return slice_spacing * np.geomspace(low, high, count)


ESTIMATE = "estimate"  # The data.slice_profile value that asks for `estimate_profile`.


def estimate_volume(volume, data_config=None) -> ProfileEstimate:
  """`estimate_profile` for a `volume.Volume`, its thick axis from ``data.thick_axis``
  (-1 or no config: the clearly thickest voxel axis).

  Raises:
    VolumeError: no thick axis, or a volume the estimate cannot use (named).
  """
  from clade_jax.data import volume as volume_lib  # pylint: disable=g-import-not-at-top
  spacing = volume_lib.voxel_spacing(volume.affine)
  thick_axis = -1 if data_config is None else int(data_config.get("thick_axis", -1))
  if thick_axis < 0:
    thick_axis = volume_lib.find_thick_axis(spacing, name=volume.name)
  try:
    return estimate_profile(volume.data, spacing, thick_axis)
  except ValueError as e:
    raise volume_lib.VolumeError(f"{volume.name}: data.slice_profile='estimate': {e}") from None


def resolve_config(config, volumes=None) -> dict | None:
  """Replaces ``data.slice_profile='estimate'`` by the profile estimated from the data.

  Resolved once, before training, and saved with the run's config, so that the
  training pairs, the paired loss, the data consistency and inference all use the same
  profile. With several volumes the family most of them chose wins and its median
  thickness is used.

  Args:
    config: the run's config (changed in place when it asks for an estimate).
    volumes: `volume.Volume`s to estimate from; default those under ``data.root``.

  Returns:
    None when nothing was estimated; else {'profile', 'thickness_mm', 'per_volume':
    [`ProfileEstimate.as_dict` with 'path']}: for the log and the provenance sidecar.

  Raises:
    VolumeError: as `estimate_volume`, or no volumes.
  """
  data = config.data
  if data.get("slice_profile", "gaussian") != ESTIMATE:
    return None
  if tuple(data.get("slice_kernel", ()) or ()):
    return None  # A measured kernel wins over any profile (`slice_profile.from_config`).
  from clade_jax.data import patches  # pylint: disable=g-import-not-at-top
  from clade_jax.data import volume as volume_lib  # pylint: disable=g-import-not-at-top
  if volumes is None:
    volumes = [volume_lib.load_volume(path, **patches.load_options(data))
               for path in patches.list_volumes(data.root)]
  estimates = [estimate_volume(v, data) for v in volumes]
  families = [e.profile for e in estimates]
  family = max(sorted(set(families)), key=families.count)
  thickness = float(np.median([e.thickness_mm for e in estimates if e.profile == family]))
  told = float(data.get("slice_thickness", 0.0) or 0.0)
  if told:
    thickness = told  # A thickness the user gave (a header's) is kept; only the shape is estimated.
  data.slice_profile = family
  data.slice_thickness = round(thickness, 4)
  return {"profile": family, "thickness_mm": data.slice_thickness,
          "thickness_from": "config" if told else "estimate",
          "per_volume": [dict(e.as_dict(), path=v.path) for e, v in zip(estimates, volumes)]}
