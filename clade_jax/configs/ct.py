"""CLADE for anisotropic abdominal CT (paper Sec. 4.4.2).

    python train.py --config=configs/ct.py --config.data.root=DIR --workdir=runs/ct

Same as MRI but lambda_gmap = 10 and stride 6 at inference (paper Tables 4 and 8); the
paper kept epoch 10. CT has less soft-tissue contrast, which is where the conventional
CycleGAN collapsed (paper Fig. 16); CLADE trained stably. `:small` and `:demo` work as
for configs/mri.py.

Intensities: a fixed HU window, -1024 (air) to 2048 HU, is mapped to [-1, 1] for the
networks instead of each scan's percentiles, so every scan is read on the same HU
scale; what lies beyond it (dense bone, teeth, metal) bypasses the networks and keeps
its HU (clade_jax/data/intensity.py, measured in experiments/intensity/README.md).
Change it with --config.data.intensity_window='(-1000.0, 3000.0)', or go back to
per-scan percentiles with --config.data.normalization=percentile.
"""

from clade_jax.configs import mri


def get_config(arg=None):
  config = mri.get_config(arg)
  config.loss.gmap = 10.0
  config.eval.stride = 6
  config.data.normalization = "window"
  config.data.intensity_window = (-1024.0, 2048.0)  # HU.
  return config
