"""Intensity fidelity on a CT-like phantom: does super-resolution keep bone and air?

The synthetic head of `clade_jax.data.ct_phantom` (1 mm, HU -1024..~3000, skull tables
straddling the 99.5th percentile, teeth up to 3000 HU) is degraded to 4 mm axial slices
(`clade_jax.data.degrade`, Gaussian profile). A small CLADE (`configs/ct.py:small`
with 4 residual blocks) is trained on the thick-slice volume for each intensity window
asked for, and every trained network super-resolves the volume once per inference mode;
the network's output is then mapped back to HU by each rule of
`clade_jax.data.intensity.to_scan_units` (the paper's clipping and the restoring
blends) and scored against the truth: PSNR and SSIM in the head, the output's range,
and the error in dense bone (truth above the 99.5th percentile).

  python experiments/intensity/run.py --workdir runs/intensity            # ~11 min, 2 CPUs
  python experiments/intensity/run.py --workdir runs/intensity --steps 0  # no training

``--steps 0`` scores an untrained (randomly initialised) CLADE: what the rule does
whatever the network. Results go to WORKDIR/results.json and WORKDIR/results.md.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

sys.path.insert(0, os.path.abspath(os.path.join(os.path.dirname(__file__), "..", "..")))

import jax  # noqa: E402
import numpy as np  # noqa: E402

from clade_jax import checkpointing, methods, train  # noqa: E402
from clade_jax.data import ct_phantom, degrade, intensity, preprocess  # noqa: E402
from clade_jax.data import volume as volume_lib  # noqa: E402
from clade_jax.metrics import fidelity  # noqa: E402
from clade_jax.volume_srr import SROptions  # noqa: E402
from configs import ct  # noqa: E402

THICK_AXIS = 2
SPACING_MM = 4.0
# Rules from the network's normalised output back to HU: (name, outside, ramp, clamp
# the input to the acquired range).
RULES = (
    ("clip (paper)", "clip", None, False),
    ("restore, inner ramp 0.9-1", "restore", (0.9, 1.0), False),
    ("restore, inner ramp 0.9-1, input clamped", "restore", (0.9, 1.0), True),
    ("restore, inner ramp 0.8-1, input clamped", "restore", (0.8, 1.0), True),
    ("restore, outer ramp 1-1.1, input clamped", "restore", (1.0, 1.1), True),
    ("restore, step at 1, input clamped", "restore", (1.0, 1.0), True),
    ("restore, passthrough, input clamped", "restore", (np.inf, np.inf), True),
)


def parse_args(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("--workdir", default="runs/intensity")
  parser.add_argument("--steps", type=int, default=300,
                      help="training steps per window (batch 8); 0 = untrained")
  parser.add_argument("--windows", nargs="+", default=["percentile", "-1024,2048"],
                      help="'percentile' (0.5-99.5th) or 'LO,HI' in HU")
  parser.add_argument("--modes", nargs="+", default=["patch", "full"],
                      choices=["patch", "full"])
  parser.add_argument("--stride", type=int, default=12)
  parser.add_argument("--shape", type=int, nargs=3, default=[128, 128, 96])
  parser.add_argument("--seed", type=int, default=0, help="training seed (config.seed)")
  return parser.parse_args(argv)


def config_for(window: str, lr_path: str, steps: int, seed: int = 0):
  config = ct.get_config("small")
  config.seed = seed
  config.data.root = lr_path
  config.data.num_threads = 2
  config.model.num_blocks = 4
  config.model.conv_impl = "im2col"  # Compiles 3x faster than Winograd for short runs.
  config.train.num_steps = max(steps, 1)
  config.train.sample_every = max(steps, 1)
  config.ckpt.every = max(steps, 1)
  config.eval.batch_size = 64
  if window == "percentile":
    config.data.normalization = "percentile"
  else:
    config.data.normalization = "window"
    config.data.intensity_window = tuple(float(v) for v in window.split(","))
  return config


def trained_params(config, workdir: str, steps: int):
  if steps == 0:
    state = methods.of(config).init_state(config, train.init_key(config.seed))
    return state.params
  if not (checkpointing.checkpoint_steps(workdir) or [0])[-1] >= steps:
    train.train_and_evaluate(config, workdir)
  return checkpointing.restore_params(workdir, steps)[0]


def scores(output, truth, head, bone) -> dict:
  span = float(truth.max() - truth.min())
  return {
      "psnr_head": fidelity.psnr(output, truth, span, mask=head),
      "ssim_head": fidelity.ssim(output, truth, span, mask=head),
      "min": float(output.min()), "max": float(output.max()),
      "bone_mean_error": float(np.mean(output[bone] - truth[bone])),
      "bone_mae": float(np.mean(np.abs(output[bone] - truth[bone]))),
      "air_mae": float(np.mean(np.abs(output[truth == ct_phantom.AIR_HU] - ct_phantom.AIR_HU))),
  }


def main(argv=None) -> int:
  args = parse_args(argv)
  start = time.time()
  os.makedirs(args.workdir, exist_ok=True)
  truth_volume = ct_phantom.ct_head(tuple(args.shape))
  lr = degrade.degrade(truth_volume, THICK_AXIS, SPACING_MM)
  lr_path = os.path.join(args.workdir, "lr.nii.gz")
  volume_lib.save_volume(lr_path, lr.data, lr.affine)
  # The isotropic grid starts on the first slice centre: a block of the truth's voxels.
  step = int(SPACING_MM)
  offset = ((args.shape[THICK_AXIS] - 1) % step) // 2
  n_iso = step * (lr.data.shape[THICK_AXIS] - 1) + 1
  truth = np.take(truth_volume.data, np.arange(offset, offset + n_iso), axis=THICK_AXIS)
  head = truth > -500.0
  bone = truth > np.percentile(lr.data, 99.5)
  results = {"truth": {"min": float(truth.min()), "max": float(truth.max())},
             "input": {"min": float(lr.data.min()), "max": float(lr.data.max()),
                       "p99.5": float(np.percentile(lr.data, 99.5))},
             "steps": args.steps, "stride": args.stride, "seed": args.seed, "runs": []}
  for window in args.windows:
    config = config_for(window, lr_path, args.steps, args.seed)
    workdir = os.path.join(args.workdir, "percentile" if window == "percentile"
                           else "window" + window.replace(",", "_"))
    params = trained_params(config, workdir, args.steps)
    prepared = preprocess.prepare_input(lr.data, lr.affine, config.data)
    assert prepared.isotropic.shape == truth.shape, (prepared.isotropic.shape, truth.shape)
    norm = prepared.normalizer
    if not any(r["name"] == "cubic" for r in results["runs"]):
      results["runs"].append({"name": "cubic", **scores(prepared.isotropic, truth, head, bone)})
    for mode in args.modes:
      options = SROptions(mode=mode, stride=args.stride, progress=False)
      output = methods.of(config).super_resolve(params, config, prepared, options)
      for name, outside, ramp, clamp in RULES:
        kwargs = {} if ramp is None else {"ramp": ramp}
        if clamp:
          kwargs["limits"] = prepared.acquired_range
        hu = intensity.to_scan_units(output, prepared.isotropic, norm, outside, **kwargs)
        results["runs"].append({
            "name": f"CLADE {mode}, window {norm.lo:g}..{norm.hi:g} ({window}), {name}",
            "window": window, "mode": mode, "rule": name, **scores(hu, truth, head, bone)})
        print(results["runs"][-1], flush=True)
  results["seconds"] = time.time() - start
  results["devices"] = str(jax.devices())
  with open(os.path.join(args.workdir, "results.json"), "w") as f:
    json.dump(results, f, indent=1)
  lines = ["| run | PSNR head (dB) | SSIM head | min | max | bone mean err | bone MAE | air MAE |",
           "| --- | --- | --- | --- | --- | --- | --- | --- |"]
  for r in results["runs"]:
    lines.append(f"| {r['name']} | {r['psnr_head']:.2f} | {r['ssim_head']:.4f} | "
                 f"{r['min']:.0f} | {r['max']:.0f} | {r['bone_mean_error']:.0f} | "
                 f"{r['bone_mae']:.0f} | {r['air_mae']:.1f} |")
  table = "\n".join(lines)
  with open(os.path.join(args.workdir, "results.md"), "w") as f:
    f.write(f"truth {truth.min():.0f}..{truth.max():.0f} HU; input {lr.data.min():.0f}.."
            f"{lr.data.max():.0f} HU (99.5th percentile {results['input']['p99.5']:.0f}); "
            f"{args.steps} steps, seed {args.seed}; {results['seconds']:.0f} s\n\n{table}\n")
  print(table)
  print(f"done in {results['seconds']:.0f} s")
  return 0


if __name__ == "__main__":
  sys.exit(main())
