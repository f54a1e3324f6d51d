"""GLADE (Pascale et al., ISMRM abstract; ../shared/papers/glade-abstract.md).

    python train.py --config=configs/glade.py --config.data.root=DIR --workdir=runs/glade
    python train.py --config=configs/glade.py:demo --workdir=runs/glade   # bundled data

CLADE's predecessor: an unpaired CycleGAN from sagittal (low-resolution, X) to coronal
(high-resolution, Y) slices with the cycle-consistent gradient-mapping loss. How the
abstract is read, field by field (everything else is the base, configs/mri.py):

- "The CycleGAN architecture [1]": the conventional ResNet generator with instance
  norm (no weight demodulation, which CLADE introduced later);
- "2D slices of size 92x92": 92x92 patches;
- Eq. 2, L_total = lambda_cyc L_cyc + lambda_gmap L_gmap, with the adversarial losses of
  the CycleGAN it builds on: no identity loss. The abstract gives no weights, so
  lambda_cyc and lambda_gmap keep the base's 1 and 5;
- Eq. 1's L_gmap over both cycles is the base's gradient-map loss already.

`:demo` trains 300 steps of batch 8 on the demo volumes, like configs/demo.py, on
patches 8 times larger, so each step takes longer (benchmarks/RESULTS.md).
"""

from clade_jax.configs import mri


def get_config(arg=None):
  config = mri.get_config(arg)
  config.model.generator_norm = "instance"
  config.data.patch_size = 92
  config.loss.ident = 0.0
  return config
