"""Throughput of the training data pipeline alone, against what the train step consumes.

    python benchmarks/loader.py                         # demo volume, batch 32, mri.py's threads
    python benchmarks/loader.py --threads 1,2,4 --prefetch 8 --batches 200
    python benchmarks/loader.py --root DIR              # your own training volumes

Builds the patch source exactly as clade_jax.train.build_data does (configs/mri.py
settings, `--root` volumes; by default the demo volume, written on first use), then
iterates `make_dataset(...).to_iter_dataset(grain.ReadOptions(num_threads,
prefetch_buffer_size))` as train_and_evaluate does and reports patch pairs per second
after `--skip` warm-up batches. Compare with the train step's patches/s from
benchmarks/models.py (benchmarks/RESULTS.md): the loader must be faster, or it starves
the step.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import grain  # noqa: E402
import numpy as np  # noqa: E402

from clade_jax import train  # noqa: E402
from clade_jax.data import patches as patches_lib  # noqa: E402
from configs import mri  # noqa: E402


def parse_args(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("--root", default="demo_data/lr",
                      help="training volumes (default: the demo volume, written if missing)")
  parser.add_argument("--batch-size", type=int, default=32)
  parser.add_argument("--threads", default=None,
                      help="comma-separated num_threads values (default: mri.py's)")
  parser.add_argument("--prefetch", type=int, default=None,
                      help="prefetch_buffer_size (default: mri.py's)")
  parser.add_argument("--batches", type=int, default=100, help="timed batches per setting")
  parser.add_argument("--skip", type=int, default=5, help="untimed first batches")
  return parser.parse_args(argv)


def main(argv=None):
  args = parse_args(argv)
  config = mri.get_config()
  config.data.root = args.root
  config.data.make_demo = args.root == "demo_data/lr"
  start = time.perf_counter()
  volumes, source = train.build_data(config)
  print(f"{len(volumes)} volume(s) from {args.root}: {len(source)} patch pairs per epoch, "
        f"{config.data.patch_size}x{config.data.patch_size} patches; prepared in "
        f"{time.perf_counter() - start:.1f} s; load average "
        f"{' '.join(f'{x:.2f}' for x in os.getloadavg())}, {os.cpu_count()} CPUs")
  threads = ([int(t) for t in args.threads.split(",")] if args.threads
             else [config.data.num_threads])
  prefetch = config.data.prefetch if args.prefetch is None else args.prefetch
  dataset = patches_lib.make_dataset(source, args.batch_size, seed=config.seed)
  print(f"\n{'num_threads':>11} {'prefetch':>8} {'batches/s':>10} {'patch pairs/s':>14}")
  for n in threads:
    iterator = iter(dataset.to_iter_dataset(grain.ReadOptions(
        num_threads=n, prefetch_buffer_size=prefetch)))
    for _ in range(args.skip):
      next(iterator)
    start = time.perf_counter()
    for _ in range(args.batches):
      batch = next(iterator)
    seconds = time.perf_counter() - start
    assert batch["x"].shape == (args.batch_size, config.data.patch_size,
                                config.data.patch_size, 1), batch["x"].shape
    assert np.isfinite(batch["x"]).all()
    print(f"{n:>11} {prefetch:>8} {args.batches / seconds:>10.1f} "
          f"{args.batches * args.batch_size / seconds:>14.0f}")


if __name__ == "__main__":
  main()
