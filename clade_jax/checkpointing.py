"""Every Orbax call of the project: save/restore train state and data-iterator state.

A workdir holds `config.json` (the run's configuration, written once) and
`checkpoints/<step>/` with two items: `state` (the method's train state: params of all
its networks, the optax state, the step) and `data` (the grain iterator state, as JSON).
With several processes, all of them call `manager`, `save` and `restore` together
(Orbax coordinates the writes); the data state is the same on every process (the
number of batches drawn), so a checkpoint restores under any process count.
Nothing here knows any method: which config fields make a checkpoint unusable is the
method's `architecture_fields`.
"""

from __future__ import annotations

import json
import os

import jax
import ml_collections
import orbax.checkpoint as ocp

from clade_jax import atomic
from clade_jax import methods
from clade_jax import train_state
from clade_jax.methods import DEFAULT as DEFAULT_METHOD

CONFIG_FILE = "config.json"


class CheckpointError(RuntimeError):
  """A workdir whose checkpoints cannot be used; the message says why."""


def manager(workdir: str, keep: int = 3) -> ocp.CheckpointManager:
  return ocp.CheckpointManager(
      os.path.join(os.path.abspath(workdir), "checkpoints"),
      options=ocp.CheckpointManagerOptions(max_to_keep=keep, create=True))


def save(mngr: ocp.CheckpointManager, step: int, state, data_state: dict) -> None:
  mngr.save(step, args=ocp.args.Composite(
      state=ocp.args.StandardSave(state), data=ocp.args.JsonSave(data_state)))


def restore(mngr: ocp.CheckpointManager, abstract_state, step: int | None = None,
            legacy=None):
  """Restores (state, data_state) at `step` (default latest) onto `abstract_state`'s
  shapes and shardings.

  Args:
    mngr: the workdir's `manager`.
    abstract_state: the method's train state as `abstract_like` gives it.
    step: checkpoint step; default the latest.
    legacy: the method's `legacy_checkpoint`, if any: ``legacy(abstract_state)`` gives
      ``(target, upgrade)`` for checkpoints of an older layout of its state, tried
      when the saved state does not fit `abstract_state`.

  Raises:
    CheckpointError: the saved state fits neither layout.
  """
  step = mngr.latest_step() if step is None else step
  layouts = [(abstract_state, lambda state: state)]
  if legacy is not None:
    layouts.append(legacy(abstract_state))
  for target, upgrade in layouts:
    try:
      restored = mngr.restore(step, args=ocp.args.Composite(
          state=ocp.args.StandardRestore(target), data=ocp.args.JsonRestore()))
    except ValueError as e:  # Orbax: the saved tree differs from the target's.
      error = e
      continue
    return upgrade(restored["state"]), restored["data"]
  first_line = str(error).splitlines()[0] if str(error) else ""
  raise CheckpointError(f"{mngr.directory}: checkpoint {step} does not fit this code's train "
                        f"state ({first_line}); train into a new --workdir")


def checkpoint_steps(workdir: str) -> list[int]:
  """Steps with a finished checkpoint in `workdir` (creates nothing)."""
  directory = os.path.join(os.path.abspath(workdir), "checkpoints")
  if not os.path.isdir(directory):
    return []
  mngr = _reader(directory)
  steps = sorted(mngr.all_steps())
  mngr.close()
  return steps


def _reader(directory: str) -> ocp.CheckpointManager:
  # Not read_only=True: Orbax then logs two warnings per manager. A manager that
  # never saves and does not create its directory writes nothing anyway. The handlers
  # let it read the items' metadata.
  return ocp.CheckpointManager(
      directory, options=ocp.CheckpointManagerOptions(create=False),
      item_handlers={"state": ocp.StandardCheckpointHandler(),
                     "data": ocp.JsonCheckpointHandler()})


def _local_target(mngr: ocp.CheckpointManager, step: int):
  """The saved state's shapes on this process's first device.

  Orbax would otherwise restore onto the shardings it was saved with, which name the
  devices of the run that saved it (refused as a topology mismatch on any other
  number of devices or processes).
  """
  device = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
  return jax.tree.map(lambda m: jax.ShapeDtypeStruct(m.shape, m.dtype, sharding=device),
                      mngr.item_metadata(step)["state"].tree)


