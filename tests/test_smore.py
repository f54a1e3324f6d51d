"""SMORE: its training pairs, network, train step, inference and the shared driver."""

import os
import shutil

import jax
import jax.numpy as jnp
import nibabel as nib
import numpy as np
import optax
import pytest

from clade_jax import checkpointing, inference, metric_writer, train, volume_srr
from clade_jax.config_validation import ConfigError
from clade_jax.data import consistency, degrade, inplane_pairs, patches, preprocess
from clade_jax.data import volume as volume_lib
from clade_jax.methods import smore
from clade_jax.models.sr_network import SRNetwork
from configs import mri
from configs import smore as smore_config
from tests import phantoms

QFORM_CODE, SFORM_CODE = 1, 4  # Distinct, so swapping them would show.


def smooth_volume(shape=(24, 40, 28), seed=0):
  """A random volume with structure at every scale, so blurs and shifts show."""
  rng = np.random.default_rng(seed)
  spectrum = np.fft.fftn(rng.normal(size=shape))
  k = np.sqrt(sum(np.square(f) for f in np.meshgrid(*[np.fft.fftfreq(n) for n in shape],
                                                    indexing="ij")))
  return np.real(np.fft.ifftn(spectrum / (1.0 + 20.0 * k))).astype(np.float32)


# --- The training pairs: the simulator's slices, the inference input's interpolation.

@pytest.mark.parametrize("profile, thickness, phase", [
    ("gaussian", None, 0), ("gaussian", 6.0, 3), ("rect", None, 1), ("rect", 2.0, 2)])
def test_degraded_in_plane_rows_are_the_simulators_thick_slices(profile, thickness, phase):
  """Same profile, same positions: rows of a fine slice degraded as the thick axis is."""
  spacing = 4.0
  truth = volume_lib.Volume(smooth_volume(), np.eye(4))
  lr = degrade.degrade(truth, 1, spacing, thickness, profile=profile, offset_vox=phase)
  upsampled = volume_lib.resample_thick_axis(lr, 1, 1.0).data
  n_samples, n_grid = inplane_pairs.sample_grid(truth.data.shape[1], spacing, phase)
  assert (n_samples, n_grid) == (lr.data.shape[1], upsampled.shape[1])
  thickness_vox = spacing if thickness is None else thickness
  for i in (0, 11, 23):  # Slices of a plane containing the thick axis, thick on rows.
    image = truth.data[i]
    matrix = inplane_pairs.acquisition_rows(image.shape[0], spacing, thickness_vox, profile,
                                            phase)
    np.testing.assert_allclose(matrix @ image, lr.data[i], rtol=1e-5, atol=1e-6)
    lr_like, hr = inplane_pairs.degrade_rows(image, spacing, thickness_vox, profile, phase)
    # What inference would feed the network for this slice, and the truth there.
    np.testing.assert_allclose(lr_like, upsampled[i], rtol=1e-5, atol=1e-5)
    np.testing.assert_array_equal(hr, truth.data[i, phase:phase + n_grid])


@pytest.mark.parametrize("ratio, phase", [(2.5, 0), (2.5, 2), (3.4, 1), (5.5, 4)])
def test_non_integer_spacing_puts_samples_where_the_isotropic_grid_has_them(ratio, phase):
  """A ramp along the degraded axis survives exactly only if every sample sits at
  phase + k * ratio and the grid spans what `isotropic_geometry` gives the slices."""
  n = 30
  ramp = np.repeat(np.arange(n, dtype=np.float64)[:, None], 3, axis=1)
  lr_like, hr = inplane_pairs.degrade_rows(ramp, ratio, 1.0, "rect", phase)
  np.testing.assert_allclose(lr_like, hr, atol=1e-4)
  np.testing.assert_allclose(hr[:, 0], phase + np.arange(hr.shape[0]))
  n_samples, n_grid = inplane_pairs.sample_grid(n, ratio, phase)
  affine = np.diag([ratio, 1.0, 1.0, 1.0])
  shape, _, _ = volume_lib.isotropic_geometry((n_samples, 3), affine, 0, 1.0)
  assert shape[0] == n_grid == hr.shape[0]
  # The data-consistency model of such an acquisition has the same rows (where no
  # profile reaches past the grid: each clamps its own edges).
  model = consistency.for_grid((n_samples, 3, 1), affine, (n_grid, 3, 1), np.eye(4), 0,
                               1.5, "gaussian")
  rows = inplane_pairs.acquisition_rows(n, ratio, 1.5, "gaussian", phase)[:, phase:phase + n_grid]
  inside = (np.abs(rows.sum(1) - 1) < 1e-12) & (rows[:, 0] == 0) & (rows[:, -1] == 0)
  assert inside.sum() >= 2
  np.testing.assert_allclose(rows[inside], model.matrix[inside], atol=1e-12)


