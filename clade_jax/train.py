"""CLADE / CycleGAN training: one pure, jitted, data-parallel step and its driver.

The four networks (G_X: X -> Y super-resolves, G_Y: Y -> X degrades, D_X, D_Y) keep
their params in one pytree under one optax state. A single backward pass gives every
gradient: the generator loss sees the discriminators through `stop_gradient`, and the
discriminator loss sees the generated images through `stop_gradient`, so each network
only receives the gradient of its own objective.
"""

from __future__ import annotations

import functools
import os
import signal
from typing import Any

import flax
import flax.linen as nn
import grain
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P
from tqdm import tqdm

from clade_jax import checkpointing
from clade_jax import losses
from clade_jax import metric_writer
from clade_jax import plotting
from clade_jax.data import patches as patches_lib
from clade_jax.data import volume as volume_lib
from clade_jax.models import PatchDiscriminator, ResnetGenerator

NETWORKS = ("G_X", "G_Y", "D_X", "D_Y")


class TrainingDiverged(FloatingPointError):
  """A loss became NaN or Inf."""


class ConfigError(ValueError):
  """A configuration that cannot work; the message names the field."""


@flax.struct.dataclass
class TrainState:
  step: jax.Array
  params: dict[str, Any]
  opt_state: optax.OptState


def create_models(model_config) -> tuple[nn.Module, nn.Module]:
  # Configs saved before conv_impl/dtype existed read as the defaults.
  speed = dict(conv_impl=model_config.get("conv_impl", "auto"),
               dtype=model_config.get("dtype", "float32"))
  generator = ResnetGenerator(features=model_config.features,
                              num_blocks=model_config.num_blocks,
                              norm=model_config.generator_norm, **speed)
  discriminator = PatchDiscriminator(features=model_config.disc_features,
                                     num_layers=model_config.disc_layers, **speed)
  return generator, discriminator


def make_optimizer(train_config) -> optax.GradientTransformation:
  return optax.adam(train_config.learning_rate, b1=train_config.beta1, b2=train_config.beta2)


def init_key(seed: int) -> jax.Array:
  """The key that initialises the networks.

  The 'rbg' generator compiles in a few seconds where threefry takes ~20 s on CPU for
  the many parameter shapes of four networks; the key is used for nothing else.
  """
  return jax.random.key(seed, impl="rbg")


def init_state(config, rng: jax.Array) -> TrainState:
  generator, discriminator = create_models(config.model)
  p = config.data.patch_size
  dummy = jnp.zeros((1, p, p, 1), jnp.float32)
  logits = jax.eval_shape(discriminator.init_with_output, rng, dummy)[0]
  if 0 in logits.shape:
    raise ConfigError(
        f"data.patch_size={p} is too small for a PatchGAN with model.disc_layers="
        f"{config.model.disc_layers}: use fewer layers or larger patches")
  keys = dict(zip(NETWORKS, jax.random.split(rng, len(NETWORKS))))
  params = {name: (generator if name.startswith("G") else discriminator).init(
      keys[name], dummy)["params"] for name in NETWORKS}
  return TrainState(step=jnp.zeros((), jnp.int32), params=params,
                    opt_state=make_optimizer(config.train).init(params))


def compute_losses(params, batch, generator, discriminator, loss_config):
  """Total objective of all four networks and the per-term metrics."""
  g = lambda name, images: generator.apply({"params": params[name]}, images)
  frozen = jax.lax.stop_gradient(params)
  d_frozen = lambda name, images: discriminator.apply({"params": frozen[name]}, images)
  d = lambda name, images: discriminator.apply({"params": params[name]}, images)
  x, y = batch["x"], batch["y"]

  fake_y = g("G_X", x)  # Super-resolved LR patches.
  fake_x = g("G_Y", y)  # Degraded HR patches.
  cycled_x = g("G_Y", fake_y)
  cycled_y = g("G_X", fake_x)
  metrics = {}
  metrics["adversarial"] = (
      losses.generator_adversarial_loss(d_frozen("D_Y", fake_y), loss_config.gan)
      + losses.generator_adversarial_loss(d_frozen("D_X", fake_x), loss_config.gan))
  metrics["cycle"] = losses.l1(cycled_x, x) + losses.l1(cycled_y, y)
  generator_loss = metrics["adversarial"] + loss_config.cyc * metrics["cycle"]
  if loss_config.ident:
    metrics["identity"] = losses.l1(g("G_X", y), y) + losses.l1(g("G_Y", x), x)
    generator_loss += loss_config.ident * metrics["identity"]
  if loss_config.gmap:
    metrics["gmap"] = (losses.gradient_map_loss(x, cycled_x)
                       + losses.gradient_map_loss(y, cycled_y))
    generator_loss += loss_config.gmap * metrics["gmap"]

  sg = jax.lax.stop_gradient
  metrics["D_X"] = losses.discriminator_loss(d("D_X", x), d("D_X", sg(fake_x)), loss_config.gan)
  metrics["D_Y"] = losses.discriminator_loss(d("D_Y", y), d("D_Y", sg(fake_y)), loss_config.gan)
  metrics["generator"] = generator_loss
  return generator_loss + metrics["D_X"] + metrics["D_Y"], metrics


