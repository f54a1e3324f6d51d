"""The paper's evaluation on the MNI152 template: drop every other slice, recover it.

Sander et al. (Sec. 4) mimic a doubled slice spacing by excluding every other slice of
a test volume, synthesise the excluded slices with the autoencoder (alpha = 1/2) and
compare them with linear, B-spline and Lanczos interpolation by SSIM and PSNR, with a
one-sided Wilcoxon signed-rank test. Here:

* test volume: the 1 mm MNI152 template (nilearn), slices along voxel axis 1 (A-P, the
  demo's thick axis, so in-plane slices are coronal as in the demo); slices 0, 2, ...,
  232 are kept as a 2 mm volume, the 116 odd slices are the truth to recover. Nothing
  is blurred: the kept slices are template slices, as in the paper.
* model: by default the autoencoder is trained here, with the `:demo` settings of
  configs/ae_interp.py, on the kept slices of that 2 mm volume (the method is
  unsupervised: it never sees a dropped slice); ``--model DIR`` scores an existing
  run instead (e.g. the README demo, trained on the 6 mm demo volume).
* scores: per dropped slice, PSNR and 2D SSIM (clade_jax/metrics/fidelity.py) inside
  that slice of the truth's foreground mask, data range = the template's max - min;
  slices with under 1 % foreground are left out. Baselines from clade_jax/baselines.py
  (cubic = the interpolating cubic B-spline). scipy's Wilcoxon signed-rank test over the
  slices, one-sided both ways: "AE > baseline" (the paper's) and "baseline > AE".
* eval.keep_acquired: the whole volume (kept and dropped slices) is also scored with
  the acquired slices kept and with their reconstructions.

    python experiments/ae_interp/run.py drop --workdir runs/ae_interp_drop

writes WORKDIR/input/ (the 2 mm volume), WORKDIR/model/ (the training run; re-running
resumes it), WORKDIR/outputs/ (every method's volume), WORKDIR/table.md and
WORKDIR/slices.csv. ``--set model.num_blocks=4`` (repeatable) overrides the demo
config of the training run.

The drop experiment scores the inference variants of DROP_VARIANTS (eval.interpolation
'latent' with the acquired slices kept or reconstructed, 'corrected' on a linear and a
cubic base) whatever the run's own eval settings.

For the shared ground-truth protocol (experiments/ground_truth/), ``infer`` writes a
run's output for every input of a directory once per variant (VARIANTS; default keep
and reconstructed) into OUT/<variant>/; ``project`` applies inference's data
consistency to a baseline's volumes (to compare like with like), and ``score`` gives
whole-volume PSNR and 3D SSIM as the protocol computes them (the protocol's own
evaluate stage gives every metric and the statistics but takes minutes per method):

    python experiments/ae_interp/run.py infer --model runs/ae_demo --variants all \
        --inputs runs/ground_truth/gaussian/lr --out runs/ae_mni/gaussian
    python experiments/ae_interp/run.py project --model runs/ae_demo \
        --inputs runs/ground_truth/gaussian/lr --volumes runs/ground_truth/gaussian/cubic \
        --out runs/ae_mni/gaussian/cubic_dc
    python experiments/ae_interp/run.py score --truth runs/ground_truth/truth \
        --method cubic=runs/ground_truth/gaussian/cubic \
        --method corrected_cubic=runs/ae_mni/gaussian/corrected_cubic
"""

from __future__ import annotations

import argparse
import ast
import glob
import os
import sys
import time

sys.path.insert(0, os.path.abspath(os.path.join(os.path.dirname(__file__), "..", "..")))

import numpy as np  # noqa: E402
from scipy import stats  # noqa: E402

from clade_jax import baselines, inference, train  # noqa: E402
from clade_jax.data import consistency, demo, preprocess  # noqa: E402
from clade_jax.data import volume as volume_lib  # noqa: E402
from clade_jax.evaluation import scoring  # noqa: E402
from clade_jax.metrics import fidelity  # noqa: E402
from clade_jax.volume_srr import SROptions  # noqa: E402
from configs import ae_interp as ae_config  # noqa: E402