def test_the_eight_symmetries_are_distinct_and_keep_the_pixels():
  image = np.arange(12.0).reshape(3, 4)
  images = [inplane_pairs.symmetry(image, k) for k in range(inplane_pairs.SYMMETRIES)]
  assert len({(x.shape, x.tobytes()) for x in map(np.ascontiguousarray, images)}) == 8
  for x in images:
    np.testing.assert_array_equal(np.sort(x, axis=None), np.sort(image, axis=None))


@pytest.fixture(scope="module")
def data_root(tmp_path_factory):
  root = tmp_path_factory.mktemp("data")
  phantoms.thick_slice_volume(root / "a.nii.gz", shape=(40, 40, 40), step=4, seed=0)
  return root


def tiny_config(root):
  config = smore_config.get_config("small")
  config.data.root = str(root)
  config.data.patch_size = 16
  config.eval.stride = 8
  config.data.num_threads = 1
  config.model.features = 4
  config.model.num_blocks = 1
  config.train.batch_size = 4
  config.train.num_steps = 4
  config.train.warmup_steps = 1
  config.train.log_every = 1
  config.train.sample_every = 2
  config.ckpt.every = 2
  return config


def test_examples_are_pure_in_record_and_index_and_pair_a_patch_with_its_degradation(data_root):
  config = tiny_config(data_root)
  volumes = patches.prepare_volumes(config.data)
  source = smore.make_source(config, volumes, holdout=[(0, 5)])
  assert source.ratios == [4.0] and source.phases == [[0, 1, 2, 3]]
  assert len(source) == config.data.patches_per_slice * len(source.slices)
  first, again = source.sample(3, 17), source.sample(3, 17)
  for k in "xy":
    assert first[k].shape == (16, 16, 1) and first[k].dtype == np.float32
    np.testing.assert_array_equal(first[k], again[k])
  assert not np.array_equal(first["x"], source.sample(3, 18)["x"])
  # y is a patch of an acquired slice (under a symmetry); x is smoother along its rows.
  y = first["y"][..., 0]
  assert any(np.all(np.lib.stride_tricks.sliding_window_view(
      inplane_pairs.symmetry(image, k), y.shape) == y, axis=(2, 3)).any()
             for image in source.hr[0] for k in range(inplane_pairs.SYMMETRIES))
  row_detail = lambda a: np.abs(np.diff(a[..., 0], axis=0)).mean()
  examples = [source.sample(r, i) for i, r in enumerate(range(len(source.slices)))]
  assert (np.mean([row_detail(e["x"]) for e in examples])
          < 0.8 * np.mean([row_detail(e["y"]) for e in examples]))


def test_slice_thickness_and_kernel_reach_the_pairs(data_root):
  config = tiny_config(data_root)
  volumes = patches.prepare_volumes(config.data)
  config.data.slice_profile = "rect"
  config.data.slice_thickness = 1.0  # A gap: 1 mm slices every 4 mm.
  gap = smore.make_source(config, volumes, [])
  np.testing.assert_allclose(gap._matrices[0, 40, 0][1], np.eye(40)[4], atol=1e-9)
  config.data.slice_thickness = 0.0
  config.data.slice_kernel = (1.0, 2.0, 1.0)
  kernel = smore.make_source(config, volumes, [])
  np.testing.assert_allclose(kernel._matrices[0, 40, 0][1, 3:6], [0.25, 0.5, 0.25])
  config.data.slice_thickness = 3.0
  with pytest.raises(ConfigError, match="data.slice_kernel sets the slice thickness"):
    smore.make_source(config, volumes, [])


