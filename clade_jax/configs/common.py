"""Config arguments shared by every config: `--config=configs/NAME.py:ARG[,ARG...]`.

`small` shrinks a run for a laptop check; `demo` trains on the bundled MNI152 demo
volumes (written on first use, no download). Variants that can derive from either the
MRI or the CT base also take `ct`. Arguments combine: `configs/cyclegan.py:ct,small`.
"""

import ml_collections

SIZES = ("small", "demo")


def parse_arg(arg: str | None, extra: tuple[str, ...] = ()) -> set[str]:
  """The comma-separated config arguments, checked.

  Raises:
    ValueError: an unknown argument, or both sizes at once.
  """
  parts = {part.strip() for part in (arg or "").split(",") if part.strip()}
  allowed = (*SIZES, *extra)
  unknown = sorted(parts - set(allowed))
  if unknown:
    raise ValueError(f"unknown config argument {', '.join(unknown)}; use a comma-separated "
                     f"subset of {', '.join(allowed)}")
  if set(SIZES) <= parts:
    raise ValueError("config arguments 'small' and 'demo' exclude each other")
  return parts


def resize(config: ml_collections.ConfigDict, parts: set[str]) -> None:
  """Applies the size arguments in `parts` to `config` in place."""
  if "small" in parts:
    config.model.features = 16
    config.model.disc_features = 16
    config.train.batch_size = 8
    config.train.num_steps = 200
    config.train.log_every = 10
    config.train.sample_every = 100
    config.ckpt.every = 100
  if "demo" in parts:
    use_demo_data(config)
    # The 1 mm template the demo input was made from: the run ends scored against it.
    config.data.truth = "demo_data/truth/mni152_t1_1mm.nii.gz"
    config.model.features = 16
    config.model.num_blocks = 4
    config.model.disc_features = 16
    # 300 steps: im2col's train step compiles in 40 s, Winograd's (the CPU default) in
    # about 2 minutes, which only pays back after about 1500 steps (benchmarks/RESULTS.md).
    config.model.conv_impl = "im2col"
    config.train.batch_size = 8
    config.train.num_steps = 300
    config.train.log_every = 10
    config.train.sample_every = 100
    config.ckpt.every = 100


def use_demo_data(config: ml_collections.ConfigDict) -> None:
  """Points `config` at the bundled MNI152 demo volume (written on first use)."""
  config.data.root = "demo_data/lr"
  config.data.make_demo = True  # Write the demo volumes if they are missing.
  config.data.num_threads = 2
