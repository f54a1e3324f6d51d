"""Which patches of a slice hold enough anatomy to train on: every method's sources share it.

A pixel is foreground when brighter than ``background_level`` of the [-1, 1] network
range; a patch is usable when at least ``min_foreground`` of its pixels are. A slice
is usable when it has one usable patch, and a patch is placed by a few cheap random
draws before an exact search over every position, so most examples cost two integers.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from clade_jax.data import volume as volume_lib

# Slack on the foreground fraction, so a patch exactly at `min_foreground` counts despite
# the float rounding of a mean.
TOLERANCE = 1e-6
# Random placements tried before the exact search over all positions.
DRAWS = 8


class ForegroundPatches:
  """Square patches with enough foreground, for slices in the [-1, 1] network units.

  Args:
    patch_size: the patch side.
    min_foreground: fraction of a patch's pixels that must be foreground.
    background_level: foreground is brighter than this fraction of [-1, 1].
  """

  def __init__(self, patch_size: int, min_foreground: float, background_level: float):
    self.patch_size = patch_size
    self.min_foreground = min_foreground
    self.threshold = -1.0 + 2.0 * background_level

  def fraction(self, stack: np.ndarray) -> np.ndarray:
    """Foreground fraction of the patch at every corner (r, c): [S, H-P+1, W-P+1]."""
    p = self.patch_size
    mean = ndimage.uniform_filter((stack > self.threshold).astype(np.float32),
                                  size=(1, p, p), mode="constant")
    lo = p // 2  # uniform_filter centres its window; index (r, c) is the patch at (r, c).
    return mean[:, lo:lo + stack.shape[1] - p + 1, lo:lo + stack.shape[2] - p + 1]

  def usable_slices(self, stacks) -> list[tuple[int, int]]:
    """(stack index, slice index) of every slice with at least one usable patch."""
    return [(v, int(s)) for v, stack in enumerate(stacks)
            for s in np.flatnonzero(self.fraction(stack).max(axis=(1, 2))
                                    >= self.min_foreground - TOLERANCE)]

  def require(self, slices: list, volumes, what: str = "acquired slice") -> list:
    """`slices` (from `usable_slices`), or a one-line error naming the volumes if empty.

    Raises:
      volume_lib.VolumeError: no `what` has a usable patch; the message says which config
        fields to lower.
    """
    if not slices:
      raise volume_lib.VolumeError(
          f"{volumes[0].path}{' ...' if len(volumes) > 1 else ''}: no {what} has a "
          f"{self.patch_size}x{self.patch_size} patch with {self.min_foreground:.0%} "
          "foreground; lower data.min_foreground or data.background_level")
    return slices

  def corner(self, image: np.ndarray, rng: np.random.Generator) -> tuple[int, int]:
    """The top-left corner of a random usable patch of a 2D image.

    `DRAWS` uniform draws first (two `rng.integers` each), then a uniform choice among
    all usable positions. An image with none (a slice cut short, as SMORE's phases
    do) gets a uniform choice among all positions.
    """
    p = self.patch_size
    h, w = image.shape
    for _ in range(DRAWS):
      r, c = int(rng.integers(0, h - p + 1)), int(rng.integers(0, w - p + 1))
      if np.mean(image[r:r + p, c:c + p] > self.threshold) >= self.min_foreground - TOLERANCE:
        return r, c
    fraction = self.fraction(image[None])[0]
    candidates = np.flatnonzero(fraction >= self.min_foreground - TOLERANCE)
    if not candidates.size:
      candidates = np.arange(fraction.size)
    r, c = np.unravel_index(rng.choice(candidates), fraction.shape)
    return int(r), int(c)

  def crop(self, image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """The patch at `corner`."""
    r, c = self.corner(image, rng)
    return image[r:r + self.patch_size, c:c + self.patch_size]
