"""The slice profile from the scan alone, when no header says how thick the slices were.

NIfTI stores the slice spacing, not the thickness or the profile, and the whole gain
of SMORE or CLADE+ over interpolation can hinge on them (issue 27: +0.26 dB with the
default Gaussian, +3.26 dB told the true 3 mm rectangle every 4 mm). The in-plane axes
of the same scan show what the through-plane axis would look like at full
resolution, so (in the spirit of ESPRESO, but without training anything):

1. Power spectra, in mm units, of the lines along each in-plane axis (Welch: Hann
   windowed segments as long as a through-plane line, so both are equally resolved)
   and of the lines along the thick axis, over the foreground's bounding box.
2. For a candidate profile h (a family, Gaussian or rectangle, and a thickness), the
   through-plane spectrum it predicts: the in-plane spectrum with its white-noise
   floor removed, times |H(f)|^2, aliased by sampling at the slice spacing
   (``sum_k P(f + k / spacing) |H(f + k / spacing)|^2``), plus the noise floor at the
   slice spacing. Working in frequency handles any spacing ratio, whole or not, and
   gaps (thickness < spacing) are just thinner candidates.
3. The candidate whose prediction is closest to the measured through-plane spectrum
   in log power, over the band below the slices' Nyquist frequency, wins; each
   in-plane axis is scored on its own and the two scores are added.

The noise floor is the in-plane spectrum's median over its top fifth of
frequencies (white noise is flat; anatomy has fallen far below it there): it is
subtracted before blurring (noise is not blurred by the slice profile) and added back
at the slice spacing (the thick slices have their own noise). Measured on the MNI152
protocol (experiments/profile_estimation/README.md).
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np

from clade_jax.data import slice_profile as slice_profile_lib
from clade_jax.data.consistency import acquisition_matrix as consistency_matrix

FAMILIES = slice_profile_lib.PROFILES  # ('gaussian', 'rect')

# Candidate thicknesses, as fractions of the slice spacing: from thin slices with wide
# gaps to heavy overlap, log-spaced (a fixed relative resolution of ~0.7 %).
THICKNESS_RANGE = (0.25, 2.0)
THICKNESS_CANDIDATES = 48
_REFINE = 17
# Lines per direction used (a random subset, seeded): enough for a smooth mean
# spectrum, few enough for seconds.
_MAX_LINES = 4000
_FLOORS = 17

# The foreground: voxels above this fraction of the robust max (99.5th percentile).
_FOREGROUND = 0.1
# The noise floor: the median of the in-plane spectrum over this top fraction of
# frequencies.
_FLOOR_BAND = 0.2
# Frequencies compared: above the first bins (the mean and the window's leakage)
# and up to this fraction of the slices' Nyquist frequency.
_LOWEST_BIN = 2
_BAND_TOP = 1.0
_FWHM_PER_SIGMA = 2.0 * math.sqrt(2.0 * math.log(2.0))
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
    noise_floor: the white-noise power density removed (intensity^2 * mm).
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


def transfer(profile: str, thickness_mm: float, frequency: np.ndarray) -> np.ndarray:
  """The profile's Fourier transform at `frequency` (cycles/mm); 1 at 0."""
  frequency = np.asarray(frequency, np.float64)
  if profile == "gaussian":
    sigma = thickness_mm / _FWHM_PER_SIGMA
    return np.exp(-2.0 * (math.pi * sigma * frequency) ** 2)
  if profile == "rect":
    return np.sinc(thickness_mm * frequency)
  raise ValueError(f"unknown slice profile {profile!r}; use one of {FAMILIES}")


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


