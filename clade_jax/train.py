"""The training driver every method shares: `train_and_evaluate(config, workdir)`.

It owns what does not depend on the method: the 'data' mesh (batch sharded, params
replicated; global-view `jit` averages the gradients), the grain pipeline and its
per-host shards, resuming from the latest checkpoint, Ctrl-C, the NaN stop, the metric
log, the sample grids and the held-out figure. What a method trains and how is
`clade_jax.methods.<config.method>` (see that package's docstring for the contract).

Every program (init, train step, sample grids) is a `jax.jit` with its shardings, the
train step donating its state; the command lines turn on JAX's persistent compilation
cache (`compilation_cache`), so a re-run or a resume loads the compiled programs
instead of compiling them again.

With several processes (`clade_jax.distributed`) every process runs this same code:
the mesh spans all their devices, each process samples only its block of every global
batch, all run every jitted program (train step, sample grids, the held-out
reconstruction) and save checkpoints together, and process 0 alone writes the config,
provenance, metrics and pictures.
"""

from __future__ import annotations

import dataclasses
import os
import signal
import time
from typing import Any, Callable

import grain
import jax
import ml_collections
import numpy as np
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P
from tqdm import tqdm

from clade_jax import checkpointing
from clade_jax import config_validation
from clade_jax import distributed
from clade_jax import holdout
from clade_jax import methods
from clade_jax import metric_writer
from clade_jax import provenance
from clade_jax.train_state import params_for_inference
from clade_jax.config_validation import ConfigError
from clade_jax.data import patches as patches_lib
from clade_jax.data import profile_estimation
from clade_jax.data import volume as volume_lib


PROVENANCE_FILE = "provenance.json"


class TrainingDiverged(FloatingPointError):
  """A loss became NaN or Inf."""


def init_key(seed: int) -> jax.Array:
  """The key that initialises the networks.

  The 'rbg' generator compiles in a few seconds where threefry takes ~20 s on CPU for
  the many parameter shapes of four networks; the key is used for nothing else.
  """
  return jax.random.key(seed, impl="rbg")


def build_data(config, method=None):
  """Prepared volumes and the method's training source (host work: loading, resampling)."""
  method = method or methods.of(config)
  if config.data.make_demo:
    from clade_jax.data import demo  # nilearn is only needed for the demo.
    demo.ensure_demo_data(os.path.dirname(os.path.normpath(config.data.root)) or ".")
  volumes = patches_lib.prepare_volumes(config.data)
  # Callers that skipped `train_and_evaluate`'s resolution: from the volumes at hand.
  profile_estimation.resolve_config(config, [
      volume_lib.Volume(v.scan.acquired, v.scan.acquired_affine, path=v.path) for v in volumes])
  if hasattr(method, "resolve_config"):  # The method's 'auto' fields, before config.json.
    method.resolve_config(config)
  return volumes, method.make_source(config, volumes, holdout.held_out(method, volumes))