def test_match_noise_gives_the_simulated_inputs_the_acquired_slices_noise(tmp_path):
  """Degrading averages noise down (a 4 mm rectangle halves it); match_noise tops it up."""
  rng = np.random.default_rng(0)
  sigma = 3.0
  # 4 mm slices along axis 1, 1 mm in-plane: slices 2-9 flat tissue, air slices to
  # measure the noise in, and a bright one so the tissue is not at the window's top.
  clean = np.full((48, 12, 48), 100.0, np.float32)
  clean[:, 1], clean[:, 10:] = 0.0, 0.0
  clean[:, 0] = 200.0
  noisy = np.abs(clean + sigma * rng.standard_normal(clean.shape)
                 + 1j * sigma * rng.standard_normal(clean.shape)).astype(np.float32)
  path = str(tmp_path / "noisy.nii.gz")
  nib.save(nib.Nifti1Image(noisy, np.diag([1.0, 4.0, 1.0, 1.0])), path)
  config = tiny_config(path)
  config.data.slice_profile, config.data.slice_thickness = "rect", 4.0
  volumes = patches.prepare_volumes(config.data)
  half_width = volumes[0].normalizer.half_width
  assert inplane_pairs.noise_sigma(volumes[0]) * half_width == pytest.approx(sigma, rel=0.05)

  def tissue_noise(match):
    config.data.match_noise = match
    source = smore.make_source(config, volumes, [])
    stds = []
    for i in range(400):
      example = source.sample(i % len(source.slices), i)
      y = volumes[0].normalizer.inverse(example["y"][..., 0])
      if abs(y.mean() - 100.0) < 2 * sigma:  # A tissue slice (all flat).
        stds.append(np.std(example["x"][..., 0] * half_width))
    assert len(stds) > 20
    return float(np.mean(stds)), source

  plain, source = tissue_noise(False)
  matched, matched_source = tissue_noise(True)
  assert source.noise_sigmas == [0.0]
  assert matched_source.noise_sigmas[0] * half_width == pytest.approx(sigma, rel=0.05)
  # What inference feeds the network: low-resolution-plane slices of the cubic-spline
  # volume, 16 x 16 windows (thick direction along the rows) of its noise (the spline
  # of the clean scan subtracted: it rings at the air and bright slices), in the
  # tissue slices 2-9 (rows 8-36).
  noise = (preprocess.prepare_input(noisy, np.diag([1.0, 4.0, 1.0, 1.0]), config.data).isotropic
           - preprocess.prepare_input(clean, np.diag([1.0, 4.0, 1.0, 1.0]), config.data).isotropic)
  windows = [np.std(noise[a, r:r + 16, c:c + 16]) for a in range(0, 48, 4)
             for r in range(8, 21, 2) for c in range(0, 33, 4)]
  inference = float(np.mean(windows))
  assert matched / inference == pytest.approx(1.0, abs=0.1)
  assert plain / inference < 0.7


def test_match_noise_adds_nothing_to_a_noise_free_scan(data_root):
  config = tiny_config(data_root)
  volumes = patches.prepare_volumes(config.data)
  config.data.match_noise = True
  matched = smore.make_source(config, volumes, [])
  config.data.match_noise = False
  plain = smore.make_source(config, volumes, [])
  assert matched.noise_sigmas == [0.0]
  for i in range(5):
    np.testing.assert_array_equal(matched.sample(i, i)["x"], plain.sample(i, i)["x"])


def test_data_consistency_uses_the_same_profile_settings(tmp_path):
  """infer's acquisition model reads data.slice_kernel / thickness like the pairs do."""
  scan, data, affine = oblique_scan(tmp_path / "scan.nii.gz")
  source = volume_lib.load_volume(scan)
  config = smore_config.get_config()
  prepared = preprocess.prepare_input(source.data, source.affine, config.data)
  config.data.slice_kernel = (1.0, 2.0, 1.0)
  model = inference.acquisition_model(source, prepared, config.data)
  np.testing.assert_allclose(model.matrix[2, 7:10], [0.25, 0.5, 0.25])
  assert np.count_nonzero(model.matrix[2]) == 3
  config.data.slice_thickness = 2.0
  with pytest.raises(volume_lib.VolumeError, match="data.slice_kernel sets the slice thick"):
    inference.acquisition_model(source, prepared, config.data)


