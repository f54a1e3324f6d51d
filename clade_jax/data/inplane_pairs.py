"""SMORE's training pairs: acquired in-plane slices degraded the way the thick axis was.

A thick-slice volume is high-resolution within each acquired slice. Blurring such a
slice along one of its axes with the slice profile, sampling it at the slice spacing
and interpolating it back onto the fine grid gives an image that looks like a slice of
a low-resolution plane as inference sees it, and the untouched slice is its target
(Zhao et al., SMORE, IEEE TMI 2021). Every step is the code inference and the
simulator use, so training and test inputs have the same statistics:

* the profile is `slice_profile` (Gaussian with FWHM = thickness, rectangle, or a
  given kernel), each low-resolution sample weighting the fine pixels it covers
  exactly as `consistency.acquisition_matrix` (and so `degrade.degrade`, at whole-voxel
  centres) does, edge pixels replicated beyond the image;
* samples sit ``ratio = slice spacing / fine spacing`` fine pixels apart starting on a
  fine pixel, the layout `volume.isotropic_geometry` gives the acquired slices on the
  output grid (so a non-integer ratio, 5.5 mm onto 1 mm, puts them at 0, 5.5, 11, ...);
* they go back onto the fine grid with `volume.resample_thick_axis`, the cubic spline
  of `preprocess.prepare_input`, over the same span (first to last sample).

The degraded direction is always the image rows, the way SMORE's `super_resolve` feeds
low-resolution-plane slices to the network. Random rotations by 90 degrees and flips of
the slice before degrading (the 8 symmetries of the square) make both in-plane axes,
in both directions, take the role of the thick one. Each example also draws which fine
pixel the first sample sits on (the phase), so every pixel of a slice is sometimes an
acquired position and sometimes lies between two.

Noise (`match_noise`): a thick slice carries the scanner's noise at full strength, but
degrading an acquired slice averages its noise over the profile (a 4 mm rectangle on
1 mm pixels halves its standard deviation), so without care the network trains on
inputs cleaner than the ones it is applied to, and at inference sharpens the noise it
never saw. The noise sigma is measured in the scan's air (`profile_estimation.
air_noise_sigma`: Rayleigh there) and each simulated sample gets the Gaussian noise
that brings its variance back to sigma^2 (sigma^2 (1 - sum of its weights squared)). A
scan without usable air (noise-free, or masked to zero) gets none.

The source is random access: example i is a pure function of (seed, record, i), which
is what the shared grain pipeline needs to shuffle, shard and resume.
"""

from __future__ import annotations

import math

import numpy as np
from scipy import ndimage

from clade_jax.data import consistency
from clade_jax.data import foreground
from clade_jax.data import profile_estimation
from clade_jax.data import volume as volume_lib

# Fine spacings within this relative tolerance of the target are used as they are;
# others are resampled to it first.
_SPACING_TOLERANCE = 1e-3
SYMMETRIES = 8  # Of the square: 4 rotations x (flipped or not).


def sample_grid(n_fine: int, ratio: float, phase: int = 0) -> tuple[int, int]:
  """How many samples fit on ``n_fine`` pixels, and the span of the grid they give.

  Args:
    n_fine: pixels along the degraded axis.
    ratio: slice spacing in fine pixels (> 1, any real number).
    phase: the fine pixel of the first sample.

  Returns:
    (n_samples, n_grid): samples at ``phase + k * ratio`` for k < n_samples, and the
    fine pixels ``phase .. phase + n_grid - 1`` that `volume.isotropic_geometry` puts
    between the first and the last of them.
  """
  n_samples = int(math.floor((n_fine - 1 - phase) / ratio + 1e-6)) + 1
  n_grid = int(math.floor((n_samples - 1) * ratio + 1e-6)) + 1
  return n_samples, n_grid


def acquisition_rows(n_fine: int, ratio: float, thickness_vox: float | None,
                     profile: str | np.ndarray, phase: int = 0) -> np.ndarray:
  """The matrix that turns ``n_fine`` rows into thick samples: [n_samples, n_fine].

  Args:
    n_fine: pixels along the degraded axis.
    ratio: slice spacing in fine pixels.
    thickness_vox: slice thickness in fine pixels (Gaussian FWHM, box width); None
      for an explicit kernel.
    profile: 'gaussian', 'rect' or a 1D kernel in fine pixels (`slice_profile`).
    phase: the fine pixel of the first sample.
  """
  n_samples, _ = sample_grid(n_fine, ratio, phase)
  if n_samples < 2:
    raise ValueError(f"{n_fine} pixels give fewer than 2 samples at a spacing of "
                     f"{ratio:g} pixels")
  centres = phase + ratio * np.arange(n_samples)
  return consistency.acquisition_matrix(n_fine, centres, thickness_vox, profile)


