"""CLADE and its relatives: unpaired CycleGANs on 2D patches of the anisotropic volumes.

One module, four systems, told apart by their config (`describe`):

- CLADE (Pascale et al., preprint Sec. 4.2-4.3): demodulated ResNet generators, instance
  norm PatchGANs, adversarial + cycle + identity + Sobel gradient-map losses
  (`configs/mri.py`, `configs/ct.py`);
- CLADE without L_gmap (`configs/clade_no_gmap.py`);
- the conventional patch-based CycleGAN: instance norm in the generators, no L_gmap
  (`configs/cyclegan.py`);
- GLADE (the ISMRM abstract): the CycleGAN generator with instance norm, the gradient-map
  loss, 92x92 patches and no identity loss (`configs/glade.py`).

Options that are not in the paper, each off in the paper's configs and on in
`configs/clade_plus.py` where the measurements support it (experiments/quality/):
`model.residual` (G_X predicts a correction to its input, starting at the identity), `train.ema_decay` (an exponential moving average of the generators' weights,
used for samples and inference), `loss.degradation` (a paired L1 loss: Y patches
re-acquired with the known slice profile, `data.simulated_pairs`, must come back
through G_X as themselves), `eval.tta` (G_X averaged over the four flips of each patch)
and `eval.blend` (a tapered sliding-window average, `srr.blend_window`).

The four networks (G_X: X -> Y super-resolves, G_Y: Y -> X degrades, D_X, D_Y) keep
their params in one pytree under one optax state. A single backward pass gives every
gradient: the generator loss sees the discriminators through `stop_gradient`, and the
discriminator loss sees the generated images through `stop_gradient`, so each network
only receives the gradient of its own objective.
"""

from __future__ import annotations

import dataclasses
import functools

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import optax

from clade_jax import losses
from clade_jax import srr
from clade_jax import volume_srr
from clade_jax.config_validation import ConfigError, Range
from clade_jax.data import patches as patches_lib
from clade_jax.data import simulated_pairs
from clade_jax.data import volume as volume_lib
from clade_jax.models.discriminator import PatchDiscriminator
from clade_jax.models.generator import ResnetGenerator
from clade_jax.models import convolution
from clade_jax import train_state as train_state_lib
from clade_jax.train_state import EmaTrainState, TrainState

NETWORKS = ("G_X", "G_Y", "D_X", "D_Y")
GENERATORS = ("G_X", "G_Y")  # The networks `train.ema_decay` averages.
SAMPLE_COLUMNS = ("x (LR)", "G_X(x)", "G_Y(G_X(x))", "y (HR)", "G_Y(y)", "G_X(G_Y(y))")
# The ResNet generator downsamples twice by 2: whole slices must have sides divisible by 4.
SIZE_MULTIPLE = 4

# model.residual keeps the shapes but changes what the params mean; train.ema_decay
# adds the averaged weights to the checkpointed state.
architecture_fields = ("model.generator_norm", "model.features", "model.num_blocks",
                       "model.disc_features", "model.disc_layers", "model.residual",
                       "train.ema_decay")
progress_metrics = ("loss/generator", "loss/cycle", "loss/D_Y")
# CLADE's own config fields (configs/mri.py); the shared ones are checked by
# `config_validation.RANGES` and `ENUMS`.
config_ranges = {
    "model.features": Range(1),
    "model.num_blocks": Range(1),
    "model.disc_features": Range(1),
    "model.disc_layers": Range(1),
    "loss.cyc": Range(0),
    "loss.ident": Range(0),
    "loss.gmap": Range(0),
    "loss.degradation": Range(0),
    "train.ema_decay": Range(0, 1, hi_exclusive=True),  # 0 = off.
    "eval.stride": Range(1, "data.patch_size"),  # A larger stride leaves gaps.
}
config_enums = {
    "data.hr_slices": ("acquired", "all"),
    "model.generator_norm": ("demod", "instance"),
    "model.conv_impl": convolution.IMPLS,
    "model.dtype": ("float32", "bfloat16"),
    "loss.gan": ("log", "lsgan"),
    "eval.blend": ("flat", "taper"),
    # Domain X's low-resolution planes, and those inference combines ('auto': the ones
    # trained on; `resolve_config` writes which into the run's config).
    "data.lr_planes": patches_lib.LR_PLANES,
    "eval.planes": ("auto", "trained", "both"),
}
# G_X's four flips of a patch: the thick direction stays on its image axis.
TTA_FLIPS = ((), (1,), (2,), (1, 2))


