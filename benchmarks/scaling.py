"""Train-step throughput on 1, 2 and 4 devices of one process and on 2 processes.

    python benchmarks/scaling.py                       # CLADE, configs/mri.py:small
    python benchmarks/scaling.py --config configs/glade.py:small --steps 30
    python benchmarks/scaling.py --settings 1x1,2x2    # processes x devices each

Each setting is a fresh set of processes on fake CPU devices
(`--xla_force_host_platform_device_count`); two processes talk over localhost with
JAX's gloo CPU collectives. Every setting runs the driver's pieces exactly as
`clade_jax.train` does (the 'data' mesh over all devices, this process's block of
every global batch from grain, `jax.make_array_from_process_local_data`, the jitted
step) on the same global batch and seed, and reports steps and patch pairs per second
after `--warmup` untimed steps. The correctness check: the losses of the first
steps agree across the settings to float rounding (printed: how many steps agree to
1e-5 with the first setting; adversarial training amplifies the rounding differences
of a gradient summed in another order, so the runs drift apart later). Fake devices share the
machine's cores, so on a CPU this measures the overhead of sharding and of the
cross-process collectives, not a speed-up. The data are synthetic phantom volumes
unless `--root` names real ones.
"""

from __future__ import annotations

import argparse
import functools
import importlib
import json
import os
import subprocess
import sys
import tempfile
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

DEFAULT_SETTINGS = "1x1,1x2,1x4,2x1,2x2"
SHOWN_LOSSES = ("loss/generator", "loss/cycle", "loss/D_Y")
RTOL = 1e-5


