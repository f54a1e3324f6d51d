"""Generator inference and the full train step: JAX against PyTorch, in one process.

    GLIBC_TUNABLES=glibc.malloc.hugetlb=1 python benchmarks/models.py   # ~8 min, 2 cores
    python benchmarks/models.py                      # the same without huge pages
    python benchmarks/models.py --only generator --gen-batch-sizes 64,256
    python benchmarks/models.py --only train --train-batch-sizes 32
    python benchmarks/models.py --conv-impl xla      # XLA's native convolutions
    python benchmarks/models.py --check              # the frameworks compute the same thing
    python benchmarks/models.py --only bf16          # bfloat16 generator vs float32
    python benchmarks/models.py --only bf16 --workdir runs/demo   # ... a trained one
    XLA_FLAGS=--xla_cpu_... python benchmarks/models.py   # try XLA:CPU flags

Paper sizes: generator with 64 features and 6 residual blocks, PatchGAN with 64
features and 3 layers, 32 x 32 single-channel patches. The JAX side is the project's
own code (clade_jax.clade.create_models / init_state / train_step, jitted with the
state donated, as train_and_evaluate runs it); the PyTorch side is
benchmarks/torch_reference.py (eager, channels-last, oneDNN). Inputs are random
patches already in memory: the data pipeline is timed on its own by
benchmarks/loader.py.

GLIBC_TUNABLES=glibc.malloc.hugetlb=1 makes glibc's malloc back large blocks with
transparent huge pages. Without it, a JAX train step at batch 64 page-faults in its
fresh temporaries again every step (~670k minor faults, 16% of the step in the kernel;
6% with it). PyTorch in the same process gets the same setting. It must be set before
the process starts.

Timing: after `--warmup` untimed calls, the two frameworks alternate, one timed sample
each, `--repeats` times; a sample runs enough calls to last `--min-time` seconds. The
table gives the median sample. Alternating keeps slow drifts of a shared machine's load
out of the JAX/PyTorch ratio, which is the number to compare across runs.

GFLOP/s use one FLOP count for both frameworks: XLA's cost analysis of the model
compiled with XLA's native convolutions (conv_impl='xla'), which counts the useful
multiply-adds only (not im2col's padding taps), so it is the same work for everyone.
"""

from __future__ import annotations

import argparse
import functools
import os
import platform
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

from clade_jax import train  # noqa: E402
from clade_jax.methods import clade  # noqa: E402
from configs import mri  # noqa: E402


