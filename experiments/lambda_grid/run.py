"""Loss-weight grid (the paper's Tables 3-4), ranked by PIQUE and by PSNR/SSIM to the truth.

Each cell trains the same config for the same number of steps with its lambda_cyc,
lambda_ident and lambda_gmap on the MNI152 ground-truth inputs, super-resolves them at
stride 6 (the paper's setting for this table) and scores them. The paper's grid is
cyc in {0.1, 1, 10}, ident in {0, 1, 10}, gmap in {1, 5, 10} (27 cells); --cells runs a
subset, e.g. the cells of its Figure 10.

  python experiments/lambda_grid/run.py --config configs/mri.py:demo --steps 300 \\
      --cells 1,1,5 0.1,0,5 1,0,10 10,0,1 --out runs/lambda_grid
"""

from __future__ import annotations

import argparse
import itertools
import os
import sys

import pandas as pd

sys.path.insert(0, os.path.abspath(os.path.join(os.path.dirname(__file__), "..")))
import common  # noqa: E402

from clade_jax.volume_srr import SROptions  # noqa: E402


PAPER_GRID = list(itertools.product((0.1, 1.0, 10.0), (0.0, 1.0, 10.0), (1.0, 5.0, 10.0)))


def cell(text: str) -> tuple[float, float, float]:
  values = tuple(float(v) for v in text.split(","))
  if len(values) != 3:
    raise argparse.ArgumentTypeError(f"a cell is CYC,IDENT,GMAP, got {text!r}")
  return values


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("--config", default="configs/mri.py:demo")
  parser.add_argument("--steps", type=int, default=300, help="training steps per cell")
  parser.add_argument("--cells", type=cell, nargs="+", default=PAPER_GRID,
                      metavar="CYC,IDENT,GMAP", help="default the paper's 27 cells")
  parser.add_argument("--stride", type=int, default=6)
  parser.add_argument("--out", default="runs/lambda_grid")
  common.add_protocol_arguments(parser)
  args = parser.parse_args(argv)
  inputs = common.protocol_inputs(args.protocol, args.profile, noise=args.noise,
                                  phases=args.phases, tiny=args.tiny)
  methods, seconds = {"cubic": inputs["cubic"]}, {}
  for cyc, ident, gmap in args.cells:
    name = f"cyc{cyc:g}_ident{ident:g}_gmap{gmap:g}"
    config = common.load_config(args.config, {
        "loss.cyc": cyc, "loss.ident": ident, "loss.gmap": gmap,
        "train.num_steps": args.steps}, tiny=args.tiny)
    run = os.path.join(args.out, "runs", name)
    seconds[name] = common.train(config, run, inputs)
    methods[name] = os.path.join(args.out, name)
    common.super_resolve_all(run, inputs, methods[name], SROptions(stride=args.stride))
    print(f"{name}: trained in {seconds[name]:.0f} s", flush=True)
  table = common.score(methods, os.path.join(args.out, "eval"), inputs["truth"],
                       tiny=args.tiny)
  result = common.summary(table, train_seconds=seconds)
  # The truth's row is a reference, not a contestant: it stays last in both rankings.
  ranked, reference = result[result.index != "truth"], result[result.index == "truth"]
  by_pique = pd.concat([ranked.sort_values("pique_sagittal"), reference])
  by_psnr = pd.concat([ranked.sort_values("psnr", ascending=False), reference])
  text = (f"## Ranked by PIQUE (sagittal, the paper's ranking)\n\n{common.markdown(by_pique)}\n\n"
          f"## Ranked by PSNR against the truth\n\n{common.markdown(by_psnr)}\n")
  common.publish(os.path.join(args.out, "lambda_grid.md"), text)
  return 0


if __name__ == "__main__":
  sys.exit(main())
