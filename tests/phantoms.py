"""Small synthetic volumes for tests: an ellipsoid 'body' with inner structures."""

import nibabel as nib
import numpy as np


def body_phantom(shape=(40, 40, 40), seed=0) -> np.ndarray:
  """Isotropic phantom in [0, 1]: background 0, body ~0.5, brighter blobs, mild noise."""
  rng = np.random.default_rng(seed)
  grid = np.stack(np.meshgrid(*[np.linspace(-1, 1, n) for n in shape], indexing="ij"))
  radius = np.sqrt(np.sum((grid / np.array([0.85, 0.75, 0.9])[:, None, None, None])**2, 0))
  data = 0.5 * (radius < 1.0)
  for _ in range(6):
    centre = rng.uniform(-0.5, 0.5, 3)[:, None, None, None]
    r = rng.uniform(0.1, 0.25)
    data = np.where(np.sqrt(np.sum((grid - centre)**2, 0)) < r, rng.uniform(0.7, 1.0), data)
  data = data + 0.02 * rng.normal(size=shape) * (radius < 1.0)
  return data.astype(np.float32)


def thick_slice_volume(path, shape=(40, 40, 40), step=4, thick_axis=2, seed=0) -> str:
  """Writes the phantom keeping every `step`-th slice along `thick_axis` (1 mm in-plane)."""
  data = np.take(body_phantom(shape, seed), np.arange(0, shape[thick_axis], step), thick_axis)
  spacing = [1.0, 1.0, 1.0]
  spacing[thick_axis] = float(step)
  nib.save(nib.Nifti1Image(data, np.diag(spacing + [1.0])), str(path))
  return str(path)