def describe(config) -> str:
  """The system a config trains, in the papers' names; '+' when it trains differently
  from the paper (a residual generator, averaged weights, the paired loss)."""
  demod = config.model.generator_norm == "demod"
  gmap = bool(config.loss.gmap)
  if demod:
    name = "CLADE" if gmap else "CLADE (no L_gmap)"
  else:
    name = "GLADE" if gmap else "CycleGAN"
  if (config.model.get("residual", False) or config.train.get("ema_decay", 0.0)
      or config.loss.get("degradation", 0.0)):
    name = name.replace("CLADE", "CLADE+") if "CLADE" in name else name + "+"
  return name


def lr_planes_of(config) -> str:
  """'trained' or 'both': the low-resolution planes X patches come from."""
  return config.data.get("lr_planes", "trained")


def inference_planes(config) -> str:
  """The planes inference super-resolves by default: ``eval.planes``, where 'auto'
  (and a run from before the field) means the planes of training."""
  planes = config.eval.get("planes", "auto")
  return lr_planes_of(config) if planes == "auto" else planes


def resolve_config(config) -> None:
  """Writes the planes 'auto' stands for into ``config.eval.planes`` (in place), so the
  run's saved config, and inference reading it, say which planes are combined."""
  if config.eval.get("planes") == "auto":
    config.eval.planes = inference_planes(config)


def create_generators(model_config) -> dict[str, nn.Module]:
  """{'G_X': ..., 'G_Y': ...}: the same network, but only G_X is ever residual.

  A residual G_Y would start as the identity too, and with both generators the identity
  every cycle, identity and gradient-map loss is at its minimum: measured on the demo,
  neither generator left it in 300 steps (cycle loss 5e-5, a paired loss that did not
  fall). G_Y learns the degradation from its random start, as in the paper.
  """
  make = functools.partial(ResnetGenerator, features=model_config.features,
                           num_blocks=model_config.num_blocks,
                           norm=model_config.generator_norm,
                           dtype=model_config.get("dtype", "float32"),
                           conv_impl=convolution.of_config(model_config))
  return {"G_X": make(residual=model_config.get("residual", False)), "G_Y": make()}


def create_models(model_config) -> tuple[nn.Module, nn.Module]:
  """(G_X's network, the discriminators' network); G_Y's is `create_generators`'."""
  discriminator = PatchDiscriminator(features=model_config.disc_features,
                                     num_layers=model_config.disc_layers,
                                     dtype=model_config.get("dtype", "float32"),
                                     conv_impl=convolution.of_config(model_config))
  return create_generators(model_config)["G_X"], discriminator


def _per_network(generator) -> dict[str, nn.Module]:
  """A generator network for each of G_X and G_Y, from one module or a dict of both."""
  if isinstance(generator, dict):
    return generator
  return {"G_X": generator, "G_Y": generator}


def make_optimizer(train_config) -> optax.GradientTransformation:
  return optax.adam(train_config.learning_rate, b1=train_config.beta1, b2=train_config.beta2)


def make_source(config, volumes, holdout) -> patches_lib.UnpairedPatches:
  """Unpaired X (low-resolution plane(s), `data.lr_planes`) / Y (acquired
  high-resolution slices) patches, and with `loss.degradation` the Y patches' simulated
  low-resolution twins: degraded along the in-plane axis each X patch's plane shares
  with Y, so the paired loss sees what G_X is given."""
  data = config.data
  lr_planes = lr_planes_of(config)
  simulators = None
  if config.loss.get("degradation", 0.0):
    if lr_planes == "both":
      simulators = [tuple(make_simulator(v, data, axis) for axis in v.scan.lr_axes)
                    for v in volumes]
    else:
      simulators = [make_simulator(v, data) for v in volumes]
  return patches_lib.UnpairedPatches(
      volumes, patch_size=data.patch_size, patches_per_slice=data.patches_per_slice,
      min_foreground=data.min_foreground, background_level=data.background_level,
      hr_slices=data.hr_slices, holdout=holdout, seed=config.seed, simulators=simulators,
      lr_planes=lr_planes)