def to_fine_grid(samples: np.ndarray, ratio: float) -> np.ndarray:
  """Thick samples (axis 0) back on the fine grid, as inference's input is made.

  `volume.resample_thick_axis` on a grid whose axis-0 spacing is ``ratio`` and target
  spacing 1: the cubic spline through the samples, from the first to the last.

  Args:
    samples: [n_samples, ...] thick samples along axis 0.
    ratio: their spacing in fine pixels.

  Returns:
    float32 [n_grid, ...] (`sample_grid`'s n_grid).
  """
  affine = np.diag([float(ratio), 1.0, 1.0, 1.0])
  fine = volume_lib.resample_thick_axis(volume_lib.Volume(samples, affine), 0, 1.0)
  return fine.data


def degrade_rows(image: np.ndarray, ratio: float, thickness_vox: float | None,
                 profile: str | np.ndarray, phase: int = 0) -> tuple[np.ndarray, np.ndarray]:
  """A (simulated low-resolution, high-resolution) pair from one fine image.

  Args:
    image: [n_fine, ...] fine image, degraded along axis 0.
    ratio, thickness_vox, profile, phase: as for `acquisition_rows`.

  Returns:
    (lr_like, hr): float32, both [n_grid, ...]: the image sampled and interpolated back
    (`to_fine_grid`), and its rows ``phase .. phase + n_grid - 1``.
  """
  matrix = acquisition_rows(image.shape[0], ratio, thickness_vox, profile, phase)
  samples = np.tensordot(matrix, np.asarray(image, np.float64), axes=1)
  fine = to_fine_grid(samples, ratio)
  return fine, np.asarray(image[phase:phase + fine.shape[0]], np.float32)


def symmetry(image: np.ndarray, k: int) -> np.ndarray:
  """The k-th of the 8 symmetries of the square (0 = identity) applied to a 2D image."""
  if k & 4:
    image = image.T
  if k & 1:
    image = image[::-1]
  if k & 2:
    image = image[:, ::-1]
  return image


def hr_slices(volume, target_spacing: float) -> np.ndarray:
  """The acquired slices of a `patches.PreparedVolume`, on the target's square grid.

  In-plane axes whose spacing differs from the target (an anisotropic in-plane grid,
  or `data.target_spacing` set) are resampled to it with a cubic spline, so one
  pixel means the same length along both axes, as on the isotropic grid.

  Returns:
    float32 [n_slices, rows, cols] in network units.
  """
  thick = volume.thick_axis
  slices = volume_lib.plane_slices(volume.normalised_acquired, thick)
  # Resampling the thick axis left the in-plane columns of the affine as acquired.
  spacing = np.delete(volume_lib.voxel_spacing(volume.scan.affine), thick)
  zoom = spacing / target_spacing
  if np.all(np.abs(zoom - 1.0) < _SPACING_TOLERANCE):
    return np.ascontiguousarray(slices, np.float32)
  resampled = ndimage.zoom(slices, (1.0, *zoom), order=3, mode="nearest", grid_mode=False)
  return np.clip(resampled, -1.0, 1.0).astype(np.float32)


