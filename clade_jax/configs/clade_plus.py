"""CLADE+, the recommended config: the paper's CLADE with the options the ground truth supports.

    python train.py --config=configs/clade_plus.py --config.data.root=DIR --workdir=runs/plus
    python infer.py --workdir runs/plus --input scan.nii.gz --output scan_srr.nii.gz

The networks, losses and training schedule are the paper's (configs/mri.py); what
differs is chosen by measurement against a known truth (experiments/quality/README.md):

- `model.residual`: G_X predicts a correction to its input and starts as the identity,
  so the untrained model is the cubic spline and training only adds what it learns;
- `loss.degradation`: next to CLADE's unpaired losses, a paired one: patches of the
  acquired high-resolution slices, re-acquired with the slice profile like the thick
  axis (clade_jax/data/simulated_pairs.py), must come back through G_X as themselves;
- `train.ema_decay`: samples and inference use a moving average of the generators'
  weights, which smooths out the last updates' adversarial jitter;
- `eval.blend=taper`: overlapping patches cross-fade, so no patch grid shows at stride 12;
- `eval.data_consistency`: the output is projected so that re-acquiring it with the
  slice profile (`data.slice_profile`, `data.slice_thickness`) gives the acquired
  slices: what was measured is kept, what lies between the slices is CLADE's.

`:demo` and `:small` work as for configs/mri.py (configs/demo.py is `:demo`); `:ct`
starts from configs/ct.py instead.
"""

from clade_jax.configs import common, ct, mri


def get_config(arg=None):
  parts = common.parse_arg(arg, extra=("ct",))
  base = ct if "ct" in parts else mri
  config = base.get_config(",".join(sorted(parts - {"ct"})))
  config.model.residual = True
  config.loss.degradation = 100.0
  config.train.ema_decay = 0.999
  config.eval.blend = "taper"
  config.eval.data_consistency = True
  return config
