"""Simulated thick-slice acquisition: a known low-resolution input for a known truth.

`degrade` turns an isotropic (or finer) volume into the kind of volume CLADE is meant
to repair: each low-resolution slice is a weighted average of the fine voxels under
its slice profile, slices are taken every `spacing_mm` along one voxel axis, and
magnitude (Rician) noise can be added.

Geometry. Slice centres lie on voxel centres of the input grid, every `step`
voxels where ``step = spacing_mm / input_spacing`` must be an integer. The output
affine is the input's with the thick-axis column multiplied by `step` and the origin
moved to the first slice centre. Consequently `volume.isotropic_geometry` applied to
the degraded volume (target spacing = the input spacing) rebuilds a grid whose voxel
centres are exactly a contiguous block of the input's voxel centres, which is what
lets an upsampled or super-resolved output be scored voxel for voxel against the
truth without any interpolation of the truth.

Example (the MNI152 demo: 1 mm template, 6 mm coronal-thick slices)::

  truth = demo.load_template()
  lr = degrade(truth, thick_axis=1, spacing_mm=6.0)   # Gaussian, FWHM 6 mm
"""

from __future__ import annotations

import dataclasses
import os

import numpy as np

from clade_jax.data import slice_profile as slice_profile_lib
from clade_jax.data.volume import Volume, VolumeError, load_volume, save_volume, voxel_spacing

NOISE_MODELS = ("rician", "gaussian")
NOISE_UNITS = ("relative", "absolute")

# Percentile used as the "robust max" for relative noise: high enough to be the bright
# tissue level, low enough that a handful of hot voxels do not set the noise level.
ROBUST_MAX_PERCENTILE = 99.5

# The profile code is shared with the data-consistency projection (and SMORE), so the
# simulator and everything that inverts it agree on what a slice is. The old names stay
# importable from here.
PROFILES = slice_profile_lib.PROFILES
slice_profile = slice_profile_lib.centred_weights


def slice_step(volume: Volume, thick_axis: int, spacing_mm: float) -> int:
  """How many fine voxels apart the low-resolution slices are.

  Raises:
    VolumeError: `spacing_mm` is not a whole multiple of the input spacing, which
      would put slice centres between fine voxels and break exact ground-truth
      comparison.
  """
  fine = float(voxel_spacing(volume.affine)[thick_axis])
  ratio = spacing_mm / fine
  step = int(round(ratio))
  if step < 1 or abs(ratio - step) > 1e-4 * max(1.0, ratio):
    raise VolumeError(
        f"{volume.name}: slice spacing {spacing_mm:g} mm is not a whole multiple of the "
        f"input spacing {fine:g} mm along axis {thick_axis} (ratio {ratio:.4g}); slice "
        f"centres must fall on input voxel centres")
  return step


