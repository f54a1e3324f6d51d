"""Intensity fidelity: super-resolution keeps the scan's intensity range, for every method.

The networks see a scan through its intensity window [lo, hi], mapped to [-1, 1] and
clipped (`volume.Normalizer.forward`): robust percentiles of the scan
(``data.normalization='percentile'``, the default) or a fixed window in the scan's own
units (``'window'``, ``data.intensity_window``; HU for CT, `configs/ct.py`). Beyond the
window a network sees only the window's edge, and a generator ending in tanh cannot
even write values beyond it. Mapping its output straight back (``eval.outside_window=
'clip'``, the paper's behaviour) therefore flattens everything outside the window:
on a head CT every voxel above the 99.5th percentile, dense bone and teeth, came back
at 1233 HU instead of up to 2986 (issue 16).

`to_scan_units` instead adds the network's *change* to the interpolated input ``x``:

    output = clip(x, acquired min, acquired max)
             + (1 - w(u)) * (y - forward(x)) * (hi - lo) / 2,      u = scale(x),

with ``y`` the method's output in normalised units and ``w`` a smoothstep that is 0
for |u| <= 0.9 and 1 for |u| >= 1 (`restore_weight`: the change fades out over the
outer 5% of the window on each side). Consequences:

* inside the window it is the method's output, ``inverse(y)``, as before;
* a voxel at or beyond the window's edges is the interpolated input, exactly, whatever
  the network wrote there: the network never saw it, so the interpolation is the best
  estimate there is. Air at -1024 HU on a window starting at -1024 stays -1024;
* where a method leaves the image unchanged (``y == forward(x)``) the output is the
  input bit for bit, inside the window too (up to the clip below): a homogeneous
  region keeps its HU;
* the blend is continuous in ``x``, so no seam appears where a structure crosses the
  window's edge;
* the cubic spline's overshoot beyond what the scan holds (3195 HU next to 3000 HU
  teeth) is an artefact, not tissue: the input is clipped to the acquired range.

Why this blend and not another (measured on the CT phantom with a trained CLADE,
experiments/intensity/README.md): fading the change out *inside* the window, so that
the window's edge itself is restored, beat a ramp just outside it, a step at the edge
and adding the clipped-away excess to the output (``passthrough``) on PSNR, bone and
air error; only it keeps air at the window's floor exact with a network that does not
write exactly -1 there.

It lives in the shared path (`clade_jax.inference`), so every method gets it without
doing anything.
"""

from __future__ import annotations

import numpy as np

from clade_jax.data import volume as volume_lib

NORMALIZATIONS = ("percentile", "window")
OUTSIDE_MODES = ("restore", "clip")

# Where the network's change fades out, in normalised units |u| (the window is
# |u| <= 1): fully applied up to RAMP_START, none from RAMP_STOP on, a smoothstep
# between. experiments/intensity/README.md compares the choices.
RAMP_START = 0.9
RAMP_STOP = 1.0


def fit_normalizer(acquired: np.ndarray, data_config, *, name: str = "volume"
                   ) -> volume_lib.Normalizer:
  """The intensity window of a scan, as ``config.data`` asks.

  Args:
    acquired: the acquired samples (the original grid, not the interpolated one: the
      spline's overshoot at sharp edges must not set the scale).
    data_config: ``config.data``: ``normalization`` ('percentile', the default, or
      'window'), ``percentiles`` and ``intensity_window``.
    name: what to call the scan in error messages.

  Returns:
    The `volume.Normalizer`.

  Raises:
    VolumeError: constant intensities, a window that is not two increasing numbers, or
      one that holds none of the scan (e.g. a CT window on an MRI scan).
  """
  mode = data_config.get("normalization", "percentile")
  if mode == "percentile":
    return volume_lib.Normalizer.fit(acquired, tuple(data_config.percentiles), name=name)
  if mode != "window":
    raise volume_lib.VolumeError(
        f"{name}: data.normalization={mode!r} is not one of {', '.join(NORMALIZATIONS)}")
  window = tuple(data_config.intensity_window)
  if len(window) != 2 or not float(window[1]) > float(window[0]):
    raise volume_lib.VolumeError(
        f"{name}: data.intensity_window={window!r} must be two increasing numbers (lo, hi) "
        "in the scan's units, e.g. (-1024, 2048) HU")
  normalizer = volume_lib.Normalizer(float(window[0]), float(window[1]))
  if not np.any((acquired > normalizer.lo) & (acquired < normalizer.hi)):
    raise volume_lib.VolumeError(
        f"{name}: no voxel lies inside data.intensity_window={window!r} (the scan holds "
        f"{float(np.min(acquired)):g}..{float(np.max(acquired)):g}); is it the right "
        "window for this modality? (data.normalization='percentile' fits one to the scan)")
  return normalizer


