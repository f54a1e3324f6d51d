"""Fidelity per minute: SMORE's budgets on the MNI152 protocol, wall time against PSNR/SSIM.

Each scan (one slice phase of the template degraded to 6 mm, experiments/ground_truth)
is super-resolved the way a user would run one: a fresh Python process that trains a
network on the scan and runs it over both low-resolution planes. Its wall time counts
everything (interpreter, imports, compilation or the compilation cache, data, training,
inference, writing the output); PSNR and 3D SSIM are scored inside the truth's
foreground as `evaluate.py` scores them, against cubic B-spline on the same phase.

    python benchmarks/time_to_quality.py                      # quick + standard, ~13 min
    python benchmarks/time_to_quality.py --budgets thorough --profiles gaussian --phases 1 \
        --include runs/time_to_quality/time_to_quality.csv    # + thorough, ~9 min
    python benchmarks/time_to_quality.py --tiny               # smoke test, seconds

Writes <out>/time_to_quality.csv, the curve (benchmarks/time_to_quality.png) and, unless
--tiny or --no-results, a section appended to benchmarks/RESULTS.md with the machine,
the load average and the command.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import shlex
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, os.path.join(ROOT, "experiments"))
sys.path.insert(0, ROOT)

CONFIG = os.path.join("configs", "smore.py")
COLUMNS = ("budget", "profile", "phase", "wall_s", "cpu_s", "train_s", "infer_s", "psnr", "ssim",
           "cubic_psnr", "cubic_ssim", "psnr_gain", "ssim_gain")


def run_scan(spec: str, overrides: dict, lr_path: str, output: str, workdir: str,
             tiny: bool = False) -> dict[str, float]:
  """Trains `spec` on one scan and super-resolves it; returns the seconds of each part."""
  import common  # noqa: PLC0415 (experiments/common.py; imports JAX)
  from clade_jax import inference  # noqa: PLC0415
  from clade_jax.volume_srr import SROptions  # noqa: PLC0415
  config = common.load_config(spec, overrides, tiny=tiny)
  inputs = {"train": lr_path, "profile": overrides.get("data.slice_profile", "gaussian")}
  train_seconds = common.train(config, workdir, inputs)
  result = inference.run(workdir, lr_path, output, options=SROptions(progress=False),
                         figure=False, overwrite=True)
  return {"train_s": train_seconds, "infer_s": result.seconds}


def fidelity(output: str, truth_path: str) -> tuple[float, float]:
  """PSNR and 3D SSIM of `output` against the truth, as `evaluate.py` computes them."""
  import numpy as np  # noqa: PLC0415
  from clade_jax import metrics  # noqa: PLC0415
  from clade_jax.data.volume import crop_truth, load_volume  # noqa: PLC0415
  volume, truth = load_volume(output), load_volume(truth_path)
  crop = crop_truth(truth, volume.data.shape, volume.affine)
  data_range = float(truth.data.max() - truth.data.min())
  mask = metrics.foreground_mask(crop)
  data = np.asarray(volume.data, np.float32)
  return (float(metrics.psnr(data, crop, data_range, mask=mask)),
          float(metrics.ssim(data, crop, data_range, mask=mask)))


def measure(budgets, profiles, phases: int, out: str, protocol: str | None = None,
            tiny: bool = False, in_process: bool = False, overrides=(), log=print):
  """Every budget on every phase and profile; returns the per-scan table (a DataFrame).

  Args:
    budgets: names in `clade_jax.budgets.BUDGETS`.
    profiles: slice profiles of the protocol ('gaussian', 'rect').
    phases: slice phases (pseudo-subjects) 0..phases-1.
    out: where outputs, run folders and the CSV go.
    protocol: the ground-truth workdir (`common.protocol_inputs`).
    tiny: the CI setting (`common.TINY`: tiny networks, a block of the template).
    in_process: run each scan in this process (tests); the wall time then misses the
      interpreter's start-up and counts compilation only once.
    overrides: 'field=value' settings for every budget's config (to try variants).
    log: progress printer.
  """
  import common  # noqa: PLC0415
  import pandas as pd  # noqa: PLC0415
  from clade_jax import budgets as budgets_lib  # noqa: PLC0415
  rows = []
  for profile in profiles:
    inputs = common.protocol_inputs(protocol, profile=profile, phases=max(phases, 2),
                                    baseline_names=("cubic",), tiny=tiny)
    for phase in range(phases):
      file = inputs["files"][phase]
      truth = os.path.join(inputs["truth"], file)
      cubic = fidelity(os.path.join(inputs["cubic"], file), truth)
      for name in budgets:
        spec = f"{CONFIG}:{budgets_lib.config_arg(name)}"
        tag = f"{name}/{profile}/phase{phase}"
        workdir, output = os.path.join(out, "runs", tag), os.path.join(out, "sr", tag + ".nii.gz")
        os.makedirs(os.path.dirname(output), exist_ok=True)
        if os.path.exists(workdir):
          import shutil  # noqa: PLC0415
          shutil.rmtree(workdir)  # Each scan trains from scratch.
        lr_path = os.path.join(inputs["lr"], file)
        settings = {"data.slice_profile": profile, **parse_overrides(overrides)}
        start, cpu_start = time.perf_counter(), cpu_seconds(in_process)
        if in_process:
          seconds = run_scan(spec, settings, lr_path, output, workdir, tiny=tiny)
        else:
          command = [sys.executable, os.path.abspath(__file__), "--scan", spec,
                     "--input", lr_path, "--output", output, "--workdir", workdir,
                     "--profile", profile] + (["--tiny"] if tiny else [])
          command += [a for o in overrides for a in ("--set", o)]
          done = subprocess.run(command, capture_output=True, text=True, cwd=ROOT)
          if done.returncode:
            raise SystemExit(f"error: {tag} failed:\n{done.stderr[-3000:]}")
          seconds = json.loads(done.stdout.strip().splitlines()[-1])
        wall, cpu = time.perf_counter() - start, cpu_seconds(in_process) - cpu_start
        psnr, ssim = fidelity(output, truth)
        rows.append({"budget": name, "profile": profile, "phase": phase, "wall_s": wall,
                     "cpu_s": cpu, **seconds, "psnr": psnr, "ssim": ssim, "cubic_psnr": cubic[0],
                     "cubic_ssim": cubic[1], "psnr_gain": psnr - cubic[0],
                     "ssim_gain": ssim - cubic[1]})
        log(f"{tag}: {wall:.0f} s, CPU {cpu:.0f} s (train {seconds['train_s']:.0f} s, infer "
            f"{seconds['infer_s']:.0f} s), PSNR {psnr:.2f} dB (cubic {cubic[0]:.2f}, "
            f"{psnr - cubic[0]:+.2f}), SSIM {ssim:.4f}  [load {load_average()}]")
  return pd.DataFrame(rows, columns=list(COLUMNS))


def cpu_seconds(in_process: bool) -> float:
  """User + system seconds of this process (in_process) or of its finished children.

  Robust to other jobs on the machine where wall seconds are not: alone on 2 cores
  a scan's wall time lies between CPU / 2 and CPU.
  """
  import resource  # noqa: PLC0415
  usage = resource.getrusage(resource.RUSAGE_SELF if in_process else resource.RUSAGE_CHILDREN)
  return usage.ru_utime + usage.ru_stime


def parse_overrides(overrides) -> dict:
  """['train.num_steps=300', ...] -> {'train.num_steps': 300, ...} (Python literals)."""
  import ast  # noqa: PLC0415
  result = {}
  for item in overrides:
    key, _, value = item.partition("=")
    try:
      result[key] = ast.literal_eval(value)
    except (ValueError, SyntaxError):
      result[key] = value
  return result


def load_average() -> str:
  return " ".join(f"{x:.1f}" for x in os.getloadavg())


def summarise(table):
  """Mean per budget and profile: seconds, PSNR/SSIM and their gains over cubic."""
  groups = table.groupby(["budget", "profile"], sort=False)
  means = groups[["wall_s", "cpu_s", "train_s", "infer_s", "psnr", "psnr_gain", "ssim",
                  "ssim_gain"]].mean()
  means.insert(0, "phases", groups.size())
  return means


def summary_markdown(means) -> str:
  """`summarise`'s table in markdown: seconds whole, PSNR to 0.01 dB, SSIM to 1e-4."""
  import common  # noqa: PLC0415
  digits = {"psnr": 2, "psnr_gain": 2, "ssim": 4, "ssim_gain": 4}
  text = means.reset_index().set_index("budget").copy()
  for column in text.columns:
    if column in digits or column.endswith("_s"):
      text[column] = [f"{v:.{digits.get(column, 0)}f}" for v in text[column]]
  return common.markdown(text)


