"""Writes a blinded reader-study kit: randomised side-by-side panels and a scoring sheet.

  python experiments/reader_study/make_kit.py --out runs/reader_kit --key runs/reader_key.csv \\
      --method low_res=runs/gt/gaussian/nearest --method smore=runs/smore_mni/gaussian \\
      --method clade=runs/clade_mni/gaussian --readers S.T G.B

Hand the readers runs/reader_kit/ (panels/*.png and scores.csv), keep the key. Then:

  python evaluate.py --reader-scores scores_filled.csv --reader-key runs/reader_key.csv \\
      --out runs/reader_eval
"""

from __future__ import annotations

import argparse
import os
import sys

sys.path.insert(0, os.path.abspath(os.path.join(os.path.dirname(__file__), "..", "..")))

from clade_jax.data.volume import VolumeError  # noqa: E402
from clade_jax.evaluation import reader_study  # noqa: E402


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("--method", action="append", required=True, metavar="NAME=DIR_OR_GLOB",
                      help="a method's volumes, matched across methods by file name "
                           "(repeat for each method; at least 2)")
  parser.add_argument("--out", required=True, help="the kit folder handed to the readers")
  parser.add_argument("--key", required=True, help="the key's CSV path, outside --out")
  parser.add_argument("--readers", nargs="+", default=["reader1", "reader2"])
  parser.add_argument("--questions", nargs="+", default=list(reader_study.QUESTIONS))
  parser.add_argument("--slices", type=int, default=3, help="slices per panel")
  parser.add_argument("--thick-axis", type=int, choices=(0, 1, 2))
  parser.add_argument("--seed", type=int, default=0, help="seed of the letter orders")
  parser.add_argument("--subject-regex", metavar="REGEX")
  args = parser.parse_args(argv)
  methods = dict(spec.split("=", 1) for spec in args.method)
  try:
    panels = reader_study.make_kit(
        methods, args.out, args.key, readers=tuple(args.readers),
        questions=tuple(args.questions), slices_per_panel=args.slices,
        thick_axis=args.thick_axis, seed=args.seed, subject_regex=args.subject_regex)
  except (VolumeError, ValueError) as e:
    print(f"make_kit.py: error: {e}", file=sys.stderr)
    return 2
  print(f"{len(panels)} panels in {args.out}/panels, sheet {args.out}/scores.csv, "
        f"key {args.key}")
  return 0


if __name__ == "__main__":
  sys.exit(main())
