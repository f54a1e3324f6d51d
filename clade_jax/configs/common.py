"""Config arguments shared by every config: `--config=configs/NAME.py:ARG[,ARG...]`.

`small` shrinks a run for a laptop check; `demo` trains on the bundled MNI152 demo
volumes (written on first use, no download). Variants that can derive from either the
MRI or the CT base also take `ct`. Arguments combine: `configs/cyclegan.py:ct,small`.

What an argument changes is a preset, `{dotted field: value}`, declared by the config
that takes it; `apply_presets` sets them, so every size is one table in one place.
"""

from typing import Any, Collection, Mapping

import ml_collections

SIZES = ("small", "demo")

# The run of every `small` preset: a laptop check of a few minutes.
SMALL_RUN = {
    "train.batch_size": 8,
    "train.num_steps": 200,
    "train.log_every": 10,
    "train.sample_every": 100,
    "ckpt.every": 100,
}

# Where every `demo` preset points the data: the bundled MNI152 demo volume.
DEMO_DATA = {
    "data.root": "demo_data/lr",
    "data.make_demo": True,  # Write the demo volumes if they are missing.
    "data.num_threads": 2,
}


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


def apply_presets(config: ml_collections.ConfigDict,
                  presets: Mapping[str, Mapping[str, Any]], parts: Collection[str]) -> None:
  """Sets the fields of each preset named in `parts`, in the order of `presets`.

  Args:
    config: the config, changed in place.
    presets: {argument: {dotted field: value}}; a later preset wins where two named
      ones set the same field.
    parts: the arguments given (`parse_arg`).

  Raises:
    KeyError: a preset names a field the config does not have (a typo in the table).
  """
  for name, fields in presets.items():
    if name not in parts:
      continue
    for dotted, value in fields.items():
      *groups, key = dotted.split(".")
      node = config
      for group in groups:
        node = node[group] if group in node else {}
      if key not in node:
        raise KeyError(f"preset {name!r} sets {dotted}, which the config does not have")
      node[key] = value
