"""The training driver every method shares: `train_and_evaluate(config, workdir)`.

It owns what does not depend on the method: the 'data' mesh (batch sharded, params
replicated; global-view `jit` averages the gradients), the grain pipeline and its
per-host shards, resuming from the latest checkpoint, Ctrl-C, the NaN stop, the metric
log, the sample grids and the held-out figure. What a method trains and how is
`clade_jax.methods.<config.method>` (see that package's docstring for the contract).

Start-up is kept short for re-runs and resumes: the programs' traces and executables
come from the caches the command lines turn on (`trace_cache`, `compilation_cache`),
and the train step compiles in a thread (from the start, for the arguments of the
config's previous run) while the data, the held-out truth and the initial state are
prepared.

With several processes (`clade_jax.distributed`) every process runs this same code:
the mesh spans all their devices, each process samples only its block of every global
batch, all run every jitted program (train step, sample grids, the held-out
reconstruction) and save checkpoints together, and process 0 alone writes the config,
provenance, metrics and pictures.
"""

from __future__ import annotations

import concurrent.futures
import os
import signal
import time

import grain
import jax
import ml_collections
import numpy as np
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P
from tqdm import tqdm

from clade_jax import checkpointing
from clade_jax import compilation_cache
from clade_jax import config_validation
from clade_jax import distributed
from clade_jax import holdout
from clade_jax import methods
from clade_jax import metric_writer
from clade_jax import provenance
from clade_jax import trace_cache
from clade_jax.train_state import inference_params
from clade_jax.config_validation import ConfigError
from clade_jax.data import patches as patches_lib
from clade_jax.data import profile_estimation
from clade_jax.data import volume as volume_lib
from clade_jax.models import convolution


PROVENANCE_FILE = "provenance.json"


class TrainingDiverged(FloatingPointError):
  """A loss became NaN or Inf."""


def init_key(seed: int) -> jax.Array:
  """The key that initialises the networks.

  The 'rbg' generator compiles in a few seconds where threefry takes ~20 s on CPU for
  the many parameter shapes of four networks; the key is used for nothing else.
  """
  return jax.random.key(seed, impl="rbg")


holdout_slice = holdout.holdout_slice


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
  return volumes, method.make_source(config, volumes, [holdout_slice(volumes)])


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

  conv_impl = convolution.resolve(config.model.get("conv_impl", "auto"))
  key = repr((config.to_json_best_effort(sort_keys=True), conv_impl))

  def program(fun, **options):
    return trace_cache.Program(fun, key=key, directory=compilation_cache.traces_directory(),
                               **options)

  init_fn = program(lambda seed: method.init_state(config, init_key(seed)), name="init_state",
                    in_shardings=(replicated,), out_sharding=replicated)
  step_fn = program(method.make_train_step(config), name="train_step",
                    in_shardings=(replicated, batch_sharding), out_sharding=replicated,
                    donate_argnums=(0,))
  # Replicated in and out: every process runs it, each can read the pictures.
  sample_fn = program(method.make_sample_fn(config), name="sample",
                      in_shardings=(replicated, replicated), out_sharding=replicated)
  seed = np.uint32(config.seed)
  # A re-run of this config starts compiling (or loading) the train step for the
  # arguments it had last time, before the data is loaded.
  previous = step_fn.last_arguments()
  if previous:
    _background(step_fn.compile, *previous)

  volumes, source = build_data(config, method)
  num_steps = total_steps(config, source)
  checkpointing.write_config(workdir, config, method.architecture_fields)
  batch_specs = {k: jax.ShapeDtypeStruct((config.train.batch_size, *v.shape[1:]), v.dtype,
                                         sharding=batch_sharding)
                 for k, v in patches_lib.make_dataset(source, 1, seed=config.seed)[0].items()}

  # The train step compiles, or loads from the caches, while the rest starts up: a
  # no-op once the compile started above is done, if it guessed the arguments right.
  compiling = _background(step_fn.compile, init_fn.out_shapes(seed), batch_specs)
  truth = holdout.load_truth(config, volumes)  # A truth that does not fit fails now.
  if distributed.is_main():
    info = provenance.collect(config)
    info["processes"] = jax.process_count()
    if estimate:
      info["slice_profile_estimate"] = estimate
    provenance.write(os.path.join(workdir, PROVENANCE_FILE), info)
  state = init_fn(seed)
  return _train_loop(config, workdir, method, volumes, source, num_steps, state,
                     step_fn, sample_fn, batch_sharding, replicated, started, truth,
                     compiling, progress)


