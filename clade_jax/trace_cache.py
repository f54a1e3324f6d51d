"""Traced programs kept on disk, so a re-run skips Python tracing as well as compiling.

The compilation cache (`compilation_cache`) saves XLA's compile, but every run still
traces its train step in Python and lowers it to StableHLO before it can look the
compiled program up: on a CPU that was 2.1 of the demo's 8.7 s second-run start-up
(benchmarks/RESULTS.md). A `Program` saves what tracing produced as a `jax.export`
artefact beside the compilation cache and loads it on the next run.

A saved trace is reused only when nothing that could change it has changed: its key
covers the caller's key (the resolved config), the source of every clade_jax module,
the versions of the packages that trace, the devices, the JAX flags that change
numerics, and the arguments' shapes, dtypes and shardings. Anything else (an edited
module outside clade_jax that a method imports, say) needs the cache cleared or turned
off (`--jit_cache=none`).
"""

from __future__ import annotations

import functools
import hashlib
import importlib.metadata
import os
import pickle
import threading
from typing import Any, Callable, Sequence

import jax

from clade_jax import atomic

SUBDIRECTORY = "traces"
FORMAT = 1  # Bumped when the file layout below changes.
_PACKAGES = ("jax", "jaxlib", "flax", "optax", "numpy", "ml_collections")


@functools.cache
def code_fingerprint() -> str:
  """A hash of every clade_jax source file: an edit anywhere invalidates every trace."""
  root = os.path.dirname(os.path.abspath(__file__))
  digest = hashlib.sha256()
  for directory, _, files in sorted(os.walk(root)):
    for name in sorted(files):
      if name.endswith(".py"):
        path = os.path.join(directory, name)
        digest.update(os.path.relpath(path, root).encode())
        with open(path, "rb") as f:
          digest.update(f.read())
  return digest.hexdigest()


@functools.cache
def _environment() -> str:
  versions = []
  for name in _PACKAGES:
    try:
      versions.append(f"{name}={importlib.metadata.version(name)}")
    except importlib.metadata.PackageNotFoundError:
      versions.append(f"{name}=?")
  devices = [f"{d.platform}:{d.device_kind}" for d in jax.devices()]
  flags = {name: getattr(jax.config, name) for name in (
      "jax_enable_x64", "jax_default_matmul_precision", "jax_threefry_partitionable")}
  return repr((FORMAT, code_fingerprint(), versions, devices, jax.process_count(), flags))


def _leaf_signature(x) -> tuple:
  """What an executable is specialised to: shape, dtype, weak type and sharding."""
  return (tuple(x.shape), x.dtype, bool(getattr(x, "weak_type", False)),
          getattr(x, "sharding", None))


def _describe(sharding) -> str:
  """A sharding as text that is the same in every run (a mesh's devices by id)."""
  mesh = getattr(sharding, "mesh", None)
  if mesh is None:
    return repr(sharding)
  return repr((dict(mesh.shape), [d.id for d in mesh.devices.flat], sharding.spec))


