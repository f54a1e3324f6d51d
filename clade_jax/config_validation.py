"""Config checks that run before any work starts, each failure one line naming the field.

Two moments need them:

* After flag parsing, `validate(config, reference)` checks the resolved config against
  the method's default config (`reference`): every field must exist there (an unknown
  one is named with the closest valid field), every numeric field must lie in its range
  and every enumerated field must be one of its values. `RANGES` and `ENUMS` hold the
  fields every method shares (clade_jax/configs/base.py); a method adds its own (its
  module's ``config_ranges`` and ``config_enums``). Fields a table names but a config
  lacks are skipped.
* During flag parsing, ml_collections' ``config_flags`` raises a bare AttributeError or
  KeyError for an override of a field that does not exist (``--config.train.batchsize=3``)
  before any of our code runs. `parse_flags` is a drop-in ``flags_parser`` for
  ``absl.app.run`` that turns that into ``error: unknown config field train.batchsize;
  did you mean train.batch_size?`` and exit status 2; `unknown_override_message` is the
  same translation for a CLI that parses flags itself.
"""

from __future__ import annotations

import dataclasses
import difflib
import numbers
import re
import sys
from typing import Any, Mapping, Sequence


class ConfigError(ValueError):
  """An invalid config; ``problems`` holds one line per problem, str() joins them."""

  def __init__(self, problems: str | Sequence[str]):
    self.problems = [problems] if isinstance(problems, str) else list(problems)
    super().__init__("; ".join(self.problems))


@dataclasses.dataclass(frozen=True)
class Range:
  """Allowed values of a numeric field.

  Attributes:
    lo: lower bound, None for none, or the dotted name of another field.
    hi: upper bound, likewise.
    lo_exclusive: the lower bound itself is not allowed.
    hi_exclusive: the upper bound itself is not allowed.
    size: how many values a sequence field holds; None: any number, or a scalar.
    why: said after the range when a value is out of it, where the bound needs a reason.
  """

  lo: float | str | None = None
  hi: float | str | None = None
  lo_exclusive: bool = False
  hi_exclusive: bool = False
  size: int | None = None  # A sequence field's number of values.
  why: str = ""


# The shared fields' ranges (clade_jax/configs/base.py: what the driver and inference
# read); each method checks its own with its `config_ranges`. A sequence value
# (data.percentiles) is checked element by element and must be strictly increasing.
RANGES: dict[str, Range] = {
    "seed": Range(0, 2**32 - 1),
    "data.thick_axis": Range(-1, 2),  # -1 detects it.
    "data.target_spacing": Range(0),  # 0 = the finest in-plane spacing.
    "data.patch_size": Range(8),
    "data.patches_per_slice": Range(1),
    "data.min_foreground": Range(0, 1),
    "data.background_level": Range(0, 1),
    "data.percentiles": Range(0, 100, size=2),
    "data.intensity_window": Range(size=2),  # In the scan's units (HU for CT).
    "data.num_threads": Range(1),
    "data.prefetch": Range(0),
    "data.volume_index": Range(-1),  # -1: the file must hold one volume.
    "data.slice_thickness": Range(0),  # 0 = the slice spacing.
    "train.batch_size": Range(1),
    "train.epochs": Range(1),
    "train.num_steps": Range(0),  # 0 = use epochs.
    "train.learning_rate": Range(0, lo_exclusive=True),
    "train.beta1": Range(0, 1, hi_exclusive=True),
    "train.beta2": Range(0, 1, hi_exclusive=True),
    "train.log_every": Range(1),
    "train.sample_every": Range(1),
    "ckpt.every": Range(1),
    "ckpt.keep": Range(1),
    "eval.batch_size": Range(1),
    "eval.consistency_regularisation": Range(0),
}

# The shared enumerated fields and their values; a method's are its `config_enums`.
ENUMS: dict[str, tuple[str, ...]] = {
    "data.lr_plane": ("auto", "sagittal", "coronal", "axial"),
    "data.complex": ("refuse", "magnitude"),
    # 'estimate': from the scan (`profile_estimation.resolve_config`, before training).
    "data.slice_profile": ("gaussian", "rect", "estimate"),
    "data.normalization": ("percentile", "window"),
    "eval.mode": ("patch", "full"),
    "eval.outside_window": ("restore", "clip"),
}

