"""Main comparison (the paper's Tables 1-2, Figure 5) on the MNI152 ground-truth protocol.

The low-resolution input, the interpolation baselines and every learned method, each
trained on the same thick-slice inputs for its configured budget, scored by the paper's
metrics (PIQUE in both low-resolution planes, edge sharpness, SNR) and against the
truth (PSNR, SSIM), with the paper's statistics, box plots and an orthogonal-slice
figure per subject with every method side by side (evaluation.evaluate).

  python experiments/main_comparison/run.py --size demo --out runs/main_comparison
  python experiments/main_comparison/run.py --size demo --methods clade smore   # a subset
  python experiments/main_comparison/run.py --tiny --out /tmp/main_tiny            # CI check
"""

from __future__ import annotations

import argparse
import os
import sys

sys.path.insert(0, os.path.abspath(os.path.join(os.path.dirname(__file__), "..")))
import common  # noqa: E402


# name -> config file; `--size` is appended as its argument (configs/common.py).
METHODS = {
    "clade": "configs/mri.py",
    "clade_no_gmap": "configs/clade_no_gmap.py",
    "cyclegan": "configs/cyclegan.py",
    "glade": "configs/glade.py",
    "clade_plus": "configs/clade_plus.py",
    "smore": "configs/smore.py",
    "ae_interp": "configs/ae_interp.py",
}


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("--methods", nargs="+", default=list(METHODS), choices=list(METHODS))
  parser.add_argument("--size", default="demo", choices=["demo", "small", "paper"],
                      help="config size argument; 'paper' = the configs' defaults (GPU)")
  parser.add_argument("--steps", type=int, help="override every method's train.num_steps")
  parser.add_argument("--out", default="runs/main_comparison")
  parser.add_argument("--no-figures", dest="figures", action="store_false")
  common.add_protocol_arguments(parser)
  args = parser.parse_args(argv)
  inputs = common.protocol_inputs(args.protocol, args.profile, noise=args.noise,
                                  phases=args.phases, tiny=args.tiny,
                                  baseline_names=("nearest", "linear", "cubic", "lanczos"))
  methods = {"low_res": inputs["nearest"]}
  methods |= {m: inputs[m] for m in ("linear", "cubic", "lanczos")}
  size = "small" if args.tiny else args.size
  seconds = {}
  for name in args.methods:
    spec = METHODS[name] + ("" if size == "paper" else f":{size}")
    overrides = {"train.num_steps": args.steps} if args.steps else {}
    config = common.load_config(spec, overrides, tiny=args.tiny)
    run = os.path.join(args.out, "runs", name)
    seconds[name] = common.train(config, run, inputs)
    methods[name] = os.path.join(args.out, name)
    inference_seconds = common.super_resolve_all(run, inputs, methods[name])
    print(f"{name}: trained in {seconds[name]:.0f} s, {inference_seconds:.0f} s per volume",
          flush=True)
  table = common.score(methods, os.path.join(args.out, "eval"), inputs["truth"],
                       figures=args.figures, tiny=args.tiny)
  result = common.summary(table, ("psnr", "ssim", "pique_sagittal", "pique_axial", "es"),
                          train_seconds=seconds)
  common.publish(os.path.join(args.out, "summary.md"), common.markdown(result))
  print(f"full tables, statistics and figures in {os.path.join(args.out, 'eval')}")
  return 0


if __name__ == "__main__":
  sys.exit(main())
