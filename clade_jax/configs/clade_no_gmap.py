"""Ablation: CLADE without the gradient-mapping loss ("CLADE (no L_gmap)").

    python train.py --config=configs/clade_no_gmap.py --config.data.root=DIR --workdir=runs/no_gmap

Paper Sec. 4.7 (2): weight-demodulated generators, lambda_gmap = 0. Arguments combine
(configs/common.py): `:ct` for the CT base, `:small`, `:demo`, e.g. `:ct,small`.
"""

from clade_jax.configs import common, ct, mri


def get_config(arg=None):
  parts = common.parse_arg(arg, extra=("ct",))
  base = ct if "ct" in parts else mri
  config = base.get_config(",".join(sorted(parts - {"ct"})))
  config.loss.gmap = 0.0
  return config