def parse_args(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("--config", default="configs/mri.py:small",
                      help="config file[:argument], as train.py's --config")
  parser.add_argument("--root", help="training volumes (default: two synthetic phantoms)")
  parser.add_argument("--settings", default=DEFAULT_SETTINGS,
                      help="comma-separated PROCESSESxDEVICES (devices per process)")
  parser.add_argument("--batch-size", type=int, default=8, help="global batch")
  parser.add_argument("--steps", type=int, default=20, help="timed steps per setting")
  parser.add_argument("--warmup", type=int, default=3, help="untimed first steps (compile)")
  parser.add_argument("--conv-impl", default="xla",
                      help="model.conv_impl (xla: the fastest to compile on CPU)")
  # Worker processes only.
  parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
  parser.add_argument("--coordinator", help=argparse.SUPPRESS)
  parser.add_argument("--num-processes", type=int, default=1, help=argparse.SUPPRESS)
  parser.add_argument("--process-id", type=int, default=0, help=argparse.SUPPRESS)
  return parser.parse_args(argv)


def load_config(spec: str):
  """`configs/NAME.py[:ARG]` -> the ConfigDict, as config_flags would give it."""
  path, _, arg = spec.partition(":")
  module = importlib.import_module(os.path.splitext(os.path.normpath(path))[0]
                                   .replace(os.sep, "."))
  return module.get_config(arg or None)


def worker(args) -> None:
  """One process of one setting: times the train step, process 0 prints a JSON line."""
  from clade_jax import distributed
  if args.num_processes > 1:
    distributed.initialize(args.coordinator, args.num_processes, args.process_id)
  import grain
  import jax
  from jax.sharding import NamedSharding
  from jax.sharding import PartitionSpec as P

  from clade_jax import methods, train
  from clade_jax.data import patches as patches_lib

  config = load_config(args.config)
  config.data.root = args.root
  config.data.num_threads = 1
  config.model.conv_impl = args.conv_impl
  config.train.batch_size = args.batch_size
  method = methods.of(config)
  mesh = jax.make_mesh((jax.device_count(),), ("data",),
                       axis_types=(jax.sharding.AxisType.Auto,))
  replicated, batch_sharding = NamedSharding(mesh, P()), NamedSharding(mesh, P("data"))
  _, source = train.build_data(config, method)
  block, blocks = distributed.batch_shard(batch_sharding, args.batch_size)
  dataset = patches_lib.make_dataset(source, args.batch_size // blocks, seed=config.seed,
                                     shard_index=block, shard_count=blocks)
  iterator = iter(dataset.to_iter_dataset(grain.ReadOptions(
      num_threads=config.data.num_threads, prefetch_buffer_size=config.data.prefetch)))
  to_global = lambda batch: {k: jax.make_array_from_process_local_data(batch_sharding, v)
                             for k, v in batch.items()}
  step_fn = jax.jit(method.make_train_step(config), in_shardings=(replicated, batch_sharding),
                    out_shardings=(replicated, replicated), donate_argnums=0)
  state = jax.jit(functools.partial(method.init_state, config),
                  out_shardings=replicated)(train.init_key(config.seed))
  history = []  # Device arrays, fetched after the timing.
  start = time.perf_counter()
  for _ in range(args.warmup):
    state, metrics = step_fn(state, to_global(next(iterator)))
    history.append(metrics)
  jax.block_until_ready(metrics)
  warm = time.perf_counter()
  for _ in range(args.steps):
    state, metrics = step_fn(state, to_global(next(iterator)))
    history.append(metrics)
  jax.block_until_ready(metrics)
  seconds = time.perf_counter() - warm
  if distributed.is_main():
    history = [{k: float(v) for k, v in jax.device_get(m).items() if k in SHOWN_LOSSES}
               for m in history]
    print(json.dumps({"processes": jax.process_count(), "devices": jax.device_count(),
                      "warmup_seconds": warm - start, "steps_per_second": args.steps / seconds,
                      "pairs_per_second": args.steps * args.batch_size / seconds,
                      "losses": history}))


def _free_port() -> int:
  import socket
  with socket.socket() as s:
    s.bind(("localhost", 0))
    return s.getsockname()[1]


def run_setting(args, processes: int, devices: int) -> dict:
  """Launches one setting's processes; process 0's JSON line."""
  env = dict(os.environ, JAX_PLATFORMS="cpu",
             XLA_FLAGS=f"--xla_force_host_platform_device_count={devices}")
  argv = [sys.executable, os.path.abspath(__file__), "--worker", "--config", args.config,
          "--root", args.root, "--batch-size", str(args.batch_size), "--steps",
          str(args.steps), "--warmup", str(args.warmup), "--conv-impl", args.conv_impl,
          "--num-processes", str(processes), "--coordinator", f"localhost:{_free_port()}"]
  launched = [subprocess.Popen([*argv, "--process-id", str(i)], cwd=REPO, env=env,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
              for i in range(processes)]
  outputs = [p.communicate() for p in launched]
  for p, (_, err) in zip(launched, outputs):
    if p.returncode:
      sys.exit(f"{processes}x{devices} failed:\n{err[-3000:]}")
  return json.loads(outputs[0][0].strip().splitlines()[-1])


def main(argv=None):
  args = parse_args(argv)
  if args.worker:
    return worker(args)
  settings = [tuple(map(int, s.lower().split("x"))) for s in args.settings.split(",")]
  with tempfile.TemporaryDirectory() as scratch:
    if args.root is None:
      from tests import phantoms
      for seed in range(2):
        phantoms.thick_slice_volume(os.path.join(scratch, f"phantom{seed}.nii.gz"),
                                    shape=(64, 64, 64), seed=seed)
      args.root = scratch
    print(f"{args.config}, global batch {args.batch_size}, {args.steps} timed steps after "
          f"{args.warmup}; load average {' '.join(f'{x:.2f}' for x in os.getloadavg())}, "
          f"{os.cpu_count()} CPUs")
    print(f"\n{'processes':>9} {'devices':>7} {'warm-up s':>9} {'steps/s':>8} "
          f"{'pairs/s':>8} {'step 1 loss':>11} {'same steps':>10}  last step's "
          f"{', '.join(SHOWN_LOSSES)}")
    reference = None
    for processes, devices in settings:
      r = run_setting(args, processes, devices)
      losses = r["losses"]
      reference = reference or losses
      last = "  ".join(f"{losses[-1][k]:.6f}" for k in SHOWN_LOSSES if k in losses[-1])
      print(f"{processes:>9} {r['devices']:>7} {r['warmup_seconds']:>9.1f} "
            f"{r['steps_per_second']:>8.2f} {r['pairs_per_second']:>8.1f} "
            f"{losses[0][SHOWN_LOSSES[0]]:>11.6f} {same_steps(losses, reference):>10}  {last}",
            flush=True)
    print(f"\nsame steps: the first steps whose losses agree with the first setting's to "
          f"rtol {RTOL:g}; after them rounding differences of the gradient sum grow, as "
          "adversarial training amplifies them.")


def same_steps(losses, reference) -> int:
  """How many leading steps agree with `reference` to RTOL in every shown loss."""
  count = 0
  for got, want in zip(losses, reference):
    if any(abs(got[k] - want[k]) > RTOL * abs(want[k]) for k in want):
      break
    count += 1
  return count


if __name__ == "__main__":
  main()
