"""Steps every experiment script shares: ground-truth inputs, training, super-resolution, scoring.

The scripts under experiments/<name>/ put this folder on sys.path and import it:
they call the library (train_and_evaluate, inference.run, evaluation.evaluate), not
our own CLIs in subprocesses, so one Python process holds the compiled functions.
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib
import json
import os
import sys
import time

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), ".."))
sys.path.insert(0, ROOT)

from clade_jax import atomic, baselines, checkpointing, evaluation, inference  # noqa: E402
from clade_jax import train as train_lib  # noqa: E402
from clade_jax.data.volume import find_thick_axis, load_volume, save_volume  # noqa: E402
from clade_jax.volume_srr import SROptions  # noqa: E402

GROUND_TRUTH = os.path.join(ROOT, "experiments", "ground_truth")
ROIS = os.path.join(GROUND_TRUTH, "mni152_rois.json")
THICK_AXIS = 1  # A-P, as in experiments/ground_truth.

# The CI setting (`--tiny`): every network shrunk to a few kernels, two training steps,
# on a 64 x 96 x 64 mm block of the template. It checks that a script runs end to end,
# not what it measures. Fields a method lacks are skipped.
TINY = {
    "data.patch_size": 16, "data.num_threads": 1,
    "model.features": 4, "model.num_blocks": 1, "model.disc_features": 4,
    "model.disc_layers": 2, "model.latent_features": 4, "model.conv_impl": "xla",
    "train.batch_size": 4, "train.num_steps": 2, "train.log_every": 1,
    "train.sample_every": 1000, "ckpt.every": 1, "ckpt.keep": 3,
    "eval.stride": 8, "eval.batch_size": 32,
}


def add_protocol_arguments(parser: argparse.ArgumentParser) -> None:
  """The ground-truth protocol's flags, the same in every script."""
  parser.add_argument("--protocol", default=None,
                      help="experiments/ground_truth workdir, inputs written there if missing "
                      "(default runs/ground_truth, runs/ground_truth_tiny with --tiny)")
  parser.add_argument("--profile", default="gaussian", choices=["gaussian", "rect"],
                      help="slice profile of the thick slices")
  parser.add_argument("--noise", type=float, default=0.0,
                      help="Rician noise sigma as a fraction of the robust max")
  parser.add_argument("--phases", type=int, default=6,
                      help="slice phases (pseudo-subjects) scored, 2..6")
  parser.add_argument("--tiny", action="store_true",
                      help="CI setting: tiny networks, 2 steps, a block of the template")


def load_config(spec: str, overrides: dict | None = None, tiny: bool = False):
  """`configs/NAME.py[:ARG]` (as train.py's --config) with dotted-field overrides.

  With `tiny`, TINY's fields (those the config has) are set before `overrides`.
  """
  path, _, arg = spec.partition(":")
  module = os.path.relpath(os.path.abspath(path), ROOT).removesuffix(".py").replace(os.sep, ".")
  config = importlib.import_module(module).get_config(arg or None)
  for dotted, value in ({**TINY, **(overrides or {})} if tiny else overrides or {}).items():
    *parents, leaf = dotted.split(".")
    node = config
    for name in parents:
      node = node[name]
    if tiny and dotted in TINY and leaf not in node:
      continue
    node[leaf] = value
  return config


def protocol_inputs(workdir: str | None, profile: str = "gaussian", noise: float = 0.0,
                    phases: int = 6, baseline_names=("nearest", "cubic"),
                    tiny: bool = False) -> dict[str, str]:
  """The MNI152 ground-truth inputs (experiments/ground_truth), written once.

  Returns:
    {'truth': dir, 'lr': dir of thick-slice inputs, <baseline>: dir of its outputs}.
  """
  sys.path.insert(0, GROUND_TRUTH)
  import run as ground_truth  # noqa: PLC0415 (experiments/ground_truth/run.py)
  workdir = workdir or ("runs/ground_truth_tiny" if tiny else "runs/ground_truth")
  if noise and workdir.rstrip("/").endswith(("ground_truth", "ground_truth_tiny")):
    workdir = f"{workdir.rstrip('/')}_noise{noise:g}"  # Never mix noisy and clean inputs.
  lr_dir = os.path.join(workdir, profile, "lr")
  if len([f for f in os.listdir(lr_dir)] if os.path.isdir(lr_dir) else []) < phases:
    ground_truth.main(["--workdir", workdir, "--profiles", profile, "--noise", str(noise),
                       "--phases", str(phases), "--stage", "degrade"]
                      + (["--tiny"] if tiny else []))
  dirs = {"truth": os.path.join(workdir, "truth"), "lr": lr_dir, "profile": profile}
  files = [f"mni152_phase{k}.nii.gz" for k in range(phases)]
  missing = [f for f in files if not os.path.exists(os.path.join(lr_dir, f))]
  if missing:
    raise SystemExit(f"error: {lr_dir} lacks {', '.join(missing)}; delete {workdir} "
                     "or pass another --protocol")
  dirs["files"] = files
  # What the learned methods train on: the scored phases only (data.root takes a glob).
  dirs["train"] = os.path.join(lr_dir, f"mni152_phase[0-{phases - 1}].nii.gz")
  for name in baseline_names:
    dirs[name] = os.path.join(workdir, profile, name)
    upsample_missing([os.path.join(lr_dir, f) for f in files], dirs[name], name,
                     target_spacing=1.0)
  return dirs


