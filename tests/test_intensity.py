"""Intensity fidelity (issue 16): no method flattens what lies beyond the intensity window.

The rule (`clade_jax.data.intensity.to_scan_units`) is checked on its own, then end to
end through `inference.super_resolve` for real methods with untrained networks: what
the rule guarantees must hold whatever the network writes. A new method joins the
end-to-end checks with one entry in `METHOD_CASES`.
"""

import importlib

import hypothesis
import hypothesis.extra.numpy as hnp
import jax
import numpy as np
import pytest
from hypothesis import strategies as st

from clade_jax import inference, methods, train, train_state, volume_srr
from clade_jax.config_validation import ConfigError, ENUMS, validate
from clade_jax.data import ct_phantom, degrade, intensity, preprocess
from clade_jax.data import volume as volume_lib
from clade_jax.volume_srr import SROptions
from configs import ct, mri

BRIGHT, DARK = 9000.0, -4000.0  # Far beyond a window fitted to the 100..1100 body.
UNIFORM = 600.0

# (config module, overrides for a tiny untrained network, SROptions.mode). One entry
# per method and inference mode; the networks get random weights. XLA's convolutions:
# the CPU default (Winograd) takes minutes to compile the autoencoder's decoder, and
# the formulations' equality is tests/test_layers_fast.py's job.
_TINY = {"model.features": 4, "model.num_blocks": 1, "model.conv_impl": "xla"}
_TINY_CLADE = {**_TINY, "model.disc_features": 4}
METHOD_CASES = [
    pytest.param(("configs.mri", _TINY_CLADE, "patch"), id="clade-patch"),
    pytest.param(("configs.mri", _TINY_CLADE, "full"), id="clade-full"),
    pytest.param(("configs.smore", _TINY, "full"), id="smore-full"),
    pytest.param(("configs.smore", _TINY, "patch"), id="smore-patch"),
    pytest.param(("configs.ae_interp", {**_TINY, "model.num_blocks": 2}, "full"),
                 id="ae_interp"),
]


def _set(config, dotted, value):
  *groups, key = dotted.split(".")
  node = config
  for g in groups:
    node = node[g]
  node[key] = value


def untrained(module, overrides):
  """(params, config): the method's networks with random weights drawn in numpy."""
  config = importlib.import_module(module).get_config()
  for dotted, value in overrides.items():
    _set(config, dotted, value)
  config.eval.batch_size = 64
  method = methods.of(config)
  shapes = jax.eval_shape(lambda: method.init_state(config, train.init_key(0)))
  rng = np.random.default_rng(0)
  def draw(path, s):
    x = rng.normal(0.0, 0.3, s.shape)
    # Batch-norm running variances (the autoencoder's) must stay positive.
    is_var = getattr(path[-1], "key", None) == "var"
    return (1.0 + np.abs(x) if is_var else x).astype(s.dtype)
  # What inference gets: params, plus batch statistics where a method keeps them.
  params = jax.tree_util.tree_map_with_path(
      draw, train_state.params_for_inference(method, shapes))
  return params, config


def thick_scan():
  """(data, affine): 40 x 40 x 10 voxels of 1 x 1 x 4 mm; a textured 100..1100 body
  with a uniform block, a bright (9000) and a dark (-4000) rod 3 voxels wide that run
  over 3 acquired slices (so the acquired samples hold their values)."""
  rng = np.random.default_rng(1)
  data = np.full((40, 40, 10), 100.0)
  data[4:36, 4:36] = 350.0 + 250.0 * np.sin(np.arange(32) / 3.0)[:, None, None]
  data[4:36, 4:36] += rng.uniform(0.0, 500.0, (32, 32, 10))
  data[18:34, 18:34, :] = UNIFORM
  data[8:11, 8:11, 3:6] = BRIGHT
  data[24:27, 12:15, 5:8] = DARK
  return data.astype(np.float32), np.diag([1.0, 1.0, 4.0, 1.0])


