"""Volume-level reconstruction (volume_srr.py): preparation, planes, chosen slices."""

import numpy as np
import pytest

from clade_jax import srr
from clade_jax import volume_srr
from clade_jax.data import preprocess
from clade_jax.data import volume as volume_lib


def _random_slices(num_slices, height, width, seed=0):
  rng = np.random.default_rng(seed)
  return rng.uniform(-1.0, 1.0, (num_slices, height, width)).astype(np.float32)



def _thick_slice_file(path, thick_axis=1):
  from tests import phantoms  # pylint: disable=g-import-not-at-top
  return phantoms.thick_slice_volume(path, shape=(36, 40, 34), step=4,
                                     thick_axis=thick_axis, seed=1)


@pytest.mark.parametrize('lr_plane', ['auto', 'axial'])
def test_prepare_input_is_the_training_preparation(tmp_path, lr_plane):
  from clade_jax.data import patches, volume  # pylint: disable=g-import-not-at-top
  from configs import mri  # pylint: disable=g-import-not-at-top
  data_config = mri.get_config().data
  data_config.lr_plane = lr_plane
  path = _thick_slice_file(tmp_path / 'v.nii.gz')
  trained = patches.prepare_volume(path, data_config)
  vol = volume.load_volume(path)
  prepared = preprocess.prepare_input(vol.data, vol.affine, data_config, name=path)
  assert prepared.normalizer == trained.normalizer
  assert (prepared.thick_axis, prepared.lr_axis) == (trained.thick_axis,
                                                       trained.lr_axis)
  np.testing.assert_array_equal(prepared.normalizer.forward(prepared.isotropic),
                                trained.normalised_isotropic)


def test_prepare_input_rejects_isotropic_and_2d():
  from clade_jax.data import volume  # pylint: disable=g-import-not-at-top
  from configs import mri  # pylint: disable=g-import-not-at-top
  data_config = mri.get_config().data
  data = _random_slices(20, 20, 20)
  with pytest.raises(volume.VolumeError, match='scan.nii: nothing to super-resolve'):
    preprocess.prepare_input(data, np.diag([1.0, 1.2, 1.0, 1.0]), data_config,
                      name='scan.nii')
  with pytest.raises(volume.VolumeError, match='3D'):
    preprocess.prepare_input(data[0], np.eye(4), data_config)


@pytest.mark.parametrize('thick_axis,lr_axis', [(0, 1), (0, 2), (1, 0), (1, 2),
                                                (2, 0), (2, 1)])
def test_both_planes_put_the_thick_direction_where_training_had_it(thick_axis,
                                                                   lr_axis):
  shape = [5, 6, 7]
  data = np.arange(np.prod(shape), dtype=np.float32).reshape(shape)
  thick_rows = min(a for a in range(3) if a != lr_axis) == thick_axis
  other = 3 - thick_axis - lr_axis
  for axis in (lr_axis, other):
    stack, transposed = volume_srr.lr_stack(data, axis, thick_axis, thick_rows)
    assert stack.shape[0] == shape[axis]
    assert stack.shape[1 if thick_rows else 2] == shape[thick_axis]
    back = np.swapaxes(stack, 1, 2) if transposed else stack
    np.testing.assert_array_equal(np.moveaxis(back, 0, axis), data)
  # Along the trained plane nothing is ever transposed.
  assert not volume_srr.lr_stack(data, lr_axis, thick_axis, thick_rows)[1]


def _prepared(thick_axis=1, lr_plane="auto"):
  from configs import mri  # pylint: disable=g-import-not-at-top
  data_config = mri.get_config().data
  data_config.lr_plane = lr_plane
  rng = np.random.default_rng(3)
  shape = [20, 22, 18]
  shape[thick_axis] = 6
  affine = np.diag([1.0, 1.0, 1.0, 1.0])
  affine[thick_axis, thick_axis] = 3.0
  return preprocess.prepare_input(rng.uniform(0, 100, shape), affine, data_config)


@pytest.mark.parametrize("thick_axis", [0, 1, 2])
def test_reconstruct_planes_with_identity_returns_the_normalised_input(thick_axis):
  prepared = _prepared(thick_axis)
  normalised = prepared.normalizer.forward(prepared.isotropic)
  for planes in ("trained", "both"):
    out = volume_srr.reconstruct_planes(
        prepared, lambda s, progress: s, volume_srr.SROptions(planes=planes, progress=False))
    np.testing.assert_array_equal(out, normalised)


def test_reconstruct_planes_sees_the_thick_direction_on_the_same_image_axis():
  prepared = _prepared(1)
  seen = []

  def slice_fn(slices, progress):
    seen.append(slices.shape[1:])
    return slices

  volume_srr.reconstruct_planes(prepared, slice_fn,
                                volume_srr.SROptions(planes="both", progress=False))
  thick = prepared.isotropic.shape[1]
  rows = volume_srr.thick_on_rows(prepared)
  assert [shape[0 if rows else 1] for shape in seen] == [thick, thick]


