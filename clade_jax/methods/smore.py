"""SMORE: self-supervised super-resolution from the volume's own in-plane slices.

Zhao et al., "SMORE: a self-supervised anti-aliasing and super-resolution algorithm for
MRI using deep learning", IEEE TMI 2021: the CLADE paper's baseline. Per volume, no
external data:

1. Training pairs: acquired (high-resolution) in-plane slices, degraded along one
   in-plane axis by the slice profile at the slice spacing and interpolated back onto
   the fine grid, against the slices themselves (`data.inplane_pairs`; rotations by
   90 degrees and flips, so both in-plane axes serve).
2. A residual CNN on the fine grid (`models.sr_network.SRNetwork`, EDSR/WDSR-style, no
   pixel shuffle), trained with L1 and Adam.
3. Inference: every slice of both low-resolution planes of the cubic-spline volume
   (the planes containing the thick axis), thick direction on the rows as in training,
   through the network (whole slices, or the shared sliding window), and the two
   volumes combined: averaged, or by Fourier burst accumulation (SMORE's choice: per
   3D frequency, each estimate weighted by its magnitude to the power p).

How it differs from the paper, and why: the network sees the interpolated slice
rather than the low-resolution samples (the same fine-grid input for any slice
spacing, integer or not, and no pixel-shuffle stripes); there is no separate
anti-aliasing network (SMORE's SAA stage for 2D acquisitions); the slice profile is
given (`data.slice_profile`, `data.slice_thickness`, `data.slice_kernel`), not
estimated as in ECLARE.
"""

from __future__ import annotations

import dataclasses
import functools

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import scipy.fft

from clade_jax import srr
from clade_jax import volume_srr
from clade_jax.config_validation import ConfigError, Range
from clade_jax.data import inplane_pairs
from clade_jax.data import slice_profile
from clade_jax.models import convolution
from clade_jax.models.sr_network import SRNetwork
from clade_jax.train_state import TrainState

NETWORK = "SR"
# Sorted names: the driver gets the dict back from jax.device_get in key order.
SAMPLE_COLUMNS = ("input (cubic spline)", "output (SMORE)", "target (acquired)")
COMBINATIONS = ("mean", "fourier")

architecture_fields = ("model.features", "model.num_blocks", "model.expansion")
holds_out = False  # Its acquired in-plane slices cross every low-resolution-plane slice.
progress_metrics = ("loss/l1", "loss/l1_input")
# SMORE's own config fields (configs/smore.py); the shared ones are checked by
# `config_validation.RANGES` and `ENUMS`.
config_ranges = {
    "train.num_steps": Range(1, why="SMORE's learning-rate schedule ends at the last step, "
                             "so it trains for a number of steps, not for train.epochs"),
    "train.warmup_steps": Range(0),
    "model.features": Range(1),
    "model.num_blocks": Range(1),
    "model.expansion": Range(1),
    "model.residual_scale": Range(0, lo_exclusive=True),
    "eval.stride": Range(1, "data.patch_size"),  # A larger stride leaves gaps.
    "eval.fourier_power": Range(0),
}
config_enums = {
    "train.schedule": ("constant", "cosine"),
    "model.conv_impl": convolution.IMPLS,
    "model.dtype": ("float32", "bfloat16"),
    "eval.planes": ("trained", "both"),
    "eval.combine": COMBINATIONS,
}


def describe(config) -> str:
  del config
  return "SMORE"


def create_model(model_config) -> SRNetwork:
  return SRNetwork(features=model_config.features, num_blocks=model_config.num_blocks,
                   expansion=model_config.expansion,
                   residual_scale=model_config.residual_scale,
                   dtype=model_config.get("dtype", "float32"),
                   conv_impl=convolution.of_config(model_config))


def learning_rate(train_config):
  """A constant rate, or a linear warm-up then a cosine decay to zero at the last step."""
  if train_config.schedule == "constant":
    return train_config.learning_rate
  return optax.warmup_cosine_decay_schedule(
      0.0, train_config.learning_rate, train_config.warmup_steps,
      max(train_config.num_steps, train_config.warmup_steps + 1))


def make_optimizer(train_config) -> optax.GradientTransformation:
  return optax.adam(learning_rate(train_config), b1=train_config.beta1, b2=train_config.beta2)


def make_source(config, volumes, holdout) -> inplane_pairs.InPlanePairs:
  """Degraded/original pairs from the acquired slices.

  `holdout` is empty (`holds_out`): SMORE never trains on a low-resolution plane, but
  its acquired slices cross every slice of one.
  """
  del holdout
  data = config.data
  try:
    profile, thickness = slice_profile.from_config(data)
  except ValueError as e:
    raise ConfigError(str(e)) from None
  return inplane_pairs.InPlanePairs(
      volumes, patch_size=data.patch_size, patches_per_slice=data.patches_per_slice,
      profile=profile, thickness_mm=thickness, min_foreground=data.min_foreground,
      background_level=data.background_level, augment=data.augment,
      match_noise=data.get("match_noise", False), seed=config.seed)