THICK_AXIS = 1  # A-P in the template's RAS voxel order.
# eval fields of each inference variant (clade_jax/methods/ae_interp.py).
VARIANTS = {
    "keep": dict(interpolation="latent", keep_acquired=True, data_consistency=False),
    "reconstructed": dict(interpolation="latent", keep_acquired=False, data_consistency=False),
    "corrected_linear": dict(interpolation="corrected", correction_base="linear",
                             keep_acquired=True, data_consistency=False),
    "corrected_cubic": dict(interpolation="corrected", correction_base="cubic",
                            keep_acquired=True, data_consistency=False),
    "corrected_linear_dc": dict(interpolation="corrected", correction_base="linear",
                                keep_acquired=True, data_consistency=True),
    "corrected_cubic_dc": dict(interpolation="corrected", correction_base="cubic",
                               keep_acquired=True, data_consistency=True),
    "keep_dc": dict(interpolation="latent", keep_acquired=True, data_consistency=True),
}
# Data consistency needs a slice profile; the drop volume's slices are not blurred.
DROP_VARIANTS = ("reconstructed", "keep", "corrected_linear", "corrected_cubic")
BASELINES = ("linear", "cubic", "lanczos")
MIN_FOREGROUND = 0.01  # Slices with less of the truth's mask are not scored.


