"""Slice-profile estimation from the scan alone (clade_jax/data/profile_estimation.py)."""

import ml_collections
import numpy as np
import pytest
from scipy import ndimage

from clade_jax import config_validation
from clade_jax.data import consistency
from clade_jax.data import degrade
from clade_jax.data import profile_estimation
from clade_jax.data import slice_profile
from clade_jax.data.volume import Volume


def _scene(shape=(64, 128, 64), seed=0):
  """Statistically isotropic texture: smoothed white noise, offset to be positive."""
  data = ndimage.gaussian_filter(np.random.default_rng(seed).normal(size=shape), 1.5)
  return data - data.min() + 0.1


def _acquire(fine, spacing, thickness, profile, noise=0.0):
  """Thick slices along axis 1 every `spacing` voxels (any ratio), as `consistency` models."""
  n = fine.shape[1]
  matrix = consistency.acquisition_matrix(n, np.arange(0.0, n - 1, spacing), thickness, profile)
  lr = np.einsum("jn,anb->ajb", matrix, fine)
  return degrade.add_noise(lr, noise, seed=1) if noise else lr


def _in_family(estimate, family):
  """The thickness the estimate found for `family` (winner or runner-up)."""
  if estimate.profile == family:
    return estimate.thickness_mm
  assert estimate.runner_up["profile"] == family
  return estimate.runner_up["thickness_mm"]


# Contiguous, a fractional spacing ratio, noise, and a gap (3 mm every 4 mm). Which
# family wins is close to a coin toss on this texture (the two fit the band below the
# slices' Nyquist frequency almost equally: experiments/profile_estimation/README.md);
# the thickness within the true family is what is asserted.
@pytest.mark.parametrize("profile,spacing,thickness,noise", [
    ("rect", 6.0, 6.0, 0.0),
    ("gaussian", 4.5, 4.5, 0.0),
    ("rect", 6.0, 6.0, 0.02),
    ("rect", 4.0, 3.0, 0.0),
])
def test_thickness_on_an_isotropic_scene(profile, spacing, thickness, noise):
  lr = _acquire(_scene(), spacing, thickness, profile, noise)
  estimate = profile_estimation.estimate_profile(lr, (1.0, spacing, 1.0), 1)
  assert abs(_in_family(estimate, profile) / thickness - 1.0) < 0.1
  assert estimate.spacing_mm == spacing and estimate.profile in slice_profile.PROFILES
  np.testing.assert_allclose(estimate.kernel, slice_profile.centred_weights(
      estimate.profile, estimate.thickness_mm))


def test_a_rectangle_is_never_wider_than_the_spacing():
  """The prior that decides the family (module docstring): fitted alone, a rectangle
  to Gaussian slices (FWHM = spacing) would want ~1.3x the spacing; it stops at it."""
  lr = _acquire(_scene(), 4.0, 4.0, "gaussian")
  rect = profile_estimation.estimate_profile(lr, (1.0, 4.0, 1.0), 1, families=("rect",))
  assert rect.profile == "rect" and 3.0 < rect.thickness_mm <= 4.0 + 1e-9


def test_air_noise_sigma_is_rayleighs():
  """A bright ball in air with Rician noise of a known sigma; zero air, or none, is
  not measured."""
  grid = np.stack(np.meshgrid(*[np.arange(48) - 23.5] * 3, indexing="ij"))
  ball = np.where(np.sum(grid ** 2, axis=0) < 18.0 ** 2, 1.0, 0.0)
  noisy = degrade.add_noise(ball, 0.03, seed=3, units="absolute")
  sigma = profile_estimation.air_noise_sigma(noisy, 0.1)
  assert sigma == pytest.approx(0.03, rel=0.02)
  assert profile_estimation.air_noise_sigma(ball, 0.1) is None  # air set to zero
  assert profile_estimation.air_noise_sigma(_scene((32, 32, 32)), 0.05) is None  # no air


def test_noise_through_the_acquisition_matrix_is_modelled_exactly():
  """The noise the re-acquired lines carry, against a Monte Carlo of the same Welch."""
  matrix = consistency.acquisition_matrix(64, np.arange(0.0, 63, 2.5), 3.0, "gaussian")
  exact = profile_estimation._welch_of_white(matrix, 16)  # pylint: disable=protected-access
  lines = np.random.default_rng(0).normal(size=(20000, 64)) @ matrix.T
  simulated = profile_estimation._welch(lines, 16)  # pylint: disable=protected-access
  np.testing.assert_allclose(simulated, exact, rtol=0.03)
  # Overlapping Gaussian slices: the noise is no longer white (low frequencies keep
  # more), which the old white sum(w^2) model missed.
  assert exact[1] > 3 * exact[-1]


