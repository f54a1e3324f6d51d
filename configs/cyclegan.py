"""Ablation: the conventional patch-based CycleGAN (instance norm, no L_gmap).

    python train.py --config=configs/cyclegan.py --config.data.root=DIR --workdir=runs/cyclegan

Paper Sec. 4.7 (1): same data, epochs and lambda_cyc/lambda_ident as CLADE. Expect
blocky grid artefacts in sliding-window reconstructions (paper Fig. 4), and possibly mode
collapse on CT (Fig. 16). Pass `:ct` for the CT base: --config=configs/cyclegan.py:ct.
"""

from configs import ct, mri


def get_config(arg=None):
  config = ct.get_config() if arg == "ct" else mri.get_config(arg)
  config.model.generator_norm = "instance"
  config.loss.gmap = 0.0
  return config