def total_steps(config, source) -> int:
  if config.train.num_steps > 0:
    return config.train.num_steps
  return max(1, config.train.epochs * len(source) // config.train.batch_size)


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str,
                       started: float | None = None, progress: bool = True):
  """Trains (or resumes training) and writes checkpoints, metrics and pictures.

  Args:
    config: the run's configuration.
    workdir: where checkpoints, metrics and pictures go.
    started: `time.perf_counter()` when the command began, for the start-up time
      logged at the first step (`startup_seconds`); default: now.
    progress: show the progress bar (a cohort's log files want none).

  Returns:
    The final train state.

  Raises:
    ConfigError: a config field out of range or not one of its values (before any
      work starts), or a batch the devices cannot share.
  """
  started = time.perf_counter() if started is None else started
  method = methods.of(config)
  config_validation.validate(config, ranges=getattr(method, "config_ranges", None),
                             enums=getattr(method, "config_enums", None))
  # data.slice_profile='estimate': resolved from the scans once, here, so the config
  # saved with the run (and every program traced from it) holds the profile used.
  estimate = profile_estimation.resolve_config(config)
  if estimate:
    print(f"slice profile estimated from the data: {estimate['profile']}, "
          f"{estimate['thickness_mm']:.2f} mm thick (recorded in {PROVENANCE_FILE})")
  mesh = jax.make_mesh((jax.device_count(),), ("data",),
                       axis_types=(jax.sharding.AxisType.Auto,))
  replicated, batch_sharding = NamedSharding(mesh, P()), NamedSharding(mesh, P("data"))
  if config.train.batch_size % jax.device_count():
    raise ConfigError(f"train.batch_size={config.train.batch_size} must be divisible by the "
                      f"{jax.device_count()} devices")

  init_fn = jax.jit(lambda seed: method.init_state(config, init_key(seed)),
                    in_shardings=(replicated,), out_shardings=replicated)
  step_fn = jax.jit(method.make_train_step(config), in_shardings=(replicated, batch_sharding),
                    out_shardings=replicated, donate_argnums=(0,))
  # Replicated in and out: every process runs it, each can read the pictures.
  sample_fn = jax.jit(method.make_sample_fn(config), in_shardings=(replicated, replicated),
                      out_shardings=replicated)
  volumes, source = build_data(config, method)
  checkpointing.write_config(workdir, config, method.architecture_fields)
  truth = holdout.load_truth(config, volumes)  # A truth that does not fit fails now.
  if distributed.is_main():
    info = provenance.collect(config)
    info["processes"] = jax.process_count()
    if estimate:
      info["slice_profile_estimate"] = estimate
    provenance.write(os.path.join(workdir, PROVENANCE_FILE), info)
  run = _Run(config=config, workdir=workdir, method=method, volumes=volumes, source=source,
             truth=truth, num_steps=total_steps(config, source),
             batch_sharding=batch_sharding, replicated=replicated, step_fn=step_fn,
             sample_fn=sample_fn, started=started, progress=progress)
  return _train_loop(run, init_fn(np.uint32(config.seed)))


@dataclasses.dataclass(frozen=True)
class _Run:
  """What the train loop needs, fixed for the whole run."""
  config: ml_collections.ConfigDict
  workdir: str
  method: Any
  volumes: list
  source: Any  # The method's training examples (a grain random-access source).
  truth: Any  # The held-out truth, or None.
  num_steps: int
  batch_sharding: NamedSharding
  replicated: NamedSharding
  step_fn: Callable  # (state, global batch) -> (state, metrics); donates the state.
  sample_fn: Callable  # (inference params, batch) -> pictures.
  started: float  # `time.perf_counter()` when the command began.
  progress: bool


def _train_loop(run: _Run, state):
  """Trains from `state` (or the workdir's latest checkpoint) to `run.num_steps`."""
  config, workdir = run.config, run.workdir
  iterator = _batches(run)
  mngr = checkpointing.manager(workdir, keep=config.ckpt.keep)
  if mngr.latest_step() is not None:
    state, data_state = checkpointing.restore(mngr, checkpointing.abstract_like(state),
                                              legacy=getattr(run.method, "legacy_checkpoint", None))
    iterator.set_state(data_state)
  start = int(state.step)
  writer = (metric_writer.MetricWriter(workdir, resume_step=start)
            if distributed.is_main() else None)
  # The first (up to 8) examples of the global stream, the same on every process and for
  # any process count, so the grids show progress on the same inputs.
  sample_batch = jax.device_put(patches_lib.make_dataset(
      run.source, min(8, config.train.batch_size), seed=config.seed)[0], run.replicated)
  bar = tqdm(total=run.num_steps, initial=start, desc=f"training {run.method.describe(config)}",
             unit="step", disable=not (distributed.is_main() and run.progress),
             dynamic_ncols=True)
  stop = _Interrupt()
  step, stopping = start, False
  with stop:
    while step < run.num_steps and not stopping:
      batch = {k: jax.make_array_from_process_local_data(run.batch_sharding, v)
               for k, v in next(iterator).items()}
      state, metrics = run.step_fn(state, batch)
      step += 1
      bar.update(1)
      log = step % config.train.log_every == 0 or step == run.num_steps or step == start + 1
      save = step % config.ckpt.every == 0 or step == run.num_steps
      if log or save:  # A checkpoint must never hold NaN params.
        scalars = _check_finite(jax.device_get(metrics), step, workdir, mngr)
      if log:
        _log(run, writer, bar, step, scalars, first=step == start + 1)
      if step % config.train.sample_every == 0 or step == run.num_steps:
        _write_samples(run, state, sample_batch, step)
      if save:
        checkpointing.save(mngr, step, state, iterator.get_state())
      # Processes stop at the same step or the others would wait for them forever; with
      # several, they agree at log steps only, to keep a collective off every step.
      if jax.process_count() == 1:
        stopping = stop.requested
      elif log:
        stopping = distributed.agree(stop.requested)
  bar.close()
  if stopping and step > start:
    checkpointing.save(mngr, step, state, iterator.get_state())
    if distributed.is_main():
      print(f"interrupted: saved a checkpoint at step {step}; re-run the same command to "
            "resume")
  mngr.wait_until_finished()
  mngr.close()
  if writer:
    writer.close()
  if step >= run.num_steps:
    # Host copies of the replicated params: a method's super_resolve needs no knowledge
    # of the training mesh, and every process runs it (it may use all devices).
    params = jax.tree.map(distributed.to_host, params_for_inference(run.method, state))
    write_holdout_figure(run.method, params, run.volumes, config, workdir, run.truth)
  return state


