"""CLADE's options against the MNI152 ground truth: the ablation table and PSNR vs time.

The 1 mm MNI152 template is degraded to 6 mm slices along A-P (one slice phase, a
Gaussian or rectangular slice profile, Rician noise), each training variant is trained
on that thick-slice volume for the same number of steps (CLADE is unsupervised and
trains on the volume it super-resolves), and every inference variant of it
super-resolves every `--every`-th sagittal slice (the trained low-resolution plane,
which contains the thick axis). Scores are PSNR over the truth's foreground voxels of
those slices and their mean 2D SSIM (`clade_jax.holdout.score_slices`, the metrics of
experiments/ground_truth/), and the seam ratio: the mean |difference| of adjacent
pixels across the patch borders of the sliding window over that elsewhere (1 = no
grid; foreground only).

Rows (`ROWS`): cubic spline, with and without data consistency; the paper's CLADE
(configs/mri.py), with and without; the recommended config (configs/clade_plus.py)
and, one at a time, each of its options switched off, plus test-time flips switched on.
Options that act at inference (blending, consistency, flips, the averaged weights)
share one training run; the residual generator needs its own.

With ``--curve N`` the recommended config's run also keeps a checkpoint every
``steps / N`` steps and each is scored: PSNR against training time. The time of
checkpoint k is the start-up (loading, compiling, the first step: `startup_seconds` in
metrics.jsonl) plus its share of the remaining wall time of the run, i.e. a constant
step rate after the first step.

    python experiments/quality/run.py --workdir runs/quality --size demo --steps 300
    python experiments/quality/run.py --workdir runs/quality_paper --size paper \\
        --steps 700 --curve 7

Writes ``<workdir>/<profile>/{table.md, results.json, curve.csv, curve.png}`` and a
training workdir per variant under ``<workdir>/<profile>/train/``. See README.md.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.abspath(os.path.join(os.path.dirname(__file__), "..", "..")))
sys.path.insert(0, os.path.abspath(os.path.join(os.path.dirname(__file__), "..")))
import common  # noqa: E402  (experiments/common.py)

from clade_jax import atomic, checkpointing, holdout, methods, srr  # noqa: E402
from clade_jax.data import degrade as degrade_lib  # noqa: E402
from clade_jax.data import demo  # noqa: E402
from clade_jax.data import patches as patches_lib  # noqa: E402
from clade_jax.data import volume as volume_lib  # noqa: E402
from configs import clade_plus, mri  # noqa: E402

THICK_AXIS = 1  # A-P in the template's RAS voxel order.
SPACING_MM = 6.0

# Training variants: config module and overrides.
TRAINED = {
    "paper": (mri, {}),
    "plus": (clade_plus, {}),
    "plus_no_residual": (clade_plus, {"model.residual": False}),
    "plus_no_paired": (clade_plus, {"loss.degradation": 0.0}),
}


@dataclasses.dataclass(frozen=True)
class Row:
  """One line of the table: a trained variant (None: the cubic spline) and how it infers.

  Attributes:
    label: the table's name for it.
    trained: key of `TRAINED`, or None for the cubic spline.
    eval: overrides of ``config.eval``.
    averaged: use the averaged generator weights where the run kept them.
  """

  label: str
  trained: str | None
  eval: dict = dataclasses.field(default_factory=dict)
  averaged: bool = True


ROWS = (
    Row("cubic spline", None, {"data_consistency": False}),
    Row("cubic spline + consistency", None, {"data_consistency": True}),
    Row("CLADE (paper)", "paper"),
    Row("CLADE (paper) + consistency", "paper", {"data_consistency": True}),
    Row("CLADE+ (recommended)", "plus"),
    Row("CLADE+ without consistency", "plus", {"data_consistency": False}),
    Row("CLADE+ without taper (flat average)", "plus", {"blend": "flat"}),
    Row("CLADE+ without averaged weights", "plus", averaged=False),
    Row("CLADE+ without residual generator", "plus_no_residual"),
    Row("CLADE+ without paired loss", "plus_no_paired"),
    Row("CLADE+ with test-time flips", "plus", {"tta": True}),
)


def parse_args(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("--workdir", default="runs/quality")
  parser.add_argument("--profiles", nargs="+", default=["gaussian", "rect"],
                      choices=["gaussian", "rect"])
  parser.add_argument("--noise", type=float, default=0.01,
                      help="Rician noise sigma, fraction of the robust max (default 1%%)")
  parser.add_argument("--phase", type=int, default=3,
                      help="first slice centre on truth voxel PHASE (0..5) along A-P")
  parser.add_argument("--size", choices=["demo", "small", "paper"], default="demo",
                      help="network and batch size: the configs' ':demo' / ':small' "
                      "arguments, or the paper's")
  parser.add_argument("--steps", type=int, default=300, help="training steps per variant")
  parser.add_argument("--every", type=int, default=8,
                      help="score every EVERY-th sagittal slice (1: all)")
  parser.add_argument("--rows", nargs="+", default=None,
                      help="only these rows (labels), e.g. 'cubic spline'")
  parser.add_argument("--curve", type=int, default=0,
                      help="score the recommended config at CURVE checkpoints of its run")
  parser.add_argument("--batch-size", type=int, default=64,
                      help="patches per generator call at inference")
  parser.add_argument("--conv-impl", default=None,
                      choices=["auto", "xla", "im2col", "winograd"],
                      help="model.conv_impl (default the config's; on a CPU im2col compiles "
                      "in a third of Winograd's time, which pays back after ~1500 steps)")
  return parser.parse_args(argv)


def make_input(workdir: str, profile: str, noise: float, phase: int) -> tuple[str, str]:
  """Writes (once) the truth and the thick-slice input; returns their paths."""
  truth_path = os.path.join(workdir, "truth", "mni152_t1_1mm.nii.gz")
  lr_path = os.path.join(workdir, profile, "lr", f"mni152_phase{phase}.nii.gz")
  if not os.path.exists(truth_path):
    truth = demo.load_template()
    volume_lib.save_volume(truth_path, truth.data, truth.affine)
  if not os.path.exists(lr_path):
    truth = volume_lib.load_volume(truth_path)
    lr = degrade_lib.degrade(truth, THICK_AXIS, SPACING_MM, SPACING_MM, profile=profile,
                             noise_sigma=noise, seed=phase, offset_vox=phase)
    volume_lib.save_volume(lr_path, lr.data, lr.affine)
  return lr_path, truth_path


def make_config(name: str, args, lr_path: str, truth_path: str, profile: str, steps: int):
  module, overrides = TRAINED[name]
  config = module.get_config(None if args.size == "paper" else args.size)
  config.data.root = lr_path
  config.data.make_demo = False
  config.data.truth = truth_path
  config.data.slice_profile = profile
  config.train.num_steps = steps
  config.train.sample_every = max(steps, 1)
  config.ckpt.every = max(steps // max(args.curve, 1), 1)
  config.ckpt.keep = 1000
  config.eval.batch_size = args.batch_size
  if args.conv_impl:
    config.model.conv_impl = args.conv_impl
  for dotted, value in overrides.items():
    section, field = dotted.split(".")
    config[section][field] = value
  return config


def seam_ratio(slices: np.ndarray, mask: np.ndarray, patch: int, stride: int) -> float:
  """Mean |adjacent difference| across sliding-window patch borders over that elsewhere.

  Both image axes; a pixel pair counts when both pixels are foreground. Anatomy has
  the same statistics on and off the borders, so 1 means no visible grid.
  """
  on, off = [], []
  for axis in (1, 2):
    n = slices.shape[axis]
    starts = srr.patch_starts(n, patch, stride)
    edges = set(int(s) for s in starts[1:]) | set(int(s) + patch for s in starts[:-1])
    border = np.zeros(n - 1, bool)
    border[[e - 1 for e in edges if 0 < e < n]] = True
    jumps = np.abs(np.diff(slices, axis=axis))
    both = np.logical_and(np.take(mask, range(n - 1), axis), np.take(mask, range(1, n), axis))
    shape = [1, 1, 1]
    shape[axis] = n - 1
    border = border.reshape(shape)
    on.append(jumps[both & border])
    off.append(jumps[both & ~border])
  return float(np.mean(np.concatenate(on)) / np.mean(np.concatenate(off)))


def evaluate_row(row: Row, config, params, scan, source, truth, indices) -> dict:
  """Scores of one row on slices `indices` of the trained plane."""
  config = config.copy_and_resolve_references()
  for field, value in row.eval.items():
    config.eval[field] = value
  started = time.perf_counter()
  if row.trained is None:
    slices = volume_lib.plane_slices(scan.isotropic, scan.lr_axis)[indices]
  else:
    slices = holdout.super_resolve_slices(methods.of(config), params, config, scan, indices)
  if config.eval.get("data_consistency", False):
    slices = holdout.project_slices(slices, indices, source, scan, config)
  result = holdout.score_slices(slices, truth, scan.lr_axis, indices)
  result["seconds"] = time.perf_counter() - started
  mask = volume_lib.plane_slices(truth.mask, scan.lr_axis)[indices]
  result["seam_ratio"] = seam_ratio(slices, mask, config.data.patch_size, config.eval.stride)
  return result


def train_variant(name, args, lr_path, truth_path, profile, steps, workdir) -> dict:
  """Trains one variant (a finished run is reused); returns its config and wall time."""
  config = make_config(name, args, lr_path, truth_path, profile, steps)
  return {"config": config, "seconds": common.timed_training(config, workdir)}


def load_params(workdir: str, averaged: bool):
  """The run's params: the averaged generators (as inference) or the raw ones."""
  return checkpointing.restore_params(workdir, averaged=averaged)[0]


