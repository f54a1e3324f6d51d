"""Re-run start-up of a training command: source trees (or flag sets) compared, interleaved.

    python benchmarks/rerun_startup.py --variant new=. --variant old=/path/to/older/clone \
        --reruns 6

Each variant is NAME=TREE[,--flag=value...]: a source tree (a clone or `git worktree`
at another commit) and extra `train.py` flags. Each tree gets its own `--jit_cache`
(variants on one tree share it), one first run on an empty cache, then `--reruns` re-runs
with fresh workdirs, in an order rotated every round so that a drift in the machine's
load falls on every variant alike. The figure is `startup_seconds` (metrics.jsonl: from
the start of `train.py`, imports included, to the end of the first step); the wall time
of the process and the load average before each run are printed beside it. Wall time on
a shared machine is noise: read the medians of one run of this script, side by side.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

COMMAND = ("train.py", "--config=configs/demo.py", "--config.train.num_steps=1")


def parse_variant(text: str) -> tuple[str, str, list[str]]:
  name, _, rest = text.partition("=")
  tree, *flags = rest.split(",")
  if not name or not os.path.isfile(os.path.join(tree, "train.py")):
    raise argparse.ArgumentTypeError(f"{text!r}: want NAME=TREE[,--flag=value...] with "
                                     "TREE/train.py")
  return name, os.path.abspath(tree), flags


def run_once(tree: str, flags: list[str], workdir: str, cache: str) -> tuple[float, float]:
  """(startup_seconds, wall seconds) of one run."""
  shutil.rmtree(workdir, ignore_errors=True)
  began = time.perf_counter()
  subprocess.run([sys.executable, *COMMAND, f"--workdir={workdir}", f"--jit_cache={cache}",
                  *flags], cwd=tree, check=True, stdout=subprocess.DEVNULL,
                 stderr=subprocess.DEVNULL)
  wall = time.perf_counter() - began
  with open(os.path.join(workdir, "metrics.jsonl")) as f:
    startup = next(json.loads(line)["startup_seconds"] for line in f
                   if "startup_seconds" in line)
  return startup, wall


def main():
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("--variant", type=parse_variant, action="append", required=True,
                      help="NAME=TREE[,--flag=value...]; give two or more")
  parser.add_argument("--reruns", type=int, default=6)
  args = parser.parse_args()
  scratch = tempfile.mkdtemp(prefix="rerun_startup_")
  caches = {tree: os.path.join(scratch, f"cache{i}")
            for i, tree in enumerate(dict.fromkeys(t for _, t, _ in args.variant))}
  results = {name: [] for name, _, _ in args.variant}
  print(" ".join(COMMAND), "--workdir=... --jit_cache=...", flush=True)

  def measure(variant, round_, first=False):
    name, tree, flags = variant
    load = os.getloadavg()[0]
    startup, wall = run_once(tree, flags, os.path.join(scratch, f"{name}_{round_}"),
                             caches[tree])
    if not first:
      results[name].append((startup, wall, load))
    print(f"{time.strftime('%H:%M:%S')} {name:10s} {'first' if first else 're-run':6s} "
          f"startup {startup:6.2f} s  wall {wall:6.2f} s  load {load:.2f}", flush=True)

  seen = set()
  for variant in args.variant:  # Fills each tree's cache once.
    if variant[1] not in seen:
      seen.add(variant[1])
      measure(variant, 0, first=True)
  for round_ in range(1, args.reruns + 1):
    shift = round_ % len(args.variant)
    for variant in args.variant[shift:] + args.variant[:shift]:
      measure(variant, round_)
  print("\n| variant | re-runs (startup_seconds, in run order) | median | wall median |")
  print("|---|---|---:|---:|")
  for name, rows in results.items():
    print(f"| {name} | {', '.join(f'{s:.1f}' for s, _, _ in rows)} s | "
          f"**{statistics.median(s for s, _, _ in rows):.1f} s** | "
          f"{statistics.median(w for _, w, _ in rows):.1f} s |")
  loads = [load for rows in results.values() for _, _, load in rows]
  print(f"\nload average (1 min) before the re-runs: median {statistics.median(loads):.2f}, "
        f"{min(loads):.2f}-{max(loads):.2f}; {os.cpu_count()} CPUs")
  shutil.rmtree(scratch, ignore_errors=True)


if __name__ == "__main__":
  main()
