"""clade-jax sr: train on each scan and super-resolve it to isotropic voxels.

    clade-jax sr scan.nii.gz --out out/                 # one scan
    clade-jax sr 'data/*.nii.gz' dicom/series1 --out out/   # a glob, a DICOM series
    clade-jax sr /data/bids_dataset                     # BIDS: derivatives/clade-jax/
    clade-jax sr cohort/ --out out/ --shard 3/10        # one SLURM array task of ten

Each scan gets <name>_sr.nii.gz (on top of the input in any viewer), its JSON sidecar
(how it was made: method, slice profile and where it came from, times, versions) and
a comparison figure; the run gets summary.csv (one row a scan: status, reason, time).
Re-running the same command skips finished scans and resumes a scan that was stopped
mid-training.
"""

from __future__ import annotations

import argparse
import os
import sys

from clade_jax import cohort

RESULTS_LINK = "benchmarks/RESULTS.md, section 'clade-jax sr budgets'"  # Its heading.


def _shard(text: str) -> tuple[int, int]:
  index, sep, count = text.partition("/")
  try:
    index, count = int(index), int(count)
  except ValueError:
    raise argparse.ArgumentTypeError(f"expected I/N, e.g. 0/10, got {text!r}") from None
  if not sep or count < 1 or not 0 <= index < count:
    raise argparse.ArgumentTypeError(f"expected I/N with 0 <= I < N, got {text!r}")
  return index, count


def _override(text: str) -> tuple[str, str]:
  field, sep, value = text.partition("=")
  if not sep or not field:
    raise argparse.ArgumentTypeError(f"expected FIELD=VALUE, got {text!r}")
  return field.strip(), value


def _positive(text: str) -> float:
  value = float(text)
  if not value > 0:
    raise argparse.ArgumentTypeError(f"must be > 0 mm, got {text}")
  return value


def budget_table() -> str:
  """The budgets' measured costs, for --help."""
  from clade_jax import budgets  # pylint: disable=g-import-not-at-top
  return "\n".join("  " + b.describe() for b in budgets.BUDGETS.values())


def parse_args(argv=None) -> argparse.Namespace:
  parser = argparse.ArgumentParser(
      description=__doc__.split("\n\n")[0],
      formatter_class=argparse.RawDescriptionHelpFormatter,
      epilog=__doc__.split("\n\n", 1)[1] + "\nbudgets (per scan, measured on the MNI152 "
             f"protocol; {RESULTS_LINK}):\n{budget_table()}")
  parser.add_argument("inputs", nargs="+", metavar="INPUT",
                      help="a NIfTI file, a quoted glob, a folder of scans, a DICOM series "
                           "folder, or a BIDS dataset")
  parser.add_argument("--out", metavar="DIR",
                      help="output folder (default for a BIDS dataset: "
                           "<dataset>/derivatives/clade-jax)")
  parser.add_argument("--method", choices=tuple(cohort.METHOD_CONFIGS),
                      default=cohort.DEFAULT_METHOD,
                      help="the method trained on each scan (default %(default)s: the best "
                           "fidelity per minute measured; clade_plus and the others train "
                           "their configs as shipped, 10-40x longer on a CPU)")
  parser.add_argument("--budget", choices=("quick", "standard", "thorough"),
                      default="standard",
                      help="time spent per scan; costs and fidelity below (default "
                           "%(default)s)")
  parser.add_argument("--slice-thickness", type=_positive, metavar="MM",
                      help="the acquired slice thickness in mm (default: from the DICOM "
                           "header or the scan's JSON sidecar, else the slice spacing); "
                           "free: it only changes what the method is taught")
  parser.add_argument("--slice-profile", choices=("gaussian", "rect", "estimate"),
                      help="the slice profile's shape: estimate fits shape and thickness to "
                           "the scan itself (a few seconds). Default: rect when the "
                           "thickness comes from metadata, else "
                           f"{cohort.UNKNOWN_PROFILE}")
  parser.add_argument("--device", choices=("auto", "cpu", "gpu"), default="auto",
                      help="where JAX runs: auto takes a GPU when one is visible (install "
                           "clade-jax[cuda]), else the CPU; a GPU is ~10x faster per scan")
  parser.add_argument("--shard", type=_shard, metavar="I/N",
                      help="process only every N-th scan starting at I (0-based), e.g. "
                           "--shard $SLURM_ARRAY_TASK_ID/$SLURM_ARRAY_TASK_COUNT; each shard "
                           "writes summary-shard-I-of-N.csv")
  parser.add_argument("--shared-model", action="store_true",
                      help="train one model on all the scans (the paper's setting) and "
                           "apply it to each, instead of one model per scan")
  parser.add_argument("--set", dest="overrides", action="append", type=_override,
                      default=[], metavar="FIELD=VALUE",
                      help="override any config field of the method, e.g. --set "
                           "train.num_steps=300 (repeatable)")
  parser.add_argument("--no-report", dest="report", action="store_false",
                      help="do not write the HTML report")
  parser.add_argument("--no-progress", dest="progress", action="store_false",
                      help="no progress bars")
  args = parser.parse_args(argv)
  if args.out is None:
    from clade_jax import scans  # pylint: disable=g-import-not-at-top
    args.out = scans.default_out(args.inputs)
    if args.out is None:
      parser.error("--out DIR is required (it is optional only for one BIDS dataset)")
  return args