TRAIN_SECONDS_FILE = "train_seconds.json"


def timed_training(config, workdir: str) -> float:
  """Trains (resuming); returns the training's wall seconds, kept in the workdir.

  A run already trained to `train.num_steps` is not touched and reports the time it
  took; a resumed run adds the time of this call to that of the earlier ones.
  """
  record = os.path.join(workdir, TRAIN_SECONDS_FILE)
  previous = 0.0
  if os.path.exists(record):
    with open(record) as f:
      previous = json.load(f)["seconds"]
  done = checkpointing.checkpoint_steps(workdir)
  if previous and done and done[-1] >= config.train.num_steps > 0:
    return previous
  start = time.perf_counter()
  train_lib.train_and_evaluate(config, workdir)
  total = previous + time.perf_counter() - start
  atomic.write_text(record, json.dumps({"seconds": total}))
  return total


def train(config, workdir: str, inputs: dict[str, str]) -> float:
  """Trains `config` on the protocol inputs (`timed_training`); returns the wall seconds."""
  config.data.root = inputs["train"]
  if "make_demo" in config.data:
    config.data.make_demo = False
  if "truth" in config.data:
    config.data.truth = ""  # The demo configs' held-out truth; the protocol scores after.
  if "profile" in inputs and "slice_profile" in config.data:
    # The protocol's profile is known; methods that model it (SMORE's pairs, CLADE+'s
    # paired loss and data consistency) are told it, as a user would tell theirs.
    config.data.slice_profile = inputs["profile"]
  return timed_training(config, workdir)


def upsample_missing(lr_paths, out_dir: str, method: str,
                     target_spacing: float | None = None) -> None:
  """`baselines.upsample` of every input into `out_dir` (same names); existing ones kept."""
  for path in lr_paths:
    out = os.path.join(out_dir, os.path.basename(path))
    if not os.path.exists(out):
      lr = load_volume(path)
      up = baselines.upsample(lr, find_thick_axis(lr.spacing, name=path), method,
                              target_spacing=target_spacing)
      save_volume(out, up.data, up.affine)


def super_resolve_all(run_dir: str, inputs: dict[str, str], out_dir: str,
                      options: SROptions = SROptions(), step: int | None = None) -> float:
  """`inference.run` on every input (same file names); mean seconds per volume.

  `inputs["files"]` are names in `inputs["lr"]`, or paths. Existing outputs are kept
  (re-running an experiment resumes it), and not timed. `options` as for `inference.run`,
  without its progress bar (an experiment prints a line per run); `step`: the checkpoint,
  default the latest.
  """
  options = dataclasses.replace(options, progress=False)
  seconds, lr_dir = [], inputs["lr"]
  for file in inputs["files"]:
    out = os.path.join(out_dir, os.path.basename(file))
    if os.path.exists(out):
      continue
    result = inference.run(run_dir, os.path.join(lr_dir, file), out, options=options,
                           step=step, figure=False)
    seconds.append(result.seconds)
  return sum(seconds) / len(seconds) if seconds else float("nan")


def score(methods: dict[str, str], out_dir: str, truth_dir: str, figures: bool = False,
          tiny: bool = False):
  """`evaluation.evaluate` on the MNI152 protocol; returns the per-subject metric table.

  The tiny block holds none of the ROIs, so it has no edge sharpness or SNR.
  """
  return evaluation.evaluate(methods, out_dir, truth=truth_dir, rois=None if tiny else ROIS,
                             thick_axis=THICK_AXIS, figures=figures and not tiny,
                             log=(lambda message: None) if tiny else print)


def summary(table, columns=("psnr", "ssim", "pique_sagittal", "pique_axial"), **extra):
  """Mean of `columns` per method (those present), in the table's method order.

  Each keyword adds a column from a {method: value} dict (NaN for the methods it lacks),
  e.g. `train_seconds=seconds`.
  """
  present = [c for c in columns if c in table.columns]
  order = list(dict.fromkeys(table["method"]))
  result = table.groupby("method", sort=False)[present].mean().loc[order]
  for name, values in extra.items():
    result[name] = [values.get(m, float("nan")) for m in result.index]
  return result


def publish(path: str, text: str) -> None:
  """Writes a script's result table (atomically) and prints it."""
  atomic.write_text(path, text.rstrip("\n") + "\n")
  print(text)


def markdown(frame, decimals: int = 3) -> str:
  """A DataFrame as a markdown table (index first); floats to `decimals` places."""
  def cell(v):
    return f"{v:.{decimals}f}" if isinstance(v, float) else str(v)
  header = [frame.index.name or ""] + [str(c) for c in frame.columns]
  rows = [[str(i)] + [cell(v) for v in row] for i, row in zip(frame.index, frame.to_numpy())]
  lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
  return "\n".join(lines + ["| " + " | ".join(r) + " |" for r in rows])
