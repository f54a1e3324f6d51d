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
  assert pique(3.7 * image - 12.0, gray_scale="minmax") == pytest.approx(
      pique(image, gray_scale="minmax"), abs=1e-9)


@pytest.mark.parametrize("make", [_noise, _blocky, _smooth_textured])
def test_score_lies_in_0_100(make):
  assert 0.0 <= pique(make(3)) <= 100.0


def test_explicit_intensity_range_equal_to_min_max_matches_minmax_and_clips():
  image = _smooth_textured(2)
  lo, hi = image.min(), image.max()
  assert pique(image, intensity_range=(lo, hi)) == pique(image, gray_scale="minmax")
  assert pique(image, gray_scale=(lo, hi)) == pique(image, gray_scale="minmax")
  # Values beyond the window are clipped: pushing them further out changes nothing.
  window = (np.percentile(image, 10), np.percentile(image, 90))
  stretched = np.where(image > window[1], image + 100.0, image)
  assert pique(stretched, intensity_range=window) == pique(image, intensity_range=window)


def test_gray_levels_round_half_away_from_zero_like_matlab():
  gray = to_gray_levels(np.array([0.0, 0.5, 2.5, 254.5, 300.0]), gray_scale=(0.0, 255.0))
  np.testing.assert_array_equal(gray, [0.0, 1.0, 3.0, 255.0, 255.0])
  np.testing.assert_array_equal(to_gray_levels(np.full(3, 4.0), "minmax"), np.zeros(3))


def test_type_gray_scale_is_matlabs_im2double_times_255_without_clipping():
  # uint8 as is; uint16 / 257; int16 shifted by 32768 first; float times 255.
  np.testing.assert_array_equal(to_gray_levels(np.array([0, 7, 255], np.uint8)), [0, 7, 255])
  np.testing.assert_array_equal(
      to_gray_levels(np.array([0, 257 * 7, 65535, 128], np.uint16)), [0, 7, 255, 0])
  np.testing.assert_array_equal(
      to_gray_levels(np.array([-32768, 257 * 7 - 32768, 32767], np.int16)), [0, 7, 255])
  # piqe.m computes round(255 * im2double(I)) and does not clip float input; 255 * 1.5
  # = 382.5 and 255 * -0.5 = -127.5 round away from zero.
  np.testing.assert_array_equal(
      to_gray_levels(np.array([0.002, 0.5, 1.5, -0.5], np.float32)), [1, 128, 383, -128])
  with pytest.raises(ValueError, match="takes uint8, uint16, int16 or float images"):
    to_gray_levels(np.zeros(3, np.int32))
  with pytest.raises(ValueError, match="gray_scale must be one of type, minmax or"):
    to_gray_levels(np.zeros(3), "volume")


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
  gray = to_gray_levels(image, "minmax")
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
      surround = "matlab" if matlab_surround else "centre"
      assert pique(image, gray_scale="minmax", surround=surround) == pytest.approx(
          _loop_pique(image, matlab_surround), abs=1e-9)
  # Where the columns either side of the centre differ, MATLAB's slip matters.
  striped = _striped(0)
  assert (pique(striped, gray_scale="minmax", surround="matlab")
          - pique(striped, gray_scale="minmax", surround="centre")) > 5.0


def test_invalid_inputs_raise():
  with pytest.raises(ValueError, match="2D"):
    pique(np.zeros((4, 4, 4)))
  with pytest.raises(ValueError, match="non-finite"):
    pique(np.array([[0.0, np.nan], [1.0, 2.0]]))
  with pytest.raises(ValueError, match="hi > lo"):
    pique(np.zeros((16, 16)), intensity_range=(1.0, 1.0))
  with pytest.raises(ValueError, match="not both"):
    pique(np.zeros((16, 16)), gray_scale="type", intensity_range=(0.0, 1.0))
  with pytest.raises(ValueError, match="surround must be one of matlab, centre"):
    pique(np.zeros((16, 16)), surround="evident")