def make_simulator(volume: patches_lib.PreparedVolume, data_config,
                   lr_axis: int | None = None) -> simulated_pairs.Simulator:
  """How a volume's Y patches become X-like: its slice spacing, profile and orientation.

  Args:
    volume: the prepared volume.
    data_config: the run's ``config.data`` (slice profile and thickness).
    lr_axis: the slicing axis of the low-resolution plane to imitate; default the
      trained one. Either way the thick direction goes where the trained plane's X
      slices have it (`patches.x_plane_slices` turns the other plane's the same way).
  """
  scan = volume.scan
  thick = scan.thick_axis
  lr_axis = scan.lr_axis if lr_axis is None else lr_axis
  source = volume_lib.load_volume(volume.path, **patches_lib.load_options(data_config))
  acquired = float(volume_lib.voxel_spacing(source.affine)[thick])
  fine = float(volume_lib.voxel_spacing(scan.affine)[thick])
  thickness = data_config.get("slice_thickness", 0.0) or acquired
  # Y slices span the axes other than the thick one; the one they share with the X
  # plane is degraded, and put where X slices have their thick direction.
  degraded = [a for a in range(3) if a != thick].index(lr_axis)
  x_thick = [a for a in range(3) if a != scan.lr_axis].index(thick)
  return simulated_pairs.Simulator(
      patch_size=data_config.patch_size, factor=acquired / fine, thickness_vox=thickness / fine,
      profile=data_config.get("slice_profile", "gaussian"), degraded_axis=degraded,
      transpose=degraded != x_thick)


def init_state(config, rng: jax.Array) -> TrainState:
  generators = create_generators(config.model)
  _, discriminator = create_models(config.model)
  p = config.data.patch_size
  dummy = jnp.zeros((1, p, p, 1), jnp.float32)
  logits = jax.eval_shape(discriminator.init_with_output, rng, dummy)[0]
  if 0 in logits.shape:
    raise ConfigError(
        f"data.patch_size={p} is too small for a PatchGAN with model.disc_layers="
        f"{config.model.disc_layers}: use fewer layers or larger patches")
  keys = dict(zip(NETWORKS, jax.random.split(rng, len(NETWORKS))))
  params = {name: generators.get(name, discriminator).init(keys[name], dummy)["params"]
            for name in NETWORKS}
  step, opt_state = jnp.zeros((), jnp.int32), make_optimizer(config.train).init(params)
  if not config.train.get("ema_decay", 0.0):
    return TrainState(step=step, params=params, opt_state=opt_state)
  # Copies, so that donating the state never hands XLA one buffer twice.
  ema = {name: jax.tree.map(jnp.copy, params[name]) for name in GENERATORS}
  return EmaTrainState(step=step, params=params, opt_state=opt_state, ema_params=ema)


def compute_losses(params, batch, generator, discriminator, loss_config):
  """Total objective of all four networks and the per-term metrics.

  `generator` is one network for both generators or a dict (`create_generators`).
  """
  generators = _per_network(generator)
  g = lambda name, images: generators[name].apply({"params": params[name]}, images)
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
  if loss_config.get("degradation", 0.0):
    # Paired: Y patches re-acquired like the thick axis must come back as themselves.
    metrics["degradation"] = losses.l1(g("G_X", batch["y_lr"]), batch["y_hr"])
    generator_loss += loss_config.degradation * metrics["degradation"]

  sg = jax.lax.stop_gradient
  metrics["D_X"] = losses.discriminator_loss(d("D_X", x), d("D_X", sg(fake_x)), loss_config.gan)
  metrics["D_Y"] = losses.discriminator_loss(d("D_Y", y), d("D_Y", sg(fake_y)), loss_config.gan)
  metrics["generator"] = generator_loss
  return generator_loss + metrics["D_X"] + metrics["D_Y"], metrics


