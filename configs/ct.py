"""CLADE for anisotropic abdominal CT (paper Sec. 4.4.2).

    python train.py --config=configs/ct.py --config.data.root=DIR --workdir=runs/ct

Same as MRI but lambda_gmap = 10 and stride 6 at inference (paper Tables 4 and 8); the
paper kept epoch 10. CT has less soft-tissue contrast, which is where the conventional
CycleGAN collapsed (paper Fig. 16); CLADE trained stably. `:small` and `:demo` work as
for configs/mri.py.
"""

from configs import mri


def get_config(arg=None):
  config = mri.get_config(arg)
  config.loss.gmap = 10.0
  config.eval.stride = 6
  return config