def parse_args(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  commands = parser.add_subparsers(dest="command", required=True)
  drop = commands.add_parser("drop", help="the drop-every-other-slice experiment")
  drop.add_argument("--workdir", default="runs/ae_interp_drop")
  drop.add_argument("--model", help="score this training workdir instead of training one")
  drop.add_argument("--set", action="append", default=[], metavar="FIELD=VALUE",
                    help="override a field of the demo config for training")
  infer = commands.add_parser("infer", help="super-resolve a directory, both settings")
  infer.add_argument("--model", required=True, help="a training workdir")
  infer.add_argument("--inputs", required=True, help="directory of NIfTI volumes")
  infer.add_argument("--out", required=True, help="writes OUT/<variant>/ for every variant")
  infer.add_argument("--variants", default="keep,reconstructed",
                     help=f"comma-separated, of {', '.join(VARIANTS)}, or 'all'")
  project = commands.add_parser(
      "project", help="data consistency (as eval.data_consistency) on a baseline's volumes")
  project.add_argument("--model", required=True, help="a training workdir (its slice profile)")
  project.add_argument("--inputs", required=True, help="the thick-slice volumes")
  project.add_argument("--volumes", required=True, help="their upsampled volumes, same names")
  project.add_argument("--out", required=True)
  score = commands.add_parser("score", help="PSNR and 3D SSIM against the protocol's truth")
  score.add_argument("--truth", required=True, help="directory of truth volumes")
  score.add_argument("--method", action="append", required=True, metavar="NAME=DIR")
  score.add_argument("--subjects", default=None, help="comma-separated file stems")
  return parser.parse_args(argv)


def every_other_slice(truth: volume_lib.Volume) -> volume_lib.Volume:
  """The even slices along THICK_AXIS as a volume of twice the spacing, same world frame."""
  affine = np.array(truth.affine)
  affine[:3, THICK_AXIS] *= 2.0
  kept = np.take(truth.data, np.arange(0, truth.data.shape[THICK_AXIS], 2), axis=THICK_AXIS)
  return volume_lib.Volume(np.ascontiguousarray(kept), affine)


def train_model(input_path: str, workdir: str, overrides: list[str]) -> str:
  """Trains (or resumes) the demo config on `input_path`; `overrides` are FIELD=VALUE."""
  config = ae_config.get_config("demo")
  config.data.root = input_path
  config.data.make_demo = False
  for override in overrides:
    field, text = override.split("=", 1)
    *groups, key = field.split(".")
    node = config
    for group in groups:
      node = node[group]
    try:
      node[key] = ast.literal_eval(text)
    except (ValueError, SyntaxError):
      node[key] = text
  train.train_and_evaluate(config, workdir)
  return workdir


def configure(config, variant: str):
  """Sets the run's eval fields to those of `variant` (a key of VARIANTS)."""
  for field, value in VARIANTS[variant].items():
    config.eval[field] = value
  return config


def infer_variants(model: str, inputs: str, out: str, variants: list[str]) -> None:
  """Every volume of `inputs` through the run, once per variant, into OUT/<variant>/."""
  params, config, _ = inference.load_params(model)
  for path in sorted(glob.glob(os.path.join(inputs, "*.nii*"))):
    source = volume_lib.load_volume(path)
    for variant in variants:
      configure(config, variant)
      output, affine = inference.super_resolve(source.data, source.affine, params, config,
                                               SROptions(progress=False))
      volume_lib.save_volume(os.path.join(out, variant, os.path.basename(path)), output,
                             affine, like=source)
    print(f"{path}: written to {out}/{{{','.join(variants)}}}/", flush=True)


def project_volumes(model: str, inputs: str, volumes: str, out: str) -> None:
  """Inference's data-consistency projection applied to another method's volumes, so
  that an AE variant with it is compared with the same baseline with it."""
  _, config, _ = inference.load_params(model)
  for path in sorted(glob.glob(os.path.join(inputs, "*.nii*"))):
    source = volume_lib.load_volume(path)
    up = volume_lib.load_volume(os.path.join(volumes, os.path.basename(path)))
    prepared = preprocess.prepare_input(source.data, source.affine, config.data)
    np.testing.assert_allclose(up.affine, prepared.affine, atol=1e-6)
    acquisition = inference.acquisition_model(source, prepared, config.data)
    projected = consistency.project(
        up.data, source.data, acquisition,
        regularisation=config.eval.get("consistency_regularisation", 0.0))
    volume_lib.save_volume(os.path.join(out, os.path.basename(path)), projected, up.affine,
                           like=source)
    print(f"{path}: projected into {out}/", flush=True)


def score_protocol(truth_dir: str, methods: dict[str, str], subjects) -> str:
  """Mean ± sd over subjects of whole-volume PSNR and 3D SSIM, scored as the protocol
  does (`evaluation.scoring`: truth cropped to the output's grid, its foreground mask,
  data range = the truth's max - min)."""
  truths = sorted(glob.glob(os.path.join(truth_dir, "*.nii*")))
  stems = [os.path.basename(t).split(".")[0] for t in truths]
  if subjects:
    truths = [t for t, s in zip(truths, stems) if s in subjects]
  lines = [f"Subjects: {', '.join(os.path.basename(t).split('.')[0] for t in truths)}", "",
           "| Method | PSNR (dB) ↑ | SSIM 3D ↑ |", "|---|---|---|"]
  for name, folder in methods.items():
    psnr, ssim = [], []
    for path in truths:
      gt = volume_lib.load_volume(path)
      out = volume_lib.load_volume(os.path.join(folder, os.path.basename(path)))
      truth = scoring.crop_truth(gt, out.data.shape, out.affine)
      mask = fidelity.foreground_mask(truth)
      data_range = float(gt.data.max() - gt.data.min())
      psnr.append(fidelity.psnr(out.data, truth, data_range, mask=mask))
      ssim.append(fidelity.ssim(out.data, truth, data_range, mask=mask))
    sd = lambda x: np.std(x, ddof=1) if len(x) > 1 else 0.0
    lines.append(f"| {name} | {np.mean(psnr):.2f} ± {sd(psnr):.2f} | "
                 f"{np.mean(ssim):.4f} ± {sd(ssim):.4f} |")
  return "\n".join(lines) + "\n"


def score_slices(volume: np.ndarray, truth: np.ndarray, mask: np.ndarray, slices,
                 data_range: float) -> dict[str, np.ndarray]:
  """PSNR and 2D SSIM of the given slices (along THICK_AXIS) inside the mask."""
  psnr, ssim = [], []
  for j in slices:
    pred, target, m = (np.take(a, j, axis=THICK_AXIS) for a in (volume, truth, mask))
    psnr.append(fidelity.psnr(pred, target, data_range, mask=m))
    ssim.append(fidelity.ssim(pred, target, data_range, mask=m))
  return {"PSNR": np.array(psnr), "SSIM": np.array(ssim)}


def wilcoxon(a: np.ndarray, b: np.ndarray) -> tuple[float, float]:
  """One-sided signed-rank p-values: (a > b, b > a)."""
  return (float(stats.wilcoxon(a, b, alternative="greater").pvalue),
          float(stats.wilcoxon(a, b, alternative="less").pvalue))


def _fmt_p(p: float) -> str:
  return f"{p:.1e}" if p < 1e-3 else f"{p:.3f}"


def main(argv=None) -> int:
  args = parse_args(argv)
  if args.command == "infer":
    variants = list(VARIANTS) if args.variants == "all" else args.variants.split(",")
    unknown = [v for v in variants if v not in VARIANTS]
    if unknown:
      raise SystemExit(f"--variants: unknown {', '.join(unknown)}; use {', '.join(VARIANTS)}")
    infer_variants(args.model, args.inputs, args.out, variants)
    return 0
  if args.command == "project":
    project_volumes(args.model, args.inputs, args.volumes, args.out)
    return 0
  if args.command == "score":
    methods = dict(spec.split("=", 1) for spec in args.method)
    print(score_protocol(args.truth, methods,
                         args.subjects.split(",") if args.subjects else None))
    return 0
  start = time.time()
  log = lambda msg: print(f"[{time.time() - start:6.1f}s] {msg}", flush=True)
  truth = demo.load_template()
  lr = every_other_slice(truth)
  input_path = os.path.join(args.workdir, "input", "mni152_every_other_ap.nii.gz")
  volume_lib.save_volume(input_path, lr.data, lr.affine)

  workdir = args.model or train_model(input_path, os.path.join(args.workdir, "model"),
                                      args.set)
  log(f"model: {workdir}")
  params, config, step = inference.load_params(workdir)

  outputs = {}
  for variant in DROP_VARIANTS:
    configure(config, variant)
    out, affine = inference.super_resolve(lr.data, lr.affine, params, config,
                                          SROptions(progress=False))
    outputs[variant] = out
  for name in BASELINES:
    outputs[name] = baselines.upsample(lr, THICK_AXIS, name, target_spacing=1.0).data
  np.testing.assert_allclose(affine, truth.affine, atol=1e-6)  # The truth's own grid.
  for name, out in outputs.items():
    volume_lib.save_volume(os.path.join(args.workdir, "outputs", f"{name}.nii.gz"), out,
                           affine)
  log("super-resolved and interpolated")

  data_range = float(truth.data.max() - truth.data.min())
  mask = fidelity.foreground_mask(truth.data)
  fraction = np.moveaxis(mask, THICK_AXIS, 0).mean(axis=(1, 2))
  dropped = [j for j in range(1, truth.data.shape[THICK_AXIS], 2) if fraction[j] >= MIN_FOREGROUND]
  rows = {name: score_slices(outputs[name], truth.data, mask, dropped, data_range)
          for name in (*DROP_VARIANTS[1:], *BASELINES)}

  lines = [f"Dropped slices recovered: {len(dropped)} of "
           f"{len(range(1, truth.data.shape[THICK_AXIS], 2))} (those with >= 1 % foreground); "
           f"model {os.path.abspath(workdir)}, step {step}.", "",
           "| Method | PSNR (dB) ↑ | SSIM ↑ | p (AE > it), PSNR | p (AE > it), SSIM "
           "| p (it > AE), PSNR | p (it > AE), SSIM |", "|---|---|---|---|---|---|---|"]
  for name, scores in rows.items():
    cells = [name] + [f"{scores[m].mean():.2f} ± {scores[m].std(ddof=1):.2f}" if m == "PSNR"
                      else f"{scores[m].mean():.4f} ± {scores[m].std(ddof=1):.4f}"
                      for m in ("PSNR", "SSIM")]
    lines.append("| " + " | ".join(cells + ["–"] * 4) + " |")
    if name in BASELINES:  # Every AE variant against this baseline.
      for ae in DROP_VARIANTS[1:]:
        (gp, lp), (gs, ls) = (wilcoxon(rows[ae][m], scores[m]) for m in ("PSNR", "SSIM"))
        lines.append("| " + " | ".join([f"↳ {ae} vs {name}", "", "", _fmt_p(gp), _fmt_p(gs),
                                        _fmt_p(lp), _fmt_p(ls)]) + " |")

  lines += ["", "Whole volume (acquired and dropped slices), inside the truth's mask:", "",
            "| Output | PSNR (dB) ↑ | SSIM 3D ↑ |", "|---|---|---|"]
  for name, out in outputs.items():
    lines.append(f"| {name} | {fidelity.psnr(out, truth.data, data_range, mask=mask):.2f} | "
                 f"{fidelity.ssim(out, truth.data, data_range, mask=mask):.4f} |")
  table = "\n".join(lines) + "\n"
  with open(os.path.join(args.workdir, "table.md"), "w") as f:
    f.write(table)
  with open(os.path.join(args.workdir, "slices.csv"), "w") as f:
    f.write("slice," + ",".join(f"{n}_{m}" for n in rows for m in ("PSNR", "SSIM")) + "\n")
    for i, j in enumerate(dropped):
      f.write(f"{j}," + ",".join(f"{rows[n][m][i]:.6g}" for n in rows for m in ("PSNR", "SSIM"))
              + "\n")
  print(table)
  log(f"done; {os.path.join(args.workdir, 'table.md')}")
  return 0


if __name__ == "__main__":
  sys.exit(main())