# --- The network and its training.

def test_the_untrained_network_is_the_identity():
  model = SRNetwork(features=8, num_blocks=2)
  x = jnp.asarray(np.random.default_rng(0).uniform(-1, 1, (2, 12, 20, 1)), jnp.float32)
  params = jax.jit(model.init)(jax.random.key(0), x)["params"]
  assert float(jnp.abs(params["ResidualBlock_0"]["Conv3x3_0"]["kernel"]).max()) > 0
  np.testing.assert_array_equal(jax.jit(model.apply)({"params": params}, x), x)


def test_network_learns_a_toy_sharpening_problem():
  """Blurred, 3x-subsampled and spline-interpolated edges: 300 steps recover detail."""
  rng = np.random.default_rng(0)

  def example():
    image = np.full((40, 24), -1.0)
    for _ in range(4):  # Random bright rectangles: sharp edges along both axes.
      r, c = rng.integers(0, 30), rng.integers(0, 16)
      image[r:r + rng.integers(4, 12), c:c + rng.integers(4, 10)] = rng.uniform(0, 1)
    x, y = inplane_pairs.degrade_rows(image, 3.0, 3.0, "gaussian", int(rng.integers(3)))
    return x[:24, :, None], y[:24, :, None]

  def batch(n):
    xs, ys = zip(*(example() for _ in range(n)))
    return jnp.asarray(np.stack(xs), jnp.float32), jnp.asarray(np.stack(ys), jnp.float32)

  model = SRNetwork(features=16, num_blocks=2)
  optimizer = optax.adam(2e-3)
  params = jax.jit(model.init)(jax.random.key(0), jnp.zeros((1, 24, 24, 1)))["params"]
  opt_state = optimizer.init(params)

  @jax.jit
  def step(params, opt_state, x, y):
    loss, grads = jax.value_and_grad(
        lambda p: jnp.mean(jnp.abs(model.apply({"params": p}, x) - y)))(params)
    updates, opt_state = optimizer.update(grads, opt_state)
    return optax.apply_updates(params, updates), opt_state, loss

  batches = [batch(8) for _ in range(300)]
  for x, y in batches:
    params, opt_state, _ = step(params, opt_state, x, y)
  x, y = batch(64)  # Held out.
  error = float(jnp.mean(jnp.abs(model.apply({"params": params}, x) - y)))
  baseline = float(jnp.mean(jnp.abs(x - y)))
  assert error < 0.7 * baseline, (error, baseline)  # 0.56 measured; untrained: 1.


def test_train_step_starts_at_the_interpolation_and_lowers_the_l1(data_root):
  config = tiny_config(data_root)
  config.train.schedule = "constant"
  config.train.learning_rate = 1e-2
  state = jax.jit(lambda key: smore.init_state(config, key))(train.init_key(0))
  step = jax.jit(smore.make_train_step(config))
  rng = np.random.default_rng(0)
  y = jnp.asarray(rng.uniform(-1, 1, (4, 16, 16, 1)), jnp.float32)
  batch = {"x": 0.5 * y, "y": y}
  state, first = step(state, batch)
  assert set(first) == {"loss/l1", "loss/l1_input", "grad_norm/SR"}
  np.testing.assert_allclose(first["loss/l1"], first["loss/l1_input"], rtol=1e-6)
  np.testing.assert_allclose(first["loss/l1"], jnp.mean(jnp.abs(0.5 * y - y)), rtol=1e-6)
  for _ in range(20):
    state, metrics = step(state, batch)
  assert int(state.step) == 21
  assert metrics["loss/l1"] < 0.5 * first["loss/l1"]


