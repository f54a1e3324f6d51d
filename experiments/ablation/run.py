"""Ablation: the paper's four trained systems on your data, one budget, one table.

Conventional CycleGAN, CLADE without L_gmap, CLADE and GLADE (configs that differ from
the base only in the fields the papers name) train on the given thick-slice volumes for
the same number of steps at the same batch size, super-resolve every one of them, and are
scored beside cubic B-spline: PIQUE in both low-resolution planes and edge sharpness
always, PSNR/SSIM with --truth (volumes matched by file name, or --subject-regex),
SNR with --rois.

  python experiments/ablation/run.py --out runs/ablation          # the bundled demo volume
  python experiments/ablation/run.py --data 'scans/*.nii.gz' --size paper --steps 20000 \\
      --out runs/ablation_scans                                   # your data, on a GPU
  python experiments/ablation/run.py --ct --data ct/ --out runs/ablation_ct
"""

from __future__ import annotations

import argparse
import os
import sys

sys.path.insert(0, os.path.abspath(os.path.join(os.path.dirname(__file__), "..")))
import common  # noqa: E402

from clade_jax import evaluation  # noqa: E402
from clade_jax.data import patches  # noqa: E402
from clade_jax.data.volume import VolumeError, find_thick_axis, load_volume  # noqa: E402

# The paper's four trained systems, in its table order: name -> (MRI spec, CT spec).
# GLADE's abstract is MRI only, so it has no CT config.
SYSTEMS = {
    "cyclegan": ("configs/cyclegan.py", "configs/cyclegan.py:ct"),
    "clade_no_gmap": ("configs/clade_no_gmap.py", "configs/clade_no_gmap.py:ct"),
    "clade": ("configs/mri.py", "configs/ct.py"),
    "glade": ("configs/glade.py", None),
}
DEMO = "demo"


def _inputs(args) -> dict:
  """The volumes to train on and super-resolve, and the truth when there is one."""
  if args.data == DEMO:
    from clade_jax.data import demo  # noqa: PLC0415 (nilearn only for the demo)
    lr_path, truth_path = demo.ensure_demo_data(args.demo_dir)
    # The two files have different names: one subject for both.
    return {"train": lr_path, "files": [lr_path], "truth": truth_path,
            "subject_regex": r"mni152_t1", "rois": args.rois or common.ROIS}
  try:
    files = patches.list_volumes(args.data)
  except VolumeError as e:
    raise SystemExit(f"error: --data {e}") from None
  return {"train": args.data, "files": files, "truth": args.truth,
          "subject_regex": args.subject_regex, "rois": args.rois}


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("--data", default=DEMO,
                      help="thick-slice NIfTI: a file, a folder or a quoted glob "
                      "(default: the bundled MNI152 demo volume, scored against its 1 mm truth "
                      "with the ground-truth protocol's ROIs)")
  parser.add_argument("--truth", help="ground-truth volumes (folder or glob) for PSNR/SSIM")
  parser.add_argument("--subject-regex", help="how output and truth file names match")
  parser.add_argument("--rois", help="ROI JSON for edge sharpness and SNR (evaluate.py's)")
  parser.add_argument("--systems", nargs="+", default=list(SYSTEMS), choices=list(SYSTEMS))
  parser.add_argument("--size", default="demo", choices=["demo", "small", "paper"],
                      help="config size argument; 'paper' = the configs' defaults (GPU)")
  parser.add_argument("--ct", action="store_true", help="the CT base configs (':ct')")
  parser.add_argument("--steps", type=int,
                      help="training steps of every system (default: CLADE's at --size)")
  parser.add_argument("--batch-size", type=int,
                      help="batch of every system (default: CLADE's at --size)")
  parser.add_argument("--out", default="runs/ablation")
  parser.add_argument("--demo-dir", default="demo_data", help=argparse.SUPPRESS)
  parser.add_argument("--no-figures", dest="figures", action="store_false")
  parser.add_argument("--tiny", action="store_true",
                      help="CI setting: tiny networks, 2 steps")
  args = parser.parse_args(argv)
  if args.truth and args.data == DEMO:
    parser.error("--truth goes with --data (the demo brings its own)")
  inputs = _inputs(args)

  size = "small" if args.tiny else args.size

  def config_for(spec):
    if size != "paper":
      spec += ("," if ":" in spec else ":") + size
    return common.load_config(spec, tiny=args.tiny)

  specs = {name: SYSTEMS[name][int(args.ct)] for name in args.systems}
  if args.ct and "glade" in specs:
    print("glade: skipped, its abstract (and config) is MRI only")
  configs = {name: config_for(spec) for name, spec in specs.items() if spec}
  # One budget for all: CLADE's at this size, unless given.
  reference = config_for(SYSTEMS["clade"][int(args.ct)])
  steps = args.steps or reference.train.num_steps
  batch = args.batch_size or reference.train.batch_size
  if steps <= 0 or batch <= 0:
    parser.error("--steps and --batch-size must be positive")

  thick_axes = {find_thick_axis(load_volume(p).spacing, name=p) for p in inputs["files"]}
  if len(thick_axes) > 1:  # The outputs are isotropic: the scores need the inputs' axis.
    raise SystemExit(f"error: --data {args.data}: the volumes are thick along different voxel "
                     "axes; run each orientation separately")
  methods = {"cubic": os.path.join(args.out, "cubic")}
  common.upsample_missing(inputs["files"], methods["cubic"], "cubic")
  lr_inputs = {"lr": "", "files": inputs["files"]}
  seconds = {}
  for name, config in configs.items():
    config.train.num_steps, config.train.batch_size = steps, batch
    run = os.path.join(args.out, "runs", name)
    seconds[name] = common.train(config, run, inputs)
    methods[name] = os.path.join(args.out, name)
    per_volume = common.super_resolve_all(run, lr_inputs, methods[name])
    print(f"{name}: trained in {seconds[name]:.0f} s, {per_volume:.0f} s per volume", flush=True)

  table = evaluation.evaluate(
      methods, os.path.join(args.out, "eval"), truth=inputs["truth"], rois=inputs["rois"],
      thick_axis=thick_axes.pop(), subject_regex=inputs["subject_regex"],
      figures=args.figures and not args.tiny,
      log=(lambda message: None) if args.tiny else print)
  columns = [c for c in table.columns if c in ("psnr", "ssim", "es") or c.startswith("pique_")]
  columns = [c for c in columns if table[c].notna().any()]
  result = common.summary(table, columns, train_seconds=seconds)
  common.publish(os.path.join(args.out, "summary.md"),
                 f"{steps} steps of batch {batch} for every system, inputs: {args.data}\n\n"
                 + common.markdown(result))
  print(f"full tables, statistics and figures in {os.path.join(args.out, 'eval')}")
  return 0


if __name__ == "__main__":
  sys.exit(main())