class InPlanePairs:
  """Random-access source of {'x': [P, P, 1], 'y': [P, P, 1]} float32 training pairs.

  ``x`` is a patch of an acquired slice degraded along its rows and interpolated back
  (clipped to [-1, 1] as `volume.Normalizer` clips the inference input), ``y`` the
  same patch untouched.

  Args:
    volumes: prepared training volumes (`patches.PreparedVolume`).
    patch_size: square patch side.
    patches_per_slice: examples per usable slice per epoch.
    profile: 'gaussian', 'rect' or a 1D kernel in fine pixels.
    thickness_mm: slice thickness (Gaussian FWHM, box width); None = each volume's
      slice spacing (no gap), and for a kernel.
    min_foreground: fraction of a patch that must be foreground.
    background_level: foreground is brighter than this fraction of [-1, 1].
    augment: apply a random symmetry of the square to each slice first.
    match_noise: give the simulated samples the acquired slices' noise (the module
      docstring); `noise_sigmas` holds what was measured per volume (network units).
    seed: base of every example's random stream.

  Raises:
    VolumeError: no slice has a usable patch, or slices too short for a patch.
  """

  def __init__(self, volumes, *, patch_size=48, patches_per_slice=16, profile="gaussian",
               thickness_mm=None, min_foreground=0.3, background_level=0.05, augment=True,
               match_noise=False, seed=0):
    self.patch_size = patch_size
    self.foreground = foreground.ForegroundPatches(patch_size, min_foreground,
                                                   background_level)
    self.augment = augment
    self.seed = seed
    self.hr, self.ratios, self.phases, self._matrices = [], [], [], {}
    self.noise_sigmas, self._missing_noise = [], {}
    for v, volume in enumerate(volumes):
      fine = float(volume_lib.voxel_spacing(volume.scan.affine)[volume.thick_axis])
      spacing = volume.scan.slice_spacing
      ratio = spacing / fine
      thickness_vox = None
      if isinstance(profile, str):
        thickness_vox = (spacing if thickness_mm is None else thickness_mm) / fine
      stack = hr_slices(volume, fine)
      sides = (stack.shape[1], stack.shape[2]) if augment else (stack.shape[1],)
      # Phases that still leave a patch-high grid on the shorter side.
      phases = [p for p in range(int(math.ceil(ratio)))
                if all(sample_grid(n, ratio, p)[1] >= patch_size for n in sides)]
      if not phases or min(stack.shape[1:]) < patch_size:
        raise volume_lib.VolumeError(
            f"{volume.path}: acquired slices {stack.shape[1:]} at {ratio:.3g} fine pixels "
            f"per slice leave no {patch_size}x{patch_size} patch on the fine grid; lower "
            "data.patch_size")
      sigma = noise_sigma(volume) if match_noise else 0.0
      for n in set(sides):
        for p in phases:
          matrix = acquisition_rows(n, ratio, thickness_vox, profile, p)
          self._matrices[v, n, p] = matrix
          # Per sample: the standard deviation that tops its filtered noise up to sigma.
          self._missing_noise[v, n, p] = sigma * np.sqrt(
              np.maximum(1.0 - np.sum(matrix ** 2, axis=1), 0.0))
      self.noise_sigmas.append(sigma)
      self.hr.append(stack)
      self.ratios.append(ratio)
      self.phases.append(phases)
    self.slices = self.foreground.require(self.foreground.usable_slices(self.hr), volumes)
    self.epoch_length = patches_per_slice * len(self.slices)

  def __len__(self) -> int:
    return self.epoch_length

  def sample(self, record: int, index: int) -> dict[str, np.ndarray]:
    """The pair for slice record `record` at global example position `index`."""
    rng = np.random.default_rng([self.seed, index])
    v, s = self.slices[record % len(self.slices)]
    image = self.hr[v][s]
    if self.augment:
      image = symmetry(image, int(rng.integers(SYMMETRIES)))
    phase = self.phases[v][int(rng.integers(len(self.phases[v])))]
    matrix = self._matrices[v, image.shape[0], phase]
    _, n_grid = sample_grid(image.shape[0], self.ratios[v], phase)
    target = image[phase:phase + n_grid]
    r, c = self.foreground.corner(target, rng)
    p = self.patch_size
    # Only the patch's columns are degraded: the rows couple, the columns do not.
    samples = matrix @ np.asarray(image[:, c:c + p], np.float64)
    if self.noise_sigmas[v]:
      missing = self._missing_noise[v, image.shape[0], phase]
      samples += missing[:, None] * rng.standard_normal(samples.shape)
    x = np.clip(to_fine_grid(samples, self.ratios[v])[r:r + p], -1.0, 1.0)
    y = target[r:r + p, c:c + p]
    return {"x": x[..., None].astype(np.float32), "y": y[..., None].astype(np.float32)}


def noise_sigma(volume) -> float:
  """The acquired samples' noise sigma in network units (0 without usable air)."""
  acquired = volume.scan.acquired
  threshold = profile_estimation.FOREGROUND * float(np.percentile(acquired, 99.5))
  sigma = profile_estimation.air_noise_sigma(acquired, threshold)
  return 0.0 if sigma is None else sigma / volume.normalizer.half_width
