"""Scores super-resolved volumes as the CLADE paper does, and against a ground truth.

Example (the interpolation baselines of experiments/ground_truth on the MNI152 demo):

  python evaluate.py \\
      --method nearest=runs/gt/gaussian/nearest --method cubic=runs/gt/gaussian/cubic \\
      --method clade=runs/clade/infer --method smore=runs/smore_mni/gaussian \\
      --truth runs/gt/truth --rois experiments/ground_truth/mni152_rois.json \\
      --thick-axis 1 --out runs/gt/eval

Writes metrics.csv, table.md, stats.md, boxplots.png, figures/<subject>.png and
reports/<subject>_report.html (linked viewers of every method; reports/index.html) to --out;
see clade_jax/evaluation/ for what each metric is and how the files look.

A reader study's filled-in scoring sheet (kit from experiments/reader_study/make_kit.py)
becomes the paper's ranking table (Friedman + Nemenyi) in --out/reader_ranking.md:

  python evaluate.py --reader-scores scores_filled.csv --reader-key key.csv --out runs/rs
"""

import argparse
import os
import sys

from clade_jax import evaluation
from clade_jax.evaluation import reader_study
from clade_jax.data.volume import PLANE_NORMALS, VolumeError


def _method(text: str) -> tuple[str, str]:
  name, sep, spec = text.partition("=")
  if not sep or not name or not spec:
    raise argparse.ArgumentTypeError(f"expected NAME=DIR_OR_GLOB, got {text!r}")
  return name, spec


def parse_args(argv=None) -> argparse.Namespace:
  parser = argparse.ArgumentParser(
      description=__doc__.split("\n\n")[0],
      epilog="Volumes are matched across methods (and with --truth) by file name "
             "without .nii/.nii.gz, or by --subject-regex. Statistics (repeated-measures "
             "ANOVA + Tukey HSD, Friedman + Nemenyi) need >= 2 methods and >= 2 subjects.",
      formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument(
      "--method", action="append", type=_method, default=[], metavar="NAME=DIR_OR_GLOB",
      help="a method's output volumes: a directory (its .nii/.nii.gz files) or a quoted "
           "glob. Repeat for each method, in table order; put the baseline first, since "
           "significance marks refer to earlier methods.")
  parser.add_argument(
      "--truth", metavar="DIR_OR_GLOB",
      help="ground-truth isotropic volumes; adds PSNR, SSIM (3D, in the truth's "
           "foreground) and per-slice SSIM. Every output grid must be a sub-grid of its "
           "truth with identical voxel centres (the truth is cropped by affine).")
  parser.add_argument(
      "--rois", metavar="FILE.json",
      help="per-subject signal/background ROIs (SNR), edge borders (edge sharpness) and "
           "a view point for the figures, in world mm; format in "
           "clade_jax/evaluation/scoring.py:load_rois.")
  parser.add_argument(
      "--plane", action="append", choices=sorted(PLANE_NORMALS), dest="planes",
      help="plane whose 2D slices PIQUE and per-slice SSIM are computed on (repeatable); "
           "default both low-resolution planes (the two containing the thick axis).")
  parser.add_argument(
      "--thick-axis", type=int, choices=(0, 1, 2),
      help="voxel axis that was thick in the acquisition; default found from any "
           "anisotropic input (e.g. a low-resolution 'method'). Needed when every input "
           "is isotropic and --plane is not given.")
  parser.add_argument("--subject-regex", metavar="REGEX",
                      help="regex whose first group is the subject id in a file name, "
                           r"e.g. '(sub-\d+)'")
  parser.add_argument("--alpha", type=float, default=evaluation.ALPHA,
                      help="significance level (default %(default)s)")
  parser.add_argument("--no-figures", dest="figures", action="store_false",
                      help="skip the per-subject orthogonal-slice figures and QC pages")
  parser.add_argument("--reader-scores", metavar="CSV",
                      help="a reader study's filled-in scoring sheet (instead of --method)")
  parser.add_argument("--reader-key", metavar="CSV",
                      help="the key written with the reader-study kit")
  parser.add_argument("--out", required=True, metavar="DIR", help="output directory")
  args = parser.parse_args(argv)
  if bool(args.reader_scores) != bool(args.reader_key):
    parser.error("--reader-scores and --reader-key go together")
  if not args.method and not args.reader_scores:
    parser.error("give --method NAME=DIR (repeatable) or --reader-scores with --reader-key")
  names = [name for name, _ in args.method]
  if len(set(names)) != len(names):
    parser.error(f"method names must be unique, got {names}")
  return args


def main(argv=None) -> int:
  args = parse_args(argv)
  try:
    if args.reader_scores:
      table = reader_study.rankings(args.reader_scores, args.reader_key)
      path = os.path.join(args.out, "reader_ranking.md")
      evaluation.atomic_write_text(path, reader_study.ranking_report(table, args.alpha))
      print(f"wrote {path}")
    if args.method:
      evaluation.evaluate(
          dict(args.method), args.out, truth=args.truth, rois=args.rois, planes=args.planes,
          thick_axis=args.thick_axis, subject_regex=args.subject_regex, figures=args.figures,
          alpha=args.alpha)
  except (VolumeError, ValueError) as e:
    print(f"evaluate.py: error: {e}", file=sys.stderr)
    return 2
  return 0


if __name__ == "__main__":
  sys.exit(main())