def format_table(results: dict, seconds: dict, args, profile) -> str:
  lines = [f"Profile {profile}, 6 mm slices, {args.noise:.0%} Rician noise, phase "
           f"{args.phase}; size {args.size}, {args.steps} steps per trained variant; "
           f"every {args.every}th sagittal slice.", "",
           "| Method | PSNR (dB) ↑ | SSIM ↑ | seam ratio (1 = none) | train (s) | infer (s) |",
           "|---|---|---|---|---|---|"]
  for label, r in results.items():
    trained = seconds.get(label)
    lines.append(f"| {label} | {r['psnr']:.2f} | {r['ssim']:.4f} | {r['seam_ratio']:.3f} | "
                 f"{'' if trained is None else f'{trained:.0f}'} | {r['seconds']:.0f} |")
  return "\n".join(lines) + "\n"


def run_profile(args, profile: str, log) -> None:
  base = os.path.join(args.workdir, profile)
  lr_path, truth_path = make_input(args.workdir, profile, args.noise, args.phase)
  rows = [r for r in ROWS if args.rows is None or r.label in args.rows]
  needed = sorted({r.trained for r in rows if r.trained})
  trained = {}
  for name in needed:
    log(f"{profile}: training {name} ({args.steps} steps)")
    trained[name] = train_variant(name, args, lr_path, truth_path, profile, args.steps,
                                  os.path.join(base, "train", name))
    log(f"{profile}: {name} trained in {trained[name]['seconds']:.0f} s")

  reference = make_config("paper", args, lr_path, truth_path, profile, args.steps)
  prepared = patches_lib.prepare_volume(lr_path, reference.data)
  scan, source = prepared.scan, volume_lib.load_volume(lr_path)
  truth = holdout.read_truth(truth_path, scan, "truth")
  indices = np.arange(0, scan.isotropic.shape[scan.lr_axis], args.every)
  foreground = volume_lib.plane_slices(truth.mask, scan.lr_axis)[indices].any(axis=(1, 2))
  indices = indices[foreground]

  results, seconds = {}, {}
  for row in rows:
    if row.trained is None:
      config, params = reference, None
    else:
      config = trained[row.trained]["config"]
      params = load_params(os.path.join(base, "train", row.trained), row.averaged)
      seconds[row.label] = trained[row.trained]["seconds"]
    results[row.label] = evaluate_row(row, config, params, scan, source, truth, indices)
    log(f"{profile}: {row.label:<38} PSNR {results[row.label]['psnr']:.2f} dB, "
        f"SSIM {results[row.label]['ssim']:.4f}, seams {results[row.label]['seam_ratio']:.3f}")
  table = format_table(results, seconds, args, profile)
  atomic.write_text(os.path.join(base, "table.md"), table)
  atomic.write_text(os.path.join(base, "results.json"), json.dumps(
      {"args": vars(args), "slices": indices.tolist(), "results": results,
       "train_seconds": {k: v["seconds"] for k, v in trained.items()}}, indent=2))
  print(table)
  if args.curve and "plus" in trained:
    curve(args, profile, trained, scan, source, truth, indices, results, log)


