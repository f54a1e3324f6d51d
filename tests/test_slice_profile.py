"""Tests of the shared slice-profile code."""

import math

import numpy as np
import pytest
from scipy import integrate

from clade_jax.data import degrade as degrade_lib
from clade_jax.data import slice_profile


@pytest.mark.parametrize("profile,thickness", [
    ("gaussian", 6.0), ("gaussian", 2.3), ("gaussian", 0.4), ("rect", 4.0), ("rect", 3.0),
    ("rect", 5.5), ("rect", 0.7), (np.array([1.0, 2.0, 3.0, 2.0, 1.0]), None),
    (np.array([0.0, 1.0, 0.0]), None)])
@pytest.mark.parametrize("centre", [0, 17, -4])
def test_whole_voxel_centre_is_the_centred_profile_shifted(profile, thickness, centre):
  first, weights = slice_profile.weights_at(profile, float(centre), thickness)
  expected = degrade_lib.slice_profile(profile, thickness)
  # Bit-identical: degrade's weights, and so its output, must not move.
  np.testing.assert_array_equal(weights, expected)
  assert first == centre - (expected.size - 1) // 2


def test_rect_at_a_fractional_centre_is_the_exact_overlap():
  # Box [-1.25, 1.75]: voxel -1 = [-1.5, -0.5] holds 0.75 of it, voxels 0 and 1 all
  # of theirs, voxel 2 = [1.5, 2.5] holds 0.25; total 3.
  first, weights = slice_profile.weights_at("rect", 0.25, 3.0)
  assert first == -1
  np.testing.assert_allclose(weights, np.array([0.75, 1.0, 1.0, 0.25]) / 3, rtol=1e-12)
  # 5.5 voxels centred on 5.5 (the second of 5.5 mm slices on a 1 mm grid): [2.75, 8.25].
  first, weights = slice_profile.weights_at("rect", 5.5, 5.5)
  assert first == 3
  np.testing.assert_allclose(weights, np.array([0.75, 1, 1, 1, 1, 0.75]) / 5.5, rtol=1e-12)


def test_gaussian_at_a_fractional_centre_integrates_the_density_per_voxel():
  thickness, centre = 4.0, 10.3
  sigma = thickness / (2 * math.sqrt(2 * math.log(2)))
  first, weights = slice_profile.weights_at("gaussian", centre, thickness)
  truncation = math.ceil(5.3 * sigma) + 0.5
  density = lambda x: math.exp(-0.5 * ((x - centre) / sigma) ** 2)
  expected = []
  for i in range(first, first + weights.size):
    lo = max(i - 0.5, centre - truncation)
    hi = min(i + 0.5, centre + truncation)
    expected.append(integrate.quad(density, lo, hi)[0] if hi > lo else 0.0)
  expected = np.array(expected) / sum(expected)
  np.testing.assert_allclose(weights, expected, rtol=1e-9, atol=1e-15)
  # The support is the truncation window, no more: the end voxels are partial.
  assert first == math.floor(centre - truncation + 0.5)
  assert first + weights.size - 1 == math.floor(centre + truncation + 0.5)
  np.testing.assert_allclose(np.dot(np.arange(first, first + weights.size), weights), centre,
                             atol=1e-3)  # close to the centre, not exact: voxel binning


def test_explicit_kernel_at_a_half_voxel_centre_spreads_each_tap_over_two_voxels():
  # Taps [1, 2, 1] / 4 as constant densities over [-0.5+c, 0.5+c], ... with c = 0.5:
  # each fine voxel takes half of two neighbouring taps.
  first, weights = slice_profile.weights_at(np.array([1.0, 2.0, 1.0]), 0.5)
  assert first == -1
  np.testing.assert_allclose(weights, [0.125, 0.375, 0.375, 0.125], rtol=1e-12)


def test_bad_arguments():
  with pytest.raises(ValueError, match="unknown slice profile"):
    slice_profile.weights_at("sinc", 0.0, 3.0)
  with pytest.raises(ValueError, match="> 0"):
    slice_profile.weights_at("rect", 0.0, 0.0)
  with pytest.raises(ValueError, match="thickness_vox=None"):
    slice_profile.weights_at(np.ones(3), 0.0, 3.0)
  with pytest.raises(ValueError, match="odd"):
    slice_profile.weights_at(np.ones(4), 0.0)
  with pytest.raises(ValueError, match="finite"):
    slice_profile.weights_at("rect", float("nan"), 3.0)
