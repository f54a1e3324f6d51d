"""Autoencoder latent interpolation: the mixing, the grid, batch norm, training, inference."""

import os

import jax
import jax.numpy as jnp
import nibabel as nib
import numpy as np
import pytest
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

from clade_jax import checkpointing, config_validation, inference, train
from clade_jax.config_validation import ConfigError
from clade_jax.data import intensity, preprocess
from clade_jax.data import volume as volume_lib
from clade_jax.methods import ae_interp
from clade_jax.volume_srr import SROptions
from configs import ae_interp as ae_config
from tests import phantoms


def tiny_config(root=""):
  config = ae_config.get_config()
  config.data.root = str(root)
  config.data.patch_size = 16
  config.data.patches_per_slice = 2
  config.data.num_threads = 1
  config.model.features = 4
  config.model.num_blocks = 2
  config.model.latent_features = 3
  config.model.conv_impl = "xla"  # Compiles fastest on CPU.
  config.train.batch_size = 4
  config.train.learning_rate = 1e-3
  config.train.num_steps = 4
  config.train.log_every = 1
  config.train.sample_every = 2
  config.ckpt.every = 2
  config.eval.batch_size = 4
  config.eval.interpolation = "latent"  # The paper's decoding; the corrected one by name.
  return config


@pytest.fixture(scope="module")
def params():
  """Tiny autoencoder variables with random weights and non-trivial batch-norm averages."""
  config = tiny_config()
  shapes = jax.eval_shape(
      lambda: ae_interp.inference_params(ae_interp.init_state(config, train.init_key(0))))
  rng = np.random.default_rng(0)

  def draw(path, s):  # He-scaled kernels, so that the output depends on the input.
    name = jax.tree_util.keystr(path)
    if name.endswith("['kernel']"):
      return rng.normal(0.0, np.sqrt(2.0 / np.prod(s.shape[:-1])), s.shape).astype(s.dtype)
    if name.endswith("['var']") or name.endswith("['scale']"):
      return rng.uniform(0.5, 2.0, s.shape).astype(s.dtype)
    return rng.normal(0.0, 0.1, s.shape).astype(s.dtype)

  return jax.tree_util.tree_map_with_path(draw, shapes)


def _reconstruct(params, config, images):
  """D(E(x)) in inference mode, straight from the flax module."""
  model = ae_interp.create_model(config.model)
  return np.asarray(model.apply(params["autoencoder"], jnp.asarray(images)[..., None]))[..., 0]


def _codes(params, config, images):
  model = ae_interp.create_model(config.model)
  return model.apply(params["autoencoder"], jnp.asarray(images)[..., None], method="encode")


# ------------------------------------------------------------------- interpolation


def test_interpolation_weights_by_hand():
  # Spacing ratio 2.5: output slices every 0.4 acquired slices.
  lower, alpha, acquired = ae_interp.interpolation_weights(np.arange(6) * 0.4, 3)
  np.testing.assert_array_equal(lower, [0, 0, 0, 1, 1, 1])
  np.testing.assert_allclose(alpha, [0.0, 0.4, 0.8, 0.2, 0.6, 1.0], atol=1e-6)
  np.testing.assert_array_equal(acquired, [0, -1, -1, -1, -1, 2])
  # Float rounding of k * ratio still lands on the slice; beyond the ends: clamped.
  lower, alpha, acquired = ae_interp.interpolation_weights([1 - 1e-9, -0.5, 2.7], 3)
  np.testing.assert_array_equal(lower, [1, 0, 1])
  np.testing.assert_allclose(alpha, [0.0, 0.0, 1.0])
  np.testing.assert_array_equal(acquired, [1, 0, 2])