def train_step(state: TrainState, batch, *, generator, discriminator, optimizer, loss_config):
  """One update of all four networks. Pure: jit it with the state donated."""
  grad_fn = jax.grad(compute_losses, has_aux=True)
  grads, metrics = grad_fn(state.params, batch, generator, discriminator, loss_config)
  updates, opt_state = optimizer.update(grads, state.opt_state, state.params)
  params = optax.apply_updates(state.params, updates)
  metrics = {f"loss/{k}": v for k, v in metrics.items()}
  metrics.update({f"grad_norm/{k}": optax.tree.norm(v) for k, v in grads.items()})
  return TrainState(state.step + 1, params, opt_state), metrics


SAMPLE_COLUMNS = ("x (LR)", "G_X(x)", "G_Y(G_X(x))", "y (HR)", "G_Y(y)", "G_X(G_Y(y))")


def translate(params, generator, x, y):
  """Both translations and cycles of a batch, for the sample grids (SAMPLE_COLUMNS)."""
  g = lambda name, images: generator.apply({"params": params[name]}, images)
  fake_y, fake_x = g("G_X", x), g("G_Y", y)
  return (x, fake_y, g("G_Y", fake_y), y, fake_x, g("G_X", fake_x))


def holdout_slice(volumes) -> tuple[int, int]:
  """The central low-resolution slice of the first volume: never trained on."""
  first = volumes[0]
  return 0, first.isotropic.shape[first.lr_axis] // 2


def build_data(config):
  """Prepared volumes and the patch source (host work: loading and resampling)."""
  if config.data.make_demo:
    from clade_jax.data import demo  # nilearn is only needed for the demo.
    demo.ensure_demo_data(os.path.dirname(os.path.normpath(config.data.root)) or ".")
  paths = patches_lib.list_volumes(config.data.root)
  with tqdm(paths, desc="preparing volumes", unit="vol", leave=False) as bar:
    volumes = [patches_lib.prepare_volume(p, config.data) for p in bar]
  source = patches_lib.UnpairedPatches(
      volumes, patch_size=config.data.patch_size,
      patches_per_slice=config.data.patches_per_slice,
      min_foreground=config.data.min_foreground,
      background_level=config.data.background_level, hr_slices=config.data.hr_slices,
      holdout=[holdout_slice(volumes)], seed=config.seed)
  return volumes, source