def test_fourier_combination_is_the_mean_at_power_zero_and_picks_the_stronger_estimate():
  rng = np.random.default_rng(0)
  a = rng.normal(size=(6, 8, 10)).astype(np.float32)
  b = rng.normal(size=(6, 8, 10)).astype(np.float32)
  np.testing.assert_allclose(smore.fourier_combine((a, b), 0.0), (a + b) / 2, atol=1e-5)
  np.testing.assert_allclose(smore.fourier_combine((a, a), 7.0), a, atol=1e-5)
  # A sharp and a blurred copy: a large power keeps the sharp one's spectrum.
  blurred = np.real(np.fft.ifftn(np.fft.fftn(a) * np.exp(-np.square(
      np.fft.fftfreq(6))[:, None, None] * 20))).astype(np.float32)
  np.testing.assert_allclose(smore.fourier_combine((a, blurred), 200.0), a, atol=1e-3)


# --- Inference: orientation, geometry, data consistency; the driver end to end.

def test_both_planes_hand_the_network_the_thick_direction_on_its_rows(monkeypatch):
  """A network that shifts its input one row down must shift the volume one voxel
  along the thick axis, whichever plane and orientation the slices come from."""
  shift_rows = lambda params, x: jnp.concatenate([x[:, :1], x[:, :-1]], axis=1)
  monkeypatch.setattr(smore, "network_apply_fn", lambda model_config: shift_rows)
  config = smore_config.get_config()
  for thick_axis in (0, 1, 2):
    spacing = [1.0, 1.0, 1.0]
    spacing[thick_axis] = 3.0
    data = smooth_volume((10, 12, 14), seed=thick_axis)
    prepared = preprocess.prepare_input(data, np.diag(spacing + [1.0]), config.data)
    normalised = prepared.normalizer.forward(prepared.isotropic)
    expected = np.concatenate([np.take(normalised, [0], thick_axis),
                               np.take(normalised, np.arange(normalised.shape[thick_axis] - 1),
                                       thick_axis)], axis=thick_axis)
    for planes in ("trained", "both"):
      out = smore.super_resolve({"SR": {}}, config, prepared,
                                volume_srr.SROptions(planes=planes, progress=False))
      np.testing.assert_allclose(out, expected, atol=1e-6, err_msg=f"{thick_axis} {planes}")


def oblique_scan(path):
  """A thick-slice phantom on a rotated, shifted grid with distinct qform/sform codes."""
  data = np.take(phantoms.body_phantom((40, 40, 40), seed=3), np.arange(0, 40, 4), axis=1)
  a = np.deg2rad(20.0)
  affine = np.eye(4)
  affine[:3, :3] = np.array([[np.cos(a), -np.sin(a), 0], [np.sin(a), np.cos(a), 0],
                             [0, 0, 1]]) @ np.diag([1.0, 4.0, 1.0])
  affine[:3, 3] = [-20.0, 31.5, 7.25]
  image = nib.Nifti1Image(data, affine)
  image.set_qform(affine, code=QFORM_CODE)
  image.set_sform(affine, code=SFORM_CODE)
  nib.save(image, str(path))
  return str(path), data, affine