def _batches(run: _Run):
  """This process's block of every global batch, as a resumable grain iterator."""
  config = run.config
  block, blocks = distributed.batch_shard(run.batch_sharding, config.train.batch_size)
  dataset = patches_lib.make_dataset(run.source, config.train.batch_size // blocks,
                                     seed=config.seed, shard_index=block, shard_count=blocks)
  return iter(dataset.to_iter_dataset(grain.ReadOptions(
      num_threads=config.data.num_threads, prefetch_buffer_size=config.data.prefetch)))


def _log(run: _Run, writer, bar, step: int, scalars: dict[str, float], first: bool) -> None:
  scalars["steps_per_second"] = bar.format_dict["rate"] or 0.0
  if first:  # Loading, compiling and one step: what a compilation cache saves.
    scalars["startup_seconds"] = time.perf_counter() - run.started
  if writer:
    writer.write_scalars(step, scalars)
  shown = getattr(run.method, "progress_metrics", ())
  bar.set_postfix({k.split("/")[-1]: f"{v:.3f}" for k, v in scalars.items() if k in shown})


def _write_samples(run: _Run, state, sample_batch, step: int) -> None:
  """Every process runs the sample program; process 0 saves the grid."""
  images = jax.tree.map(distributed.to_host,
                        run.sample_fn(params_for_inference(run.method, state), sample_batch))
  if distributed.is_main():
    from clade_jax import plotting  # pylint: disable=g-import-not-at-top
    plotting.patch_grid(images, os.path.join(run.workdir, "samples", f"step_{step:07d}.png"),
                        title=f"{run.method.describe(run.config)}, step {step}")


def write_holdout_figure(method, params, volumes, config, workdir, truth=None) -> str:
  """Super-resolves the held-out slice and saves input vs output (vs truth) as a PNG.

  With several processes, all call it (the reconstruction may span their devices) and
  process 0 writes the picture and the scores.
  """
  holdout.check(method, params, volumes, config, workdir, truth)
  return os.path.join(workdir, holdout.FIGURE)


def _check_finite(metrics, step, workdir, mngr) -> dict[str, float]:
  scalars = {k: float(v) for k, v in metrics.items()}
  bad = [k for k, v in scalars.items() if not np.isfinite(v)]
  if bad:
    last = mngr.latest_step()
    raise TrainingDiverged(
        f"training diverged at step {step}: {', '.join(bad)} is NaN/Inf; last good checkpoint: "
        f"{'step ' + str(last) if last is not None else 'none'} in {workdir}. Lower "
        "train.learning_rate or check the data.")
  return scalars


class _Interrupt:
  """Turns the first Ctrl-C into a request to stop after the current step."""

  def __init__(self):
    self.requested = False
    self._previous = None

  def __enter__(self):
    def handler(signum, frame):
      if self.requested:
        raise KeyboardInterrupt
      self.requested = True
      print("\nstopping after this step (Ctrl-C again to abort without saving)")
    try:
      self._previous = signal.signal(signal.SIGINT, handler)
    except ValueError:  # Not the main thread: leave signals alone.
      self._previous = None
    return self

  def __exit__(self, *exc):
    if self._previous is not None:
      signal.signal(signal.SIGINT, self._previous)
    return False