def parse_args(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("--only", choices=("generator", "train", "peak", "bf16", "check"),
                      help="run one part (default: peak, generator, train)")
  parser.add_argument("--check", action="store_true", help="same as --only check")
  parser.add_argument("--conv-impl", default="auto",
                      choices=("auto", "xla", "im2col", "winograd"))
  parser.add_argument("--dtype", default="float32", choices=("float32", "bfloat16"),
                      help="JAX activations' dtype (model.dtype); PyTorch stays float32")
  parser.add_argument("--features", type=int, default=64)
  parser.add_argument("--blocks", type=int, default=6)
  parser.add_argument("--disc-features", type=int, default=64)
  parser.add_argument("--patch", type=int, default=32)
  parser.add_argument("--gen-batch-sizes", default="64",
                      help="patches per generator call (SRR uses 256)")
  parser.add_argument("--train-batch-sizes", default="8,32,64")
  parser.add_argument("--repeats", type=int, default=5)
  parser.add_argument("--warmup", type=int, default=1, help="untimed calls (the first compiles)")
  parser.add_argument("--min-time", type=float, default=0.5,
                      help="seconds per timed sample (calls are repeated to fill it)")
  parser.add_argument("--no-torch", dest="torch", action="store_false")
  parser.add_argument("--bf16-batch", type=int, default=64)
  parser.add_argument("--workdir", help="--only bf16: use this training run's G_X and data")
  return parser.parse_args(argv)


def host_summary() -> str:
  name = platform.processor() or "unknown CPU"
  try:
    with open("/proc/cpuinfo") as f:
      name = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
  except (OSError, StopIteration):
    pass
  return f"{name}, {os.cpu_count()} CPUs"


def load() -> str:
  return " ".join(f"{x:.2f}" for x in os.getloadavg())


def sample(fn, min_time: float) -> tuple[float, int]:
  """(seconds per call, calls) of `fn`, repeated until `min_time` seconds have passed."""
  calls, start = 0, time.perf_counter()
  while True:
    fn()
    calls += 1
    elapsed = time.perf_counter() - start
    if elapsed >= min_time:
      return elapsed / calls, calls


def race(contenders: dict, *, repeats: int, warmup: int, min_time: float) -> dict:
  """Median seconds per call of each zero-argument function, timed alternately."""
  for fn in contenders.values():
    for _ in range(warmup):
      fn()
  times = {name: [] for name in contenders}
  for _ in range(repeats):
    for name, fn in contenders.items():
      times[name].append(sample(fn, min_time)[0])
  return {name: float(np.median(t)) for name, t in times.items()}


def flops_of(fn, *args, compile=True) -> float:
  """XLA's FLOP count of fn(*args): of the optimised program, or (compile=False, for
  programs too slow to compile twice) of the lowered one, which agrees to 0.1%.

  `fn` applies the reference networks (`model_config(args, "xla", "float32")`): XLA's
  own convolutions count the useful FLOPs only, whatever the formulation timed.
  """
  lowered = jax.jit(fn).lower(*args)
  # XLA:GPU's optimised programs hide convolutions in cuDNN calls it does not count.
  compile = compile and jax.default_backend() == "cpu"
  cost = lowered.compile().cost_analysis() if compile else lowered.cost_analysis()
  cost = cost[0] if isinstance(cost, (list, tuple)) else cost
  # Not every backend counts (XLA:GPU's lowered programs report none): NaN, not a crash.
  return float(cost["flops"]) if cost and cost.get("flops") else float("nan")


def random_patches(batch, patch, seed=0):
  rng = np.random.default_rng(seed)
  return rng.uniform(-1, 1, (batch, patch, patch, 1)).astype(np.float32)


def model_config(args, conv_impl=None, dtype=None):
  config = mri.get_config()
  config.model.features, config.model.num_blocks = args.features, args.blocks
  config.model.disc_features = args.disc_features
  config.model.conv_impl = conv_impl or args.conv_impl
  config.model.dtype = dtype or args.dtype
  config.data.patch_size = args.patch
  return config


# ----------------------------------------------------------------------------- peak


def matmul_peak(args, n=2048) -> dict:
  """GFLOP/s of an n x n float32 matmul in JAX, numpy and (if present) PyTorch."""
  a = np.random.default_rng(0).standard_normal((n, n), np.float32)
  b = np.random.default_rng(1).standard_normal((n, n), np.float32)
  ja, jb = jnp.asarray(a), jnp.asarray(b)
  mm = jax.jit(jnp.matmul)
  contenders = {"jax": lambda: mm(ja, jb).block_until_ready(), "numpy": lambda: a @ b}
  if args.torch:
    import torch  # pylint: disable=g-import-not-at-top
    ta, tb = torch.from_numpy(a), torch.from_numpy(b)
    contenders["pytorch"] = lambda: torch.mm(ta, tb)
  seconds = race(contenders, repeats=args.repeats, warmup=args.warmup, min_time=args.min_time)
  return {k: 2 * n**3 / s / 1e9 for k, s in seconds.items()}


# ------------------------------------------------------------------------ generator


def generator_rows(args, peak: float | None):
  config = model_config(args)
  generator, _ = clade.create_models(config.model)
  reference, _ = clade.create_models(model_config(args, "xla", "float32").model)
  x1 = jnp.zeros((1, args.patch, args.patch, 1))
  params = jax.jit(generator.init)(train.init_key(0), x1)["params"]
  apply = jax.jit(lambda p, x: generator.apply({"params": p}, x))
  if args.torch:
    import torch  # pylint: disable=g-import-not-at-top
    import torch_reference as ref  # pylint: disable=g-import-not-at-top
    torch_g = ref.channels_last(ref.ResnetGenerator(args.features, args.blocks))
    ref.port_generator_params(torch_g, params)
    torch_g.eval()
  rows = []
  for batch in (int(b) for b in args.gen_batch_sizes.split(",")):
    x_np = random_patches(batch, args.patch)
    x = jnp.asarray(x_np)
    flops = flops_of(lambda p, x: reference.apply({"params": p}, x), params, x)
    contenders = {"jax": lambda x=x: apply(params, x).block_until_ready()}
    if args.torch:
      xt = ref.from_nhwc(x_np)

      def torch_forward(xt=xt):
        with torch.inference_mode():
          torch_g(xt)

      contenders["pytorch"] = torch_forward
    seconds = race(contenders, repeats=args.repeats, warmup=args.warmup, min_time=args.min_time)
    rows.append(_row(f"generator forward, batch {batch}", batch, seconds, flops, peak))
  return flops / batch, rows


# --------------------------------------------------------------------------- train


def train_rows(args, peak: float | None):
  config = model_config(args)
  generator, discriminator = clade.create_models(config.model)
  optimizer = clade.make_optimizer(config.train)
  step_kwargs = dict(optimizer=optimizer, loss_config=config.loss)
  step = jax.jit(functools.partial(clade.train_step, generator=generator,
                                   discriminator=discriminator, **step_kwargs),
                 donate_argnums=0)
  reference_g, reference_d = clade.create_models(model_config(args, "xla", "float32").model)
  reference_step = functools.partial(clade.train_step, generator=reference_g,
                                     discriminator=reference_d, **step_kwargs)
  rows = []
  for batch_size in (int(b) for b in args.train_batch_sizes.split(",")):
    batch_np = {"x": random_patches(batch_size, args.patch, 1),
                "y": random_patches(batch_size, args.patch, 2)}
    batch = jax.device_put(batch_np)
    state = jax.jit(lambda rng: clade.init_state(config, rng))(train.init_key(0))
    flops = flops_of(reference_step, state, batch, compile=False)
    holder = {"state": state}

    def jax_step(batch=batch):
      # The state is donated: each step consumes the previous one. The metrics stay
      # on the device, as in train_and_evaluate between log steps.
      holder["state"], _ = step(holder["state"], batch)
      jax.block_until_ready(holder["state"])

    contenders = {"jax": jax_step}
    if args.torch:
      import torch_reference as ref  # pylint: disable=g-import-not-at-top
      model = ref.channels_last(ref.CycleGAN(args.features, args.blocks, args.disc_features))
      torch_step = ref.make_train_step(model, config.train.learning_rate,
                                       (config.train.beta1, config.train.beta2))
      x, y = ref.from_nhwc(batch_np["x"]), ref.from_nhwc(batch_np["y"])
      contenders["pytorch"] = lambda x=x, y=y: torch_step(x, y)
    seconds = race(contenders, repeats=args.repeats, warmup=args.warmup, min_time=args.min_time)
    rows.append(_row(f"train step, batch {batch_size}", batch_size, seconds, flops, peak))
  return rows


def _row(name, patches, seconds, flops, peak):
  row = {"name": name}
  for k, s in seconds.items():
    row[k] = (patches / s, flops / s / 1e9)
  if "pytorch" in seconds:
    row["ratio"] = seconds["pytorch"] / seconds["jax"]
  row["flops"] = flops
  row["peak"] = peak
  return row


def print_rows(rows):
  header = (f"{'':32} {'JAX patches/s':>14} {'PyTorch':>9} {'JAX/PyTorch':>11} "
            f"{'JAX GFLOP/s':>11} {'PyTorch':>8} {'JAX % peak':>10}")
  print(header)
  print("-" * len(header))
  for r in rows:
    jp, jg = r["jax"]
    tp, tg = r.get("pytorch", (float("nan"), float("nan")))
    pct = f"{100 * jg / r['peak']:.0f}%" if r["peak"] else "-"
    print(f"{r['name']:32} {jp:14.1f} {tp:9.1f} {r.get('ratio', float('nan')):11.2f} "
          f"{jg:11.1f} {tg:8.1f} {pct:>10}")


# ------------------------------------------------------------------- bf16, checks


def bf16_accuracy(args):
  """Generator output in bfloat16 compute against float32, same params and patches.

  With --workdir, the run's trained G_X on training patches of its own data; otherwise
  a random-init paper-sized generator on uniform random patches.
  """
  if args.workdir:
    from clade_jax import inference  # pylint: disable=g-import-not-at-top
    from clade_jax.data import patches as patches_lib  # pylint: disable=g-import-not-at-top
    all_params, config, step = inference.load_params(args.workdir)
    params = all_params["G_X"]
    config.model.conv_impl = args.conv_impl
    _, source = train.build_data(config)
    x = jnp.asarray(patches_lib.make_dataset(source, args.bf16_batch, seed=1)[0]["x"])
    what = (f"trained G_X of {args.workdir} (step {step}), {args.bf16_batch} training "
            f"patches")
  else:
    config = model_config(args)
    x = jnp.asarray(random_patches(args.bf16_batch, args.patch, 3))
    params = None
    what = f"random-init generator, {args.bf16_batch} uniform random patches"
  out = {}
  for dtype in ("float32", "bfloat16"):
    config.model.dtype = dtype
    generator, _ = clade.create_models(config.model)
    if params is None:
      params = jax.jit(generator.init)(train.init_key(0), x[:1])["params"]
    out[dtype] = np.asarray(jax.jit(generator.apply)({"params": params}, x))
  diff = np.abs(out["bfloat16"] - out["float32"])
  print(f"bfloat16 vs float32 generator output ({what}; conv_impl="
        f"{config.model.get('conv_impl', 'auto')}; outputs in [-1, 1]): max |diff| "
        f"{diff.max():.2e}, mean |diff| {diff.mean():.2e}; float32 output std "
        f"{out['float32'].std():.3f}")


def check(args):
  """Both frameworks, same params and patches: generator outputs and step losses."""
  import torch  # pylint: disable=g-import-not-at-top
  import torch_reference as ref  # pylint: disable=g-import-not-at-top

  config = model_config(args)
  state = jax.jit(lambda rng: clade.init_state(config, rng))(train.init_key(0))
  # Non-zero biases, so that a mis-ported bias would show.
  params = jax.tree.map(lambda p: p + 0.01 * np.random.default_rng(p.size).standard_normal(
      p.shape).astype(np.float32), state.params)
  batch = {"x": random_patches(4, args.patch, 1), "y": random_patches(4, args.patch, 2)}
  model = ref.CycleGAN(args.features, args.blocks, args.disc_features)
  for name in clade.NETWORKS:
    port = ref.port_generator_params if name.startswith("G") else ref.port_discriminator_params
    port(getattr(model, name), params[name])
  model = ref.channels_last(model)
  x, y = ref.from_nhwc(batch["x"]), ref.from_nhwc(batch["y"])
  generator, discriminator = clade.create_models(config.model)
  fake_y = jax.jit(generator.apply)({"params": params["G_X"]}, batch["x"])
  with torch.no_grad():
    torch_fake_y = model.G_X(x).permute(0, 2, 3, 1).numpy()
    torch_total = float(model.losses(x, y))
  total, _ = jax.jit(functools.partial(
      clade.compute_losses, generator=generator, discriminator=discriminator,
      loss_config=config.loss))(params, batch)
  print(f"generator output: max |JAX - PyTorch| {np.abs(fake_y - torch_fake_y).max():.2e} "
        f"(outputs up to {np.abs(torch_fake_y).max():.2f})")
  print(f"total loss: JAX {float(total):.6f}, PyTorch {torch_total:.6f}, "
        f"relative difference {abs(float(total) - torch_total) / abs(torch_total):.1e}")


def main(argv=None):
  args = parse_args(argv)
  only = "check" if args.check else args.only
  print(f"host: {host_summary()}; load average {load()}; jax {jax.__version__} "
        f"({jax.default_backend()}); XLA_FLAGS={os.environ.get('XLA_FLAGS', '')!r}; "
        f"GLIBC_TUNABLES={os.environ.get('GLIBC_TUNABLES', '')!r}")
  if args.torch:
    import torch  # pylint: disable=g-import-not-at-top
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, "
          f"oneDNN {torch.backends.mkldnn.is_available()}")
  print(f"model: generator features={args.features} blocks={args.blocks}, discriminator "
        f"features={args.disc_features}; {args.patch}x{args.patch} patches; JAX conv_impl="
        f"{args.conv_impl}, dtype={args.dtype}; median of {args.repeats} samples of >= "
        f"{args.min_time} s after {args.warmup} warm-up calls\n")
  run(args, only)


def run(args, only):
  if only == "check":
    check(args)
    return
  if only == "bf16":
    bf16_accuracy(args)
    return
  peak = None
  if only in (None, "peak"):
    gflops = matmul_peak(args)
    peak = max(gflops.values())
    print("float32 2048^2 matmul GFLOP/s: " + ", ".join(f"{k} {v:.0f}" for k, v in gflops.items())
          + f"; peak = {peak:.0f}\n")
  rows = []
  if only in (None, "generator"):
    flops_per_patch, gen = generator_rows(args, peak)
    print(f"generator forward: {flops_per_patch / 1e9:.3f} GFLOP per patch (XLA cost analysis "
          "of the conv_impl='xla' program)")
    rows += gen
  if only in (None, "train"):
    rows += train_rows(args, peak)
  if rows:
    print()
    print_rows(rows)
  print(f"\nload average at the end: {load()}")


if __name__ == "__main__":
  main()
