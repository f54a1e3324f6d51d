"""Per-epoch evaluation (the paper's Tables 5-6): every checkpoint of one run, scored.

The paper picked its final CLADE by PIQUE per epoch; here every saved checkpoint of a
workdir super-resolves the MNI152 ground-truth inputs and is scored by PIQUE and,
beyond the paper, by PSNR/SSIM against the truth (keep more checkpoints with
--config.ckpt.keep and --config.ckpt.every when training).

  python experiments/epochs/run.py --run runs/demo --out runs/epochs
"""

from __future__ import annotations

import argparse
import os
import sys

sys.path.insert(0, os.path.abspath(os.path.join(os.path.dirname(__file__), "..")))
import common  # noqa: E402

from clade_jax import checkpointing  # noqa: E402
from clade_jax.volume_srr import SROptions  # noqa: E402


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("--run", required=True, help="a trained workdir with several checkpoints")
  parser.add_argument("--out", default="runs/epochs")
  parser.add_argument("--stride", type=int, help="default the run's eval.stride")
  common.add_protocol_arguments(parser)
  args = parser.parse_args(argv)
  steps = checkpointing.checkpoint_steps(args.run)
  if not steps:
    parser.error(f"{args.run}: no checkpoints")
  inputs = common.protocol_inputs(args.protocol, args.profile, noise=args.noise,
                                  phases=args.phases, tiny=args.tiny)
  methods = {"cubic": inputs["cubic"]}
  for step in steps:
    methods[f"step_{step}"] = os.path.join(args.out, f"step_{step}")
    common.super_resolve_all(args.run, inputs, methods[f"step_{step}"],
                             SROptions(stride=args.stride), step=step)
    print(f"step {step}: super-resolved", flush=True)
  table = common.score(methods, os.path.join(args.out, "eval"), inputs["truth"],
                       tiny=args.tiny)
  common.publish(os.path.join(args.out, "epochs.md"), common.markdown(common.summary(table)))
  return 0


if __name__ == "__main__":
  sys.exit(main())