def total_steps(config, source) -> int:
  if config.train.num_steps > 0:
    return config.train.num_steps
  return max(1, config.train.epochs * len(source) // config.train.batch_size)


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str) -> TrainState:
  """Trains (or resumes training) and writes checkpoints, metrics and pictures.

  Returns:
    The final train state.
  """
  mesh = jax.make_mesh((jax.device_count(),), ("data",),
                       axis_types=(jax.sharding.AxisType.Auto,))
  replicated, batch_sharding = NamedSharding(mesh, P()), NamedSharding(mesh, P("data"))
  if config.train.batch_size % jax.device_count():
    raise ConfigError(f"train.batch_size={config.train.batch_size} must be divisible by the "
                     f"{jax.device_count()} devices")

  volumes, source = build_data(config)
  num_steps = total_steps(config, source)
  checkpointing.write_config(workdir, config)

  generator, discriminator = create_models(config.model)
  optimizer = make_optimizer(config.train)
  step_fn = jax.jit(
      functools.partial(train_step, generator=generator, discriminator=discriminator,
                        optimizer=optimizer, loss_config=config.loss),
      in_shardings=(replicated, batch_sharding), out_shardings=(replicated, replicated),
      donate_argnums=0)
  translate_fn = jax.jit(functools.partial(translate, generator=generator))

  state = jax.jit(lambda rng: init_state(config, rng), out_shardings=replicated)(
      init_key(config.seed))
  dataset = patches_lib.make_dataset(
      source, config.train.batch_size // jax.process_count(), seed=config.seed,
      shard_index=jax.process_index(), shard_count=jax.process_count())
  iterator = iter(dataset.to_iter_dataset(grain.ReadOptions(
      num_threads=config.data.num_threads, prefetch_buffer_size=config.data.prefetch)))

  mngr = checkpointing.manager(workdir, keep=config.ckpt.keep)
  if mngr.latest_step() is not None:
    state, data_state = checkpointing.restore(mngr, checkpointing.abstract_like(state))
    iterator.set_state(data_state)
  start = int(state.step)
  is_main = jax.process_index() == 0
  writer = metric_writer.MetricWriter(workdir, resume_step=start) if is_main else None
  sample_batch = dataset[0]  # Fixed patches, so the grids show progress on the same inputs.
  sample_batch = {k: v[:8] for k, v in sample_batch.items()}

  def to_global(local_batch):
    return {k: jax.make_array_from_process_local_data(batch_sharding, v)
            for k, v in local_batch.items()}

  def save(step):
    checkpointing.save(mngr, step, state, iterator.get_state())

  def write_samples(step):
    out = jax.device_get(translate_fn(state.params, x=sample_batch["x"], y=sample_batch["y"]))
    plotting.patch_grid(dict(zip(SAMPLE_COLUMNS, out)), os.path.join(workdir, "samples", f"step_{step:07d}.png"),
                        title=f"step {step}")

  bar = tqdm(total=num_steps, initial=start, desc="training", unit="step",
             disable=not is_main, dynamic_ncols=True)
  stop = _Interrupt()
  step = start
  metrics = None
  with stop:
    while step < num_steps and not stop.requested:
      state, metrics = step_fn(state, to_global(next(iterator)))
      step += 1
      bar.update(1)
      if step % config.train.log_every == 0 or step == num_steps:
        scalars = _check_finite(jax.device_get(metrics), step, workdir, mngr)
        scalars["steps_per_second"] = bar.format_dict["rate"] or 0.0
        if writer:
          writer.write_scalars(step, scalars)
        bar.set_postfix({k.split("/")[-1]: f"{v:.3f}" for k, v in scalars.items()
                         if k in ("loss/generator", "loss/cycle", "loss/D_Y")})
      if is_main and (step % config.train.sample_every == 0 or step == num_steps):
        write_samples(step)
      if step % config.ckpt.every == 0 or step == num_steps:
        if metrics is not None:
          _check_finite(jax.device_get(metrics), step, workdir, mngr)
        save(step)
  bar.close()
  if stop.requested and step > start:
    save(step)
    print(f"interrupted: saved a checkpoint at step {step}; re-run the same command to resume")
  mngr.wait_until_finished()
  mngr.close()
  if writer:
    writer.close()
  if step >= num_steps and is_main:
    write_holdout_figure(state.params, generator, volumes, config, workdir)
  return state


def write_holdout_figure(params, generator, volumes, config, workdir) -> str:
  """Super-resolves the held-out slice and saves input vs output as a PNG."""
  from clade_jax import srr  # Imported late: inference is not needed to train.

  v, s = holdout_slice(volumes)
  lr_slice = volume_lib.plane_slices(volumes[v].isotropic, volumes[v].lr_axis)[s]
  apply_fn = lambda p, x: generator.apply({"params": p["G_X"]}, x)
  sr_slice = srr.reconstruct_slices(
      apply_fn, params, lr_slice[None], patch_size=config.data.patch_size,
      stride=config.eval.stride, mode=config.eval.mode)[0]
  path = os.path.join(workdir, "holdout_sr.png")
  plotting.slice_comparison(
      {"input (cubic spline)": plotting.for_display(lr_slice),
       f"CLADE G_X ({config.eval.mode}, stride {config.eval.stride})":
           plotting.for_display(np.asarray(sr_slice))},
      path, title=f"held-out slice {s} of {os.path.basename(volumes[v].path)}",
      vrange=(-1, 1))
  return path


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
