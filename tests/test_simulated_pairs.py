"""Simulated pairs: the line operator is the acquisition + cubic resampling pipeline, and
the source's pairs are Y patches degraded along the axis X slices have thick."""

import numpy as np
import pytest

from clade_jax.data import degrade as degrade_lib
from clade_jax.data import patches as patches_lib
from clade_jax.data import simulated_pairs
from clade_jax.data import volume as volume_lib
from clade_jax.methods import clade
from configs import mri
from tests import phantoms


@pytest.mark.parametrize("profile, thickness", [("gaussian", 6.0), ("rect", 6.0),
                                                ("gaussian", 4.0)])
@pytest.mark.parametrize("phase", [0, 2, 5])
def test_line_operator_is_the_simulator_then_the_preprocessing_spline(profile, thickness,
                                                                      phase):
  rng = np.random.default_rng(phase)
  length, factor = 61, 6
  truth = rng.normal(size=(3, length, 2)).astype(np.float32)
  volume = volume_lib.Volume(truth, np.eye(4))
  lr = degrade_lib.degrade(volume, 1, float(factor), thickness, profile=profile,
                           offset_vox=phase)
  iso = volume_lib.resample_thick_axis(lr, 1, 1.0).data  # Fine voxels phase, phase + 1, ...
  operator = simulated_pairs.line_operator(length, factor, phase, thickness, profile)
  expected = np.einsum("ij,ajb->aib", operator, truth.astype(np.float64))
  np.testing.assert_allclose(iso, expected[:, phase:phase + iso.shape[1]], atol=1e-5)


def test_line_operator_keeps_constants_and_drops_the_margin():
  operator = simulated_pairs.line_operator(62, 6.0, 3.0, 6.0, "gaussian", margin=15)
  assert operator.shape == (32, 62)
  np.testing.assert_allclose(operator.sum(axis=1), 1.0, atol=1e-9)
  with pytest.raises(ValueError, match="phase"):
    simulated_pairs.line_operator(62, 6.0, 6.0, 6.0)


@pytest.mark.parametrize("thick_axis", [0, 2])
def test_source_pairs_are_y_patches_degraded_along_the_shared_axis(tmp_path, thick_axis):
  path = phantoms.thick_slice_volume(tmp_path / "a.nii.gz", shape=(40, 44, 48),
                                     thick_axis=thick_axis)
  config = mri.get_config()
  config.data.root = path
  config.data.patch_size = 16
  config.loss.degradation = 1.0
  volumes = patches_lib.prepare_volumes(config.data)
  source = clade.make_source(config, volumes, [])
  simulator = source.simulators[0]
  scan = volumes[0].scan
  assert simulator.factor == pytest.approx(4.0)
  example = source.sample(0, 7)
  assert {k: v.shape for k, v in example.items()} == {k: (16, 16, 1) for k in
                                                       ("x", "y", "y_lr", "y_hr")}
  hr = example["y_hr"][..., 0]
  np.testing.assert_array_equal(hr.T if simulator.transpose else hr, example["y"][..., 0])
  # The degraded axis is where X slices have the thick axis: constant along the other
  # axis' neighbours in the thick direction, the simulated patch varies smoothly there.
  x_thick = [a for a in range(3) if a != scan.lr_axis].index(scan.thick_axis)
  lr = example["y_lr"][..., 0]
  rough = lambda image, axis: np.abs(np.diff(image, 2, axis=axis)).mean()
  assert rough(lr, x_thick) < 0.5 * rough(hr, x_thick)
  # The paper's source draws the same x and y, without pairs.
  config.loss.degradation = 0.0
  plain = clade.make_source(config, volumes, []).sample(0, 7)
  assert set(plain) == {"x", "y"}
  np.testing.assert_array_equal(plain["y"], example["y"])
  np.testing.assert_array_equal(plain["x"], example["x"])
