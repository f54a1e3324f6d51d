"""Autoencoder latent-space interpolation (Sander et al., arXiv:2010.13172).

An autoencoder (`models.autoencoder`) learns to compress and reconstruct 2D in-plane
slices, the acquired high-resolution slices perpendicular to the thick axis. A slice
between acquired slices n and n+1 is the decoded convex combination of their codes,
``D((1 - alpha) E(x_n) + alpha E(x_{n+1}))``, with alpha the slice's fractional
position between them (paper Sec. 3).

Training (paper Sec. 4): random square patches (`data.patch_size`, 128) of the
acquired in-plane slices, each rotated by a random multiple of 90 degrees and given a
random intensity change (a gain about the background, ``(x + 1) g - 1`` with g uniform
in ``1 +- data.intensity_scale``, then an offset uniform in ``+- data.intensity_shift``,
in the normalised units where the background is -1); mean squared error between the
augmented patch and its reconstruction; Adam. Under the driver's 'data' mesh the batch
is sharded and `jit` computes batch norm's mean and variance over the global batch,
so the statistics are those of one large batch, whatever the device count.

Held-out slice: the driver's check looks at one slice of the low-resolution plane.
Every in-plane training slice crosses it along a line, so it cannot be kept out of
training short of dropping whole volumes (``holds_out = False``); what this method
synthesises there (everything but the acquired rows) is never a training target
anyway, since only acquired slices are.

Super-resolution (`super_resolve`): every acquired slice is encoded whole (the
networks are fully convolutional; edge-padded to a multiple of ``2 ** num_blocks``
and cropped back), and every slice of the isotropic output grid (the grid of
`volume.isotropic_geometry`, as for every method) decodes the mixture of its two
neighbours' codes. alpha comes from the slice's world position, so any spacing ratio
works, whole or not. The grid never extends past the first or last acquired slice; a
position outside them would be clamped to the end slice. At acquired positions
(alpha = 0) the output is the acquired slice itself (``eval.keep_acquired=True``) or
its reconstruction D(E(x_n)) (False, the paper's literal pipeline).

``eval.interpolation`` picks what is decoded:

* 'latent' (the paper's): ``D((1 - a) z_n + a z_{n+1})`` itself.
* 'corrected': a bias-corrected latent interpolation (not in the paper),
  ``base + D((1 - a) z_n + a z_{n+1}) - ((1 - a) D(z_n) + a D(z_{n+1}))``: the
  autoencoder only contributes how mixing in its latent space differs from mixing its
  own reconstructions in pixel space, so its reconstruction error (blur, a darker
  slice) cancels to first order, an acquired position (a = 0 or 1) gives the base
  exactly, and a decoder linear in the code adds nothing. ``eval.correction_base``:
  'linear' (the linear interpolation of the acquired slices, the principled pairing
  with linear mixing of codes) or 'cubic' (the cubic-spline input every method gets,
  ``prepared.isotropic``). experiments/ae_interp/README.md measures all three.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import flax
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P
import tqdm

from clade_jax import volume_srr
from clade_jax.config_validation import ConfigError, Range
from clade_jax.data import foreground
from clade_jax.data import volume as volume_lib
from clade_jax.models import convolution
from clade_jax.models.autoencoder import Autoencoder

NETWORK = "autoencoder"
SAMPLE_COLUMNS = ("patch", "reconstruction")
# Within this of an integer, an output position is an acquired slice (float rounding of
# k * spacing ratio).
POSITION_TOLERANCE = 1e-6

architecture_fields = ("model.features", "model.num_blocks", "model.latent_features")
holds_out = False  # Module docstring: every training slice crosses the checked one.
progress_metrics = ("loss/mse",)
INTERPOLATIONS = ("latent", "corrected")
CORRECTION_BASES = ("linear", "cubic")
# The autoencoder's own config fields (configs/ae_interp.py); the shared ones are
# checked by `config_validation.RANGES` and `ENUMS`.
config_enums = {"model.conv_impl": convolution.IMPLS, "eval.interpolation": INTERPOLATIONS,
                "eval.correction_base": CORRECTION_BASES}
config_ranges = {
    "model.features": Range(1),
    "model.num_blocks": Range(1),
    "model.latent_features": Range(1),
    "model.negative_slope": Range(0),
    "data.intensity_scale": Range(0, 1, hi_exclusive=True),
    "data.intensity_shift": Range(0),
}


@flax.struct.dataclass
class AEState:
  """The autoencoder's train state.

  Attributes:
    step: updates done so far.
    params: ``{'autoencoder': weights}``: what Adam optimises.
    batch_stats: ``{'autoencoder': batch norm's running averages}``: state the forward
      pass updates, not params (no gradient reaches them).
    opt_state: Adam's state over the weights.
  """

  step: jax.Array
  params: dict[str, Any]
  batch_stats: dict[str, Any]
  opt_state: optax.OptState


def inference_params(state) -> dict[str, Any]:
  """The network's flax variables, ``{'autoencoder': {'params', 'batch_stats'}}``.

  What `super_resolve` and the samples apply, from an `AEState` or a checkpoint's state
  restored as a dict. Checkpoints written before the averages had their own entry (no
  ``batch_stats``) kept these variables in ``params``: they are read as they are.
  """
  get = state.get if isinstance(state, dict) else lambda name: getattr(state, name)
  stats = get("batch_stats")
  if stats is None:
    return get("params")
  return {NETWORK: {"params": get("params")[NETWORK], "batch_stats": stats[NETWORK]}}


def legacy_checkpoint(abstract_state: AEState):
  """Resuming a run saved before the averages had their own entry (in ``params``).

  Returns:
    ``(target, upgrade)``: that layout's restore target for `abstract_state`, and the
    function turning the restored state into an `AEState`.
  """
  target = {"step": abstract_state.step, "params": inference_params(abstract_state),
            "opt_state": abstract_state.opt_state}

  def upgrade(saved) -> AEState:
    variables = saved["params"][NETWORK]
    return AEState(saved["step"], {NETWORK: variables["params"]},
                   {NETWORK: variables["batch_stats"]}, saved["opt_state"])

  return target, upgrade


def describe(config) -> str:
  del config
  return "AE interpolation"


def create_model(model_config) -> Autoencoder:
  return Autoencoder(features=model_config.features, num_blocks=model_config.num_blocks,
                     latent_features=model_config.latent_features,
                     negative_slope=model_config.negative_slope,
                     conv_impl=convolution.of_config(model_config))


def make_optimizer(train_config) -> optax.GradientTransformation:
  return optax.adam(train_config.learning_rate, b1=train_config.beta1, b2=train_config.beta2)


def _check_patch_size(config) -> None:
  multiple = 2 ** config.model.num_blocks
  if config.data.patch_size % multiple:
    raise ConfigError(
        f"data.patch_size={config.data.patch_size} must be a multiple of {multiple} "
        f"(2 ** model.num_blocks={config.model.num_blocks}: every block halves the patch)")


class InPlanePatches:
  """Random-access source of {'image': [P, P, 1]} augmented in-plane patches.

  Every acquired slice (perpendicular to the thick axis) with at least one patch of
  enough foreground is a record; an epoch draws `patches_per_slice` patches from each.
  Example ``index`` is a pure function of (record, index, seed).

  Args:
    volumes: prepared training volumes (`data.patches.PreparedVolume`).
    patch_size: square patch side.
    patches_per_slice: patches drawn from each usable slice per epoch.
    min_foreground: fraction of a patch that must be foreground.
    background_level: foreground is brighter than this fraction of [-1, 1].
    intensity_scale: gains are uniform in ``1 +- intensity_scale``.
    intensity_shift: offsets are uniform in ``+- intensity_shift``.
    seed: base of every example's random stream.
  """

  def __init__(self, volumes, *, patch_size=128, patches_per_slice=8, min_foreground=0.1,
               background_level=0.05, intensity_scale=0.1, intensity_shift=0.1, seed=0):
    self.patch_size = patch_size
    self.foreground = foreground.ForegroundPatches(patch_size, min_foreground,
                                                   background_level)
    self.intensity_scale = intensity_scale
    self.intensity_shift = intensity_shift
    self.seed = seed
    self.stacks = [volume_lib.plane_slices(v.normalised_acquired, v.thick_axis)
                   for v in volumes]
    self.slices = self.foreground.require(self.foreground.usable_slices(self.stacks),
                                          volumes)
    self.epoch_length = patches_per_slice * len(self.slices)

  def __len__(self) -> int:
    return self.epoch_length

  def sample(self, record: int, index: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng([self.seed, index])
    v, s = self.slices[record % len(self.slices)]
    patch = np.rot90(self.foreground.crop(self.stacks[v][s], rng), k=int(rng.integers(4)))
    gain = rng.uniform(1.0 - self.intensity_scale, 1.0 + self.intensity_scale)
    offset = rng.uniform(-self.intensity_shift, self.intensity_shift)
    patch = (patch + 1.0) * gain - 1.0 + offset
    return {"image": patch[..., None].astype(np.float32)}


def make_source(config, volumes, holdout) -> InPlanePatches:
  """Augmented patches of the acquired in-plane slices (`holdout`: none, `holds_out`)."""
  del holdout
  _check_patch_size(config)
  data = config.data
  return InPlanePatches(
      volumes, patch_size=data.patch_size, patches_per_slice=data.patches_per_slice,
      min_foreground=data.min_foreground, background_level=data.background_level,
      intensity_scale=data.intensity_scale, intensity_shift=data.intensity_shift,
      seed=config.seed)


def init_state(config, rng: jax.Array) -> AEState:
  _check_patch_size(config)
  p = config.data.patch_size
  variables = create_model(config.model).init(rng, jnp.zeros((1, p, p, 1), jnp.float32))
  return AEState(step=jnp.zeros((), jnp.int32), params={NETWORK: variables["params"]},
                 batch_stats={NETWORK: variables["batch_stats"]},
                 opt_state=make_optimizer(config.train).init(variables["params"]))


def train_step(state: AEState, batch, *, model: Autoencoder, optimizer):
  """One Adam step on the reconstruction MSE; batch norm's averages updated. Pure."""
  weights = state.params[NETWORK]
  images = batch["image"]

  def loss_fn(weights):
    reconstruction, updates = model.apply(
        {"params": weights, "batch_stats": state.batch_stats[NETWORK]}, images, train=True,
        mutable=["batch_stats"])
    return jnp.mean(jnp.square(reconstruction - images)), updates["batch_stats"]

  (loss, batch_stats), grads = jax.value_and_grad(loss_fn, has_aux=True)(weights)
  updates, opt_state = optimizer.update(grads, state.opt_state, weights)
  weights = optax.apply_updates(weights, updates)
  metrics = {"loss/mse": loss, f"grad_norm/{NETWORK}": optax.tree.norm(grads)}
  return AEState(state.step + 1, {NETWORK: weights}, {NETWORK: batch_stats}, opt_state), metrics


def make_train_step(config):
  return functools.partial(train_step, model=create_model(config.model),
                           optimizer=make_optimizer(config.train))


def make_sample_fn(config):
  model = create_model(config.model)

  def sample(params, batch):
    images = batch["image"]
    return dict(zip(SAMPLE_COLUMNS, (images, model.apply(params[NETWORK], images))))

  return sample


# ------------------------------------------------------------------ super-resolution


def interpolation_weights(positions: np.ndarray, num_slices: int):
  """Which two acquired slices each output slice mixes, and how.

  Args:
    positions: continuous indices of the output slices on the acquired grid.
    num_slices: acquired slices (>= 2).

  Returns:
    ``(lower, alpha, acquired)``: int [M] index n of the first neighbour, float32 [M]
    weight of slice n + 1 in [0, 1], and int [M] the acquired slice an output slice
    coincides with (-1 where it lies between two). Positions past either end are
    clamped to it.
  """
  positions = np.clip(np.asarray(positions, np.float64), 0.0, num_slices - 1.0)
  nearest = np.rint(positions)
  on_slice = np.abs(positions - nearest) <= POSITION_TOLERANCE
  positions = np.where(on_slice, nearest, positions)
  lower = np.minimum(np.floor(positions), num_slices - 2).astype(np.int32)
  alpha = (positions - lower).astype(np.float32)
  return lower, alpha, np.where(on_slice, nearest, -1).astype(np.int32)


def output_positions(prepared) -> np.ndarray:
  """Continuous acquired-grid index of every output slice along the thick axis.

  From the world positions: the output grid's affine mapped into the acquired grid's
  voxel coordinates, so whole and fractional spacing ratios are treated alike.
  """
  axis = prepared.thick_axis
  to_acquired = np.linalg.inv(prepared.acquired_affine) @ prepared.affine
  count = prepared.isotropic.shape[axis]
  return to_acquired[axis, axis] * np.arange(count) + to_acquired[axis, 3]


@functools.lru_cache(maxsize=8)
def _network_fns(model_config: ml_collections.FrozenConfigDict):
  """Jitted ``encode(variables, x)`` and ``decode_mixed(variables, z_n, z_n1, alpha)``.

  One pair per model config, so repeated volumes reuse the compiled programs.
  """
  model = create_model(model_config)

  @jax.jit
  def encode(variables, images):
    return model.apply(variables, images, method="encode")

  @jax.jit
  def decode_mixed(variables, first, second, alpha):
    a = alpha[:, None, None, None]
    mixed = (1.0 - a) * first + a * second
    return model.apply(variables, mixed, method="decode")

  return encode, decode_mixed


def _map_chunks(fn: Callable, shared, inputs: tuple[np.ndarray, ...], chunk_size: int,
                mesh, progress) -> np.ndarray:
  """``fn(shared, *chunk)`` over equal-sized chunks of ``inputs`` (leading axis).

  The last chunk is padded by repeating its last element, so every call has one shape
  and compiles once; with a mesh each chunk is split over its 'data' axis.
  """
  total = len(inputs[0])
  chunk_size = max(1, min(chunk_size, total))
  if mesh is not None:
    shards = mesh.shape["data"]
    chunk_size = -(-chunk_size // shards) * shards
    shared = jax.device_put(shared, NamedSharding(mesh, P()))
  outputs = []
  for start in range(0, total, chunk_size):
    stop = min(start + chunk_size, total)
    chunk = tuple(np.concatenate([x[start:stop]] + [x[stop - 1:stop]] * (chunk_size - stop + start))
                  for x in inputs)
    if mesh is not None:
      chunk = jax.device_put(chunk, NamedSharding(mesh, P("data")))
    outputs.append((stop - start, fn(shared, *chunk)))
  result = []
  for count, out in outputs:
    result.append(np.asarray(out)[:count])
    if progress is not None:
      progress(count)
  return np.concatenate(result)


def _pad_to_multiple(slices: np.ndarray, multiple: int) -> np.ndarray:
  """Edge-pads rows and columns at the end up to a multiple (no artificial edge)."""
  _, h, w = slices.shape
  return np.pad(slices, ((0, 0), (0, -h % multiple), (0, -w % multiple)), mode="edge")


def interpolate_slices(params, config, slices: np.ndarray, positions: np.ndarray, *,
                       keep_acquired: bool = False, corrected: bool = False,
                       base: np.ndarray | None = None, slices_per_call: int = 8,
                       mesh=None, progress=None) -> np.ndarray:
  """Decoded latent mixtures of acquired slices at continuous positions.

  Args:
    params: the run's `inference_params` (``{'autoencoder': variables}``).
    config: the run's config (``config.model``).
    slices: float32 [N, H, W] acquired slices, normalised, in order along the thick
      axis (N >= 2).
    positions: [M] continuous indices into ``slices`` of the slices to synthesise.
    keep_acquired: at positions on an acquired slice return the slice itself instead
      of its reconstruction.
    corrected: the bias-corrected interpolation (module docstring): ``base`` plus the
      decoded mixture minus the pixel mixture of the two reconstructions; exactly
      ``base`` at acquired positions.
    base: float32 [M, H, W] for `corrected`; None: the linear interpolation of
      ``slices`` at ``positions``.
    slices_per_call: slices per jitted encoder/decoder call (sets the peak memory).
    mesh: optional 'data' mesh to split each call over.
    progress: called with the number of slices finished.

  Returns:
    float32 [M, H, W].
  """
  slices = np.asarray(slices, np.float32)
  num, h, w = slices.shape
  if num < 2:
    raise ValueError(f"latent interpolation needs at least 2 acquired slices, got {num}")
  variables = params[NETWORK]
  encode, decode_mixed = _network_fns(ml_collections.FrozenConfigDict(config.model))
  padded = _pad_to_multiple(slices, 2 ** config.model.num_blocks)[..., None]
  codes = _map_chunks(encode, variables, (padded,), slices_per_call, mesh, None)
  lower, alpha, acquired = interpolation_weights(positions, num)
  # The two codes of each output slice are gathered here, not inside the jitted
  # decoder: codes are small, and a gather from a sharded batch has no single sharding.
  out = _map_chunks(decode_mixed, variables, (codes[lower], codes[lower + 1], alpha),
                    slices_per_call, mesh, progress)[:, :h, :w, 0]
  if corrected:
    a = alpha[:, None, None]
    if base is None:
      base = (1.0 - a) * slices[lower] + a * slices[lower + 1]
    base = np.asarray(base, np.float32)
    if base.shape != out.shape:
      raise ValueError(f"base {base.shape} differs from the output {out.shape}")
    recon = _map_chunks(decode_mixed, variables, (codes, codes, np.zeros(num, np.float32)),
                        slices_per_call, mesh, None)[:, :h, :w, 0]
    correction = out - ((1.0 - a) * recon[lower] + a * recon[lower + 1])
    # Zero, not merely rounding-small, where the output is an acquired slice.
    correction[acquired >= 0] = 0.0
    out = (base + correction).astype(np.float32)
  if keep_acquired:
    on_slice = acquired >= 0
    out[on_slice] = slices[acquired[on_slice]]
  return out


def super_resolve(params, config, prepared, options: volume_srr.SROptions) -> np.ndarray:
  """The isotropic volume from latent mixtures of the acquired in-plane slices.

  `options.batch_size` (default ``eval.batch_size``) is the number of slices per
  network call; `lr_slices` restricts the output to those slices of the trained
  low-resolution plane (the rest keep the cubic-spline input, as for every method);
  `planes`, `stride` and `mode` do not apply (the method works on whole in-plane
  slices).
  """
  if prepared.acquired is None:
    raise ValueError("latent interpolation needs the acquired slices: prepare the volume "
                     "with data.preprocess.prepare_input")
  options = options.resolve(config)
  axis = prepared.thick_axis
  slices = volume_lib.plane_slices(prepared.normalizer.forward(prepared.acquired), axis)
  positions = output_positions(prepared)
  bar = tqdm.tqdm(total=len(positions), desc="interpolating", unit="slice",
                  dynamic_ncols=True, disable=not options.progress)
  interpolation = config.eval.get("interpolation", "latent")
  if interpolation not in INTERPOLATIONS:
    raise ConfigError(f"eval.interpolation={interpolation!r} must be one of {INTERPOLATIONS}")
  base_kind = config.eval.get("correction_base", "linear")
  if base_kind not in CORRECTION_BASES:
    raise ConfigError(f"eval.correction_base={base_kind!r} must be one of {CORRECTION_BASES}")
  base = None
  if interpolation == "corrected" and base_kind == "cubic":
    base = volume_lib.plane_slices(prepared.normalizer.forward(prepared.isotropic), axis)
  try:
    out = interpolate_slices(
        params, config, slices, positions,
        keep_acquired=bool(config.eval.get("keep_acquired", True)),
        corrected=interpolation == "corrected", base=base,
        slices_per_call=options.batch_size or 8, mesh=volume_srr.default_mesh(),
        progress=bar.update if options.progress else None)
  finally:
    bar.close()
  volume = volume_lib.from_plane_slices(out, axis)
  if volume.shape != prepared.isotropic.shape:
    raise AssertionError(f"output {volume.shape} is not on the grid {prepared.isotropic.shape}")
  if options.lr_slices is not None:
    chosen = np.zeros(volume.shape[prepared.lr_axis], bool)
    chosen[np.asarray(options.lr_slices, int)] = True
    shape = [1, 1, 1]
    shape[prepared.lr_axis] = -1
    volume = np.where(chosen.reshape(shape), volume,
                      prepared.normalizer.forward(prepared.isotropic))
  return volume.astype(np.float32)
