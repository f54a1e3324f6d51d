"""The unpaired patch source and its grain pipeline."""

import ml_collections
import numpy as np
import pytest

from clade_jax.data import foreground
from clade_jax.data import patches as patches_lib
from clade_jax.data import volume as volume_lib
from tests import phantoms


def data_config(**overrides):
  config = ml_collections.ConfigDict(dict(
      thick_axis=-1, lr_plane="auto", target_spacing=0.0, patch_size=16,
      percentiles=(0.5, 99.5), min_foreground=0.3))
  config.update(overrides)
  return config


@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
  path = phantoms.thick_slice_volume(tmp_path_factory.mktemp("vol") / "v.nii.gz")
  return patches_lib.prepare_volume(path, data_config())


def contains(stack, patch):
  """Whether `patch` is a window of some slice of `stack`."""
  p = patch.shape[0]
  for image in stack:
    windows = np.lib.stride_tricks.sliding_window_view(image, (p, p))
    if np.any(np.all(windows == patch, axis=(2, 3))):
      return True
  return False


def test_prepare_volume_resamples_the_thick_axis_and_normalises(prepared):
  assert prepared.thick_axis == 2 and prepared.lr_axis == 0
  assert prepared.normalised_acquired.shape == (40, 40, 10)
  assert prepared.normalised_isotropic.shape == (40, 40, 37)
  assert prepared.normalised_isotropic.min() >= -1 and prepared.normalised_isotropic.max() <= 1
  np.testing.assert_allclose(prepared.normalised_isotropic[:, :, ::4], prepared.normalised_acquired, atol=1e-5)


def test_domains_come_from_the_right_planes(prepared):
  source = patches_lib.UnpairedPatches([prepared], patch_size=16, seed=1)
  lr_stack = volume_lib.plane_slices(prepared.normalised_isotropic, prepared.lr_axis)
  hr_stack = volume_lib.plane_slices(prepared.normalised_acquired, prepared.thick_axis)
  for i in range(3):
    pair = source.sample(i, i)
    assert pair["x"].shape == pair["y"].shape == (16, 16, 1)
    assert contains(lr_stack, pair["x"][..., 0])
    assert contains(hr_stack, pair["y"][..., 0])


def test_samples_are_deterministic_and_respect_the_foreground_threshold(prepared):
  make = lambda seed: patches_lib.UnpairedPatches([prepared], patch_size=16,
                                                  min_foreground=0.6, seed=seed)
  a, b, c = make(0), make(0), make(1)
  for i in range(20):
    pa, pb = a.sample(i % len(a), i), b.sample(i % len(b), i)
    np.testing.assert_array_equal(pa["x"], pb["x"])
    np.testing.assert_array_equal(pa["y"], pb["y"])
    for patch in pa.values():
      assert np.mean(patch > a.foreground.threshold) >= 0.6 - 1e-6
  assert not np.array_equal(a.sample(0, 0)["x"], c.sample(0, 0)["x"])
  # The same record in a later epoch is a different patch of the same slice.
  assert not np.array_equal(a.sample(0, 0)["x"], a.sample(0, len(a))["x"])


def test_epoch_has_four_patches_per_usable_lr_slice_and_skips_holdout(prepared):
  source = patches_lib.UnpairedPatches([prepared], patch_size=16, patches_per_slice=4,
                                       holdout=[(0, 20)])
  assert (0, 20) not in source.x_slices
  assert len(source) == 4 * len(source.x_slices)
  # Edge slices of the LR plane are pure background and are skipped.
  assert (0, 0) not in source.x_slices and (0, 39) not in source.x_slices


def test_all_background_volume_is_a_clear_error(prepared):
  import dataclasses
  empty = dataclasses.replace(prepared, normalised_isotropic=np.full_like(prepared.normalised_isotropic, -1.0),
                              normalised_acquired=np.full_like(prepared.normalised_acquired, -1.0))
  with pytest.raises(volume_lib.VolumeError, match="no slice has"):
    patches_lib.UnpairedPatches([empty], patch_size=16)


def test_dataset_batches_reshuffle_per_epoch_and_shard_disjointly(prepared):
  source = patches_lib.UnpairedPatches([prepared], patch_size=16)
  full = patches_lib.make_dataset(source, 4, seed=0)
  assert full[0]["x"].shape == (4, 16, 16, 1)
  np.testing.assert_array_equal(full[3]["y"], patches_lib.make_dataset(source, 4, seed=0)[3]["y"])
  shards = [patches_lib.make_dataset(source, 2, seed=0, shard_index=i, shard_count=2)
            for i in range(2)]
  # Host i feeds block i of every global batch: in host order, the global batch itself.
  for k in (0, 5):
    merged = np.concatenate([shards[0][k]["x"], shards[1][k]["x"]])
    np.testing.assert_array_equal(merged, full[k]["x"])


def test_list_volumes_errors(tmp_path):
  with pytest.raises(volume_lib.VolumeError, match="set --config.data.root"):
    patches_lib.list_volumes("")
  with pytest.raises(volume_lib.VolumeError, match="no NIfTI volumes"):
    patches_lib.list_volumes(str(tmp_path))


def test_foreground_patches_by_hand():
  # A 10x10 image whose foreground is the 4x4 block at rows 2-5, cols 3-6.
  image = np.full((10, 10), -1.0, np.float32)
  image[2:6, 3:7] = 0.5
  picker = foreground.ForegroundPatches(patch_size=4, min_foreground=0.75,
                                        background_level=0.05)
  fraction = picker.fraction(image[None])[0]
  assert fraction.shape == (7, 7)
  np.testing.assert_allclose(fraction[2, 3], 1.0)
  np.testing.assert_allclose(fraction[2, 2], 0.75)  # One of 4 columns is background.
  np.testing.assert_allclose(fraction[0, 0], 2 / 16)  # Pixels (2, 3) and (3, 3).
  usable = {(int(r), int(c)) for r, c in zip(*np.nonzero(fraction >= 0.75 - 1e-6))}
  assert usable == {(2, 3), (1, 3), (3, 3), (2, 2), (2, 4)}
  rng = np.random.default_rng(0)
  assert {picker.corner(image, rng) for _ in range(200)} == usable
  empty = np.full((10, 10), -1.0, np.float32)
  assert picker.usable_slices([np.stack([image, empty, image])]) == [(0, 0), (0, 2)]
  # No usable patch at all (a slice cut short): any position rather than an error.
  r, c = picker.corner(empty, rng)
  assert 0 <= r <= 6 and 0 <= c <= 6
  r, c = picker.corner(image, np.random.default_rng(1))
  np.testing.assert_array_equal(picker.crop(image, np.random.default_rng(1)),
                                image[r:r + 4, c:c + 4])
