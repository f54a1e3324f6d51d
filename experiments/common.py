"""Steps every experiment script shares: ground-truth inputs, training, super-resolution, scoring.

The scripts under experiments/<name>/ put this folder on sys.path and import it:
they call the library (train_and_evaluate, inference.run, evaluation.evaluate), not
our own CLIs in subprocesses, so one Python process holds the compiled functions.
"""

from __future__ import annotations

import importlib
import os
import sys
import time

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), ".."))
sys.path.insert(0, ROOT)

from clade_jax import baselines, evaluation, inference  # noqa: E402
from clade_jax import train as train_lib  # noqa: E402
from clade_jax.data.volume import find_thick_axis, load_volume, save_volume  # noqa: E402

GROUND_TRUTH = os.path.join(ROOT, "experiments", "ground_truth")
ROIS = os.path.join(GROUND_TRUTH, "mni152_rois.json")
THICK_AXIS = 1  # A-P, as in experiments/ground_truth.


def load_config(spec: str, overrides: dict | None = None):
  """`configs/NAME.py[:ARG]` (as train.py's --config) with dotted-field overrides."""
  path, _, arg = spec.partition(":")
  module = os.path.relpath(os.path.abspath(path), ROOT).removesuffix(".py").replace(os.sep, ".")
  config = importlib.import_module(module).get_config(arg or None)
  for dotted, value in (overrides or {}).items():
    *parents, leaf = dotted.split(".")
    node = config
    for name in parents:
      node = node[name]
    node[leaf] = value
  return config


def protocol_inputs(workdir: str, profile: str = "gaussian", noise: float = 0.0,
                    phases: int = 6, baseline_names=("nearest", "cubic")) -> dict[str, str]:
  """The MNI152 ground-truth inputs (experiments/ground_truth), written once.

  Returns:
    {'truth': dir, 'lr': dir of thick-slice inputs, <baseline>: dir of its outputs}.
  """
  sys.path.insert(0, GROUND_TRUTH)
  import run as ground_truth  # noqa: PLC0415 (experiments/ground_truth/run.py)
  lr_dir = os.path.join(workdir, profile, "lr")
  if len([f for f in os.listdir(lr_dir)] if os.path.isdir(lr_dir) else []) < phases:
    ground_truth.main(["--workdir", workdir, "--profiles", profile, "--noise", str(noise),
                       "--phases", str(phases), "--stage", "degrade"])
  dirs = {"truth": os.path.join(workdir, "truth"), "lr": lr_dir}
  for name in baseline_names:
    dirs[name] = os.path.join(workdir, profile, name)
    for file in sorted(os.listdir(lr_dir)):
      out = os.path.join(dirs[name], file)
      if not os.path.exists(out):
        lr = load_volume(os.path.join(lr_dir, file))
        up = baselines.upsample(lr, find_thick_axis(lr.spacing), name, target_spacing=1.0)
        save_volume(out, up.data, up.affine)
  return dirs


def train(config, workdir: str, inputs: str) -> float:
  """Trains `config` on the volumes in `inputs` (resuming); returns the wall seconds."""
  config.data.root = inputs
  if "make_demo" in config.data:
    config.data.make_demo = False
  start = time.perf_counter()
  train_lib.train_and_evaluate(config, workdir)
  return time.perf_counter() - start


def super_resolve_all(run_dir: str, lr_dir: str, out_dir: str, **options) -> float:
  """`inference.run` on every input of `lr_dir` (same file names); mean seconds per volume.

  Existing outputs are kept (re-running an experiment resumes it), and not timed.
  """
  seconds = []
  for file in sorted(os.listdir(lr_dir)):
    out = os.path.join(out_dir, file)
    if os.path.exists(out):
      continue
    result = inference.run(run_dir, os.path.join(lr_dir, file), out, figure=False,
                           progress=False, **options)
    seconds.append(result.seconds)
  return sum(seconds) / len(seconds) if seconds else float("nan")


def score(methods: dict[str, str], out_dir: str, truth_dir: str, figures: bool = False):
  """`evaluation.evaluate` on the MNI152 protocol; returns the per-subject metric table."""
  return evaluation.evaluate(methods, out_dir, truth=truth_dir, rois=ROIS,
                             thick_axis=THICK_AXIS, figures=figures)


def summary(table, columns=("psnr", "ssim", "pique_sagittal", "pique_axial")):
  """Mean of `columns` per method (those present), in the table's method order."""
  present = [c for c in columns if c in table.columns]
  order = list(dict.fromkeys(table["method"]))
  return table.groupby("method", sort=False)[present].mean().loc[order]


def markdown(frame, decimals: int = 3) -> str:
  """A DataFrame as a markdown table (index first); floats to `decimals` places."""
  def cell(v):
    return f"{v:.{decimals}f}" if isinstance(v, float) else str(v)
  header = [frame.index.name or ""] + [str(c) for c in frame.columns]
  rows = [[str(i)] + [cell(v) for v in row] for i, row in zip(frame.index, frame.to_numpy())]
  lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
  return "\n".join(lines + ["| " + " | ".join(r) + " |" for r in rows])
