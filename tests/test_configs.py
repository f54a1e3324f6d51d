"""Configs: each builds a run of a real method, variants differ from their base only
where the papers differ, arguments combine, and README/CI agree."""

import importlib
import pathlib
import re

import pytest

from clade_jax import methods
from clade_jax.configs import base
from clade_jax.configs import common

ROOT = pathlib.Path(__file__).resolve().parents[1]
CONFIGS = sorted(p.stem for p in (ROOT / "configs").glob("*.py")
                 if p.stem not in ("__init__", "common"))


def get(name, arg=None):
  return importlib.import_module(f"configs.{name}").get_config(arg)


def differing_fields(a, b, prefix=""):
  """Dotted names of the leaves where two configs differ."""
  a, b = a.to_dict() if hasattr(a, "to_dict") else a, b.to_dict() if hasattr(b, "to_dict") else b
  out = set()
  for key in set(a) | set(b):
    x, y = a.get(key), b.get(key)
    if isinstance(x, dict) and isinstance(y, dict):
      out |= differing_fields(x, y, f"{prefix}{key}.")
    elif x != y:
      out.add(f"{prefix}{key}")
  return out


@pytest.mark.parametrize("name", CONFIGS)
def test_config_builds_a_known_method_and_its_docstring_gives_the_command(name):
  module = importlib.import_module(f"configs.{name}")
  config = module.get_config()
  method = methods.of(config)
  assert method.describe(config)
  assert f"--config=configs/{name}.py" in module.__doc__


@pytest.mark.parametrize("name, base, fields, label", [
    # data.normalization: CT's HU window (issue 16), not a paper field.
    ("ct", "mri", {"loss.gmap", "eval.stride", "data.normalization"}, "CLADE"),
    ("clade_no_gmap", "mri", {"loss.gmap"}, "CLADE (no L_gmap)"),
    ("cyclegan", "mri", {"loss.gmap", "model.generator_norm"}, "CycleGAN"),
    ("glade", "mri", {"model.generator_norm", "data.patch_size", "loss.ident"}, "GLADE"),
    ("clade_plus", "mri", {"model.residual", "loss.degradation", "train.ema_decay",
                           "eval.blend", "eval.data_consistency"}, "CLADE+"),
])
def test_variants_differ_from_their_base_only_in_the_papers_fields(name, base, fields, label):
  assert differing_fields(get(name), get(base)) == fields
  assert methods.of(get(name)).describe(get(name)) == label


def test_arguments_combine_and_apply_to_every_variant():
  small_ct = get("cyclegan", "ct,small")
  assert differing_fields(small_ct, get("cyclegan", "ct")) == differing_fields(
      get("mri", "small"), get("mri"))
  assert small_ct.eval.stride == get("ct").eval.stride
  assert differing_fields(get("glade", "demo"), get("mri", "demo")) == differing_fields(
      get("glade"), get("mri"))
  for arg in ("demo", "small", "ct", "ct,demo"):
    size = arg.replace("ct", "").strip(",")
    plus, base = get("clade_plus", arg), get("ct" if "ct" in arg else "mri", size)
    assert differing_fields(plus, base) == differing_fields(get("clade_plus"), get("mri"))
  assert differing_fields(get("demo"), get("clade_plus", "demo")) == set()


@pytest.mark.parametrize("name, arg, message", [
    ("mri", "tiny", "unknown config argument tiny; use a comma-separated subset of small, demo"),
    ("mri", "ct", "unknown config argument ct"),
    ("cyclegan", "small,demo", "'small' and 'demo' exclude each other"),
])
def test_bad_arguments_are_named(name, arg, message):
  with pytest.raises(ValueError, match=re.escape(message)):
    get(name, arg)


def test_presets_set_their_fields_in_order_and_refuse_a_field_the_config_lacks():
  config = base.get_config("any")
  presets = {"a": {"train.num_steps": 5, "seed": 1}, "b": {"train.num_steps": 7}}
  common.apply_presets(config, presets, {"b", "a"})
  assert (config.train.num_steps, config.seed) == (7, 1)  # The table's order, not the call's.
  for field in ("train.num_step", "model.features"):
    with pytest.raises(KeyError, match=f"preset 'x' sets {field}, which the config does not have"):
      common.apply_presets(config, {"x": {field: 1}}, {"x"})


def test_ci_runs_the_readme_test_command():
  readme = (ROOT / "README.md").read_text().splitlines()
  commands = [line.strip() for line in readme[:12] if line.startswith("    python3 -m venv")]
  assert len(commands) == 2 and "train.py --config=configs/demo.py" in commands[0]
  assert re.search(r"pip install -e '\.\[test\]' && python -m pytest", commands[1])
  ci = (ROOT / ".ci" / "run").read_text()
  assert "grep -m1 -E '^    python3 -m venv .*pytest'" in ci  # CI extracts commands[1].