def plot(table, path: str) -> None:
  """PSNR gain over cubic against wall seconds, one marker per scan, a line per profile."""
  import matplotlib  # noqa: PLC0415
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt  # noqa: PLC0415
  from clade_jax import atomic  # noqa: PLC0415
  fig, axes = plt.subplots(1, 2, figsize=(10, 4))
  for profile, rows in table.groupby("profile", sort=False):
    means = rows.groupby("budget", sort=False)[["wall_s", "psnr_gain", "ssim_gain"]].mean()
    means = means.sort_values("wall_s")
    for ax, column in zip(axes, ("psnr_gain", "ssim_gain")):
      line, = ax.plot(means["wall_s"], means[column], "-o", label=profile)
      ax.scatter(rows["wall_s"], rows[column], s=10, color=line.get_color(), alpha=0.5)
      for budget, row in means.iterrows():
        ax.annotate(budget, (row["wall_s"], row[column]), fontsize=8,
                    textcoords="offset points", xytext=(4, -10))
  for ax, label in zip(axes, ("PSNR gain over cubic (dB)", "SSIM 3D gain over cubic")):
    ax.set_xlabel("wall seconds per scan (start-up + training + inference)")
    ax.set_ylabel(label)
    ax.grid(alpha=0.3)
    ax.legend(title="slice profile")
  axes[0].axhline(1.5, color="grey", lw=0.5, ls="--")
  axes[0].axhline(2.4, color="grey", lw=0.5, ls="--")
  fig.suptitle("SMORE on the MNI152 protocol (6 mm slices), per scan")
  fig.tight_layout()
  with atomic.atomic_path(path, suffix=".png") as tmp:
    fig.savefig(tmp, dpi=100, format="png")
  plt.close(fig)