def degrade(volume: Volume, thick_axis: int, spacing_mm: float,
            thickness_mm: float | None = None, profile: str | np.ndarray = "gaussian",
            noise_sigma: float = 0.0, seed: int = 0, offset_vox: int | None = None, *,
            noise_model: str = "rician", noise_units: str = "relative") -> Volume:
  """Simulates a thick-slice acquisition of `volume` along `thick_axis`.

  Args:
    volume: the fine (usually isotropic) ground truth.
    thick_axis: voxel axis to make thick.
    spacing_mm: distance between low-resolution slice centres; a whole multiple of
      the input spacing along `thick_axis`.
    thickness_mm: slice thickness (Gaussian FWHM or rectangle width); default
      `spacing_mm` (contiguous slices). Larger than the spacing gives overlap,
      smaller gives a gap. Must be None when `profile` is an explicit kernel.
    profile: 'gaussian', 'rect', or a 1D kernel in input voxels (see `slice_profile`).
    noise_sigma: standard deviation of the Gaussian noise in each of the real and
      imaginary channels before taking the magnitude. With noise_units='relative'
      (default) it is a fraction of the robust max (the 99.5th percentile) of the
      noise-free degraded volume, so 0.02 means "2 % noise" whatever the intensity
      scale; with 'absolute' it is in intensity units.
    seed: seed of the noise generator (the result is deterministic given the seed).
    offset_vox: input index of the first slice centre; default centres the slices,
      leaving ``(n - 1) % step`` spare voxels split between the two ends.
    noise_model: 'rician' (magnitude MRI: |signal + n_re + i n_im|, which biases
      dark regions upwards) or 'gaussian' (additive, e.g. CT).
    noise_units: 'relative' or 'absolute', see `noise_sigma`.

  Returns:
    The low-resolution Volume (float32, path None, the input's header kept for its
    qform/sform codes). Slice j is centred on input voxel ``offset_vox + j * step``
    and its world position is that voxel's.

  Raises:
    VolumeError: spacing not a whole multiple of the input spacing, or too few voxels
      for two slices.
    ValueError: bad profile, offset, or noise settings.
  """
  if thick_axis not in (0, 1, 2):
    raise ValueError(f"thick_axis must be 0, 1 or 2, got {thick_axis}")
  step = slice_step(volume, thick_axis, spacing_mm)
  fine = float(voxel_spacing(volume.affine)[thick_axis])
  if isinstance(profile, str):
    thickness = spacing_mm if thickness_mm is None else thickness_mm
    weights = slice_profile(profile, thickness / fine)
  else:
    if thickness_mm is not None:
      raise ValueError("thickness_mm is set by the explicit kernel; pass thickness_mm=None")
    weights = slice_profile(profile)

  n = volume.data.shape[thick_axis]
  if offset_vox is None:
    offset_vox = ((n - 1) % step) // 2
  if not 0 <= offset_vox < n:
    raise ValueError(f"offset_vox must be in [0, {n}), got {offset_vox}")
  n_slices = (n - 1 - offset_vox) // step + 1
  if n_slices < 2:
    raise VolumeError(
        f"{volume.name}: {n} voxels along axis {thick_axis} give fewer than 2 slices at "
        f"{spacing_mm:g} mm spacing")
  centres = offset_vox + step * np.arange(n_slices)

  # Only the sampled slices are computed: a weighted sum of shifted takes. Indices
  # beyond the volume are clamped (edge replication), which keeps a constant volume
  # constant; a real scanner would see whatever lies outside the field of view.
  radius = (weights.size - 1) // 2
  data = np.asarray(volume.data, np.float64)
  lr = np.zeros(tuple(n_slices if a == thick_axis else s for a, s in enumerate(data.shape)))
  for tap, w in zip(range(-radius, radius + 1), weights):
    if w:
      lr += w * np.take(data, np.clip(centres + tap, 0, n - 1), axis=thick_axis)

  if noise_sigma:
    lr = add_noise(lr, noise_sigma, seed, model=noise_model, units=noise_units,
                   name=volume.name)

  affine = np.array(volume.affine, dtype=np.float64)
  origin = np.zeros(4)
  origin[thick_axis] = offset_vox
  origin[3] = 1.0
  affine[:3, 3] = (volume.affine @ origin)[:3]
  affine[:3, thick_axis] *= step
  return dataclasses.replace(volume, data=lr.astype(np.float32), affine=affine, path=None)


def add_noise(data: np.ndarray, sigma: float, seed: int = 0, *, model: str = "rician",
              units: str = "relative", name: str = "volume") -> np.ndarray:
  """Adds Rician or Gaussian noise; see `degrade` for the meaning of the arguments.

  Returns:
    float64 array of the same shape.
  """
  if model not in NOISE_MODELS:
    raise ValueError(f"unknown noise model {model!r}; use one of {NOISE_MODELS}")
  if units not in NOISE_UNITS:
    raise ValueError(f"unknown noise units {units!r}; use one of {NOISE_UNITS}")
  if sigma < 0:
    raise ValueError(f"noise sigma must be >= 0, got {sigma}")
  data = np.asarray(data, np.float64)
  if units == "relative":
    reference = float(np.percentile(data, ROBUST_MAX_PERCENTILE))
    if not reference > 0:
      raise VolumeError(
          f"{name}: relative noise needs a positive robust max, got {reference:g}; "
          f"use noise_units='absolute'")
    sigma = sigma * reference
  rng = np.random.default_rng(seed)
  real = data + rng.normal(0.0, sigma, data.shape)
  if model == "gaussian":
    return real
  imag = rng.normal(0.0, sigma, data.shape)
  return np.hypot(real, imag)


def degrade_file(in_path: str | os.PathLike, out_path: str | os.PathLike, thick_axis: int,
                 spacing_mm: float, **kwargs) -> Volume:
  """Loads a NIfTI volume, degrades it with `degrade(**kwargs)` and saves it atomically.

  Args:
    in_path: the fine input volume.
    out_path: where to write the low-resolution volume (never the input itself).
    thick_axis: voxel axis to make thick.
    spacing_mm: slice spacing in mm.
    **kwargs: any other `degrade` argument (thickness_mm, profile, noise_sigma, ...).

  Returns:
    The degraded Volume, with `path` set to `out_path`.
  """
  volume = load_volume(in_path)
  lr = degrade(volume, thick_axis, spacing_mm, **kwargs)
  save_volume(out_path, lr.data, lr.affine, like=volume)
  return dataclasses.replace(lr, path=os.fspath(out_path))
