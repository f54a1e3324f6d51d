"""The slice profile from the scan alone, when no header says how thick the slices were.

NIfTI stores the slice spacing, not the thickness or the profile, and the whole gain
of SMORE or CLADE+ over interpolation can hinge on them (issue 27: +0.26 dB with the
default Gaussian, +3.26 dB told the true 3 mm rectangle every 4 mm). The in-plane axes
of the same scan show what the through-plane axis would look like at full
resolution, so (in the spirit of ESPRESO, but without training anything):

1. Lines along each in-plane axis (over the foreground's bounding box) are
   re-acquired with a candidate profile, a family (Gaussian or rectangle) and a
   thickness, at the slice spacing: the acquisition matrix of `consistency`, so any
   spacing ratio, whole or not, and gaps (thickness < spacing) are covered.
2. Their mean power spectrum (Welch: Hann windowed segments, as many samples as the
   through-plane lines, so both are equally resolved and equally leaky) is compared
   with the through-plane lines', in log power over every frequency up to the slices'
   Nyquist: the mean squared difference after removing the mean (a free gain: the
   in-plane lines of a thick-slice scan are themselves averaged through the slice,
   which lowers their power more than it changes its shape).
3. Noise: white, with the level of the in-plane spectrum's top fifth of frequencies
   (the anatomy has faded there). The re-acquisition averages the in-plane noise
   down by sum(w^2); the acquired slices carry theirs undiminished, so the
   difference is added to the prediction.
4. The best thickness of each family on a log grid (then refined), and the family
   with the smaller error.

What it can and cannot tell (experiments/profile_estimation/README.md, measured on
the MNI152 protocol): the thickness within the true family is usually within 10 %
without noise; the family itself is weakly determined (below the slices' Nyquist
frequency a rectangle of width t and a Gaussian of FWHM ~0.7 t look alike), so the
runner-up is reported with the winner.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np

from clade_jax.data import slice_profile as slice_profile_lib
from clade_jax.data.consistency import acquisition_matrix as consistency_matrix

FAMILIES = slice_profile_lib.PROFILES  # ('gaussian', 'rect')

# Candidate thicknesses, as fractions of the slice spacing: from thin slices with wide
# gaps to heavy overlap, log-spaced (~7 % apart), then refined around the best.
THICKNESS_RANGE = (0.25, 2.0)
THICKNESS_CANDIDATES = 32
_REFINE = 11
# Lines per direction used (a random subset, seeded): enough for a smooth mean
# spectrum, few enough for seconds.
_MAX_LINES = 2000

# The foreground: voxels above this fraction of the robust max (99.5th percentile).
_FOREGROUND = 0.1
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
    noise_floor: the white-noise variance per voxel assumed (intensity^2), from the
      in-plane spectrum's floor.
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


def _foreground_box(volume: np.ndarray) -> tuple[slice, ...]:
  robust = float(np.percentile(volume, 99.5))
  mask = volume > _FOREGROUND * robust if robust > 0 else np.ones(volume.shape, bool)
  if not mask.any():
    return tuple(slice(None) for _ in volume.shape)
  box = []
  for axis in range(volume.ndim):
    hit = np.flatnonzero(mask.any(axis=tuple(a for a in range(volume.ndim) if a != axis)))
    box.append(slice(int(hit[0]), int(hit[-1]) + 1))
  return tuple(box)


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


def _lines(volume: np.ndarray, axis: int, limit: int, seed: int = 0) -> np.ndarray:
  lines = np.moveaxis(volume, axis, -1).reshape(-1, volume.shape[axis])
  lines = lines[np.ptp(lines, axis=1) > 0]  # constant lines (air) carry nothing
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
  volume = volume[_foreground_box(volume)]
  inplane = [a for a in range(3) if a != thick_axis]
  if volume.shape[thick_axis] < 8 or min(volume.shape[a] for a in inplane) < 16:
    raise ValueError(
        f"too few voxels to estimate the slice profile: {volume.shape} in the foreground "
        f"(thick axis {thick_axis}); at least 8 slices and 16 in-plane voxels are needed")
  slice_spacing = spacing[thick_axis]
  thick_lines = _lines(volume, thick_axis, _MAX_LINES)
  # In-plane lines re-acquired as slices every slice_spacing: the acquisition matrix
  # of each candidate (any spacing ratio) applied to them.
  references = []
  for axis in inplane:
    ratio = slice_spacing / spacing[axis]
    n = volume.shape[axis]
    centres = np.arange(0.0, n - 1, ratio)
    references.append((_lines(volume, axis, _MAX_LINES), centres, spacing[axis]))
  segment = min([thick_lines.shape[1]] + [c.size for _, c, _ in references])
  if segment < 8:
    raise ValueError(f"{segment} slices along a line are too few to estimate the slice "
                     "profile")
  measured = _welch(thick_lines, segment)[1:]
  measured = np.maximum(measured, _TINY * measured.max())
  log_measured = np.log10(measured)
  # White noise: the in-plane spectrum's floor near its Nyquist frequency, where the
  # anatomy has fallen far below it (per sample, so the same in every direction).
  variance = float(np.mean([
      np.median(spectrum[-max(2, int(_FLOOR_BAND * spectrum.size)):])
      for spectrum in (_welch(lines, lines.shape[1]) for lines, _, _ in references)]))

  def score(family, thickness):
    error = 0.0
    for lines, centres, fine in references:
      matrix = consistency_matrix(lines.shape[1], centres, thickness / fine, family)
      simulated = _welch(lines @ matrix.T, segment)[1:]
      # The simulation averaged the in-plane noise down by sum(w^2); the slices
      # carry their own, undiminished.
      kept = float(np.mean(np.sum(matrix ** 2, axis=1)))
      model = np.log10(simulated + variance * (1.0 - kept) + _TINY * measured.max())
      # A free gain: the in-plane lines of a thick-slice scan are themselves averaged
      # through the slice, which lowers their power but not its spectral shape much.
      difference = model - log_measured
      error += float(np.mean((difference - difference.mean()) ** 2))
    return error / len(references)

  best = {}
  for family in families:
    grid = slice_spacing * np.geomspace(*THICKNESS_RANGE, THICKNESS_CANDIDATES)
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