def results_section(summary_md: str, command: str, started_load: str, ended_load: str) -> str:
  model = next((line.split(":", 1)[1].strip() for line in subprocess.run(
      ["lscpu"], capture_output=True, text=True).stdout.splitlines()
      if line.startswith("Model name")), platform.processor())
  date = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
  return (f"\n## Time to quality: SMORE budgets on the MNI152 protocol, {date}\n\n"
          f"Machine: {model}, {os.cpu_count()} cores; load average (1, 5, 15 min) "
          f"{started_load} at the start, {ended_load} at the end. Per scan, in a fresh "
          f"process: start-up, training and inference of both planes; PSNR/SSIM 3D in the "
          f"truth's foreground, gains over cubic B-spline on the same phase (mean over "
          f"phases).\n\n    {command}\n\n{summary_md}\n\nCurve: "
          f"[time_to_quality.png](time_to_quality.png).\n")


def main(argv=None) -> None:
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("--budgets", nargs="+", default=["quick", "standard"])
  parser.add_argument("--profiles", nargs="+", default=["gaussian", "rect"],
                      choices=["gaussian", "rect"])
  parser.add_argument("--phases", type=int, default=2, help="slice phases per profile")
  parser.add_argument("--protocol", default=None, help="ground-truth workdir (common.py)")
  parser.add_argument("--out", default=None, help="default runs/time_to_quality[_tiny]")
  parser.add_argument("--plot", default=os.path.join(HERE, "time_to_quality.png"))
  parser.add_argument("--include", nargs="*", default=[], metavar="CSV",
                      help="earlier runs' time_to_quality.csv to draw and tabulate too")
  parser.add_argument("--no-results", action="store_true", help="do not append to RESULTS.md")
  parser.add_argument("--tiny", action="store_true", help="smoke test: tiny networks, 2 steps")
  parser.add_argument("--set", action="append", default=[], metavar="FIELD=VALUE",
                      help="override a config field of every budget (to try variants)")
  # One scan in this process (what the parent times): internal.
  parser.add_argument("--scan", help=argparse.SUPPRESS)
  parser.add_argument("--input", help=argparse.SUPPRESS)
  parser.add_argument("--output", help=argparse.SUPPRESS)
  parser.add_argument("--workdir", help=argparse.SUPPRESS)
  parser.add_argument("--profile", default="gaussian", help=argparse.SUPPRESS)
  args = parser.parse_args(argv)
  if args.scan:
    settings = {"data.slice_profile": args.profile, **parse_overrides(args.set)}
    seconds = run_scan(args.scan, settings, args.input,
                       args.output, args.workdir, tiny=args.tiny)
    print(json.dumps(seconds))
    return

  from clade_jax import budgets as budgets_lib  # noqa: PLC0415
  unknown = [b for b in args.budgets if b not in budgets_lib.BUDGETS]
  if unknown:
    parser.error(f"--budgets: unknown {unknown}; choose from {list(budgets_lib.BUDGETS)}")
  import common  # noqa: PLC0415
  out = args.out or ("runs/time_to_quality_tiny" if args.tiny else "runs/time_to_quality")
  started_load = load_average()
  print(f"load average {started_load}; {len(args.budgets) * len(args.profiles) * args.phases} "
        f"scans", flush=True)
  table = measure(args.budgets, args.profiles, args.phases, out, args.protocol, tiny=args.tiny,
                  overrides=args.set, log=lambda m: print(m, flush=True))
  from clade_jax import atomic  # noqa: PLC0415
  atomic.write_text(os.path.join(out, "time_to_quality.csv"), table.to_csv(index=False))
  if args.include:
    import pandas as pd  # noqa: PLC0415
    table = pd.concat([pd.read_csv(path) for path in args.include] + [table], ignore_index=True)
  summary_md = summary_markdown(summarise(table))
  print(summary_md)
  if args.tiny:
    return
  plot(table, args.plot)
  if not args.no_results:
    command = "python benchmarks/time_to_quality.py " + shlex.join(argv or sys.argv[1:])
    section = results_section(summary_md, command.strip(), started_load, load_average())
    path = os.path.join(HERE, "RESULTS.md")
    with open(path) as f:
      atomic.write_text(path, f.read().rstrip("\n") + "\n" + section)


if __name__ == "__main__":
  main()
