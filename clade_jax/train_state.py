"""The train state every method keeps: one pytree, checkpointed whole."""

from __future__ import annotations

from typing import Any

import flax
import jax
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