def restore_weight(u: np.ndarray, start: float = RAMP_START,
                   stop: float = RAMP_STOP) -> np.ndarray:
  """How much of the input replaces the network's change: 0 for |u| <= start, 1 for
  |u| >= stop, a smoothstep between (a step at start when start == stop).

  Args:
    u: intensities in normalised units, not clipped (`Normalizer.scale`).
    start: where the weight starts to rise.
    stop: where it reaches 1; >= start.

  Returns:
    float64 weights in [0, 1], the shape of `u`.
  """
  distance = np.abs(np.asarray(u, np.float64))
  if stop <= start:
    return (distance > start).astype(np.float64)
  t = np.clip((distance - start) / (stop - start), 0.0, 1.0)
  return t * t * (3.0 - 2.0 * t)


def to_scan_units(output: np.ndarray, isotropic: np.ndarray,
                  normalizer: volume_lib.Normalizer, outside: str = "restore",
                  ramp: tuple[float, float] = (RAMP_START, RAMP_STOP),
                  limits: tuple[float, float] | None = None) -> np.ndarray:
  """A method's output back in the scan's units (see the module docstring).

  Args:
    output: the method's volume in normalised units (its ``super_resolve``).
    isotropic: the interpolated input on the same grid, in the scan's units
      (``PreparedInput.isotropic``).
    normalizer: the scan's window (``PreparedInput.normalizer``).
    outside: 'restore' (default): voxels at or beyond the window come from the input;
      'clip': the paper's ``normalizer.inverse(output)``, which flattens them.
    ramp: (start, stop) of `restore_weight`.
    limits: (min, max) of the acquired samples (``PreparedInput.acquired_range``): the
      input is clipped to them before anything is restored from it, since the cubic
      spline's overshoot beyond what the scan holds is an artefact, not tissue (it
      put a phantom's 3000 HU teeth at 3195), and the output too, which an unbounded
      network could otherwise push beyond them. None: no clipping.

  Returns:
    float32 volume in the scan's units.

  Raises:
    ValueError: an unknown `outside`, or shapes that differ.
  """
  if outside not in OUTSIDE_MODES:
    raise ValueError(f"outside must be one of {OUTSIDE_MODES}, got {outside!r}")
  output = np.asarray(output, np.float32)
  if outside == "clip":
    return normalizer.inverse(output)
  x = np.asarray(isotropic, np.float32)
  if output.shape != x.shape:
    raise ValueError(f"output shape {output.shape} differs from the input's {x.shape}")
  change = output.astype(np.float64) - normalizer.forward(x)
  keep = 1.0 - restore_weight(normalizer.scale(x), *ramp)
  base = x if limits is None else np.clip(x, *limits)
  out = base + keep * change * normalizer.half_width
  # An unbounded network (SMORE's residual CNN) could also leave what the scan holds.
  return (out if limits is None else np.clip(out, *limits)).astype(np.float32)


def _range(data) -> list[float]:
  return [float(np.min(data)), float(np.max(data))]


def report(acquired: np.ndarray, output: np.ndarray,
           normalizer: volume_lib.Normalizer) -> dict:
  """The intensity ranges a user should see after super-resolution.

  Args:
    acquired: the input's acquired samples, in the scan's units.
    output: the super-resolved volume, in the scan's units.
    normalizer: the window the networks saw.

  Returns:
    {'input_range': [min, max], 'output_range': [min, max], 'window': [lo, hi],
    'below_window': fraction of input voxels below lo, 'above_window': above hi}.
  """
  acquired = np.asarray(acquired)
  return {"input_range": _range(acquired), "output_range": _range(output),
          "window": [normalizer.lo, normalizer.hi],
          "below_window": float(np.mean(acquired < normalizer.lo)),
          "above_window": float(np.mean(acquired > normalizer.hi))}
