"""Stride sweep (the paper's Tables 7-8): PIQUE, PSNR/SSIM and time per volume by stride.

One trained workdir super-resolves the MNI152 ground-truth inputs at every sliding-window
stride and in whole-slice mode; every output is scored against the truth.

  python experiments/stride_sweep/run.py --run runs/demo --out runs/stride_sweep
"""

from __future__ import annotations

import argparse
import os
import sys

sys.path.insert(0, os.path.abspath(os.path.join(os.path.dirname(__file__), "..")))
import common  # noqa: E402

from clade_jax.volume_srr import SROptions  # noqa: E402



def main(argv=None) -> int:
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("--run", required=True, help="a trained workdir (any per-patch method)")
  parser.add_argument("--out", default="runs/stride_sweep")
  common.add_protocol_arguments(parser)
  parser.add_argument("--strides", type=int, nargs="+", default=[6, 8, 12, 16, 20])
  parser.add_argument("--no-full", dest="full", action="store_false",
                      help="skip whole-slice mode")
  args = parser.parse_args(argv)
  inputs = common.protocol_inputs(args.protocol, args.profile, noise=args.noise,
                                  phases=args.phases, tiny=args.tiny)
  methods, seconds = {"cubic": inputs["cubic"]}, {}
  settings = [(f"stride_{s}", SROptions(stride=s, mode="patch")) for s in args.strides]
  settings += [("full_slice", SROptions(mode="full"))] if args.full else []
  for name, options in settings:
    methods[name] = os.path.join(args.out, name)
    seconds[name] = common.super_resolve_all(args.run, inputs, methods[name], options)
    print(f"{name}: {seconds[name]:.1f} s per volume", flush=True)
  table = common.score(methods, os.path.join(args.out, "eval"), inputs["truth"],
                       tiny=args.tiny)
  result = common.summary(table, seconds_per_volume=seconds)
  common.publish(os.path.join(args.out, "stride_sweep.md"), common.markdown(result))
  return 0


if __name__ == "__main__":
  sys.exit(main())