def _volume():
  """Noise slices of varying brightness, with two empty (zero) slices."""
  rng = np.random.default_rng(0)
  volume = np.abs(rng.normal(size=(6, 48, 40))) * np.array([1, 1, 0.3, 1, 1, 1])[:, None, None]
  volume[0] = 0.0
  volume[5] = 0.0
  return volume


def test_pique_volume_uses_one_volume_wide_range_and_skips_empty_slices():
  volume = _volume()
  scores = pique_volume(volume, axis=0, gray_scale="volume")
  assert np.isnan(scores[0]) and np.isnan(scores[5])
  for i in range(1, 5):
    assert scores[i] == pique(volume[i], gray_scale=(volume.min(), volume.max()))
  # The dim slice is not stretched to the full gray scale as per-slice scaling would.
  assert scores[2] != pique(volume[2], gray_scale="minmax")
  # The default reads every slice as MATLAB's piqe(slice) does; skipping is the same.
  default = pique_volume(volume, axis=0)
  assert np.isnan(default[[0, 5]]).all()
  assert [default[i] for i in range(1, 5)] == [pique(volume[i]) for i in range(1, 5)]
  with pytest.raises(ValueError, match="gray_scale must be one of type, volume or"):
    pique_volume(volume, axis=0, gray_scale="minmax")


def test_pique_volume_mask_selects_slices_and_axis_picks_the_plane():
  volume = _volume()
  mask = np.zeros(volume.shape, dtype=bool)
  mask[1:3, 10:20, 10:20] = True
  scores = pique_volume(volume, axis=0, mask=mask)
  assert np.isnan(scores[[0, 3, 4, 5]]).all() and np.isfinite(scores[1:3]).all()

  across = pique_volume(volume, axis=-1, intensity_range=(0.0, 2.0), surround="centre")
  assert across.shape == (40,)
  assert across[7] == pique(volume[:, :, 7], gray_scale=(0.0, 2.0), surround="centre")


def test_pique_volume_invalid_inputs_raise():
  with pytest.raises(ValueError, match="3D"):
    pique_volume(np.zeros((8, 8)), axis=0)
  with pytest.raises(ValueError, match="axis"):
    pique_volume(_volume(), axis=3)
  with pytest.raises(ValueError, match=r"\(6, 48, 40\)"):
    pique_volume(_volume(), axis=0, mask=np.ones((6, 48, 41), dtype=bool))
  with pytest.raises(ValueError, match="empty"):
    pique_volume(_volume(), axis=0, mask=np.zeros((6, 48, 40), dtype=bool))


# ---------------------------------------------------------------------------------
# MATLAB's default path, against a transcription of piqe.m that shares no code with
# the implementation: its own im2double, Gaussian filter, padding and block loop.


def _im2double(image):
  """MATLAB's im2double for the classes piqe accepts."""
  if image.dtype == np.uint8:
    return image.astype(np.float64) / 255.0
  if image.dtype == np.uint16:
    return image.astype(np.float64) / 65535.0
  if image.dtype == np.int16:
    return (image.astype(np.float64) + 32768.0) / 65535.0
  return image.astype(np.float64)  # single/double are returned unscaled


def _mat2gray(image):
  image = image.astype(np.float64)
  return (image - image.min()) / (image.max() - image.min())


def _imgaussfilt_replicate(x):
  """imgaussfilt(x, 7/6, 'FilterSize', 7, 'Padding', 'replicate') as a 7x7 double sum."""
  r = np.arange(-3, 4)
  kernel = np.exp(-(r[:, None] ** 2 + r[None, :] ** 2) / (2 * (7 / 6) ** 2))
  kernel /= kernel.sum()
  padded = np.pad(x, 3, mode="edge")
  out = np.zeros_like(x)
  for di in range(7):
    for dj in range(7):
      out += kernel[di, dj] * padded[di:di + x.shape[0], dj:dj + x.shape[1]]
  return out


