"""Ground-truth benchmark on the MNI152 template: degrade, upsample, score.

The 1 mm MNI152 template (bundled with nilearn) is the truth. It is degraded to
6 mm slices along A-P (voxel axis 1) with `clade_jax.data.degrade.degrade`, upsampled
back to 1 mm by every interpolation baseline, and every output is scored against the
truth by `clade_jax.evaluation.evaluate` (see README.md for the table and commands).

Each "subject" is one slice phase: the first slice centre on truth voxel 0, 1, ..., 5,
so the 6 phases sample the same anatomy at every possible slice position. They give
the spread (sd) and the n the statistics need; they are not independent subjects.

Learned methods join with ``--method NAME=DIR``: DIR holds one output per LR input
in ``<workdir>/<profile>/lr/`` with the same file name, on the grid of
`isotropic_geometry` (what `infer.py` writes); ``{profile}`` in DIR is replaced by
each profile name. Run with ``--stage degrade`` first to create those inputs.

  python experiments/ground_truth/run.py --workdir runs/ground_truth
  python experiments/ground_truth/run.py --workdir runs/ground_truth \\
      --method clade=runs/clade_mni/{profile}      # after infer.py on .../lr/
"""

from __future__ import annotations

import argparse
import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.abspath(os.path.join(os.path.dirname(__file__), "..", "..")))

from clade_jax import baselines, evaluation  # noqa: E402
from clade_jax.data.degrade import degrade  # noqa: E402
from clade_jax.data.demo import load_template  # noqa: E402
from clade_jax.data.volume import save_volume  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
THICK_AXIS = 1  # A-P in the template's RAS voxel order
FINE_MM = 1.0
# --tiny: a 64 x 96 x 64 mm block around the lateral ventricles and the corpus callosum,
# small enough for CI to train, super-resolve and score in seconds.
TINY_BLOCK = (slice(66, 130), slice(70, 166), slice(60, 124))


def tiny_truth(truth):
  """`truth` cropped to TINY_BLOCK, its affine shifted so every voxel keeps its world position."""
  start = np.array([s.start for s in TINY_BLOCK] + [1.0])
  affine = truth.affine.copy()
  affine[:, 3] = truth.affine @ start
  return type(truth)(np.ascontiguousarray(truth.data[TINY_BLOCK]), affine)


def parse_args(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("--workdir", default="runs/ground_truth",
                      help="where volumes and reports go (default %(default)s)")
  parser.add_argument("--profiles", nargs="+", default=["gaussian"],
                      choices=["gaussian", "rect"], help="slice profiles (FWHM/width = "
                      "--thickness-mm)")
  parser.add_argument("--spacing-mm", type=float, default=6.0)
  parser.add_argument("--thickness-mm", type=float, default=6.0)
  parser.add_argument("--noise", type=float, default=0.0,
                      help="Rician noise sigma as a fraction of the robust max (0.02 = 2%%)")
  parser.add_argument("--phases", type=int, default=6,
                      help="slice phases (pseudo-subjects), 1..spacing/1mm")
  parser.add_argument("--baselines", nargs="+", default=list(baselines.METHODS),
                      choices=baselines.METHODS)
  parser.add_argument("--method", action="append", default=[], metavar="NAME=DIR",
                      help="extra method outputs to score; {profile} is substituted")
  parser.add_argument("--tiny", action="store_true",
                      help="a 64 x 96 x 64 mm block of the template (CI checks; no ROIs)")
  parser.add_argument("--stage", choices=["degrade", "all"], default="all",
                      help="'degrade' only writes the truth and LR inputs")
  parser.add_argument("--no-figures", dest="figures", action="store_false")
  return parser.parse_args(argv)


def main(argv=None) -> int:
  args = parse_args(argv)
  start = time.time()
  truth = load_template()
  if args.tiny:
    truth = tiny_truth(truth)
  truth_dir = os.path.join(args.workdir, "truth")
  subjects = [f"mni152_phase{k}" for k in range(args.phases)]
  for subject in subjects:
    # One truth file per pseudo-subject so evaluate.py can match by file name.
    save_volume(os.path.join(truth_dir, f"{subject}.nii.gz"), truth.data, truth.affine)
  extra = dict(spec.split("=", 1) for spec in args.method)
  for profile in args.profiles:
    base = os.path.join(args.workdir, profile)
    for k, subject in enumerate(subjects):
      lr = degrade(truth, THICK_AXIS, args.spacing_mm, args.thickness_mm, profile=profile,
                   noise_sigma=args.noise, seed=k, offset_vox=k)
      save_volume(os.path.join(base, "lr", f"{subject}.nii.gz"), lr.data, lr.affine)
      if args.stage == "degrade":
        continue
      for method in args.baselines:
        up = baselines.upsample(lr, THICK_AXIS, method, target_spacing=FINE_MM)
        save_volume(os.path.join(base, method, f"{subject}.nii.gz"), up.data, up.affine)
      print(f"[{time.time() - start:6.1f}s] {profile}: {subject} degraded and upsampled",
            flush=True)
    if args.stage == "degrade":
      continue
    methods = {m: os.path.join(base, m) for m in args.baselines}
    methods |= {name: spec.format(profile=profile) for name, spec in extra.items()}
    evaluation.evaluate(
        methods, os.path.join(base, "eval"), truth=truth_dir,
        rois=None if args.tiny else os.path.join(HERE, "mni152_rois.json"),
        thick_axis=THICK_AXIS, figures=args.figures,
        log=lambda msg: print(f"[{time.time() - start:6.1f}s] {msg}", flush=True))
  where = ("inputs in {w}/<profile>/lr/, truth in {w}/truth/" if args.stage == "degrade"
           else "reports in {w}/<profile>/eval/").format(w=args.workdir)
  print(f"done in {time.time() - start:.0f}s; {where}")
  return 0


if __name__ == "__main__":
  sys.exit(main())
