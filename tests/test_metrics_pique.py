"""PIQUE on images whose score can be reasoned about."""

import numpy as np
import pytest
from scipy import ndimage

from clade_jax.metrics.pique import mscn_coefficients
from clade_jax.metrics.pique import pique
from clade_jax.metrics.pique import pique_volume
from clade_jax.metrics.pique import pique_with_masks
from clade_jax.metrics.pique import to_gray_levels


def _noise(seed, shape=(128, 128)):
  return np.random.default_rng(seed).normal(size=shape)


def _blocky(seed, shape=(128, 128), tile=8):
  levels = np.random.default_rng(seed).uniform(size=(shape[0] // tile, shape[1] // tile))
  return np.kron(levels, np.ones((tile, tile)))


def _smooth_textured(seed, shape=(128, 128)):
  """A smooth ramp plus gentle fine texture: a stand-in for an undistorted image."""
  y, x = np.mgrid[0:shape[0], 0:shape[1]] / shape[0]
  texture = ndimage.gaussian_filter(np.random.default_rng(seed).normal(size=shape), 1.0)
  return x + 0.5 * y + 0.1 * texture / texture.std()


def test_flat_image_has_no_active_block_and_scores_100():
  # Eq. 9 with N_active = 0: (0 + C1) / (0 + C1) * 100 (MATLAB documents 100 too).
  result = pique_with_masks(np.full((40, 50), 7.0))
  assert result.n_active == 0
  assert result.score == 100.0
  assert not result.activity_mask.any()
  assert result.activity_mask.shape == (40, 50)


def test_pure_noise_scores_high_independently_of_seed():
  scores = [pique(_noise(seed)) for seed in range(3)]
  assert min(scores) > 60.0
  assert max(scores) - min(scores) < 2.0
  result = pique_with_masks(_noise(0))
  assert result.activity_mask.all()  # White noise: every block is spatially active,
  assert result.noise_mask.mean() > 0.9  # and classified noisy by centre-surround.


def test_blocky_image_scores_worse_than_smooth_textured_image():
  for seed in range(2):
    blocky = pique_with_masks(_blocky(seed))
    smooth = pique(_smooth_textured(seed))
    assert blocky.score > smooth + 40.0
    assert smooth < 20.0
    # Flat runs along the tile boundaries are what flags the blocks.
    assert blocky.artifact_mask.mean() > 0.9


def test_size_not_multiple_of_16_equals_explicit_replicate_padding():
  image = _smooth_textured(0)[:100, :75]
  padded = np.pad(image, ((0, 12), (0, 5)), mode="edge")
  result = pique_with_masks(image)
  assert result.score == pytest.approx(pique(padded), abs=1e-12)
  assert result.activity_mask.shape == image.shape
  # Zero padding would add a false edge; the replicate path must not.
  zero_padded = np.pad(image, ((0, 12), (0, 5)), mode="constant",
                       constant_values=image.min())
  assert abs(pique(zero_padded) - result.score) > 1.0


def test_invariant_to_positive_affine_intensity_change_under_min_max():
  image = _smooth_textured(1) + 0.05 * _noise(1)
  assert pique(3.7 * image - 12.0) == pytest.approx(pique(image), abs=1e-9)


@pytest.mark.parametrize("make", [_noise, _blocky, _smooth_textured])
def test_score_lies_in_0_100(make):
  assert 0.0 <= pique(make(3)) <= 100.0


def test_explicit_intensity_range_equal_to_min_max_matches_default_and_clips():
  image = _smooth_textured(2)
  lo, hi = image.min(), image.max()
  assert pique(image, intensity_range=(lo, hi)) == pique(image)
  # Values beyond the window are clipped: pushing them further out changes nothing.
  window = (np.percentile(image, 10), np.percentile(image, 90))
  stretched = np.where(image > window[1], image + 100.0, image)
  assert pique(stretched, intensity_range=window) == pique(image, intensity_range=window)


def test_gray_levels_round_half_away_from_zero_like_matlab():
  gray = to_gray_levels(np.array([0.0, 0.5, 2.5, 254.5, 300.0]), intensity_range=(0.0, 255.0))
  np.testing.assert_array_equal(gray, [0.0, 1.0, 3.0, 255.0, 255.0])
  np.testing.assert_array_equal(to_gray_levels(np.full(3, 4.0)), np.zeros(3))


def test_mscn_of_an_impulse_matches_hand_computed_value():
  # 7-tap Gaussian, sigma 7/6, normalised: the centre weight of the 2D window is k0^2.
  k = np.exp(-np.arange(-3, 4) ** 2 / (2 * (7 / 6) ** 2))
  w0 = (k[3] / k.sum()) ** 2
  gray = np.zeros((15, 15))
  gray[7, 7] = 255.0
  expected = 255.0 * (1 - w0) / (255.0 * np.sqrt(w0 * (1 - w0)) + 1.0)
  assert mscn_coefficients(gray)[7, 7] == pytest.approx(expected, rel=1e-12)
  np.testing.assert_allclose(mscn_coefficients(np.full((9, 9), 80.0)), 0.0)


def _loop_pique(image, matlab_surround):
  """Block-by-block transcription of the paper's steps, as a check on the vectorised code."""
  gray = to_gray_levels(image)
  gray = np.pad(gray, [(0, -n % 16) for n in gray.shape], mode="edge")
  coeffs = mscn_coefficients(gray)
  total, n_active = 0.0, 0
  for i in range(0, gray.shape[0], 16):
    for j in range(0, gray.shape[1], 16):
      block = coeffs[i:i + 16, j:j + 16]
      var = block.var(ddof=1)
      if var <= 0.1:
        continue
      n_active += 1
      edges = [block[0], block[:, 15], block[15], block[:, 0]]
      impaired = any(e[k:k + 6].std(ddof=1) < 0.1 for e in edges for k in range(11))
      centre = np.concatenate([block[:, 7], block[:, 8]])
      # MATLAB deletes column 8, then column 9 of what is left (originally column 10).
      dropped = [7, 9] if matlab_surround else [7, 8]
      surround = np.delete(block, dropped, axis=1)
      ratio = centre.std(ddof=1) / surround.std(ddof=1)
      sigma = np.sqrt(var)
      beta = abs(sigma - ratio) / max(sigma, ratio)
      total += impaired * (1 - var) + (sigma > 2 * beta) * var
  return (total + 1) / (n_active + 1) * 100


def _striped(seed):
  """Weak noise plus a strong stripe in column 10 (1-based) of every block."""
  rng = np.random.default_rng(seed)
  image = 0.3 * rng.normal(size=(32, 128))
  image[:, 9::16] += 4.0 * rng.normal(size=(32, 8))
  return image


def test_vectorised_blocks_match_a_per_block_loop_for_both_surround_variants():
  rng = np.random.default_rng(0)
  mixed = _smooth_textured(0)[:100, :90]
  mixed[:40, :40] += _blocky(0, shape=(40, 40))
  mixed[60:, 50:] += 0.3 * rng.normal(size=(40, 40))
  for image in (mixed, _striped(0)):
    for matlab_surround in (False, True):
      assert pique(image, matlab_surround=matlab_surround) == pytest.approx(
          _loop_pique(image, matlab_surround), abs=1e-9)
  # Where the columns either side of the centre differ, MATLAB's slip matters.
  assert pique(_striped(0), matlab_surround=True) - pique(_striped(0)) > 5.0


def test_invalid_inputs_raise():
  with pytest.raises(ValueError, match="2D"):
    pique(np.zeros((4, 4, 4)))
  with pytest.raises(ValueError, match="non-finite"):
    pique(np.array([[0.0, np.nan], [1.0, 2.0]]))
  with pytest.raises(ValueError, match="hi > lo"):
    pique(np.zeros((16, 16)), intensity_range=(1.0, 1.0))


def _volume():
  """Noise slices of varying brightness, with two empty (zero) slices."""
  rng = np.random.default_rng(0)
  volume = np.abs(rng.normal(size=(6, 48, 40))) * np.array([1, 1, 0.3, 1, 1, 1])[:, None, None]
  volume[0] = 0.0
  volume[5] = 0.0
  return volume


def test_pique_volume_uses_one_volume_wide_range_and_skips_empty_slices():
  volume = _volume()
  scores = pique_volume(volume, axis=0)
  assert np.isnan(scores[0]) and np.isnan(scores[5])
  for i in range(1, 5):
    assert scores[i] == pique(volume[i], intensity_range=(volume.min(), volume.max()))
  # The dim slice is not stretched to the full gray scale as per-slice scaling would.
  assert scores[2] != pique(volume[2])


def test_pique_volume_mask_selects_slices_and_axis_picks_the_plane():
  volume = _volume()
  mask = np.zeros(volume.shape, dtype=bool)
  mask[1:3, 10:20, 10:20] = True
  scores = pique_volume(volume, axis=0, mask=mask)
  assert np.isnan(scores[[0, 3, 4, 5]]).all() and np.isfinite(scores[1:3]).all()

  across = pique_volume(volume, axis=-1)
  assert across.shape == (40,)
  assert across[7] == pique(volume[:, :, 7], intensity_range=(volume.min(), volume.max()))


def test_pique_volume_invalid_inputs_raise():
  with pytest.raises(ValueError, match="3D"):
    pique_volume(np.zeros((8, 8)), axis=0)
  with pytest.raises(ValueError, match="axis"):
    pique_volume(_volume(), axis=3)
  with pytest.raises(ValueError, match=r"\(6, 48, 40\)"):
    pique_volume(_volume(), axis=0, mask=np.ones((6, 48, 41), dtype=bool))
  with pytest.raises(ValueError, match="empty"):
    pique_volume(_volume(), axis=0, mask=np.zeros((6, 48, 40), dtype=bool))
