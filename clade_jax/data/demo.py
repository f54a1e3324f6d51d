"""The bundled demo volume: the MNI152 2009 T1 template degraded to 6 mm slices.

nilearn's wheel ships the 1 mm isotropic template, so the demo needs no network. We
simulate a coronal-style acquisition with thick slices along anterior-posterior
(1 x 6 x 1 mm, Gaussian slice profile of FWHM 6 mm) and keep the 1 mm template as the
ground truth for evaluation.
"""

from __future__ import annotations

import os

import numpy as np

from clade_jax.data import degrade as degrade_lib
from clade_jax.data import volume as volume_lib

LR_NAME = "mni152_t1_6mm_ap.nii.gz"
TRUTH_NAME = "mni152_t1_1mm.nii.gz"
THICK_AXIS = 1  # Anterior-posterior in the template's RAS voxel order.
SPACING_MM = 6.0


def load_template() -> volume_lib.Volume:
  """The nilearn MNI152 2009 T1 template at 1 mm (197 x 233 x 189, RAS, intensities 0..1)."""
  try:
    from nilearn import datasets
  except ImportError:
    raise volume_lib.VolumeError(
        "the demo needs nilearn for the MNI152 template: pip install -e '.[demo]'") from None
  image = datasets.load_mni152_template(resolution=1)
  return volume_lib.Volume(np.asarray(image.get_fdata(), np.float32),
                           np.asarray(image.affine, np.float64))


def ensure_demo_data(directory: str = "demo_data") -> tuple[str, str]:
  """Writes (once) DIR/lr/<thick-slice volume> and DIR/truth/<1 mm template>.

  Returns:
    (low-resolution path, ground-truth path).
  """
  lr_path = os.path.join(directory, "lr", LR_NAME)
  truth_path = os.path.join(directory, "truth", TRUTH_NAME)
  if not (os.path.exists(lr_path) and os.path.exists(truth_path)):
    truth = load_template()
    lr = degrade_lib.degrade(truth, thick_axis=THICK_AXIS, spacing_mm=SPACING_MM)
    volume_lib.save_volume(truth_path, truth.data, truth.affine)
    volume_lib.save_volume(lr_path, lr.data, lr.affine)
  return lr_path, truth_path