def dotted_fields(config: Any, prefix: str = "") -> dict[str, Any]:
  """The leaves of a nested config as {"train.batch_size": 32, ...}.

  Args:
    config: an ml_collections ConfigDict (or FrozenConfigDict), or a nested Mapping.
    prefix: prepended to every name (used by the recursion).

  Returns:
    Leaf values by dotted name; nested configs are descended into, not listed.
  """
  items = config.items() if hasattr(config, "items") else ()
  fields = {}
  for key, value in items:
    name = f"{prefix}{key}"
    if _is_node(value):
      fields.update(dotted_fields(value, prefix=f"{name}."))
    else:
      fields[name] = value
  return fields


def _is_node(value: Any) -> bool:
  return isinstance(value, Mapping) or type(value).__name__ in ("ConfigDict",
                                                                "FrozenConfigDict")


def closest_field_message(config: Any, dotted_name: str) -> str:
  """"unknown config field X; did you mean Y?" with Y the closest field of `config`.

  Args:
    config: the config (or reference config) whose fields are valid.
    dotted_name: the field that does not exist, e.g. "train.batchsize".

  Returns:
    The one-line message; without a suggestion when no field is close.
  """
  names = list(dotted_fields(config))
  match = difflib.get_close_matches(dotted_name, names, n=1, cutoff=0.6)
  if match:
    return f"unknown config field {dotted_name}; did you mean {match[0]}?"
  return f"unknown config field {dotted_name} (no similar field in the config)"


def _describe(spec: Range, values: Mapping[str, Any]) -> str:
  """A range in words, other fields' bounds resolved: '>= 1', 'in [0, 1)', ..."""

  def bound(b):
    return f"{b}={values[b]}" if isinstance(b, str) else f"{b:g}"

  if spec.hi is None:
    return f"{'>' if spec.lo_exclusive else '>='} {bound(spec.lo)}"
  if spec.lo is None:
    return f"{'<' if spec.hi_exclusive else '<='} {bound(spec.hi)}"
  return (f"in {'(' if spec.lo_exclusive else '['}{bound(spec.lo)}, {bound(spec.hi)}"
          f"{')' if spec.hi_exclusive else ']'}")


def _in_range(x: float, spec: Range, values: Mapping[str, Any]) -> bool | None:
  """Whether x lies in `spec`; None when a bound names a field that is missing."""
  lo = values.get(spec.lo) if isinstance(spec.lo, str) else spec.lo
  hi = values.get(spec.hi) if isinstance(spec.hi, str) else spec.hi
  if (isinstance(spec.lo, str) and lo is None) or (isinstance(spec.hi, str) and hi is None):
    return None
  if lo is not None and (x <= lo if spec.lo_exclusive else x < lo):
    return False
  if hi is not None and (x >= hi if spec.hi_exclusive else x > hi):
    return False
  return True


def _is_number(x: Any) -> bool:
  return isinstance(x, numbers.Real) and not isinstance(x, bool)


def _check_range(name: str, value: Any, spec: Range, reference_value: Any,
                 values: Mapping[str, Any]) -> str | None:
  """One problem line for a numeric field, or None when it is fine."""
  elements = list(value) if isinstance(value, (tuple, list)) else [value]
  if spec.size is not None and (not isinstance(value, (tuple, list))
                                or len(elements) != spec.size):
    return f"{name}={value!r} must be {spec.size} numbers"
  if not elements or not all(_is_number(x) for x in elements):
    return f"{name}={value!r} is not a number"
  if isinstance(reference_value, int) and not isinstance(reference_value, bool):
    if not all(float(x).is_integer() for x in elements):
      return f"{name}={value!r} must be an integer"
  for x in elements:
    if x != x:  # NaN compares False with every bound.
      return f"{name}={value!r} is not a number"
    if _in_range(x, spec, values) is False:
      return (f"{name}={value!r} is out of range: must be {_describe(spec, values)}"
              + (f" ({spec.why})" if spec.why else ""))
  if len(elements) > 1 and any(b <= a for a, b in zip(elements, elements[1:])):
    return f"{name}={value!r} must be strictly increasing"
  return None


def validate(config: Any, reference: Any = None, *,
             ranges: Mapping[str, Range] | None = None,
             enums: Mapping[str, Sequence[str]] | None = None) -> None:
  """Checks a resolved config before any work starts.

  Args:
    config: the config to run with (after command-line overrides).
    reference: the method's default config; its fields are the valid ones. None skips
      the unknown-field check (command-line overrides of unknown fields already fail
      in `parse_flags`).
    ranges: more numeric fields to check, on top of `RANGES` (a method's own fields:
      its module's optional ``config_ranges``).
    enums: more enumerated fields, on top of `ENUMS` (a method's ``config_enums``).

  Raises:
    ConfigError: one line per problem (in ``.problems``; str() joins them with '; '):
      unknown fields with the closest valid one, numbers out of `RANGES`, values not
      in `ENUMS`.
  """
  values = dotted_fields(config)
  known = values if reference is None else dotted_fields(reference)
  problems = []
  for name in values:
    if name not in known:
      problems.append(closest_field_message(reference, name))
  for name, spec in {**RANGES, **(ranges or {})}.items():
    if name in values:
      problem = _check_range(name, values[name], spec, known.get(name), values)
      if problem:
        problems.append(problem)
  for name, choices in {**ENUMS, **(enums or {})}.items():
    if name in values and values[name] not in choices:
      problems.append(f"{name}={values[name]!r} is not one of {', '.join(choices)}")
  if problems:
    raise ConfigError(problems)