def init_state(config, rng: jax.Array) -> TrainState:
  p = config.data.patch_size
  params = {NETWORK: create_model(config.model).init(
      rng, jnp.zeros((1, p, p, 1), jnp.float32))["params"]}
  return TrainState(step=jnp.zeros((), jnp.int32), params=params,
                    opt_state=make_optimizer(config.train).init(params))


def train_step(state: TrainState, batch, *, model, optimizer):
  """One Adam step on the L1 loss. Pure: the driver jits it with the state donated."""

  def loss_fn(params):
    output = model.apply({"params": params[NETWORK]}, batch["x"])
    return jnp.mean(jnp.abs(output - batch["y"]))

  loss, grads = jax.value_and_grad(loss_fn)(state.params)
  updates, opt_state = optimizer.update(grads, state.opt_state, state.params)
  params = optax.apply_updates(state.params, updates)
  metrics = {"loss/l1": loss,
             # What the interpolation alone scores: the bar the network must clear.
             "loss/l1_input": jnp.mean(jnp.abs(batch["x"] - batch["y"])),
             f"grad_norm/{NETWORK}": optax.tree.norm(grads[NETWORK])}
  return TrainState(state.step + 1, params, opt_state), metrics


def make_train_step(config):
  return functools.partial(train_step, model=create_model(config.model),
                           optimizer=make_optimizer(config.train))


def make_sample_fn(config):
  model = create_model(config.model)

  def sample(params, batch):
    output = model.apply({"params": params[NETWORK]}, batch["x"])
    return dict(zip(SAMPLE_COLUMNS, (batch["x"], output, batch["y"])))

  return sample


@functools.lru_cache(maxsize=8)
def _apply_fn(model_config: ml_collections.FrozenConfigDict):
  """The network as ``apply_fn(params, x)``, one function object per model config.

  The same object for equal configs, so the jitted reconstruction it is a static
  argument of compiles once.
  """
  model = create_model(model_config)

  def apply_fn(params, x):
    return model.apply({"params": params}, x)

  return apply_fn


def network_apply_fn(model_config):
  """The super-resolving network as ``apply_fn(params, x)`` for `srr`."""
  return _apply_fn(ml_collections.FrozenConfigDict(model_config))


def fourier_combine(volumes, power: float) -> np.ndarray:
  """Fourier burst accumulation (Delbracio and Sapiro) of estimates of one volume.

  Each 3D frequency takes the estimates' coefficients weighted by |coefficient|^power:
  blur only attenuates, so the estimate that kept the most of a frequency is
  trusted most there. power 0 is the mean; a large power picks the largest.

  Args:
    volumes: estimates of the same shape.
    power: p >= 0.

  Returns:
    float32 volume of their shape.
  """
  spectra = [scipy.fft.rfftn(np.asarray(v, np.float32), workers=-1) for v in volumes]
  magnitudes = [np.abs(s) for s in spectra]
  # Relative to the largest per frequency, so a large power cannot overflow.
  top = np.maximum(functools.reduce(np.maximum, magnitudes), np.finfo(np.float32).tiny)
  weights = [(m / top) ** power for m in magnitudes]
  combined = sum(w * s for w, s in zip(weights, spectra)) / sum(weights)
  return scipy.fft.irfftn(combined, s=np.shape(volumes[0]), workers=-1).astype(np.float32)


def super_resolve(params, config, prepared, options: volume_srr.SROptions):
  """Both low-resolution planes through the network, combined (``eval.combine``)."""
  options = options.resolve(config)
  apply_fn = network_apply_fn(config.model)
  window = options.window(config.data.patch_size)
  mesh = volume_srr.default_mesh()

  def plane(prepared_plane):
    # The network learned the degradation along image rows; reconstruct_planes hands
    # over slices with the thick direction on the rows only where the plane has it so.
    rows = volume_srr.thick_on_rows(prepared_plane)

    def slice_fn(slices, progress):
      slices = slices if rows else np.swapaxes(slices, 1, 2)
      out = srr.reconstruct_slices(apply_fn, params[NETWORK], slices, window, mesh=mesh,
                                   progress=progress)
      return out if rows else np.swapaxes(out, 1, 2)

    return volume_srr.reconstruct_planes(
        prepared_plane, slice_fn, dataclasses.replace(options, planes="trained"))

  if options.planes == "trained":
    return plane(prepared)
  first, second = (plane(dataclasses.replace(prepared, lr_axis=axis))
                   for axis in prepared.lr_axes)
  if config.eval.combine == "fourier":
    return fourier_combine((first, second), config.eval.fourier_power)
  return (first + second) / 2