def _select_device(device: str) -> None:
  """Sets JAX's platform before JAX is imported."""
  if device == "cpu":
    os.environ["JAX_PLATFORMS"] = "cpu"
  elif device == "gpu":
    os.environ["JAX_PLATFORMS"] = "cuda"


def main(argv=None) -> int:
  args = parse_args(argv)
  _select_device(args.device)
  if not args.progress:
    os.environ["TQDM_DISABLE"] = "1"  # Bars of code that takes no progress flag.
  from absl import logging  # pylint: disable=g-import-not-at-top
  logging.set_verbosity(logging.WARNING)  # Orbax logs every file it writes at INFO.
  from clade_jax import scans  # pylint: disable=g-import-not-at-top
  from clade_jax import compilation_cache  # pylint: disable=g-import-not-at-top
  options = cohort.Options(method=args.method, budget=args.budget,
                           slice_thickness=args.slice_thickness,
                           slice_profile=args.slice_profile,
                           overrides=tuple(args.overrides), report=args.report,
                           progress=args.progress)
  try:
    found = scans.find(args.inputs, args.out)
    cohort.check(options)  # A bad --budget or --set fails now, before any scan is read.
  except (scans.InputError, cohort.SetupError) as e:
    print(f"clade-jax sr: error: {' '.join(str(e).split())}", file=sys.stderr)
    return 2
  summary = "summary.csv"
  if args.shard:
    index, count = args.shard
    found = scans.shard(found, index, count)
    summary = f"summary-shard-{index}-of-{count}.csv"
  if not found:
    print("clade-jax sr: this shard has no scans")
    return 0
  import jax  # pylint: disable=g-import-not-at-top
  try:
    device = jax.devices()[0]
  except (RuntimeError, AssertionError) as e:  # --device gpu, no GPU (or no jax[cuda]).
    why = " ".join(str(e).split())[:200]
    print(f"clade-jax sr: error: --device {args.device}: JAX finds no such device"
          f"{f' ({why})' if why else ''}; install clade-jax[cuda] on a GPU machine, or use "
          "--device cpu", file=sys.stderr)
    return 2
  compilation_cache.enable(None)
  os.makedirs(args.out, exist_ok=True)
  datasets = [i for i in args.inputs if os.path.isdir(i) and scans.is_bids_dataset(i)]
  if datasets:
    scans.write_dataset_description(args.out, datasets)
  print(f"{len(found)} scan(s) -> {args.out} ({args.method}, {args.budget} budget, on "
        f"{device.platform.upper()}"
        f"{'' if device.device_kind == device.platform else ': ' + device.device_kind})")
  run = cohort.run_shared if args.shared_model else cohort.run
  try:
    rows = run(found, args.out, options, summary_name=summary, on_row=_say)
  except KeyboardInterrupt:
    print("interrupted: re-run the same command to resume", file=sys.stderr)
    return 130
  failed = [r for r in rows if r.status == "failed"]
  done = sum(r.status in ("done", "skipped") for r in rows)
  print(f"{done} of {len(rows)} scan(s) done, {len(failed)} failed; summary: "
        f"{os.path.join(args.out, summary)}")
  return 1 if failed else 0


def _say(row: cohort.Row, index: int, count: int) -> None:
  from tqdm.auto import tqdm  # pylint: disable=g-import-not-at-top
  head = f"[{index + 1}/{count}] {row.name}:"
  if row.status == "failed":
    tqdm.write(f"{head} FAILED: {row.reason}", file=sys.stderr)
  elif row.status == "skipped":
    tqdm.write(f"{head} done in an earlier run ({row.output})")
  else:
    tqdm.write(f"{head} wrote {row.output} in {row.seconds:.0f} s (train "
               f"{row.train_seconds:.0f} s); slice profile: {row.profile_source}")