def train_step(state: TrainState, batch, *, generator, discriminator, optimizer, loss_config,
               ema_decay: float = 0.0):
  """One update of all four networks (and of the generators' average, if kept).

  Pure: jit it with the state donated.
  """
  grad_fn = jax.grad(compute_losses, has_aux=True)
  grads, metrics = grad_fn(state.params, batch, generator, discriminator, loss_config)
  updates, opt_state = optimizer.update(grads, state.opt_state, state.params)
  params = optax.apply_updates(state.params, updates)
  metrics = {f"loss/{k}": v for k, v in metrics.items()}
  metrics.update({f"grad_norm/{k}": optax.tree.norm(v) for k, v in grads.items()})
  if isinstance(state, EmaTrainState):
    state = state.replace(ema_params=train_state_lib.ema_update(
        state.ema_params, params, ema_decay, state.step))
  return state.replace(step=state.step + 1, params=params, opt_state=opt_state), metrics


def make_train_step(config):
  _, discriminator = create_models(config.model)
  return functools.partial(train_step, generator=create_generators(config.model),
                           discriminator=discriminator,
                           optimizer=make_optimizer(config.train), loss_config=config.loss,
                           ema_decay=config.train.get("ema_decay", 0.0))


def translate(params, generator, x, y):
  """Both translations and cycles of a batch, for the sample grids (SAMPLE_COLUMNS)."""
  generators = _per_network(generator)
  g = lambda name, images: generators[name].apply({"params": params[name]}, images)
  fake_y, fake_x = g("G_X", x), g("G_Y", y)
  return (x, fake_y, g("G_Y", fake_y), y, fake_x, g("G_X", fake_x))


def make_sample_fn(config):
  generator = create_generators(config.model)

  def sample(params, batch):
    return dict(zip(SAMPLE_COLUMNS, translate(params, generator, batch["x"], batch["y"])))

  return sample


@functools.lru_cache(maxsize=8)
def _apply_fn(model_config: ml_collections.FrozenConfigDict, tta: bool = False):
  """G_X's ``apply_fn(params, x)``, one function object per (model config, tta).

  The same object for equal configs, so the jitted reconstruction it is a static
  argument of compiles once.
  """
  generator, _ = create_models(model_config)

  def apply_fn(params, x):
    if not tta:
      return generator.apply({"params": params}, x)
    # One flip at a time: the peak memory stays that of one generator call.
    total = 0.0
    for axes in TTA_FLIPS:
      flip = lambda a: jnp.flip(a, axes) if axes else a
      total = total + flip(generator.apply({"params": params}, flip(x)))
    return total / len(TTA_FLIPS)

  return apply_fn


def generator_apply_fn(model_config, tta: bool = False):
  """The super-resolving generator G_X as ``apply_fn(params, x)`` for `srr`.

  Args:
    model_config: the run's ``config.model``.
    tta: average G_X over the flips of `TTA_FLIPS` (test-time augmentation): the
      degradation is symmetric along both image axes, so each flip is an equally
      valid input, and their average keeps what they agree on.
  """
  return _apply_fn(ml_collections.FrozenConfigDict(model_config), bool(tta))


def super_resolve(params, config, prepared, options: volume_srr.SROptions):
  """Every slice of the low-resolution plane(s) through G_X (paper Sec. 4.6); both
  planes averaged by default when trained on both (`inference_planes`)."""
  if options.planes is None and options.lr_slices is None:  # 'auto' before resolve.
    options = dataclasses.replace(options, planes=inference_planes(config))
  options = options.resolve(config)
  apply_fn = generator_apply_fn(config.model, config.eval.get("tta", False))
  window = options.window(config.data.patch_size, SIZE_MULTIPLE)
  mesh = volume_srr.default_mesh()

  def slice_fn(slices, progress):
    return srr.reconstruct_slices(apply_fn, params["G_X"], slices, window, mesh=mesh,
                                  progress=progress)

  return volume_srr.reconstruct_planes(prepared, slice_fn, options)