# ml_collections' KeyError text for a missing key: "'batchsize'" then, when a key is
# close, 'Did you mean "batch_size" instead of "batchsize"?'. str() of the exception
# shows it repr-quoted, so quotes may arrive escaped.
_MISSING_KEY = re.compile(r"""^\W*'?\\?'?([^'"\\\s]+)\\?'""")
_DID_YOU_MEAN = re.compile(r'Did you mean "([^"]+)" instead of "([^"]+)"')


def parse_unknown_override(exc_text: str, argv: Sequence[str],
                           flag_name: str = "config") -> tuple[str, str | None] | None:
  """Finds the command-line override that ml_collections could not apply.

  Args:
    exc_text: str() of the AttributeError/KeyError raised while parsing flags.
    argv: the command line.
    flag_name: the config flag's name ("config" for ``--config.train.batch_size``).

  Returns:
    (the override's dotted field name, e.g. "train.batchsize"; ml_collections'
    suggestion with the unknown component replaced, e.g. "train.batch_size", or None),
    or None when the exception is not about one of `argv`'s overrides.
  """
  match = _MISSING_KEY.match(exc_text)
  if not match:
    return None
  key = match.group(1)
  prefix = f"--{flag_name}."
  for arg in argv:
    if not arg.startswith(prefix):
      continue
    name = arg[len(prefix):].split("=", 1)[0]
    parts = name.split(".")
    if key not in parts:
      continue
    suggestion = None
    did_you_mean = _DID_YOU_MEAN.search(exc_text)
    if did_you_mean and did_you_mean.group(2) == key:
      i = parts.index(key)
      suggestion = ".".join(parts[:i] + [did_you_mean.group(1)] + parts[i + 1:])
    return name, suggestion
  return None


def unknown_override_message(exc: BaseException, argv: Sequence[str], config: Any = None,
                             flag_name: str = "config") -> str | None:
  """The one-line error for an override of a field that does not exist.

  Args:
    exc: the AttributeError/KeyError raised by flag parsing.
    argv: the command line.
    config: optionally the default config, to suggest the closest dotted field by
      difflib; otherwise ml_collections' own suggestion is used.
    flag_name: the config flag's name.

  Returns:
    "error: unknown config field train.batchsize; did you mean train.batch_size?", or
    None when `exc` is not about an override in `argv` (re-raise it then).
  """
  found = parse_unknown_override(str(exc), argv, flag_name)
  if found is None:
    return None
  name, suggestion = found
  if config is not None:
    return f"error: {closest_field_message(config, name)}"
  if suggestion:
    return f"error: unknown config field {name}; did you mean {suggestion}?"
  return f"error: unknown config field {name}"


def parse_flags(argv: list[str], flag_name: str = "config") -> list[str]:
  """absl ``flags_parser`` that reports an unknown config override in one line.

  Use as ``app.run(main, flags_parser=config_validation.parse_flags)``. Other flag
  errors keep absl's usual handling.

  Args:
    argv: the command line.
    flag_name: the config flag's name.

  Returns:
    The remaining arguments, as absl's default parser returns them.
  """
  from absl import flags  # Only CLIs need absl; keep the module importable without it.

  try:
    return flags.FLAGS(argv)
  except (AttributeError, KeyError) as e:
    message = unknown_override_message(e, argv, flag_name=flag_name)
    if message is None:
      raise
    print(message, file=sys.stderr)
    sys.exit(2)
  except flags.Error as e:
    # A config file that fails to load (a bad ':arg', a missing file) arrives as a
    # flag error whose text holds the whole traceback: its last line says what is wrong.
    lines = [line.strip() for line in str(e).splitlines() if line.strip()]
    first = lines[0].rstrip(":") if lines else "bad flags"
    reason = lines[-1] if len(lines) > 1 else ""
    print(f"error: {first}{': ' + reason if reason else ''}", file=sys.stderr)
    print("Pass --helpshort or --helpfull to see help on flags.", file=sys.stderr)
    sys.exit(2)
