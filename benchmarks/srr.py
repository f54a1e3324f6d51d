"""Speed and memory of sliding-window SRR on the demo volume (paper Tables 7/8 layout).

    python benchmarks/srr.py --slices 4                       # paper-sized G, random init
    python benchmarks/srr.py --features 16 --blocks 4         # demo-sized G
    python benchmarks/srr.py --workdir runs/demo --slices 0 --strides 12 --compare-modes

For strides 6, 8, 12, 16, 20 and full-slice mode it prints patches per slice, patches/s,
seconds per volume, compile seconds, XLA's peak memory of one jitted chunk (arguments +
temporaries + outputs: what the accelerator must hold) and the peak RSS of the process
while the row ran (sampled every 10 ms). With --slices N only the N central slices of the
low-resolution plane are timed and seconds per volume is extrapolated to every slice
(the output says so). Then the sliding-window overhead: extraction + scatter-add +
coverage normalisation alone (an identity generator) against the real generator at
stride 12. With --compare-modes, the difference between patch mode (at the run's
eval.stride) and full-slice mode on the timed slices: mean absolute difference and PSNR
in normalised units ([-1, 1], peak-to-peak 2), over all voxels and over the foreground.
"""

import argparse
import os
import platform
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import psutil  # noqa: E402

from clade_jax import inference  # noqa: E402
from clade_jax import srr  # noqa: E402
from clade_jax.methods import clade  # noqa: E402
from clade_jax.data import preprocess  # noqa: E402
from clade_jax.data import volume as volume_lib  # noqa: E402
from configs import mri  # noqa: E402

DEMO_INPUT = "demo_data/lr/mni152_t1_6mm_ap.nii.gz"