def test_alpha_0_and_1_reproduce_the_reconstructions_and_between_mixes_the_codes(params):
  config = tiny_config()
  rng = np.random.default_rng(1)
  slices = rng.uniform(-1, 1, (2, 18, 22)).astype(np.float32)  # Padded to 20 x 24 inside.
  out = ae_interp.interpolate_slices(params, config, slices, np.array([0.0, 1.0, 0.25]),
                                     keep_acquired=False, slices_per_call=2)
  padded = np.pad(slices, ((0, 0), (0, 2), (0, 2)), mode="edge")
  reconstructions = _reconstruct(params, config, padded)[:, :18, :22]
  np.testing.assert_allclose(out[:2], reconstructions, atol=1e-5)
  assert np.abs(reconstructions - slices).mean() > 0.1  # Random weights: not the input.
  codes = _codes(params, config, padded)
  model = ae_interp.create_model(config.model)
  between = model.apply(params["autoencoder"], 0.75 * codes[:1] + 0.25 * codes[1:],
                        method="decode")
  np.testing.assert_allclose(out[2], np.asarray(between)[0, :18, :22, 0], atol=1e-5)
  assert np.abs(out[2] - (0.75 * out[0] + 0.25 * out[1])).max() > 1e-3  # Not image mixing.

  kept = ae_interp.interpolate_slices(params, config, slices, np.array([0.0, 1.0, 0.25]),
                                      keep_acquired=True, slices_per_call=2)
  np.testing.assert_array_equal(kept[:2], slices)
  np.testing.assert_allclose(kept[2], out[2], atol=1e-6)


def _linear_decoder_config():
  """The tiny config with leaky ReLU slope 1: every layer, so the decoder, is affine in
  the code (convolutions, batch norm with running averages, nearest upsampling)."""
  config = tiny_config()
  config.model.negative_slope = 1.0
  return config


def test_corrected_is_the_base_at_acquired_slices_and_adds_the_latent_excess_between(params):
  config = tiny_config()
  rng = np.random.default_rng(4)
  slices = rng.uniform(-1, 1, (3, 18, 22)).astype(np.float32)
  positions = np.array([0.0, 1.0, 2.0, 0.25, 1.6])
  out = ae_interp.interpolate_slices(params, config, slices, positions, corrected=True,
                                     keep_acquired=False, slices_per_call=2)
  np.testing.assert_array_equal(out[:3], slices)  # a = 0 / 1: the linear base, exactly.
  padded = np.pad(slices, ((0, 0), (0, 2), (0, 2)), mode="edge")
  recon = _reconstruct(params, config, padded)[:, :18, :22]
  codes = _codes(params, config, padded)
  model = ae_interp.create_model(config.model)
  for j, (n, a) in ((3, (0, 0.25)), (4, (1, 0.6))):
    decoded = np.asarray(model.apply(params["autoencoder"],
                                     (1 - a) * codes[n:n + 1] + a * codes[n + 1:n + 2],
                                     method="decode"))[0, :18, :22, 0]
    expected = ((1 - a) * slices[n] + a * slices[n + 1]
                + decoded - ((1 - a) * recon[n] + a * recon[n + 1]))
    np.testing.assert_allclose(out[j], expected, atol=1e-5)
    # The random network's latent mixing is not pixel mixing: there is a correction.
    assert np.abs(out[j] - ((1 - a) * slices[n] + a * slices[n + 1])).max() > 1e-2

  base = rng.uniform(-1, 1, (5, 18, 22)).astype(np.float32)  # An explicit base (cubic's).
  on_base = ae_interp.interpolate_slices(params, config, slices, positions, corrected=True,
                                         base=base, keep_acquired=False, slices_per_call=2)
  np.testing.assert_array_equal(on_base[:3], base[:3])
  # The same correction, on another base.
  np.testing.assert_allclose(on_base[3:] - base[3:],
                             out[3:] - expected_gap(slices, positions[3:]), atol=1e-5)
  with pytest.raises(ValueError, match="base"):
    ae_interp.interpolate_slices(params, config, slices, positions, corrected=True,
                                 base=base[:4])


def expected_gap(slices, positions):
  """Linear interpolation of `slices` at fractional `positions`, computed by hand."""
  n = np.minimum(np.floor(positions), len(slices) - 2).astype(int)
  a = (positions - n)[:, None, None]
  return (1 - a) * slices[n] + a * slices[n + 1]