class Program:
  """`jax.jit(fun, ...)` whose traces persist in `directory` (no directory: plain jit).

  One program per argument signature, compiled ahead of time on the first call or by
  `compile`, which is safe to run in a background thread (its own lock per program)
  while the caller prepares the arguments.

  Attributes:
    name: the file name's prefix (the jitted function's role: 'train_step', ...).
  """

  def __init__(self, fun: Callable, *, name: str, key: str, directory: str | None,
               in_shardings: Sequence[Any], out_sharding: Any,
               donate_argnums: Sequence[int] = ()):
    """
    Args:
      fun: a pure function of positional pytree arguments.
      name: the program's role, for file names and messages.
      key: everything outside the arguments and clade_jax's code that decides what
        `fun` traces to (the resolved config, the convolution formulation).
      directory: where traces are saved; None traces every run (plain `jax.jit`).
      in_shardings: one sharding per argument, for all of its leaves.
      out_sharding: one sharding for every output leaf.
      donate_argnums: arguments whose buffers the outputs may reuse.
    """
    self.name = name
    self._fun, self._key, self._directory = fun, key, directory
    self._in_shardings, self._out_sharding = tuple(in_shardings), out_sharding
    self._donate = tuple(donate_argnums)
    self._compiled: dict[tuple, Callable] = {}
    self._exports: dict[str, tuple] = {}  # Loaded or traced, by file.
    self._lock = threading.Lock()

  def __call__(self, *args):
    return self.compile(*args)(*args)

  def compile(self, *args) -> Callable:
    """The executable for `args`' signature (arrays or `jax.ShapeDtypeStruct`s)."""
    leaves, tree = jax.tree.flatten(args)
    signature = (tree, tuple(map(_leaf_signature, leaves)))
    with self._lock:
      if signature not in self._compiled:
        self._compiled[signature] = self._build(args, leaves, tree)
      return self._compiled[signature]

  def last_arguments(self) -> tuple | None:
    """The argument specs this program was last compiled for, by any run with the same
    key and environment (None if none): a re-run can start compiling before it has
    loaded the data that decides them."""
    if self._directory is None:
      return None
    try:
      with open(self._last_path(), "rb") as f:
        tree, avals = pickle.load(f)
      leaves = [jax.ShapeDtypeStruct(shape, dtype, weak_type=weak) for shape, dtype, weak in avals]
      args = jax.tree.unflatten(tree, leaves)
    except (OSError, EOFError, ValueError, TypeError, pickle.UnpicklingError, AttributeError,
            ImportError):
      return None
    if len(args) != len(self._in_shardings):
      return None
    return tuple(jax.tree.map(lambda x, s=sharding: jax.ShapeDtypeStruct(
        x.shape, x.dtype, sharding=s, weak_type=x.weak_type), arg)
                 for arg, sharding in zip(args, self._in_shardings))

  def _last_path(self) -> str:
    digest = hashlib.sha256(repr((self.name, self._key, _environment())).encode()).hexdigest()
    return os.path.join(self._directory, SUBDIRECTORY, f"{self.name}-{digest[:32]}.last")

  def _remember(self, leaves, tree) -> None:
    avals = [(tuple(x.shape), str(x.dtype), bool(getattr(x, "weak_type", False)))
             for x in leaves]
    try:
      with atomic.atomic_path(self._last_path()) as tmp, open(tmp, "wb") as f:
        pickle.dump((tree, avals), f)
    except OSError:
      pass

  def out_shapes(self, *args):
    """The outputs' shapes and dtypes, from a saved trace when there is one."""
    if self._directory is None:
      return jax.eval_shape(self._fun, *args)
    with self._lock:
      exported, out_tree = self._exported(*jax.tree.flatten(args))
    return jax.tree.unflatten(out_tree, [
        jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=self._out_sharding,
                             weak_type=a.weak_type)
        for a in exported.out_avals])

  def _build(self, args, leaves, tree) -> Callable:
    if self._directory is None:
      jitted = jax.jit(self._fun, in_shardings=self._in_shardings,
                       out_shardings=self._out_sharding, donate_argnums=self._donate)
      return jitted.lower(*args).compile()
    exported, out_tree = self._exported(leaves, tree)
    self._remember(leaves, tree)
    counts = [arg.num_leaves for arg in tree.children()]
    flat_donate = [sum(counts[:i]) + j for i in self._donate for j in range(counts[i])]
    executable = jax.jit(exported.call, in_shardings=self._flat_in_shardings(tree),
                         out_shardings=self._out_sharding,
                         donate_argnums=flat_donate).lower(*leaves).compile()

    def run(*call_args):
      return jax.tree.unflatten(out_tree, executable(*jax.tree.leaves(call_args)))
    return run

  def _flat_in_shardings(self, tree) -> list:
    """Each argument's sharding, once per leaf of it (`tree`: the arguments' treedef)."""
    return [sharding for arg, sharding in zip(tree.children(), self._in_shardings)
            for _ in range(arg.num_leaves)]

  def _path(self, leaves, tree) -> str:
    key = repr((self.name, self._key, _environment(), str(tree),
                [(x.shape, str(x.dtype), bool(getattr(x, "weak_type", False)), _describe(s))
                 for x, s in zip(leaves, self._flat_in_shardings(tree))],
                self._donate, _describe(self._out_sharding)))
    digest = hashlib.sha256(key.encode()).hexdigest()[:32]
    return os.path.join(self._directory, SUBDIRECTORY, f"{self.name}-{digest}.jaxexport")

  def _exported(self, leaves, tree):
    """(the exported program over flat leaves, its outputs' tree): loaded, else traced."""
    path = self._path(leaves, tree)
    if path not in self._exports:
      self._exports[path] = self._load_or_trace(path, leaves, tree)
    return self._exports[path]

  def _load_or_trace(self, path, leaves, tree):
    try:
      with open(path, "rb") as f:
        saved = pickle.load(f)
      return jax.export.deserialize(bytearray(saved["exported"])), saved["out_tree"]
    except (OSError, EOFError, KeyError, ValueError, pickle.UnpicklingError, AttributeError,
            ImportError):
      pass  # Missing, or unreadable (written by another version): trace again.
    out_tree = None

    def flat_fun(*flat_args):
      nonlocal out_tree
      outs, out_tree = jax.tree.flatten(self._fun(*jax.tree.unflatten(tree, flat_args)))
      return outs

    shardings = self._flat_in_shardings(tree)
    specs = [jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s,
                                  weak_type=bool(getattr(x, "weak_type", False)))
             for x, s in zip(leaves, shardings)]
    exported = jax.export.export(jax.jit(flat_fun, in_shardings=shardings,
                                         out_shardings=self._out_sharding))(*specs)
    try:
      with atomic.atomic_path(path) as tmp, open(tmp, "wb") as f:
        pickle.dump({"exported": bytes(exported.serialize()), "out_tree": out_tree}, f)
    except OSError:
      pass  # A read-only cache: trace again next time, never fail the run.
    return exported, out_tree
