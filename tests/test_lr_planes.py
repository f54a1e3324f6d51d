"""CLADE trained on both low-resolution planes (`data.lr_planes='both'`): X slices of
the second plane turned as inference turns them, the held-out slice still out, the
simulated pairs made like each X patch's plane, and inference combining both planes."""

import os

import ml_collections
import nibabel as nib
import numpy as np
import pytest

from clade_jax import checkpointing, inference, train, volume_srr
from clade_jax.configs import clade_plus, mri
from clade_jax.config_validation import ConfigError
from clade_jax.data import patches as patches_lib
from clade_jax.data import volume as volume_lib
from clade_jax.methods import clade
from tests import phantoms
from tests.test_train import tiny_config


def data_config(**overrides):
  config = ml_collections.ConfigDict(dict(
      thick_axis=-1, lr_plane="auto", target_spacing=0.0, patch_size=16,
      percentiles=(0.5, 99.5), min_foreground=0.3, slice_thickness=0.0,
      slice_profile="gaussian", volume_index=-1, complex="refuse"))
  config.update(overrides)
  return config


def stripes_along_thick_axis(path, thick_axis, shape=(40, 36, 32), step=4):
  """A volume whose intensity changes only along its thick axis (bands 6 voxels wide
  on the fine grid), kept every `step`-th slice: every slice containing the thick axis
  varies along it and is constant across it, whichever way it is turned."""
  coordinate = np.arange(shape[thick_axis])
  profile = ((coordinate // 6) % 2).astype(np.float32) * 100.0 + 10.0
  view = [1, 1, 1]
  view[thick_axis] = -1
  data = np.broadcast_to(profile.reshape(view), shape)
  data = np.take(data, np.arange(0, shape[thick_axis], step), thick_axis)
  spacing = [1.0, 1.0, 1.0]
  spacing[thick_axis] = float(step)
  nib.save(nib.Nifti1Image(np.ascontiguousarray(data), np.diag(spacing + [1.0])), str(path))
  return str(path)


def thick_image_axis(image):
  """The image axis an image varies along, asserting it is constant along the other."""
  spread = [np.ptp(image, axis=a).max() for a in (0, 1)]  # Along image axes 0, 1.
  assert min(spread) < 1e-5 < max(spread), spread
  return int(np.argmax(spread))


@pytest.mark.parametrize("thick_axis", [0, 1, 2])
def test_both_planes_put_the_thick_direction_on_the_trained_planes_image_axis(
    tmp_path, thick_axis):
  path = stripes_along_thick_axis(tmp_path / "stripes.nii.gz", thick_axis)
  volume = patches_lib.prepare_volume(path, data_config())
  assert volume.thick_axis == thick_axis
  trained, other = (patches_lib.x_plane_slices(volume, p) for p in (0, 1))
  # Inference's slices of both planes (volume_srr.reconstruct_planes).
  rows = volume_srr.thick_on_rows(volume.scan)
  expected = 0 if rows else 1
  for plane, stack in enumerate((trained, other)):
    axis = volume.scan.lr_axes[plane]
    inferred, _ = volume_srr.lr_stack(volume.normalised_isotropic, axis, thick_axis, rows)
    np.testing.assert_array_equal(stack, inferred)
    assert stack.shape[0] == volume.normalised_isotropic.shape[axis]
    assert {thick_image_axis(image) for image in stack} == {expected}
  source = patches_lib.UnpairedPatches([volume], patch_size=16, min_foreground=0.3,
                                       lr_planes="both", seed=3)
  for i in range(24):
    assert thick_image_axis(source.sample(i % len(source), i)["x"][..., 0]) == expected


def test_the_transposition_is_exercised():
  # Thick axis 1, trained plane 0 (slices span axes 1, 2: thick on rows); the other
  # plane (axis 2) spans axes 0, 1, thick on columns: turned. Thick axis 2: not turned.
  assert volume_srr.lr_stack(np.zeros((3, 4, 5)), 2, 1, True)[1]
  assert not volume_srr.lr_stack(np.zeros((3, 4, 5)), 1, 2, False)[1]


@pytest.fixture(scope="module")
def phantom(tmp_path_factory):
  path = phantoms.thick_slice_volume(tmp_path_factory.mktemp("vol") / "v.nii.gz")
  return patches_lib.prepare_volume(path, data_config())


def test_both_planes_slices_are_drawn_and_only_the_held_out_one_is_left_out(phantom):
  held_out = phantom.scan.isotropic.shape[phantom.lr_axis] // 2
  one = patches_lib.UnpairedPatches([phantom], patch_size=16, holdout=[(0, held_out)],
                                    seed=1)
  both = patches_lib.UnpairedPatches([phantom, phantom], patch_size=16,
                                     holdout=[(1, held_out)], lr_planes="both", seed=1)
  assert both.x_volumes == [0, 0, 1, 1] and both.x_planes == [0, 1, 0, 1]
  assert (0, held_out) not in one.x_slices
  # Volume 1's trained plane is stack 2: its held-out slice is out, the slice of the
  # same index in the other plane (stack 3) and in volume 0's planes are in.
  assert (2, held_out) not in both.x_slices
  assert {(0, held_out), (1, held_out), (3, held_out)} <= set(both.x_slices)
  per_stack = [sum(k == stack for k, _ in both.x_slices) for stack in range(4)]
  assert per_stack[0] == per_stack[2] + 1 == len(one.x_slices) + 1
  assert per_stack[1] == per_stack[3] > 0
  assert len(both) == 4 * len(both.x_slices)
  # Samples come from the stack their record names, from both planes.
  planes = set()
  for i in range(40):
    record = i % len(both)
    k, s = both.x_slices[record % len(both.x_slices)]
    x = both.sample(record, i)["x"][..., 0]
    image = both.x_stacks[k][s]
    windows = np.lib.stride_tricks.sliding_window_view(image, x.shape)
    assert np.any(np.all(windows == x, axis=(2, 3)))
    planes.add(both.x_planes[k])
  assert planes == {0, 1}


def test_the_default_draws_what_it_drew_before(phantom):
  # Reference values from the code before data.lr_planes existed (git 95cb20b):
  # the sums of the first samples' x and y patches.
  source = patches_lib.UnpairedPatches([phantom], patch_size=16, seed=7)
  explicit = patches_lib.UnpairedPatches([phantom], patch_size=16, seed=7,
                                         lr_planes="trained")
  assert source.x_slices == explicit.x_slices
  sums = [(float(e["x"].sum()), float(e["y"].sum()))
          for e in (source.sample(i % len(source), i) for i in range(3))]
  np.testing.assert_allclose(sums, REFERENCE_SUMS, rtol=1e-6)


REFERENCE_SUMS = [(-141.88160705566406, -157.88490295410156),
                  (-175.60125732421875, 23.100173950195312),
                  (-167.30557250976562, 34.403785705566406)]


def test_the_simulated_pairs_degrade_the_axis_each_plane_shares_with_y(tmp_path):
  # Thick axis 1, trained plane 0: plane 0's X slices span (thick, 2), plane 1's span
  # (0, thick). A Y slice (axes 0, 2) varying only along voxel axis 2 is changed by
  # plane 1's simulator (it degrades axis 2, which its X shares with Y) and left as it
  # is by plane 0's (it degrades axis 0, along which the image is constant).
  path = phantoms.thick_slice_volume(tmp_path / "v.nii.gz", thick_axis=1)
  volume = patches_lib.prepare_volume(path, data_config())
  assert (volume.thick_axis, volume.scan.lr_axes) == (1, (0, 2))
  first, second = (clade.make_simulator(volume, data_config(), axis)
                   for axis in volume.scan.lr_axes)
  assert clade.make_simulator(volume, data_config()) == first
  image = np.broadcast_to(np.sin(np.arange(40) / 2.0)[None, :], (40, 40)).astype(np.float32)
  rng = lambda: np.random.default_rng(0)
  lr, hr = first.pair(image, 8, 8, rng())
  np.testing.assert_allclose(lr, hr, atol=1e-5)
  lr, hr = second.pair(image, 8, 8, rng())
  assert np.abs(lr - hr).max() > 0.05
  # Both oriented like the X slices: the degraded axis (2 here) on the thick one's
  # image axis, rows for thick axis 1 and trained plane 0.
  assert volume_srr.thick_on_rows(volume.scan)
  assert thick_image_axis(lr) == thick_image_axis(hr) == 0


def test_each_example_is_simulated_like_its_x_patchs_plane(phantom):
  simulators = [(FakeSimulator(0), FakeSimulator(1))]
  source = patches_lib.UnpairedPatches([phantom], patch_size=16, lr_planes="both",
                                       simulators=simulators, seed=2)
  for i in range(20):
    record = i % len(source)
    k, _ = source.x_slices[record % len(source.x_slices)]
    assert source.sample(record, i)["y_lr"][0, 0, 0] == source.x_planes[k]


class FakeSimulator:
  """Marks its pairs with its plane."""

  def __init__(self, plane):
    self.plane = plane

  def pair(self, image, row, col, rng):
    del image, row, col, rng
    return np.full((16, 16), self.plane, np.float32), np.zeros((16, 16), np.float32)


def test_lr_planes_is_validated_by_the_method():
  config = mri.get_config()
  assert (config.data.lr_planes, config.eval.planes) == ("trained", "auto")
  config.data.lr_planes = "all"
  with pytest.raises(ConfigError, match="data.lr_planes='all' is not one of trained, both"):
    train.train_and_evaluate(config, "/nonexistent")
  with pytest.raises(ValueError, match="data.lr_planes must be one of"):
    patches_lib.UnpairedPatches([], lr_planes="all")


def test_eval_planes_follow_the_trained_planes_unless_given():
  config = clade_plus.get_config()
  assert clade.inference_planes(config) == "trained"
  config.data.lr_planes = "both"
  assert clade.inference_planes(config) == "both"
  config.eval.planes = "trained"
  assert clade.inference_planes(config) == "trained"
  config.eval.planes = "auto"
  clade.resolve_config(config)
  assert config.eval.planes == "both"
  old = mri.get_config()  # A run from before the fields.
  del old.data["lr_planes"], old.eval["planes"]
  assert clade.inference_planes(old) == "trained"


@pytest.mark.slow
def test_a_tiny_run_on_both_planes_trains_and_super_resolves_both(data_root, tmp_path):
  config = tiny_config(data_root)
  config.data.lr_planes = "both"
  config.loss.degradation = 1.0  # The simulated pairs of both planes, too.
  config.train.num_steps = 2
  workdir = str(tmp_path / "run")
  train.train_and_evaluate(config, workdir, progress=False)
  saved = checkpointing.load_config(workdir)
  assert (saved.data.lr_planes, saved.eval.planes) == ("both", "both")
  assert os.path.exists(os.path.join(workdir, "holdout_sr.png"))
  scan = os.path.join(str(data_root), "a.nii.gz")
  both = inference.run(workdir, scan, str(tmp_path / "both.nii.gz"), figure=False,
                       options=volume_srr.SROptions(progress=False))
  one = inference.run(workdir, scan, str(tmp_path / "one.nii.gz"), figure=False,
                      options=volume_srr.SROptions(planes="trained", progress=False))
  assert (both.options.planes, one.options.planes) == ("both", "trained")
  a, b = (volume_lib.load_volume(r.output).data for r in (both, one))
  assert a.shape == b.shape == (40, 40, 37)
  assert np.all(np.isfinite(a)) and not np.array_equal(a, b)
