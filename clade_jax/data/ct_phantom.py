"""A synthetic CT-like head in Hounsfield units, for checks that need CT's intensity range.

No CT scan is bundled, so intensity fidelity (issue 16) is checked on this phantom:
air at exactly -1024 HU outside the head, soft tissue and brain at 0-60 HU, a sinus
of air, a skull whose dense tables (1400-1900 HU) straddle the 99.5th percentile, and
teeth-like rods up to about 3000 HU along the slice axis (axis 2, superior-inferior),
long enough to survive thick slices as real teeth do. Gaussian noise only inside the
head, so the air outside keeps exactly -1024, as scanners write it.

    volume = ct_phantom.ct_head((128, 128, 96))   # 1 mm voxels, RAS
    lr = degrade.degrade(volume, thick_axis=2, spacing_mm=4.0)
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from clade_jax.data.volume import Volume

AIR_HU = -1024.0


def ct_head(shape=(128, 128, 96), seed: int = 0, noise_hu: float = 8.0) -> Volume:
  """The phantom on a 1 mm grid (identity affine, so RAS with axis 2 superior).

  Args:
    shape: voxels along (left-right, anterior-posterior, inferior-superior); the head
      fills about 85% of each axis.
    seed: seed of the noise and the teeth's densities.
    noise_hu: standard deviation of the Gaussian noise inside the head.

  Returns:
    A float32 `Volume` in HU, min exactly -1024 (the air outside).
  """
  rng = np.random.default_rng(seed)
  axes = [np.arange(n, dtype=np.float64) - (n - 1) / 2.0 for n in shape]
  x, y, z = np.meshgrid(*axes, indexing="ij")
  semi = 0.44 * np.asarray(shape, np.float64)  # The head's semi-axes (mm).
  r = np.sqrt((x / semi[0])**2 + (y / semi[1])**2 + (z / semi[2])**2)
  angle = np.arctan2(y, x)
  upper = z > -0.25 * semi[2]  # The cranium; below it the jaw.

  hu = np.full(shape, AIR_HU)
  hu[r < 1.0] = 40.0  # Scalp and face soft tissue.
  hu[(r < 0.97) & (r >= 0.95)] = -90.0  # A thin layer of fat under the skin.
  # Skull: outer table, diploe, inner table; the tables' density varies around the
  # head, so dense bone spreads over a range of HU as in real skulls.
  table = 1400.0 + 500.0 * np.cos(2.0 * angle)**2
  hu[upper & (r < 0.95) & (r >= 0.915)] = table[upper & (r < 0.95) & (r >= 0.915)]
  hu[upper & (r < 0.915) & (r >= 0.885)] = 650.0
  inner = upper & (r < 0.885) & (r >= 0.855)
  hu[inner] = table[inner] - 150.0
  brain = upper & (r < 0.855)
  hu[brain] = 36.0
  white = brain & (np.sqrt((x / semi[0])**2 + (y / semi[1])**2 + ((z - 0.2 * semi[2]) / semi[2])**2)
                   < 0.55)
  hu[white] = 27.0
  for side in (-1.0, 1.0):  # Lateral ventricles (CSF).
    ventricle = (((x - side * 0.12 * semi[0]) / (0.07 * semi[0]))**2
                 + (y / (0.3 * semi[1]))**2 + ((z - 0.2 * semi[2]) / (0.12 * semi[2]))**2) < 1.0
    hu[ventricle] = 6.0
  sinus = ((x / (0.15 * semi[0]))**2 + ((y - 0.7 * semi[1]) / (0.1 * semi[1]))**2
           + ((z + 0.15 * semi[2]) / (0.12 * semi[2]))**2) < 1.0
  hu[sinus] = -960.0
  # Jaw: an arc of bone in the anterior lower head, teeth standing in it.
  jaw_radius = np.hypot(x / (0.62 * semi[0]), (y - 0.15 * semi[1]) / (0.62 * semi[1]))
  front = y > 0.15 * semi[1]
  jaw_z = (z < -0.45 * semi[2]) & (z > -0.8 * semi[2])
  jaw = front & jaw_z & (np.abs(jaw_radius - 1.0) < 0.12)
  hu[jaw] = 1250.0
  n_teeth = 10
  for k, theta in enumerate(np.linspace(0.2 * np.pi, 0.8 * np.pi, n_teeth)):
    cx = 0.62 * semi[0] * np.cos(theta)
    cy = 0.15 * semi[1] + 0.62 * semi[1] * np.sin(theta)
    tooth = (np.hypot(x - cx, y - cy) < 2.6) & (z < -0.42 * semi[2]) & (z > -0.75 * semi[2])
    hu[tooth] = rng.uniform(2600.0, 3000.0) if k else 3000.0
  # A little blur so edges are not perfectly aliased; the air outside stays exact.
  head = ndimage.binary_dilation(r < 1.0, iterations=2)
  hu = np.where(head, ndimage.gaussian_filter(hu, 0.5), AIR_HU)
  hu = hu + np.where(r < 1.0, rng.normal(0.0, noise_hu, shape), 0.0)
  return Volume(data=hu.astype(np.float32), affine=np.eye(4))