@pytest.mark.parametrize("profile,spacing,thickness", [
    ("rect", 4.0, 3.0),  # issue 27's hard case: 3 mm every 4 mm
    ("gaussian", 4.5, 4.5),  # a fractional ratio; the family the old estimator missed
])
def test_the_mni152_protocol_with_noise(profile, spacing, thickness):
  """Two cases of experiments/profile_estimation/run.py (2 % Rician noise): the family
  right and the thickness within 10 % (issue 27's criterion)."""
  pytest.importorskip("nilearn", reason="the MNI152 template needs nilearn")
  from clade_jax.data import demo  # pylint: disable=g-import-not-at-top
  truth = demo.load_template().data.astype(np.float64)
  lr = _acquire(truth, spacing, thickness, profile, noise=0.02)
  estimate = profile_estimation.estimate_profile(lr, (1.0, spacing, 1.0), 1)
  assert estimate.profile == profile
  assert abs(estimate.thickness_mm / thickness - 1.0) < 0.1
  # The noise sigma from the air: 2 % of the robust max of the noise-free slices.
  clean = _acquire(truth, spacing, thickness, profile)
  assert np.sqrt(estimate.noise_floor) == pytest.approx(
      0.02 * np.percentile(clean, degrade.ROBUST_MAX_PERCENTILE), rel=0.02)


def test_thicker_slices_give_thicker_estimates():
  fine = _scene(seed=2)
  estimates = [profile_estimation.estimate_profile(
      _acquire(fine, 4.0, t, "gaussian"), (1.0, 4.0, 1.0), 1) for t in (2.5, 6.0)]
  same_family = [_in_family(e, "gaussian") for e in estimates]
  assert same_family[0] < same_family[1]


def test_bad_input_is_named():
  with pytest.raises(ValueError, match="constant"):
    profile_estimation.estimate_profile(np.ones((40, 10, 40)), (1, 4, 1), 1)
  with pytest.raises(ValueError, match="too few"):
    profile_estimation.estimate_profile(_scene((40, 4, 40)), (1, 4, 1), 1)
  with pytest.raises(ValueError, match="thick_axis"):
    profile_estimation.estimate_profile(_scene((40, 12, 40)), (1, 4, 1), 3)


def _data_config(**fields):
  config = ml_collections.ConfigDict({"data": {
      "slice_profile": "estimate", "slice_thickness": 0.0, "slice_kernel": (),
      "thick_axis": -1, **fields}})
  return config


def test_resolve_config_writes_the_estimate_into_the_config():
  lr = _acquire(_scene(), 6.0, 6.0, "rect")
  affine = np.diag([1.0, 6.0, 1.0, 1.0])
  config = _data_config()
  with pytest.raises(ValueError, match="estimate"):
    slice_profile.from_config(config.data)
  report = profile_estimation.resolve_config(config, [Volume(lr.astype(np.float32), affine,
                                                             path="a.nii.gz")])
  found = report["per_volume"][0]
  assert found["path"] == "a.nii.gz" and found["spacing_mm"] == 6.0
  assert config.data.slice_profile == report["profile"] == found["profile"]
  assert config.data.slice_thickness == pytest.approx(found["thickness_mm"], abs=1e-3)
  assert slice_profile.from_config(config.data) == (report["profile"], config.data.slice_thickness)
  # Resolved once: a second call changes nothing; a thickness the user gave is kept.
  assert profile_estimation.resolve_config(config) is None
  told = _data_config(slice_thickness=5.0)
  profile_estimation.resolve_config(told, [Volume(lr.astype(np.float32), affine)])
  assert told.data.slice_thickness == 5.0


@pytest.mark.parametrize("name", ["smore", "clade_plus", "mri"])
def test_estimate_is_a_valid_slice_profile(name):
  import importlib  # pylint: disable=g-import-not-at-top
  module = importlib.import_module(f"clade_jax.configs.{name}")
  config = module.get_config()
  config.data.slice_profile = "estimate"
  config_validation.validate(config)


def test_build_data_resolves_an_estimate_before_smore_makes_its_pairs(tmp_path):
  """The training path: the config SMORE builds its pairs from (and saves) names a
  real profile, not 'estimate'."""
  from clade_jax import train  # pylint: disable=g-import-not-at-top
  from clade_jax.configs import smore  # pylint: disable=g-import-not-at-top
  from tests import phantoms  # pylint: disable=g-import-not-at-top
  config = smore.get_config()
  config.data.root = phantoms.thick_slice_volume(tmp_path / "a.nii.gz", shape=(48, 48, 48))
  config.data.patch_size = 16
  config.data.slice_profile = "estimate"
  _, source = train.build_data(config)
  assert len(source) > 0
  assert config.data.slice_profile in slice_profile.PROFILES
  assert 0.25 * 4.0 <= config.data.slice_thickness <= 2.0 * 4.0
