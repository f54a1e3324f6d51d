"""The held-out check: figure, scores against a known truth, and a truth that does not fit."""

import json
import os
import types

import nibabel as nib
import numpy as np
import pytest

from clade_jax import holdout
from clade_jax import methods
from clade_jax.data import consistency
from clade_jax.data import patches as patches_lib
from clade_jax.data import volume as volume_lib
from clade_jax.metrics import fidelity
from configs import mri
from tests import phantoms


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
  root = tmp_path_factory.mktemp("holdout")
  phantoms.thick_slice_volume(root / "a.nii.gz")
  truth = phantoms.body_phantom()
  nib.save(nib.Nifti1Image(truth, np.eye(4)), str(root / "truth.nii.gz"))
  config = mri.get_config()
  config.data.root = str(root / "a.nii.gz")
  config.data.patch_size = 16
  config.data.truth = str(root / "truth.nii.gz")
  volumes = patches_lib.prepare_volumes(config.data)
  return config, volumes, truth


def _identity_method():
  """A 'method' whose output is its cubic-spline input (normalised units)."""
  return types.SimpleNamespace(
      describe=lambda config: "identity",
      super_resolve=lambda params, config, scan, options: scan.normalizer.forward(scan.isotropic))


def test_truth_is_the_held_out_slice_of_the_isotropic_grid(setup):
  config, volumes, truth = setup
  loaded = holdout.load_truth(config, volumes)
  v, s = holdout.holdout_slice(volumes)
  assert volumes[v].lr_axis == 0 and s == 20
  # Thick axis 2 kept every 4th slice from 0 to 36: the grid is truth[:, :, :37].
  np.testing.assert_array_equal(loaded.grid, truth[:, :, :37])
  np.testing.assert_array_equal(loaded.mask, fidelity.foreground_mask(truth[:, :, :37]))
  assert loaded.data_range == pytest.approx(float(truth.max() - truth.min()))
  config = config.copy_and_resolve_references()
  config.data.truth = ""
  assert holdout.load_truth(config, volumes) is None


def test_scores_figure_and_json(setup, tmp_path):
  config, volumes, _ = setup
  truth = holdout.load_truth(config, volumes)
  lines = []
  results = holdout.check(_identity_method(), None, volumes, config, str(tmp_path), truth,
                          log=lines.append)
  assert set(results) == {"cubic spline", "identity (stride 12)"}
  cubic = volumes[0].scan.isotropic[20]
  target, mask = truth.grid[20], truth.mask[20]
  expected = fidelity.psnr(cubic, target, truth.data_range, mask)
  assert results["cubic spline"]["psnr"] == pytest.approx(expected)
  assert results["cubic spline"]["ssim"] == pytest.approx(
      fidelity.ssim(cubic, target, truth.data_range, mask))
  assert 10 < expected < 60
  # The method's output comes back through the normaliser, which clips its input.
  norm = volumes[0].normalizer
  clipped = norm.inverse(norm.forward(cubic))
  assert results["identity (stride 12)"]["psnr"] == pytest.approx(
      fidelity.psnr(clipped, target, truth.data_range, mask))
  assert os.path.exists(tmp_path / holdout.FIGURE)
  with open(tmp_path / holdout.SCORES) as f:
    assert json.load(f)["scores"] == results
  assert any("PSNR" in line and "cubic spline" in line for line in lines)


def test_consistency_rows_reproduce_the_acquired_slices(setup, tmp_path):
  config, volumes, _ = setup
  config = config.copy_and_resolve_references()
  config.eval.data_consistency = True
  config.data.slice_profile = "rect"
  truth = holdout.load_truth(config, volumes)
  results = holdout.check(_identity_method(), None, volumes, config, str(tmp_path), truth,
                          log=lambda line: None)
  assert set(results) == {"cubic spline", "identity (stride 12)", "cubic spline + consistency",
                          "identity (stride 12) + consistency"}
  # The phantom's slices are point samples of the truth, not rect averages, so the
  # projection changes the cubic spline; it must still be finite and scored.
  assert all(np.isfinite(r["psnr"]) for r in results.values())
  assert (results["cubic spline + consistency"]["psnr"]
          != results["cubic spline"]["psnr"])


def test_projected_slices_reproduce_the_acquired_slices(setup):
  config, volumes, _ = setup
  config = config.copy_and_resolve_references()
  scan = volumes[0].scan
  source = volume_lib.load_volume(volumes[0].path)
  indices = [3, 20, 31]
  rng = np.random.default_rng(0)
  lo, hi = float(source.data.min()), float(source.data.max())
  acquisition = consistency.for_grid(source.data.shape, source.affine, scan.isotropic.shape,
                                     scan.affine, scan.thick_axis)
  # Each slice's lines along the thick axis (axis 2 here) re-acquire to the slices.
  reacquire = lambda slices: slices @ acquisition.matrix.T - source.data[indices]
  # The interpolation plus noise of 10 % of the range: an output far from the slices.
  start = volume_lib.plane_slices(scan.isotropic, scan.lr_axis)[indices]
  start = (start + 0.1 * (hi - lo) * rng.normal(size=start.shape)).astype(np.float32)
  projected = holdout.project_slices(start, indices, source, scan, config)
  # As closely as the acquired range allows (`consistency.project_within`). These
  # slices are samples of a noisy phantom, not Gaussian-profile averages: a slice
  # holding the scan's brightest noise peak cannot be a Gaussian average of voxels
  # that are all <= it unless they all equal it, so ~1 % of the range (rms) is left.
  assert projected.min() >= lo and projected.max() <= hi
  rms = lambda x: float(np.sqrt(np.mean(np.square(x))))
  assert rms(reacquire(projected)) < min(2e-2 * (hi - lo), 0.2 * rms(reacquire(start)))


def test_a_truth_that_does_not_fit_is_named(setup, tmp_path):
  config, volumes, truth = setup
  shifted = np.eye(4)
  shifted[:3, 3] = 0.5  # Half a voxel off.
  nib.save(nib.Nifti1Image(truth, shifted), str(tmp_path / "off.nii.gz"))
  config = config.copy_and_resolve_references()
  config.data.truth = str(tmp_path / "off.nii.gz")
  with pytest.raises(volume_lib.VolumeError, match=r"data.truth=.*off.nii.gz.*does not fit"):
    holdout.load_truth(config, volumes)
  config.data.truth = str(tmp_path / "missing.nii.gz")
  with pytest.raises(volume_lib.VolumeError, match="data.truth="):
    holdout.load_truth(config, volumes)


def test_a_method_says_whether_it_holds_the_slice_out(setup, tmp_path):
  config, volumes, _ = setup
  holding = _identity_method()
  crossing = types.SimpleNamespace(**vars(_identity_method()), holds_out=False)
  assert holdout.held_out(holding, volumes) == [(0, 20)]
  assert holdout.held_out(crossing, volumes) == []
  truth = holdout.load_truth(config, volumes)
  said = {}
  for name, method in (("holding", holding), ("crossing", crossing)):
    lines = []
    said[name] = holdout.check(method, None, volumes, config, str(tmp_path / name), truth,
                               log=lines.append), lines[0]
  assert said["holding"][1].startswith("held-out slice 20 of a.nii.gz against data.truth")
  assert said["crossing"][1].startswith("slice 20 of a.nii.gz (not held out: identity trains")
  assert said["holding"][0] == said["crossing"][0]  # The same slice, scored the same.
  # The shipped methods that train on in-plane slices say so; CLADE holds it out.
  assert [holdout.holds_out(methods.get(m)) for m in ("clade", "smore", "ae_interp")] == [
      True, False, False]