# ------------------------------------------------------------- the normaliser


@hypothesis.settings(max_examples=200, deadline=None)
@hypothesis.given(
    lo=st.floats(-5000, 5000), width=st.floats(1e-2, 1e4),
    x=hnp.arrays(np.float32, st.integers(1, 64),
                 elements=st.floats(-1e6, 1e6, width=32)))
def test_normaliser_round_trip_is_lossless_over_the_whole_range(lo, width, x):
  norm = volume_lib.Normalizer(lo, lo + width)
  # The linear map is not clipped: back within float32 rounding, however far out.
  tolerance = 4 * np.finfo(np.float32).eps * (np.abs(x) + abs(lo) + width)
  assert np.all(np.abs(norm.inverse(norm.scale(x)) - x) <= tolerance)
  # What the networks see is clipped; an unchanged image comes back bit for bit.
  assert np.all(np.abs(norm.forward(x)) <= 1.0)
  np.testing.assert_array_equal(intensity.to_scan_units(norm.forward(x), x, norm), x)
  np.testing.assert_array_equal(
      intensity.to_scan_units(norm.forward(x), x, norm, limits=(x.min(), x.max())), x)


def test_normaliser_maps_the_window_onto_the_unit_interval():
  norm = volume_lib.Normalizer(-1024.0, 2048.0)
  np.testing.assert_allclose(norm.scale([-1024.0, 512.0, 2048.0, 5120.0]), [-1, 0, 1, 3])
  np.testing.assert_allclose(norm.forward([-3024.0, 5120.0]), [-1, 1])
  assert norm.half_width == 1536.0


# -------------------------------------------------------------------- the rule


def test_restore_weight_is_a_smooth_ramp_at_the_window_edges():
  u = np.array([0.0, -0.9, 0.9, 0.95, -0.95, 1.0, -1.0, 3.0])
  np.testing.assert_allclose(intensity.restore_weight(u, 0.9, 1.0),
                             [0, 0, 0, 0.5, 0.5, 1, 1, 1], atol=1e-12)
  sweep = np.linspace(0.8, 1.1, 301)
  w = intensity.restore_weight(sweep, 0.9, 1.0)
  assert np.all(np.diff(w) >= 0) and np.max(np.diff(w)) < 0.02  # Monotone, no jump.
  np.testing.assert_array_equal(intensity.restore_weight(u, 1.0, 1.0), np.abs(u) > 1.0)


def test_to_scan_units_is_the_network_inside_and_the_input_beyond_the_window():
  norm = volume_lib.Normalizer(0.0, 1000.0)
  rng = np.random.default_rng(0)
  x = rng.uniform(-2000.0, 3000.0, 5000).astype(np.float32)
  y = rng.uniform(-1.0, 1.0, x.shape).astype(np.float32)  # Whatever a network wrote.
  out = intensity.to_scan_units(y, x, norm)
  u = norm.scale(x)
  inside = np.abs(u) <= intensity.RAMP_START
  np.testing.assert_allclose(out[inside], norm.inverse(y)[inside], rtol=1e-6, atol=1e-3)
  beyond = np.abs(u) >= intensity.RAMP_STOP
  np.testing.assert_array_equal(out[beyond], x[beyond])
  between = ~inside & ~beyond
  low, high = np.minimum(x, norm.inverse(y)), np.maximum(x, norm.inverse(y))
  assert np.all((out[between] >= low[between] - 1e-3) & (out[between] <= high[between] + 1e-3))
  # The paper's rule flattens everything to the window.
  clipped = intensity.to_scan_units(y, x, norm, "clip")
  np.testing.assert_allclose(clipped, norm.inverse(y), rtol=1e-6)
  assert clipped.min() >= -1e-3 and clipped.max() <= 1000.0 + 1e-3