def test_only_the_chosen_slices_are_super_resolved():
  prepared = _prepared(1)
  normalised = prepared.normalizer.forward(prepared.isotropic)
  calls = []

  def negate(slices, progress):
    calls.append(len(slices))
    return -slices

  out = volume_srr.reconstruct_planes(
      prepared, negate, volume_srr.SROptions(lr_slices=[2, 5], progress=False))
  assert calls == [2]
  lr = volume_lib.plane_slices(out, prepared.lr_axis)
  expected = volume_lib.plane_slices(normalised, prepared.lr_axis).copy()
  expected[[2, 5]] *= -1
  np.testing.assert_array_equal(lr, expected)
  with pytest.raises(ValueError, match="lr_slices needs planes='trained'"):
    volume_srr.reconstruct_planes(prepared, negate, volume_srr.SROptions(
        lr_slices=[1], planes="both", progress=False))


def test_options_take_unset_fields_from_the_config():
  import ml_collections  # pylint: disable=g-import-not-at-top
  eval_config = ml_collections.ConfigDict({"stride": 12, "mode": "patch", "batch_size": 256})
  options = volume_srr.SROptions(stride=6).with_defaults(eval_config)
  assert (options.stride, options.mode, options.batch_size) == (6, "patch", 256)


def test_planes_default_to_the_runs_eval_planes_else_the_trained_plane():
  both = {"planes": "both", "stride": 4}
  assert volume_srr.SROptions().with_defaults(both).planes == "both"
  assert volume_srr.SROptions(planes="trained").with_defaults(both).planes == "trained"
  assert volume_srr.SROptions().with_defaults({"stride": 4}).planes == "trained"
  # Chosen slices (the held-out figure) exist in the trained plane only.
  assert volume_srr.SROptions(lr_slices=[2]).with_defaults(both).planes == "trained"


def _run_config(**eval_fields):
  import ml_collections  # pylint: disable=g-import-not-at-top
  return ml_collections.ConfigDict({
      "data": {"patch_size": 32},
      "eval": {"stride": 12, "mode": "patch", "blend": "flat", "batch_size": 256,
               **eval_fields}})


def test_resolve_fills_from_the_run_and_builds_the_window():
  options = volume_srr.SROptions(stride=6, blend="taper").resolve(_run_config())
  assert (options.stride, options.mode, options.blend, options.batch_size,
          options.planes) == (6, "patch", "taper", 256, "trained")
  assert options.window(32, size_multiple=4) == srr.Window(
      patch_size=32, stride=6, batch_size=256, slices_per_chunk=8, mode="patch",
      blend="taper", size_multiple=4)
  # Resolving twice changes nothing (methods resolve what inference resolved).
  assert options.resolve(_run_config()) == options


@pytest.mark.parametrize("options, run, message", [
    # A value given by the caller is named by its infer.py flag ...
    (dict(stride=33), {}, "--stride must be in [1, 32] (the patch size)"),
    (dict(batch_size=0), {}, "--batch-size must be an integer >= 1, got 0"),
    (dict(mode="tiles"), {}, "--mode must be one of patch, full, got 'tiles'"),
    (dict(blend="median"), {}, "--blend must be one of flat, taper, got 'median'"),
    (dict(planes="all"), {}, "--planes must be 'trained' or 'both', got 'all'"),
    # ... one from the run by its config field.
    ({}, dict(stride=40), "eval.stride must be in [1, 32]"),
    ({}, dict(blend="median"), "eval.blend must be one of flat, taper"),
    ({}, dict(planes="all"), "eval.planes must be 'trained' or 'both'"),
    (dict(lr_slices=[1], planes="both"), {}, "lr_slices needs planes='trained'"),
])
def test_resolve_names_the_flag_or_config_field_of_a_bad_value(options, run, message):
  with pytest.raises(volume_srr.OptionsError) as error:
    volume_srr.SROptions(**options).resolve(_run_config(**run))
  assert str(error.value).startswith(message), str(error.value)
  assert "\n" not in str(error.value)


def test_options_describe_how_the_slices_were_cut():
  run = _run_config()
  assert volume_srr.SROptions(stride=6).resolve(run).describe() == "stride 6"
  assert volume_srr.SROptions(mode="full").resolve(run).describe() == "whole slices"


def test_a_whole_slice_run_without_a_stride_still_resolves():
  import ml_collections  # pylint: disable=g-import-not-at-top
  run = ml_collections.ConfigDict({"data": {"patch_size": 8},
                                   "eval": {"mode": "full", "batch_size": 8}})
  options = volume_srr.SROptions().resolve(run)
  assert options.stride is None and options.window(8).stride == 8
