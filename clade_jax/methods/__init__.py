"""Methods: what the shared driver, inference and evaluation need from each method.

`config.method` names a method; `get(name)` returns the module `clade_jax.methods.<name>`
(or an object `register`ed under that name, e.g. by a test or a notebook). A method
provides:

  describe(config) -> str
      Its name for logs and figure titles ("CLADE", "GLADE", "CycleGAN", ...).
  architecture_fields: tuple[str, ...]
      Dotted config fields that change parameter shapes; resuming a workdir whose
      config.json differs in one of them is refused.
  make_source(config, volumes, holdout) -> source
      Training examples from the prepared volumes (`data.patches.PreparedVolume`):
      `len(source)` examples an epoch, `source.sample(record, index)` a dict of float32
      arrays, a pure function of (record, index). `holdout` lists the (volume, slice)
      pairs of the trained low-resolution plane that must not be trained on (empty
      when the method does not hold out, see `holds_out`).
  holds_out: bool (optional, default True)
      Whether `make_source` can keep the slices `holdout` names out of training.
      False for a method whose examples cross every low-resolution-plane slice (the
      in-plane slices SMORE and the autoencoder train on): the end-of-training check
      (`holdout.check`) then still super-resolves the slice but does not call it held out.
  init_state(config, rng) -> state
      A pytree with `.step` and `.params` ({network: params}), usually a
      `train_state.TrainState`; other state (batch statistics) in fields of its own.
      Traced under jit; `rng` is an 'rbg' key. Checkpoints hold it whole.
  inference_params(state) -> params (optional)
      What `make_sample_fn`'s `sample`, `super_resolve` and the held-out check get,
      from the train state or from a checkpoint's state restored as a dict of its
      fields; default `train_state.inference_params` (`params`, with `ema_params` in
      place where kept). A method keeping more than params combines here what its
      networks apply (the autoencoder: weights and batch statistics).
  legacy_checkpoint(abstract_state) -> (target, upgrade) (optional)
      For a method whose state layout changed: the restore target of the older layout
      and the function turning what it restores into the current state, so a run saved
      before resumes (`checkpointing.restore`).
  make_train_step(config) -> train_step(state, batch) -> (state, metrics)
      Pure; jitted by the driver with the state donated, the batch sharded over the
      'data' mesh axis. Metrics are scalars named 'loss/...' or 'grad_norm/...'.
  make_sample_fn(config) -> sample(params, batch) -> {column title: [N, H, W, 1]}
      The pictures of `samples/step_*.png` for a fixed batch of up to 8 examples;
      jitted by the driver with everything replicated.
  super_resolve(params, config, prepared, options) -> np.ndarray
      The isotropic volume, in the normalised units of `prepared.normalizer`, on
      `prepared`'s grid (`data.preprocess.PreparedInput`); `options` is a
      `volume_srr.SROptions` (`options.resolve(config)` fills it from `config.eval`;
      `options.window(...)` is the `srr.Window` of a sliding window). Per-slice
      methods build it with `volume_srr.reconstruct_planes`. Values need not stay in [-1, 1]; voxels
      beyond the intensity window get the input's values back in the shared
      inference (`data.intensity.to_scan_units`), so no method handles them.
      With several processes every process calls it with the same params (host or single-device arrays) and input: it may split the
      work over `volume_srr.default_mesh()` (all devices of all processes) or
      compute on its own device.
  progress_metrics: tuple[str, ...] (optional)
      Metric names shown on the progress bar.
  resolve_config(config) -> None (optional)
      Fills the method's 'auto' config fields in place once the training volumes are
      prepared, before the run's config.json is written, and in a run's config loaded
      for inference (CLADE: ``eval.planes``).
  config_ranges: {dotted field: config_validation.Range} (optional)
  config_enums: {dotted field: (allowed values, ...)} (optional)
      The method's own config fields (everything its config adds to
      `clade_jax.configs.base`), checked before any work starts like the shared ones
      in `config_validation.RANGES` / `ENUMS`; an entry for a shared field replaces
      the shared check (SMORE's `train.num_steps` >= 1).

Shared code never imports a method module by name, so a new method touches its own
module and its config only.
"""

from __future__ import annotations

import importlib
import pkgutil
from typing import Any

DEFAULT = "clade"  # Workdirs written before `config.method` existed hold CLADE runs.

_registered: dict[str, Any] = {}


class UnknownMethodError(ValueError):
  """`config.method` names no method."""


def register(name: str, method: Any) -> None:
  """Makes `get(name)` return `method` (a module or any object with the attributes)."""
  _registered[name] = method


def available() -> list[str]:
  """Names `get` accepts: the modules of this package and the registered methods."""
  modules = [m.name for m in pkgutil.iter_modules(__path__) if not m.name.startswith("_")]
  return sorted(set(modules) | set(_registered))


def get(name: str) -> Any:
  """The method called `name`.

  Raises:
    UnknownMethodError: no such method; the message lists the available ones.
  """
  if name in _registered:
    return _registered[name]
  if name in available():
    return importlib.import_module(f"{__name__}.{name}")
  raise UnknownMethodError(
      f"config.method={name!r} is not a method; use one of {', '.join(available())}")


def of(config) -> Any:
  """The method a config (or a workdir's config.json) names."""
  return get(config.get("method", DEFAULT))