def test_limits_remove_the_splines_overshoot_from_what_is_restored():
  norm = volume_lib.Normalizer(-1024.0, 1500.0)
  x = np.array([-1159.5, -1024.0, 40.0, 3195.0], np.float32)
  out = intensity.to_scan_units(norm.forward(x), x, norm, limits=(-1024.0, 3003.0))
  np.testing.assert_array_equal(out, [-1024.0, -1024.0, 40.0, 3003.0])
  with pytest.raises(ValueError, match="outside must be one of"):
    intensity.to_scan_units(x, x, norm, "keep")


def test_report_counts_what_lies_outside_the_window():
  acquired = np.array([-5.0, 0.0, 1.0, 2.0, 50.0, 60.0, 7.0, 8.0])
  r = intensity.report(acquired, np.array([0.0, 59.0]), volume_lib.Normalizer(0.0, 10.0))
  assert r == {"input_range": [-5.0, 60.0], "output_range": [0.0, 59.0], "window": [0.0, 10.0],
               "below_window": 1 / 8, "above_window": 2 / 8}


# ------------------------------------------------------- windows and configs


def test_percentile_and_fixed_windows():
  data = np.linspace(-1024.0, 3071.0, 4096).astype(np.float32)
  config = mri.get_config().data
  norm = intensity.fit_normalizer(data, config)
  np.testing.assert_allclose([norm.lo, norm.hi], np.percentile(data, (0.5, 99.5)))
  ct_config = ct.get_config().data
  assert ct_config.normalization == "window"
  norm = intensity.fit_normalizer(data, ct_config)
  assert (norm.lo, norm.hi) == tuple(ct_config.intensity_window)
  ct_config.intensity_window = (500.0, 400.0)
  with pytest.raises(volume_lib.VolumeError, match=r"scan.nii: data.intensity_window=.*two "
                                                   r"increasing numbers"):
    intensity.fit_normalizer(data, ct_config, name="scan.nii")
  ct_config.intensity_window = (-1024.0, 2048.0)
  with pytest.raises(volume_lib.VolumeError, match="no voxel lies inside"):
    intensity.fit_normalizer(np.linspace(3000, 4000, 10), ct_config)


@pytest.mark.parametrize("field, value, message", [
    ("data.normalization", "hu", "data.normalization='hu' is not one of percentile, window"),
    ("eval.outside_window", "keep", "eval.outside_window='keep' is not one of restore, clip"),
    ("data.intensity_window", (-1024.0, 0.0, 2048.0),
     "data.intensity_window=(-1024.0, 0.0, 2048.0) must be 2 numbers"),
    ("data.intensity_window", (2048.0, -1024.0),
     "data.intensity_window=(2048.0, -1024.0) must be strictly increasing"),
    ("data.percentiles", (0.5,), "data.percentiles=(0.5,) must be 2 numbers"),
])
def test_intensity_fields_are_validated(field, value, message):
  config = ct.get_config()
  _set(config, field, value)
  with pytest.raises(ConfigError) as err:
    validate(config, mri.get_config())
  assert err.value.problems == [message]


def test_validation_tables_name_the_modes_the_code_knows():
  assert ENUMS["data.normalization"] == intensity.NORMALIZATIONS
  assert ENUMS["eval.outside_window"] == intensity.OUTSIDE_MODES


# ------------------------------------------------------------- end to end


@pytest.fixture(scope="module", params=METHOD_CASES)
def method_case(request):
  module, overrides, mode = request.param
  params, config = untrained(module, overrides)
  return params, config, mode