def restore_params(workdir: str, step: int | None = None, averaged: bool = True):
  """Loads (params, config) of a trained run for inference; creates nothing.

  The whole saved state is read and the run's method picks what inference needs
  (`train_state.params_for_inference`), so nothing here knows what a method keeps.

  Args:
    workdir: a training workdir (config.json and checkpoints/).
    step: checkpoint step; default the latest.
    averaged: where the state keeps averaged weights of some networks
      (`train_state.EmaTrainState`), return those in place of the raw ones.

  Raises:
    CheckpointError: not a workdir, no checkpoint (or not `step`), an unreadable
      checkpoint, or a config naming no method; the message names the workdir and the
      step.
  """
  if not os.path.isdir(workdir):
    raise CheckpointError(f"{workdir}: no such directory")
  config = load_config(workdir)
  try:
    method = methods.of(config)
  except methods.UnknownMethodError as e:
    raise CheckpointError(f"{workdir}: {e}") from None
  steps = checkpoint_steps(workdir)
  if not steps:
    raise CheckpointError(f"{workdir}: no checkpoint found (train first)")
  if step is None:
    step = steps[-1]
  elif step not in steps:
    raise CheckpointError(
        f"{workdir}: no checkpoint at step {step} (have {', '.join(map(str, steps))})")
  mngr = _reader(os.path.join(os.path.abspath(workdir), "checkpoints"))
  try:
    restored = mngr.restore(step, args=ocp.args.Composite(
        state=ocp.args.StandardRestore(_local_target(mngr, step))))
  except Exception as e:  # Orbax raises many types for damaged checkpoints.
    first_line = str(e).splitlines()[0] if str(e) else ""
    raise CheckpointError(f"{workdir}: cannot restore checkpoint {step} "
                          f"({type(e).__name__}: {first_line})") from None
  finally:
    mngr.close()
  state = restored["state"]
  if not isinstance(state.get("params"), dict) or not state["params"]:
    raise CheckpointError(f"{workdir}: checkpoint {step} holds no network parameters")
  if not averaged:  # The raw weights, where the run also kept averaged ones.
    state = {name: value for name, value in state.items() if name != "ema_params"}
  return train_state.params_for_inference(method, state), config


def write_config(workdir: str, config: ml_collections.ConfigDict,
                 architecture_fields=()) -> None:
  """Stores the run's config, or checks a resumed run uses a compatible one.

  Every process checks (so all stop together); process 0 alone writes.

  Args:
    workdir: the run directory.
    config: the run's config.
    architecture_fields: dotted fields (the method's) that change parameter shapes.

  Raises:
    CheckpointError: the workdir holds a run of another method, or one that differs in
      an architecture field.
  """
  path = os.path.join(workdir, CONFIG_FILE)
  if os.path.exists(path):
    check_compatible(load_config(workdir), config, workdir, architecture_fields)
  if jax.process_index() == 0:
    os.makedirs(workdir, exist_ok=True)
    atomic.write_text(path, config.to_json(indent=2))


def load_config(workdir: str) -> ml_collections.ConfigDict:
  path = os.path.join(workdir, CONFIG_FILE)
  if not os.path.exists(path):
    raise CheckpointError(f"{workdir}: not a training workdir (no {CONFIG_FILE})")
  with open(path) as f:
    return ml_collections.ConfigDict(json.load(f))


def get_field(config, dotted: str):
  """``config.a.b`` for ``dotted = 'a.b'``; None where a level is missing."""
  for key in dotted.split("."):
    if config is None or key not in config:
      return None
    config = config[key]
  return config


def check_compatible(saved, config, workdir: str, architecture_fields=()) -> None:
  for field in ("method", *architecture_fields):
    old, new = get_field(saved, field), get_field(config, field)
    if field == "method":  # Configs from before `method` existed hold CLADE runs.
      old, new = old or DEFAULT_METHOD, new or DEFAULT_METHOD
    if old is None and not new:
      continue  # A field newer than the run, at its off value (False, 0): what it ran.
    if old != new:
      raise CheckpointError(
          f"{workdir}: holds a run with {field}={old!r} but the config says {new!r}; "
          "use another --workdir or the original config")


def abstract_like(tree):
  """ShapeDtypeStructs (with shardings) of a pytree of arrays, for restoring."""
  return jax.tree.map(ocp.utils.to_shape_dtype_struct, tree)