def line_spectrum(volume: np.ndarray, axis: int, spacing_mm: float,
                  segment: int | None = None) -> tuple[np.ndarray, np.ndarray]:
  """Mean power spectral density of the lines along `axis` (Welch, Hann window).

  Args:
    volume: 3D array.
    axis: the axis the lines run along.
    spacing_mm: sample spacing along it.
    segment: samples per segment (half-overlapping); default the whole line.

  Returns:
    (frequency in cycles/mm, density in intensity^2 * mm): white noise of variance
    s^2 has density s^2 * spacing at every frequency, whatever the segment.
  """
  lines = np.moveaxis(np.asarray(volume, np.float64), axis, -1)
  lines = lines.reshape(-1, lines.shape[-1])
  n = lines.shape[-1]
  segment = n if segment is None else max(4, min(int(segment), n))
  hop = max(1, segment // 2)
  starts = range(0, n - segment + 1, hop)
  window = np.hanning(segment + 2)[1:-1]  # no zero end taps: every sample counts
  power = np.zeros(segment // 2 + 1)
  for start in starts:
    piece = lines[:, start:start + segment]
    piece = piece - piece.mean(axis=1, keepdims=True)
    power += np.mean(np.abs(np.fft.rfft(piece * window, axis=1)) ** 2, axis=0)
  power /= len(starts) * np.sum(window ** 2)
  return np.fft.rfftfreq(segment, spacing_mm), power * spacing_mm


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


def _axis_spectra(volume: np.ndarray, axis: int, thick_axis: int, fine_mm: float,
                  slice_mm: float):
  """The 2D power spectrum of the (axis, thick axis) planes, along its two axes.

  Square tiles (the thick axis's foreground length in both directions, Hann windowed)
  of every plane spanned by the in-plane `axis` and the thick axis; their mean 2D
  periodogram read along the in-plane frequency axis (f_thick = 0) and along the
  thick one (f_in = 0). For a scene that is statistically isotropic these are the
  same spectrum before the acquisition; after it the thick one is the other times
  |H|^2, aliased, plus noise. Reading both from one 2D spectrum puts them in the
  same units, whatever the slice averaging did to the overall power.

  Returns:
    ((frequency cycles/mm, in-plane spectrum, white-noise level), (thick frequency,
    thick spectrum)).
  """
  other = 3 - axis - thick_axis
  planes = np.moveaxis(volume, (other, axis, thick_axis), (0, 1, 2))  # [b, x, z]
  n_z = planes.shape[2]
  n_x = min(planes.shape[1], max(8, int(round(n_z * slice_mm / fine_mm))))
  hop = max(1, n_x // 2)
  window = np.outer(np.hanning(n_x + 2)[1:-1], np.hanning(n_z + 2)[1:-1])
  total = np.zeros((n_x, n_z // 2 + 1))
  count = 0
  for start in range(0, planes.shape[1] - n_x + 1, hop):
    tiles = planes[:, start:start + n_x, :]
    tiles = tiles - tiles.mean(axis=(1, 2), keepdims=True)
    total += np.sum(np.abs(np.fft.rfft2(tiles * window, axes=(1, 2))) ** 2, axis=0)
    count += tiles.shape[0]
  power = total / (count * np.sum(window ** 2))
  f_in = np.fft.rfftfreq(n_x, fine_mm)
  along = power[:f_in.size, 0]
  # White noise is flat over the whole 2D spectrum: its level where the anatomy has
  # faded, the highest in-plane frequencies at the lowest thick ones.
  noise = float(np.median(power[int((1 - _FLOOR_BAND) * (f_in.size - 1)):f_in.size, :]))
  return (f_in, along, noise), (np.fft.rfftfreq(n_z, slice_mm), power[0, :])


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
  n_z = volume.shape[thick_axis]
  references = []
  for axis in inplane:
    along, across = _axis_spectra(volume, axis, thick_axis, spacing[axis], slice_spacing)
    references.append((along, across))
  f_thick = np.fft.rfftfreq(n_z, slice_spacing)
  nyquist = 0.5 / slice_spacing
  band = (np.arange(f_thick.size) >= 1) & (f_thick <= nyquist + 1e-9)

  def score(family, thickness):
    error = 0.0
    for (f_in, p_in, noise), (_, p_z) in references:
      signal = np.maximum(p_in - noise, 0.0)
      model = np.full(band.sum(), noise)
      for k in range(-int(math.ceil(f_in[-1] * slice_spacing)) - 1,
                     int(math.ceil(f_in[-1] * slice_spacing)) + 2):
        f = np.abs(f_thick[band] + k / slice_spacing)
        inside = f <= f_in[-1]
        model += np.where(inside, np.interp(f, f_in, signal)
                          * transfer(family, thickness, f) ** 2, 0.0)
      floor = _TINY * p_z.max()
      error += float(np.mean((np.log10(model + floor) - np.log10(p_z[band] + floor)) ** 2))
    return error / len(references)

  best = {}
  for family in families:
    grid = slice_spacing * np.geomspace(*THICKNESS_RANGE, THICKNESS_CANDIDATES)
    errors = [score(family, t) for t in grid]
    i = int(np.argmin(errors))
    fine_grid = np.geomspace(grid[max(i - 1, 0)], grid[min(i + 1, grid.size - 1)], _REFINE)
    fine_errors = [score(family, t) for t in fine_grid]
    j = int(np.argmin(fine_errors))
    best[family] = (float(fine_grid[j]), float(fine_errors[j]))
  floor_thick = float(np.mean([ref[0][2] for ref in references]))
  winner = min(best, key=lambda name: best[name][1])
  others = [name for name in best if name != winner]
  runner_up = ({"profile": others[0], "thickness_mm": round(best[others[0]][0], 4),
                "error": best[others[0]][1]} if others else {})
  thickness, error = best[winner]
  fine = min(spacing[a] for a in inplane)
  kernel = slice_profile_lib.centred_weights(winner, thickness / fine)
  return ProfileEstimate(profile=winner, thickness_mm=thickness, kernel=kernel,
                         spacing_mm=slice_spacing, noise_floor=floor_thick, error=error,
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