def _piqe_reference(image):
  """piqe.m (2018) step by step, for a 2D image of a class piqe accepts."""
  rows, cols = image.shape
  image = np.pad(image, ((0, -rows % 16), (0, -cols % 16)), mode="edge")
  scaled = 255.0 * _im2double(image)
  gray = np.sign(scaled) * np.floor(np.abs(scaled) + 0.5)  # MATLAB round
  mu = _imgaussfilt_replicate(gray)
  sigma = np.sqrt(np.abs(_imgaussfilt_replicate(gray * gray) - mu * mu))
  norm = (gray - mu) / (sigma + 1)
  total, n_active = 0.0, 0
  for i in range(0, norm.shape[0], 16):
    for j in range(0, norm.shape[1], 16):
      block = norm[i:i + 16, j:j + 16]
      var = np.var(block.ravel(), ddof=1)
      if not var > 0.1:
        continue
      n_active += 1
      impaired = False
      for edge in (block[0, :], block[:, 15], block[15, :], block[:, 0]):
        for k in range(11):
          if np.std(edge[k:k + 6], ddof=1) < 0.1:
            impaired = True
      centre = np.concatenate([block[:, 7], block[:, 8]])
      surround = np.delete(block, 7, axis=1)  # Block(:, center1) = []
      surround = np.delete(surround, 8, axis=1)  # then Block(:, center2) = []
      ratio = np.std(centre, ddof=1) / np.std(surround.ravel(), ddof=1)
      if np.isnan(ratio):
        ratio = 0.0
      block_sigma = np.sqrt(var)
      beta = abs(block_sigma - ratio) / max(block_sigma, ratio)
      total += impaired * (1 - var) + (block_sigma > 2 * beta) * var
  return (total + 1) / (n_active + 1) * 100


def _test_scene(seed, shape=(70, 90)):
  """A [0, 1] image with smooth, blocky and noisy regions; sides not multiples of 16."""
  rng = np.random.default_rng(seed)
  y, x = np.mgrid[0:shape[0], 0:shape[1]] / max(shape)
  scene = 0.2 + 0.4 * x + 0.2 * y
  scene[:32, :40] = np.kron(rng.uniform(0.1, 0.9, size=(4, 5)), np.ones((8, 8)))
  scene[40:, 50:] += 0.08 * rng.normal(size=(shape[0] - 40, shape[1] - 50))
  return np.clip(scene, 0.0, 1.0)


def test_default_is_matlab_piqe_on_a_uint8_image():
  image = np.round(255 * _test_scene(0)).astype(np.uint8)
  result = pique_with_masks(image)
  assert result.score == pytest.approx(_piqe_reference(image), abs=1e-9)
  # The scene exercises every branch: active, impaired and noisy blocks all occur.
  assert result.artifact_mask.any() and result.noise_mask.any()
  assert result.n_active < 30  # Out of 5 x 6 blocks: the smooth ramp is not active.
  # The same gray levels stored as uint16 or int16 are read on the same scale.
  as_uint16 = image.astype(np.uint16) * 257
  assert pique(as_uint16) == result.score
  assert pique((as_uint16.astype(np.int32) - 32768).astype(np.int16)) == result.score


def test_default_is_matlab_piqe_on_a_unit_interval_float_image():
  image = _test_scene(1)
  score = pique(image)
  assert score == pytest.approx(_piqe_reference(image), abs=1e-9)
  assert pique(image.astype(np.float32)) == pytest.approx(
      _piqe_reference(image.astype(np.float32)), abs=1e-9)
  # A uint8 image and its im2double are one image to piqe.
  as_uint8 = np.round(255 * image).astype(np.uint8)
  assert pique(as_uint8.astype(np.float64) / 255.0) == pique(as_uint8)


def test_narrow_range_image_type_scale_differs_from_min_max_stretch():
  # uint8 values 100..140: the type's range keeps them at gray levels 100..140, the
  # min-max stretch (piqe(mat2gray(I))) spreads them over 0..255.
  image = (100 + np.round(40 * _mat2gray(_test_scene(2)))).astype(np.uint8)
  assert (image.min(), image.max()) == (100, 140)
  default = pique(image)
  stretched = pique(image, gray_scale="minmax")
  assert default == pytest.approx(_piqe_reference(image), abs=1e-9)
  assert stretched == pytest.approx(_piqe_reference(_mat2gray(image)), abs=1e-9)
  assert abs(default - stretched) > 1.0