def test_bright_and_dark_structures_come_back_for_every_method(method_case):
  params, config, mode = method_case
  data, affine = thick_scan()
  options = SROptions(mode=mode, progress=False)
  out, _ = inference.super_resolve(data, affine, params, config, options)
  # The rods' acquired samples land on the output grid every 4 voxels.
  np.testing.assert_array_equal(out[8:11, 8:11, 12:21:4], BRIGHT)
  np.testing.assert_array_equal(out[24:27, 12:15, 20:29:4], DARK)
  # Between them the interpolation, which cannot leave the scan's range.
  assert out.max() == BRIGHT and out.min() == DARK
  assert np.all(np.abs(out[8:11, 8:11, 12:21] - BRIGHT) <= 0.01 * BRIGHT)
  # The paper's rule loses both to the window: what the test guards against.
  config.eval.outside_window = "clip"
  try:
    flat, _ = inference.super_resolve(data, affine, params, config, options)
  finally:
    config.eval.outside_window = "restore"
  # (A tanh generator stays inside the window; an unbounded residual network such as
  # SMORE's may leave it, but from the window's values, nowhere near the rods'.)
  assert np.all(flat[8:11, 8:11, 12:21:4] < BRIGHT / 2)
  assert np.all(flat[24:27, 12:15, 20:29:4] > DARK / 2)
  if config.method == "clade":
    lo, hi = np.percentile(data, config.data.percentiles)
    assert flat.max() <= hi + 1e-3 * (hi - lo) and flat.min() >= lo - 1e-3 * (hi - lo)


def test_air_on_the_window_floor_stays_exact_whatever_the_network(method_case):
  params, config, mode = method_case
  data, affine = thick_scan()
  data = np.where(data == 100.0, ct_phantom.AIR_HU, data)  # Air around the body.
  config.data.normalization = "window"
  config.data.intensity_window = (-1024.0, 2048.0)
  try:
    out, _ = inference.super_resolve(data, affine, params, config,
                                     SROptions(mode=mode, progress=False))
  finally:
    config.data.normalization = "percentile"
  # Air the spline does not touch (2 acquired slices from any edge) and its undershoot.
  np.testing.assert_array_equal(out[:4, :, :], ct_phantom.AIR_HU)
  assert out.min() == DARK and out.max() == BRIGHT


@pytest.fixture(scope="module")
def identity_method():
  """A method that leaves the image as it is: what 'the network does not change it'."""
  methods.register("identity_for_test", type("Identity", (), {
      "super_resolve": staticmethod(lambda params, config, prepared, options:
                                    volume_srr.reconstruct_planes(
                                        prepared, lambda s, progress: s, options))}))
  config = mri.get_config()
  config.method = "identity_for_test"
  return config


@pytest.mark.parametrize("window", ["percentile", "window"])
def test_an_unchanged_image_keeps_air_and_uniform_regions_exact(identity_method, window):
  config = identity_method
  config.data.normalization = window
  data, affine = thick_scan()
  data = np.where(data == 100.0, ct_phantom.AIR_HU, data)
  out, _ = inference.super_resolve(data, affine, {}, config, SROptions(progress=False))
  prepared = preprocess.prepare_input(data, affine, config.data)
  np.testing.assert_array_equal(out, np.clip(prepared.isotropic, data.min(), data.max()))
  np.testing.assert_array_equal(out[:4], ct_phantom.AIR_HU)
  # The uniform block, away from its edges along the thick axis (the spline's support).
  np.testing.assert_array_equal(out[19:33, 19:33, 8:29], UNIFORM)


def test_ct_phantom_keeps_bone_and_air_with_the_ct_preset():
  """The issue's head-CT check on the synthetic phantom: bone above the 99.5th
  percentile, air at -1024; an untrained CLADE on whole slices."""
  truth = ct_phantom.ct_head((64, 64, 96))
  lr = degrade.degrade(truth, thick_axis=2, spacing_mm=4.0)
  assert np.percentile(lr.data, 99.5) < 0.6 * truth.data.max()  # Bone beyond it.
  params, config = untrained("configs.ct", _TINY_CLADE)
  out, _ = inference.super_resolve(lr.data, lr.affine, params, config,
                                   SROptions(mode="full", progress=False))
  assert abs(out.max() - truth.data.max()) <= 0.05 * truth.data.max()
  assert out.min() == ct_phantom.AIR_HU
  np.testing.assert_array_equal(out[0], ct_phantom.AIR_HU)  # Air beside the head.
