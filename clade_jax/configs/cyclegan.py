"""Ablation: the conventional patch-based CycleGAN (instance norm, no L_gmap).

    python train.py --config=configs/cyclegan.py --config.data.root=DIR --workdir=runs/cyclegan

Paper Sec. 4.7 (1): same data, epochs and lambda_cyc/lambda_ident as CLADE. Expect
blocky grid artefacts in sliding-window reconstructions (paper Fig. 4), and possibly mode
collapse on CT (Fig. 16). Arguments combine (configs/common.py): `:ct` for the CT base,
`:small`, `:demo`, e.g. --config=configs/cyclegan.py:ct,small.
"""

from clade_jax.configs import common, ct, mri


def get_config(arg=None):
  parts = common.parse_arg(arg, extra=("ct",))
  base = ct if "ct" in parts else mri
  config = base.get_config(",".join(sorted(parts - {"ct"})))
  config.model.generator_norm = "instance"
  config.loss.gmap = 0.0
  return config