def _background(fun, *args) -> concurrent.futures.Future:
  """Runs `fun(*args)` in a thread.

  A start-up error in the meantime still stops the run at once with its message; the
  process then exits when the thread is done (XLA cannot abandon a compile).
  """
  pool = concurrent.futures.ThreadPoolExecutor(max_workers=1)
  future = pool.submit(fun, *args)
  pool.shutdown(wait=False)
  return future


def _train_loop(config, workdir, method, volumes, source, num_steps, state, step_fn,
                sample_fn, batch_sharding, replicated, started, truth=None, compiling=None,
                progress=True):
  block, blocks = distributed.batch_shard(batch_sharding, config.train.batch_size)
  dataset = patches_lib.make_dataset(source, config.train.batch_size // blocks,
                                     seed=config.seed, shard_index=block, shard_count=blocks)
  iterator = iter(dataset.to_iter_dataset(grain.ReadOptions(
      num_threads=config.data.num_threads, prefetch_buffer_size=config.data.prefetch)))

  mngr = checkpointing.manager(workdir, keep=config.ckpt.keep)
  if mngr.latest_step() is not None:
    state, data_state = checkpointing.restore(mngr, checkpointing.abstract_like(state))
    iterator.set_state(data_state)
  start = int(state.step)
  is_main = distributed.is_main()
  writer = metric_writer.MetricWriter(workdir, resume_step=start) if is_main else None
  # The first (up to 8) examples of the global stream, the same on every process and for
  # any process count, so the grids show progress on the same inputs.
  shown_examples = min(8, config.train.batch_size)
  sample_batch = jax.device_put(
      patches_lib.make_dataset(source, shown_examples, seed=config.seed)[0], replicated)
  shown = getattr(method, "progress_metrics", ())
  name = method.describe(config)

  def to_global(local_batch):
    return {k: jax.make_array_from_process_local_data(batch_sharding, v)
            for k, v in local_batch.items()}

  if compiling is not None:
    compiling.result()  # Raises what compiling raised.
  bar = tqdm(total=num_steps, initial=start, desc=f"training {name}", unit="step",
             disable=not (is_main and progress), dynamic_ncols=True)
  stop = _Interrupt()
  step, stopping = start, False
  with stop:
    while step < num_steps and not stopping:
      state, metrics = step_fn(state, to_global(next(iterator)))
      step += 1
      bar.update(1)
      first = step == start + 1
      log = step % config.train.log_every == 0 or step == num_steps or first
      save = step % config.ckpt.every == 0 or step == num_steps
      if log or save:  # A checkpoint must never hold NaN params.
        scalars = _check_finite(jax.device_get(metrics), step, workdir, mngr)
      if log:
        scalars["steps_per_second"] = bar.format_dict["rate"] or 0.0
        if first:  # Loading, compiling and one step: what a compilation cache saves.
          scalars["startup_seconds"] = time.perf_counter() - started
        if writer:
          writer.write_scalars(step, scalars)
        bar.set_postfix({k.split("/")[-1]: f"{v:.3f}" for k, v in scalars.items()
                         if k in shown})
      if step % config.train.sample_every == 0 or step == num_steps:
        images = jax.tree.map(distributed.to_host, sample_fn(inference_params(state), sample_batch))
        if is_main:
          from clade_jax import plotting  # pylint: disable=g-import-not-at-top
          plotting.patch_grid(images, os.path.join(workdir, "samples", f"step_{step:07d}.png"),
                              title=f"{name}, step {step}")
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
    if is_main:
      print(f"interrupted: saved a checkpoint at step {step}; re-run the same command to "
            "resume")
  mngr.wait_until_finished()
  mngr.close()
  if writer:
    writer.close()
  if step >= num_steps:
    # Host copies of the replicated params: a method's super_resolve needs no knowledge
    # of the training mesh, and every process runs it (it may use all devices).
    params = jax.tree.map(distributed.to_host, inference_params(state))
    write_holdout_figure(method, params, volumes, config, workdir, truth)
  return state


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