def test_a_decoder_linear_in_the_code_adds_nothing_to_the_base(params):
  config = _linear_decoder_config()
  rng = np.random.default_rng(5)
  slices = rng.uniform(-1, 1, (4, 16, 20)).astype(np.float32)
  positions = np.array([0.0, 0.3, 0.5, 1.75, 2.5, 3.0])
  base = expected_gap(slices, positions)
  out = ae_interp.interpolate_slices(params, config, slices, positions, corrected=True,
                                     slices_per_call=4)
  scale = np.abs(_reconstruct(params, config, slices)).max()
  np.testing.assert_allclose(out, base, atol=1e-5 * max(scale, 1.0))
  latent = ae_interp.interpolate_slices(params, config, slices, positions, slices_per_call=4)
  # The uncorrected latent mixture is the mixture of reconstructions, not of the slices.
  assert np.abs(latent[1:5] - base[1:5]).max() > 1e-2


def test_a_slice_decodes_the_same_whatever_it_is_batched_with(params):
  config = tiny_config()
  rng = np.random.default_rng(2)
  slices = rng.uniform(-1, 1, (5, 16, 16)).astype(np.float32)
  positions = np.array([0.0, 0.5, 1.0, 2.3, 4.0])
  one = ae_interp.interpolate_slices(params, config, slices, positions, slices_per_call=1)
  many = ae_interp.interpolate_slices(params, config, slices, positions, slices_per_call=4)
  np.testing.assert_allclose(one, many, atol=1e-5)  # Running averages, not batch statistics.


# ------------------------------------------------------------------------- the grid


def _scan(shape, thick_mm, seed=3, noise=0.0):
  """A thick-slice phantom (1 mm in-plane) in scanner-like units, optionally noisy."""
  rng = np.random.default_rng(seed)
  data = 100.0 + 1000.0 * (phantoms.body_phantom(shape, seed=seed)
                           + noise * rng.uniform(size=shape))
  affine = np.diag([1.0, thick_mm, 1.0, 1.0])
  affine[:3, 3] = [-20.0, 31.5, 7.25]
  return data.astype(np.float32), affine


@pytest.mark.parametrize("thick_mm, acquired, expected_slices", [(4.0, 10, 37), (2.5, 9, 21)])
def test_output_is_on_the_isotropic_grid_and_keeps_the_acquired_slices(
    params, thick_mm, acquired, expected_slices):
  config = tiny_config()
  data, affine = _scan((20, acquired, 24), thick_mm, noise=0.5)  # Noise: distinct slices.
  out, out_affine = inference.super_resolve(data, affine, params, config,
                                            SROptions(progress=False))
  # The grid every method writes (tests/test_inference.py holds CLADE to it).
  shape, iso_affine, positions = volume_lib.isotropic_geometry(data.shape, affine, 1)
  assert out.shape == shape == (20, expected_slices, 24)
  np.testing.assert_allclose(out_affine, iso_affine)
  np.testing.assert_allclose(volume_lib.voxel_spacing(out_affine), [1.0, 1.0, 1.0])
  # Output slice j lies at acquired position j / thick_mm; whole positions are acquired
  # slices kept as they are (beyond the normaliser's window too: inference restores
  # those voxels from the input, clade_jax/data/intensity.py).
  on_slice = np.flatnonzero(np.abs(positions - np.rint(positions)) < 1e-9)
  assert len(on_slice) == (acquired if thick_mm == 4.0 else 5)
  for j in on_slice:
    k = int(round(positions[j]))
    np.testing.assert_allclose(out[:, j], data[:, k], rtol=1e-5, atol=1e-3)
    np.testing.assert_allclose(out_affine @ [3, j, 5, 1], affine @ [3, k, 5, 1], atol=1e-9)
  # A slice between, mid-volume (acquired position 4.25 at 4 mm, 4.4 at 2.5 mm), decodes
  # the mixture of its neighbours' codes with alpha from that position.
  prepared = preprocess.prepare_input(data, affine, config.data)
  j = 17 if thick_mm == 4.0 else 11
  n, alpha = int(np.floor(positions[j])), positions[j] - np.floor(positions[j])
  assert n == 4 and 0.2 < alpha < 0.5
  slices = prepared.normalizer.forward(np.moveaxis(data, 1, 0)[n:n + 2])  # 20 x 24: no padding.
  codes = _codes(params, config, slices)
  assert np.abs(codes[0] - codes[1]).mean() > 0.1 * np.abs(codes).mean()  # Distinct slices.
  model = ae_interp.create_model(config.model)
  expected = model.apply(params["autoencoder"], (1 - alpha) * codes[:1] + alpha * codes[1:],
                         method="decode")
  # Back in scan units by the shared rule (the window's edges restored from the input).
  expected = intensity.to_scan_units(np.asarray(expected)[0, ..., 0], prepared.isotropic[:, j],
                                     prepared.normalizer, limits=prepared.acquired_range)
  np.testing.assert_allclose(out[:, j], expected, rtol=1e-4, atol=1e-2)


