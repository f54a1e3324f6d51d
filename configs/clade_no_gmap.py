"""Ablation: CLADE without the gradient-mapping loss ("CLADE (no L_gmap)").

    python train.py --config=configs/clade_no_gmap.py --config.data.root=DIR --workdir=runs/no_gmap

Paper Sec. 4.7 (2): weight-demodulated generators, lambda_gmap = 0. Pass `:ct` for the
CT base.
"""

from configs import ct, mri


def get_config(arg=None):
  config = ct.get_config() if arg == "ct" else mri.get_config(arg)
  config.loss.gmap = 0.0
  return config