def test_train_resume_infer_end_to_end(data_root, tmp_path):
  """A run stopped after step 4 and resumed equals the run in one go (the cosine
  schedule included); infer.py's output sits where CLADE's does, with the input's
  codes, and data consistency reproduces the acquired slices."""
  if jax.default_backend() == "cpu":
    assert jax.device_count() == 2  # conftest's fake devices: the batch is sharded.
  config = tiny_config(data_root)
  straight, resumed = str(tmp_path / "straight"), str(tmp_path / "resumed")
  config.train.num_steps = 6
  final = train.train_and_evaluate(config, straight)
  shutil.copytree(straight, resumed)  # As if it had been stopped after step 4:
  shutil.rmtree(os.path.join(resumed, "checkpoints", "6"))
  again = train.train_and_evaluate(config, resumed)
  assert int(again.step) == 6
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6),
               again.params, final.params)
  assert [m["step"] for m in metric_writer.read_metrics(resumed)] == [1, 2, 3, 4, 5, 6]
  for name in ("holdout_sr.png", "samples/step_0000006.png", "config.json"):
    assert os.path.exists(os.path.join(resumed, name)), name

  scan, data, affine = oblique_scan(tmp_path / "scan.nii.gz")
  out = str(tmp_path / "scan_smore.nii.gz")
  result = inference.run(resumed, scan, out, options=volume_srr.SROptions(progress=False),
                         figure=False, data_consistency=True)
  assert result.method == "SMORE" and result.options.planes == "both" and result.step == 6
  # Within the acquired range (`consistency.project_within`): the phantom's slices are
  # samples, not Gaussian averages, so a zero slice whose profile reaches the bright
  # body next to it cannot be matched in range (1.2 % of the range, rms, is left
  # however many rounds run: measured 100 to 3000).
  assert result.residual_after["rms_relative"] < min(
      2e-2, 0.3 * result.residual_before["rms_relative"])  # The projection did work.
  image = nib.load(out)
  shape, iso_affine, _ = volume_lib.isotropic_geometry(data.shape, affine, 1)
  assert image.shape == shape == (40, 37, 40)
  assert int(image.header["qform_code"]) == QFORM_CODE
  assert int(image.header["sform_code"]) == SFORM_CODE
  np.testing.assert_allclose(image.get_sform(), iso_affine, atol=1e-4)
  np.testing.assert_allclose(image.get_qform(), iso_affine, atol=1e-4)
  # The acquired slices re-acquired from the output: what data consistency promised.
  acquisition = consistency.for_grid(data.shape, affine, shape, iso_affine, 1)
  lines = np.moveaxis(np.asarray(image.get_fdata()), 1, 0).reshape(shape[1], -1)
  reacquired = (acquisition.matrix @ lines).reshape(data.shape[1], 40, 40)
  output = np.asarray(image.get_fdata())
  assert output.min() >= data.min() - 1e-6 and output.max() <= data.max() + 1e-6
  assert (np.sqrt(np.mean((reacquired - np.moveaxis(data, 1, 0)) ** 2))
          < 2e-2 * np.ptp(data))

  # CLADE on the same scan writes the same header geometry.
  clade_config = mri.get_config()
  clade_config.model.features = 4
  clade_config.model.num_blocks = 1
  clade_config.model.disc_features = 4
  clade_config.model.conv_impl = "xla"
  clade_dir = str(tmp_path / "clade")
  checkpointing.write_config(clade_dir, clade_config)
  from clade_jax.methods import clade
  shapes = jax.eval_shape(lambda: clade.init_state(clade_config, train.init_key(0)))
  state = jax.tree.map(lambda s: np.zeros(s.shape, s.dtype), shapes)
  mngr = checkpointing.manager(clade_dir)
  checkpointing.save(mngr, 1, state, {})
  mngr.wait_until_finished()
  mngr.close()
  clade_out = str(tmp_path / "scan_clade.nii.gz")
  inference.run(clade_dir, scan, clade_out,
                options=volume_srr.SROptions(mode="full", progress=False), figure=False)
  reference = nib.load(clade_out)
  assert reference.shape == image.shape
  for field in ("qform_code", "sform_code", "pixdim", "quatern_b", "quatern_c", "quatern_d",
                "qoffset_x", "qoffset_y", "qoffset_z", "srow_x", "srow_y", "srow_z"):
    np.testing.assert_array_equal(image.header[field], reference.header[field], err_msg=field)


def test_config_arguments_and_method_fields_are_checked():
  cpu, demo, small = (smore_config.get_config(a) for a in ("cpu", "demo", "small"))
  assert demo.data.root == "demo_data/lr" and demo.data.make_demo
  assert cpu.model.features == demo.model.features < smore_config.get_config().model.features
  assert small.train.num_steps < cpu.train.num_steps
  config = smore_config.get_config()
  config.eval.combine = "median"
  config.train.num_steps = 0
  with pytest.raises(ConfigError) as err:
    train.train_and_evaluate(config, "unused")
  assert err.value.problems == [
      "train.num_steps=0 is out of range: must be >= 1 (SMORE's learning-rate schedule ends "
      "at the last step, so it trains for a number of steps, not for train.epochs)",
      "eval.combine='median' is not one of mean, fourier"]