@pytest.mark.parametrize("base_kind", ["linear", "cubic"])
def test_corrected_inference_with_a_linear_decoder_is_its_base_in_scan_units(params, base_kind):
  config = _linear_decoder_config()
  config.eval.interpolation = "corrected"
  config.eval.correction_base = base_kind
  config.eval.keep_acquired = False  # The corrected output needs no substitution.
  data, affine = _scan((20, 10, 24), 4.0, noise=0.5)
  out, _ = inference.super_resolve(data, affine, params, config, SROptions(progress=False))
  prepared = preprocess.prepare_input(data, affine, config.data)
  if base_kind == "cubic":  # The cubic-spline input every method gets.
    expected = prepared.isotropic
  else:
    positions = ae_interp.output_positions(prepared)
    acquired = prepared.normalizer.forward(np.moveaxis(prepared.acquired, 1, 0))
    expected = intensity.to_scan_units(
        np.moveaxis(expected_gap(acquired, positions), 0, 1), prepared.isotropic,
        prepared.normalizer, limits=prepared.acquired_range)
  expected = np.clip(expected, *prepared.acquired_range)
  np.testing.assert_allclose(out, expected, rtol=1e-4, atol=0.05)
  np.testing.assert_allclose(out[:, ::4], data, rtol=1e-4, atol=0.05)  # Acquired slices.


# ---------------------------------------------------------------- training and data


def test_patches_are_rotated_crops_of_acquired_slices_and_pure_in_the_index(data_root):
  config = tiny_config(data_root)
  config.data.intensity_scale = 0.0
  config.data.intensity_shift = 0.0
  volumes, source = train.build_data(config)
  # Records: the acquired slices (2 volumes x 10) with a 16x16 window >= 10 % foreground.
  usable = [(v, s) for v, vol in enumerate(volumes)
            for s, image in enumerate(np.moveaxis(vol.normalised_acquired, vol.thick_axis, 0))
            if (np.lib.stride_tricks.sliding_window_view(image > -0.9, (16, 16))
                .mean(axis=(2, 3)).max() >= 0.1)]
  assert source.slices == usable and 10 < len(usable) < 20  # The end slices are empty.
  assert len(source) == 2 * len(usable)
  first = source.sample(3, 7)
  np.testing.assert_array_equal(first["image"], source.sample(3, 7)["image"])
  patch = first["image"][..., 0]
  assert first["image"].shape == (16, 16, 1) and first["image"].dtype == np.float32
  v, s = source.slices[3]
  image = volume_lib.plane_slices(volumes[v].normalised_acquired, volumes[v].thick_axis)[s]
  windows = np.lib.stride_tricks.sliding_window_view(image, (16, 16))
  assert any(np.array_equal(np.rot90(patch, -k), w) for k in range(4)
             for w in windows.reshape(-1, 16, 16))

  config.data.intensity_scale = 0.2
  config.data.intensity_shift = 0.1
  changed = ae_interp.make_source(config, volumes, []).sample(3, 7)["image"][..., 0]
  # Same crop and rotation, one gain about the background and one offset.
  gain, offset = np.polyfit((patch + 1).ravel(), (changed + 1).ravel(), 1)
  np.testing.assert_allclose(changed, (patch + 1) * gain - 1 + offset, atol=1e-5)
  assert 0.8 <= gain <= 1.2 and abs(offset) <= 0.1 and abs(gain - 1) + abs(offset) > 1e-3