def parse_args(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("--input", default=DEMO_INPUT,
                      help="anisotropic NIfTI volume (default: the demo volume; "
                           "`python train.py --config=configs/demo.py` writes it)")
  parser.add_argument("--workdir", help="use this run's trained G_X and config instead of "
                      "a randomly initialised generator")
  parser.add_argument("--features", type=int, default=64, help="generator base channels "
                      "(paper: 64)")
  parser.add_argument("--blocks", type=int, default=6, help="residual blocks (paper: 6)")
  parser.add_argument("--strides", default="6,8,12,16,20")
  parser.add_argument("--no-full", dest="full", action="store_false",
                      help="skip the full-slice row")
  parser.add_argument("--slices", type=int, default=8,
                      help="time the N central slices and extrapolate (0: all)")
  parser.add_argument("--batch-size", type=int, default=256, help="patches per generator "
                      "call (default: the configs' eval.batch_size)")
  parser.add_argument("--slices-per-chunk", type=int, default=8)
  parser.add_argument("--overhead-stride", type=int, default=12)
  parser.add_argument("--compare-modes", action="store_true",
                      help="report the patch-vs-full difference on the timed slices")
  return parser.parse_args(argv)


class PeakRss:
  """Largest resident set size of this process while the block runs."""

  def __init__(self, interval=0.01):
    self.interval = interval
    self.peak = 0
    self._stop = threading.Event()
    self._process = psutil.Process()

  def _sample(self):
    while not self._stop.is_set():
      self.peak = max(self.peak, self._process.memory_info().rss)
      self._stop.wait(self.interval)

  def __enter__(self):
    self.peak = self._process.memory_info().rss
    self._thread = threading.Thread(target=self._sample, daemon=True)
    self._thread.start()
    return self

  def __exit__(self, *exc):
    self._stop.set()
    self._thread.join()


def load_model(args):
  """(config, G_X params, description)."""
  if args.workdir:
    params, config, step = inference.load_params(args.workdir)
    m = config.model
    return config, params["G_X"], (f"trained G_X of {args.workdir} (step {step}; "
                                   f"features={m.features}, blocks={m.num_blocks})")
  config = mri.get_config()
  config.model.features, config.model.num_blocks = args.features, args.blocks
  generator, _ = clade.create_models(config.model)
  p = config.data.patch_size
  shapes = jax.eval_shape(generator.init, jax.random.key(0),
                          jax.ShapeDtypeStruct((1, p, p, 1), jnp.float32))["params"]
  # Weights drawn in numpy (timing does not depend on them); flax's initialisers
  # would cost a compile.
  rng = np.random.default_rng(0)
  params = jax.tree.map(lambda s: rng.normal(0, 0.05, s.shape).astype(np.float32), shapes)
  n = sum(int(np.prod(s.shape)) for s in jax.tree.leaves(shapes))
  return config, params, (f"random-init G (features={args.features}, "
                          f"blocks={args.blocks}, {n / 1e6:.2f} M parameters)")


def patches_per_slice(shape, patch, stride):
  if stride is None:
    return None
  h, w = (max(s, patch) for s in shape)
  return len(srr.patch_starts(h, patch, stride)) * len(srr.patch_starts(w, patch, stride))


def time_row(apply_fn, params, slices, window: srr.Window):
  """(seconds, compile seconds, XLA bytes, peak RSS bytes, output) for one window."""
  start = time.perf_counter()
  # Exactly the static arguments `reconstruct_slices` passes (mesh included), so
  # that its jitted call finds the program compiled here.
  compiled = srr.reconstruct_chunk.lower(params, slices[:window.slices_per_chunk],
                                         apply_fn=apply_fn, window=window, mesh=None).compile()
  compile_s = time.perf_counter() - start
  mem = compiled.memory_analysis()
  xla_bytes = None
  if mem is not None:
    xla_bytes = (mem.argument_size_in_bytes + mem.output_size_in_bytes
                 + mem.temp_size_in_bytes - mem.alias_size_in_bytes)
  with PeakRss() as rss:
    start = time.perf_counter()
    # The jitted call below reuses the program compiled above.
    out = srr.reconstruct_slices(apply_fn, params, slices, window)
    seconds = time.perf_counter() - start
  return seconds, compile_s, xla_bytes, rss.peak, out


def psnr(a, b, peak_to_peak=2.0):
  mse = float(np.mean((a - b) ** 2))
  return float("inf") if mse == 0 else 10 * np.log10(peak_to_peak ** 2 / mse)


def cpu_name():
  try:
    with open("/proc/cpuinfo") as f:
      for line in f:
        if line.startswith("model name"):
          return line.split(":", 1)[1].strip()
  except OSError:
    pass
  return platform.processor() or "unknown CPU"


def main(argv=None):
  args = parse_args(argv)
  if not os.path.exists(args.input):
    sys.exit(f"error: {args.input}: no such file (run `python train.py "
             "--config=configs/demo.py --workdir=runs/demo` once to write the demo data)")
  config, params, model = load_model(args)
  patch = config.data.patch_size
  source = volume_lib.load_volume(args.input)
  prepared = preprocess.prepare_input(source.data, source.affine, config.data, name=args.input)
  stack = volume_lib.plane_slices(prepared.normalizer.forward(prepared.isotropic),
                                  prepared.lr_axis)
  total = len(stack)
  n = total if args.slices <= 0 else min(args.slices, total)
  first = (total - n) // 2
  slices = np.ascontiguousarray(stack[first:first + n])
  apply_fn = clade.generator_apply_fn(config.model)
  device = jax.devices()[0]

  def window(stride):
    """The sliding window at `stride`; whole slices for None."""
    return srr.Window(patch_size=patch, stride=stride or 1, batch_size=args.batch_size,
                      slices_per_chunk=min(args.slices_per_chunk, n),
                      mode="patch" if stride else "full", size_multiple=clade.SIZE_MULTIPLE)

  print(f"input: {args.input}, isotropic {prepared.isotropic.shape}, {total} slices of "
        f"{stack.shape[1]}x{stack.shape[2]} px in the low-resolution plane")
  print(f"model: {model}; patch {patch}, {args.batch_size} patches per generator call, "
        f"{args.slices_per_chunk} slices per jitted call")
  print(f"device: {device.platform} {device.device_kind} ({jax.device_count()} device(s)); "
        f"host: {cpu_name()}, {os.cpu_count()} CPUs; load average at start "
        f"{' '.join(f'{x:.2f}' for x in os.getloadavg())}")
  timed = "all slices" if n == total else (
      f"the {n} central slices; s/volume extrapolated x{total / n:.1f} to all {total}")
  print(f"timing {timed}; process RSS before the first row "
        f"{psutil.Process().memory_info().rss / 2**20:.0f} MB\n")

  rows = [int(x) for x in args.strides.split(",") if x] + ([None] if args.full else [])
  header = (f"{'stride':>8} {'patches/slice':>13} {'patches/s':>10} {'s/volume':>9} "
            f"{'compile s':>9} {'XLA peak MB':>11} {'peak RSS MB':>11}")
  print(header)
  print("-" * len(header))
  outputs, seconds_at = {}, {}
  for stride in rows:
    seconds, compile_s, xla_bytes, rss, out = time_row(apply_fn, params, slices,
                                                       window(stride))
    outputs[stride] = out
    seconds_at[stride] = seconds
    per_slice = patches_per_slice(slices.shape[1:], patch, stride)
    rate = f"{per_slice * n / seconds:10.1f}" if per_slice else f"{'-':>10}"
    label = str(stride) if stride else "full"
    xla = f"{xla_bytes / 2**20:11.1f}" if xla_bytes is not None else f"{'-':>11}"
    print(f"{label:>8} {per_slice or '-':>13} {rate} {seconds * total / n:9.1f} "
          f"{compile_s:9.1f} {xla} {rss / 2**20:11.0f}", flush=True)
  if device.platform != "cpu" and device.memory_stats():
    peak = device.memory_stats().get("peak_bytes_in_use", 0)
    print(f"device peak_bytes_in_use over the whole run: {peak / 2**20:.0f} MB")

  stride = args.overhead_stride
  identity = lambda p, x: x  # noqa: E731
  ident_s, *_ = time_row(identity, None, slices, window(stride))
  if stride in seconds_at:
    gen_s = seconds_at[stride]
  else:
    gen_s, *_ = time_row(apply_fn, params, slices, window(stride))
  print(f"\nsliding-window overhead at stride {stride} (extract + scatter-add + normalise, "
        f"identity generator): {1e3 * ident_s:.1f} ms vs {gen_s:.2f} s with the generator "
        f"({100 * ident_s / gen_s:.2f}%) for {n} slices")

  if args.compare_modes:
    stride = config.eval.stride
    if stride not in outputs:
      outputs[stride] = time_row(apply_fn, params, slices, window(stride))[-1]
    if None not in outputs:
      outputs[None] = time_row(apply_fn, params, slices, window(None))[-1]
    a, b = outputs[stride], outputs[None]
    foreground = slices > -1.0 + 2.0 * config.data.background_level
    diff = np.abs(a - b)
    print(f"\npatch (stride {stride}) vs full-slice mode on {n} slices, normalised units: "
          f"MAD {diff.mean():.4f}, max {diff.max():.3f}, PSNR {psnr(a, b):.1f} dB; "
          f"foreground ({foreground.mean():.0%} of voxels): MAD "
          f"{diff[foreground].mean():.4f}, PSNR {psnr(a[foreground], b[foreground]):.1f} dB")
  print(f"\nload average at end {' '.join(f'{x:.2f}' for x in os.getloadavg())}")


if __name__ == "__main__":
  main()
