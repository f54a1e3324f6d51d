"""The train state every method keeps: one pytree, checkpointed whole."""

from __future__ import annotations

from typing import Any

import flax
import jax
import jax.numpy as jnp
import optax


@flax.struct.dataclass
class TrainState:
  """Params of all of a method's networks under one optax state.

  Attributes:
    step: updates done so far.
    params: {network name: params}; the network that super-resolves is among them.
    opt_state: the one optimiser's state over all of `params`.
  """

  step: jax.Array
  params: dict[str, Any]
  opt_state: optax.OptState


@flax.struct.dataclass
class EmaTrainState(TrainState):
  """A TrainState that also keeps an exponential moving average of some networks.

  Attributes:
    ema_params: {network name: params}, for a subset of `params`' networks: their
      weights averaged over the updates (`ema_update`). Samples, the held-out figure
      and inference use them in place of the raw weights (`inference_params`).
  """

  ema_params: dict[str, Any]


def inference_params(state) -> dict[str, Any]:
  """The params to super-resolve with: the averaged weights where the state has them.

  Args:
    state: a `TrainState`, an `EmaTrainState`, or either restored as a plain dict
      (Orbax without a target).
  """
  get = state.get if isinstance(state, dict) else lambda name: getattr(state, name, None)
  return {**get("params"), **(get("ema_params") or {})}


def params_for_inference(method, state) -> dict[str, Any]:
  """What `method` super-resolves with from a train state (or one restored as a dict).

  The method's own `inference_params(state)` where it keeps more than params (batch
  statistics), else `inference_params` above.
  """
  return getattr(method, "inference_params", inference_params)(state)


def ema_decay_at(decay: float, step: jax.Array) -> jax.Array:
  """The decay of update number `step` (0-based): min(decay, (1 + step) / (10 + step)).

  The warm-up (TensorFlow's ExponentialMovingAverage with num_updates) keeps the
  average from remembering the random initialisation: with a fixed 0.999, half of the
  average would still be the initial weights after 700 steps.
  """
  step = jnp.asarray(step, jnp.float32)
  return jnp.minimum(decay, (1.0 + step) / (10.0 + step))


def ema_update(ema: dict[str, Any], params: dict[str, Any], decay: float,
               step: jax.Array) -> dict[str, Any]:
  """``ema <- d ema + (1 - d) params`` for the networks in `ema`, d = `ema_decay_at`."""
  d = ema_decay_at(decay, step)
  return {name: jax.tree.map(lambda e, p: d * e + (1.0 - d) * p, ema[name], params[name])
          for name in ema}