def test_batch_norm_averages_follow_the_global_batch_under_the_data_mesh(params):
  config = tiny_config()
  model = ae_interp.create_model(config.model)
  weights, stats = params["autoencoder"]["params"], params["autoencoder"]["batch_stats"]
  state = ae_interp.AEState(jnp.zeros((), jnp.int32), {"autoencoder": weights},
                            {"autoencoder": stats},
                            ae_interp.make_optimizer(config.train).init(weights))
  images = np.random.default_rng(4).uniform(-1, 1, (4, 16, 16, 1)).astype(np.float32)
  mesh = jax.make_mesh((jax.device_count(),), ("data",))
  step = jax.jit(ae_interp.make_train_step(config),
                 in_shardings=(NamedSharding(mesh, P()), NamedSharding(mesh, P("data"))))
  new_state, metrics = step(state, {"image": images})
  # The first batch norm sees leaky_relu(second conv of the first block) of the whole batch.
  _, inter = model.apply(params["autoencoder"], images, train=True, mutable=["batch_stats",
                         "intermediates"], capture_intermediates=True)
  h = np.asarray(inter["intermediates"]["encoder"]["Conv3x3_1"]["__call__"][0])
  h = np.where(h > 0, h, config.model.negative_slope * h)
  old = params["autoencoder"]["batch_stats"]["encoder"]["BatchNorm_0"]
  new = new_state.batch_stats["autoencoder"]["encoder"]["BatchNorm_0"]
  np.testing.assert_allclose(new["mean"], 0.9 * old["mean"] + 0.1 * h.mean((0, 1, 2)),
                             rtol=1e-4, atol=1e-5)
  np.testing.assert_allclose(new["var"], 0.9 * old["var"] + 0.1 * h.var((0, 1, 2)),
                             rtol=1e-4, atol=1e-5)
  assert int(new_state.step) == 1 and np.isfinite(float(metrics["loss/mse"]))


def test_train_resume_and_infer_to_nifti(data_root, tmp_path):
  config = tiny_config(data_root)
  straight, resumed = str(tmp_path / "straight"), str(tmp_path / "resumed")
  final = train.train_and_evaluate(config, straight)
  config.train.num_steps = 2
  half = train.train_and_evaluate(config, resumed)
  # The same run as saved before batch statistics had an entry of their own (inside
  # params): it resumes too (`ae_interp.legacy_checkpoint`).
  legacy = str(tmp_path / "legacy")
  mngr = checkpointing.manager(resumed)
  _, data_state = checkpointing.restore(mngr, checkpointing.abstract_like(half))
  mngr.close()
  checkpointing.write_config(legacy, config)
  mngr = checkpointing.manager(legacy)
  checkpointing.save(mngr, 2, {"step": half.step, "params": ae_interp.inference_params(half),
                               "opt_state": half.opt_state}, data_state)
  mngr.wait_until_finished()
  mngr.close()
  config.train.num_steps = 4
  again = train.train_and_evaluate(config, resumed)
  upgraded = train.train_and_evaluate(config, legacy)
  assert int(again.step) == int(upgraded.step) == 4
  for state in (again, upgraded):
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7),
                 (state.params, state.batch_stats), (final.params, final.batch_stats))
  for name in ("holdout_sr.png", "samples/step_0000004.png", "config.json"):
    assert os.path.exists(os.path.join(resumed, name)), name

  data, affine = _scan((40, 10, 40), 4.0, seed=5)
  scan = str(tmp_path / "scan.nii.gz")
  nib.save(nib.Nifti1Image(data, affine), scan)
  output = str(tmp_path / "scan_ae.nii.gz")
  result = inference.run(resumed, scan, output, options=SROptions(progress=False),
                         figure=False, data_consistency=True)
  assert result.method == "AE interpolation" and result.step == 4
  image = nib.load(output)
  shape, iso_affine, _ = volume_lib.isotropic_geometry(data.shape, affine, 1)
  assert image.shape == shape
  np.testing.assert_allclose(image.affine, iso_affine, atol=1e-4)
  assert np.isfinite(np.asarray(image.dataobj)).all()
  # Data consistency works on this method's output as on any other.
  span = float(np.percentile(data, 99.5) - np.percentile(data, 0.5))
  # Within the acquired range (`consistency.project_within`), which the phantom's
  # noisy brightest slices keep from an exact match.
  assert result.residual_after["rms"] < min(1e-2 * span, 0.2 * result.residual_before["rms"])
  assert result.intensity["output_range"][0] >= float(data.min()) - 1e-3