def curve(args, profile, trained, scan, source, truth, indices, results, log):
  """PSNR of the recommended config at each of its run's checkpoints, against time."""
  from clade_jax import metric_writer, plotting
  import matplotlib.pyplot as plt

  base = os.path.join(args.workdir, profile)
  workdir = os.path.join(base, "train", "plus")
  row = next(r for r in ROWS if r.trained == "plus")
  metrics = metric_writer.read_metrics(workdir)
  startup = next(m["startup_seconds"] for m in metrics if "startup_seconds" in m)
  total, last = trained["plus"]["seconds"], max(m["step"] for m in metrics)
  points = []
  for step in checkpointing.checkpoint_steps(workdir):
    params, _ = checkpointing.restore_params(workdir, step)
    scores = evaluate_row(row, trained["plus"]["config"], params, scan, source, truth,
                          indices)
    seconds = startup + (total - startup) * (step - 1) / max(last - 1, 1)
    points.append({"step": step, "train_seconds": seconds, **scores})
    log(f"{profile}: curve step {step}, {seconds:.0f} s: PSNR {scores['psnr']:.2f} dB")
  lines = ["step,train_seconds,psnr,ssim"] + [
      f"{p['step']},{p['train_seconds']:.1f},{p['psnr']:.3f},{p['ssim']:.4f}" for p in points]
  atomic.write_text(os.path.join(base, "curve.csv"), "\n".join(lines) + "\n")
  fig, ax = plt.subplots(figsize=(5, 3.4), dpi=110)
  ax.plot([p["train_seconds"] / 60 for p in points], [p["psnr"] for p in points], "o-",
          label="CLADE+ (recommended)")
  for label, style in (("cubic spline", ":"), ("cubic spline + consistency", "--")):
    if label in results:
      ax.axhline(results[label]["psnr"], color="gray", linestyle=style, label=label)
  ax.set_xlabel("training time (min)")
  ax.set_ylabel("PSNR (dB)")
  ax.set_title(f"MNI152, {profile} profile, {args.noise:.0%} noise, size {args.size}")
  ax.legend(fontsize=8)
  plotting.save_figure(fig, os.path.join(base, "curve.png"))


def main(argv=None) -> int:
  args = parse_args(argv)
  start = time.time()
  log = lambda msg: print(f"[{time.time() - start:6.0f}s] {msg}", flush=True)
  for profile in args.profiles:
    run_profile(args, profile, log)
  log(f"done; tables in {args.workdir}/<profile>/table.md")
  return 0


if __name__ == "__main__":
  sys.exit(main())
