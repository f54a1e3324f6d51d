"""Several processes (hosts), one program: JAX's distributed runtime, as the driver uses it.

JAX is multi-controller: every process runs this same program on its own devices, and
a jitted function over the global 'data' mesh is one program that all processes must
run together, in the same order. What differs per process is only what it feeds in
(its rows of the global batch) and what it writes (process 0 writes logs, configs and
figures). Checkpoints are written and read by all processes together (Orbax).

`initialize` starts the runtime from explicit values, environment variables or, where
JAX can detect them, the cluster's own (SLURM, Open MPI, Cloud TPU, Kubernetes).
On CPU, cross-process collectives use gloo (JAX's default), which is how the tests run
2 processes on one machine.
"""

from __future__ import annotations

import dataclasses
import os

import jax
import numpy as np
from jax.experimental import multihost_utils

# JAX reads JAX_COORDINATOR_ADDRESS itself; these two complete it for launchers that
# JAX does not detect (a plain shell loop, a custom scheduler).
NUM_PROCESSES_ENV = "JAX_NUM_PROCESSES"
PROCESS_ID_ENV = "JAX_PROCESS_ID"
COORDINATOR_ENV = "JAX_COORDINATOR_ADDRESS"


class DistributedError(ValueError):
  """Distributed settings that cannot work; the message names the flag or variable."""


@dataclasses.dataclass(frozen=True)
class Settings:
  """What `jax.distributed.initialize` is given; None leaves it to JAX's detection."""

  coordinator_address: str | None = None
  num_processes: int | None = None
  process_id: int | None = None


def _env_int(name: str) -> int | None:
  text = os.environ.get(name, "").strip()
  if not text:
    return None
  try:
    return int(text)
  except ValueError:
    raise DistributedError(f"${name}={text!r} is not an integer") from None


def resolve(coordinator_address: str | None = None, num_processes: int | None = None,
            process_id: int | None = None) -> Settings:
  """Explicit values first, then $JAX_COORDINATOR_ADDRESS, $JAX_NUM_PROCESSES, $JAX_PROCESS_ID.

  Values still None are left to JAX's cluster detection, which fills all three on
  SLURM, Open MPI and Cloud TPU; elsewhere all three must be given.

  Raises:
    DistributedError: a non-integer variable, fewer than one process, or a process id
      outside [0, num_processes).
  """
  settings = Settings(
      coordinator_address or os.environ.get(COORDINATOR_ENV) or None,
      num_processes if num_processes is not None else _env_int(NUM_PROCESSES_ENV),
      process_id if process_id is not None else _env_int(PROCESS_ID_ENV))
  count, index = settings.num_processes, settings.process_id
  if count is not None and count < 1:
    raise DistributedError(f"num_processes={count} must be >= 1")
  if index is not None and (index < 0 or (count is not None and index >= count)):
    raise DistributedError(f"process_id={index} must be in [0, num_processes"
                           f"{'' if count is None else '=' + str(count)})")
  return settings


def initialize(coordinator_address: str | None = None, num_processes: int | None = None,
               process_id: int | None = None) -> None:
  """Starts JAX's distributed runtime; call it before anything else touches JAX.

  Args:
    coordinator_address: host:port of process 0, reachable from every process.
    num_processes: total number of processes.
    process_id: this process's index in [0, num_processes).

  Raises:
    DistributedError: see `resolve`; or values that neither the arguments, the
      environment nor JAX's cluster detection provide.
  """
  settings = resolve(coordinator_address, num_processes, process_id)
  try:
    jax.distributed.initialize(**dataclasses.asdict(settings))
  except (ValueError, TypeError) as e:  # JAX names what it could not find.
    raise DistributedError(
        f"jax.distributed.initialize: {e} (no SLURM, Open MPI or Cloud TPU environment to "
        f"detect it from: pass --coordinator_address, --num_processes and --process_id, or "
        f"set ${COORDINATOR_ENV}, ${NUM_PROCESSES_ENV} and ${PROCESS_ID_ENV})") from None


def start(multihost: bool = False, coordinator_address: str | None = None,
          num_processes: int | None = None, process_id: int | None = None) -> bool:
  """What every command's --multihost flags do: `initialize` when asked, else nothing.

  Giving any of the three values implies ``multihost``, so a launcher that passes them
  need not also pass the switch.

  Returns:
    Whether the distributed runtime was started.

  Raises:
    DistributedError: see `initialize`.
  """
  cluster = (coordinator_address, num_processes, process_id)
  if not multihost and all(value is None for value in cluster):
    return False
  initialize(*cluster)
  return True


def is_main() -> bool:
  """Whether this process writes the run's files (logs, configs, figures)."""
  return jax.process_index() == 0


def batch_shard(sharding: jax.sharding.Sharding, global_batch: int) -> tuple[int, int]:
  """Which block of the global batch this process feeds: (block index, block count).

  `jax.make_array_from_process_local_data` places a process's rows on its own devices;
  the rows those devices hold under `sharding` must be one contiguous block, and its
  position decides which examples this process reads, so that the global batch is
  the same, row for row, whatever the number of processes.

  Raises:
    ValueError: this process's devices hold rows that are not one block.
  """
  rows = set()
  for device, index in sharding.devices_indices_map((global_batch,)).items():
    if device.process_index == jax.process_index():
      rows.update(range(*index[0].indices(global_batch)))
  rows = sorted(rows)
  count = global_batch // len(rows)
  if rows != list(range(rows[0], rows[0] + len(rows))) or rows[0] % len(rows):
    raise ValueError(f"process {jax.process_index()} holds batch rows {rows[0]}..{rows[-1]} "
                     "that are not one block of the global batch: use a mesh in process "
                     "order (jax.make_mesh)")
  return rows[0] // len(rows), count


def agree(flag: bool) -> bool:
  """True on every process when `flag` is True on any (a collective: all must call it)."""
  if jax.process_count() == 1:
    return bool(flag)
  flags = multihost_utils.process_allgather(np.asarray([flag], np.int32))
  return bool(np.any(flags))


def to_host(array) -> np.ndarray:
  """A numpy copy of a (possibly multi-process) array; all processes call it together
  when the array spans several."""
  if not isinstance(array, jax.Array) or array.is_fully_addressable:
    return np.asarray(array)
  if array.is_fully_replicated:
    return np.asarray(array.addressable_data(0))
  return np.asarray(multihost_utils.process_allgather(array, tiled=True))


def replicate(tree, mesh: jax.sharding.Mesh):
  """`tree` replicated over `mesh`; every process calls it with the same values.

  JAX copies no device array to another process's devices, so where `mesh` spans
  several processes the leaves go through host memory first.
  """
  sharding = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec())
  if len({d.process_index for d in mesh.devices.flat}) > 1:
    tree = jax.tree.map(to_host, tree)
  return jax.device_put(tree, sharding)