def test_checkpoints_of_either_layout_load_the_same_variables(params, tmp_path):
  """Batch statistics are a state entry of their own; runs saved before they were (in
  ``params``, beside the weights) load and super-resolve bitwise the same."""
  config = tiny_config()
  weights, stats = params["autoencoder"]["params"], params["autoencoder"]["batch_stats"]
  opt_state = ae_interp.make_optimizer(config.train).init(weights)
  step = jnp.zeros((), jnp.int32)
  layouts = {
      "current": ae_interp.AEState(step, {"autoencoder": weights}, {"autoencoder": stats},
                                   opt_state),
      "before": {"step": step, "params": params, "opt_state": opt_state}}
  data, affine = _scan((20, 10, 24), 4.0, noise=0.5)
  outputs = {}
  for name, state in layouts.items():
    workdir = str(tmp_path / name)
    checkpointing.write_config(workdir, config)
    mngr = checkpointing.manager(workdir)
    checkpointing.save(mngr, 0, state, {})
    mngr.wait_until_finished()
    mngr.close()
    loaded, _, _ = inference.load_params(workdir)  # Checked against the config, too.
    jax.tree.map(np.testing.assert_array_equal, loaded, params)
    outputs[name], _ = inference.super_resolve(data, affine, loaded, config,
                                               SROptions(progress=False))
  np.testing.assert_array_equal(outputs["current"], outputs["before"])
  # Resuming: the older layout restores through the method's upgrade, or not at all.
  mngr = checkpointing.manager(str(tmp_path / "before"))
  abstract = checkpointing.abstract_like(layouts["current"])
  with pytest.raises(checkpointing.CheckpointError, match=r"checkpoint 0 does not fit"):
    checkpointing.restore(mngr, abstract)
  state, _ = checkpointing.restore(mngr, abstract, legacy=ae_interp.legacy_checkpoint)
  mngr.close()
  jax.tree.map(np.testing.assert_array_equal, state, layouts["current"])


# --------------------------------------------------------------------------- config


def test_shipped_configs_are_valid_and_bad_values_are_one_line(tmp_path):
  for arg in (None, "small", "demo"):
    config = ae_config.get_config(arg)
    config_validation.validate(config, ae_config.get_config(),
                               ranges=ae_interp.config_ranges)
    assert config.method == "ae_interp" and config.data.patch_size % 2 ** config.model.num_blocks == 0
  config = tiny_config(tmp_path)
  config.data.intensity_scale = 1.5
  config.model.latent_features = 0
  with pytest.raises(ConfigError) as err:
    train.train_and_evaluate(config, str(tmp_path / "run"))
  assert err.value.problems == [
      "model.latent_features=0 is out of range: must be >= 1",
      "data.intensity_scale=1.5 is out of range: must be in [0, 1)"]
  config = tiny_config(tmp_path)
  config.eval.interpolation = "cubic"
  with pytest.raises(ConfigError, match=r"^eval.interpolation='cubic' is not one of latent, corrected$"):
    train.train_and_evaluate(config, str(tmp_path / "run"))
  config = tiny_config(tmp_path)
  config.data.patch_size = 18
  with pytest.raises(ConfigError, match=r"data.patch_size=18 must be a multiple of 4"):
    ae_interp.init_state(config, train.init_key(0))
