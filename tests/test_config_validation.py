"""Config validation: ranges, enums, unknown fields and unknown command-line overrides."""

import importlib
import os
import pathlib
import subprocess
import sys
import textwrap

import pytest

from clade_jax import config_validation
from clade_jax import methods
from clade_jax.config_validation import ConfigError
from clade_jax.configs import base

ROOT = pathlib.Path(__file__).resolve().parents[1]
CONFIGS = sorted(p.stem for p in (ROOT / "configs").glob("*.py")
                 if p.stem not in ("__init__", "common"))


def _mri(arg=None):
  return importlib.import_module("configs.mri").get_config(arg)


def _validate(config, reference=None):
  """As the driver checks: the shared tables and the config's method's own."""
  method = methods.of(config)
  config_validation.validate(config, reference if reference is not None else _mri(),
                             ranges=getattr(method, "config_ranges", None),
                             enums=getattr(method, "config_enums", None))


def _problems(config, reference=None):
  with pytest.raises(ConfigError) as err:
    _validate(config, reference)
  assert "\n" not in str(err.value)
  assert str(err.value) == "; ".join(err.value.problems)
  return err.value.problems


def _reference(config):
  """The default config of the config's method: configs/<method>.py, else the CLADE base."""
  method = config.get("method", "clade")
  if method != "clade" and (ROOT / "configs" / f"{method}.py").exists():
    return importlib.import_module(f"configs.{method}").get_config()
  return _mri()


@pytest.mark.parametrize("name", CONFIGS)
@pytest.mark.parametrize("arg", [None, "small"])
def test_every_shipped_config_is_valid_against_its_methods_base(name, arg):
  module = importlib.import_module(f"configs.{name}")
  try:
    config = module.get_config(arg)
  except ValueError:
    pytest.skip(f"{name} takes no {arg!r} argument")
  method = methods.of(config)
  config_validation.validate(config, _reference(config),
                             ranges=getattr(method, "config_ranges", None),
                             enums=getattr(method, "config_enums", None))


@pytest.mark.parametrize("field, value, message", [
    ("train.batch_size", -3, "train.batch_size=-3 is out of range: must be >= 1"),
    ("train.learning_rate", 0.0, "train.learning_rate=0.0 is out of range: must be > 0"),
    ("train.beta1", 1.0, "train.beta1=1.0 is out of range: must be in [0, 1)"),
    ("data.patch_size", 4, ["data.patch_size=4 is out of range: must be >= 8",
                            # The stride bound follows the patch size.
                            "eval.stride=12 is out of range: must be in [1, data.patch_size=4]"]),
    ("loss.cyc", -0.5, "loss.cyc=-0.5 is out of range: must be >= 0"),
    ("data.min_foreground", 1.5, "data.min_foreground=1.5 is out of range: must be in [0, 1]"),
    ("eval.stride", 40,
     "eval.stride=40 is out of range: must be in [1, data.patch_size=32]"),
    ("data.percentiles", (99.5, 0.5), "data.percentiles=(99.5, 0.5) must be strictly increasing"),
    ("data.percentiles", (0.5, 120.0),
     "data.percentiles=(0.5, 120.0) is out of range: must be in [0, 100]"),
    ("train.learning_rate", float("nan"), "train.learning_rate=nan is not a number"),
    ("loss.gan", "wgan", "loss.gan='wgan' is not one of log, lsgan"),
    ("data.lr_plane", "axal", "data.lr_plane='axal' is not one of auto, sagittal, coronal, axial"),
    ("eval.mode", "tiles", "eval.mode='tiles' is not one of patch, full"),
    ("model.dtype", "float16", "model.dtype='float16' is not one of float32, bfloat16"),
])
def test_each_bad_value_is_one_line_naming_field_value_and_what_is_valid(field, value, message):
  config = _mri()
  group, key = field.split(".")
  config[group][key] = value
  assert _problems(config) == (message if isinstance(message, list) else [message])


def test_bounds_are_inclusive_where_the_table_says_so():
  config = _mri()
  config.train.batch_size = 1
  config.eval.stride = config.data.patch_size
  config.loss.gmap = 0.0
  config.data.min_foreground = 1.0
  _validate(config)


def test_unknown_field_is_named_with_the_closest_valid_one_and_all_problems_are_listed():
  config = _mri()
  config.train.batchsize = 3  # An unlocked ConfigDict accepts new fields.
  config.bogus_group = {"x": 1}
  config.train.batch_size = 0
  assert _problems(config) == [  # Unknown fields first, in the config's (sorted) order.
      "unknown config field bogus_group.x (no similar field in the config)",
      "unknown config field train.batchsize; did you mean train.batch_size?",
      "train.batch_size=0 is out of range: must be >= 1",
  ]


def test_integer_fields_refuse_fractions_and_strings_and_absent_fields_are_skipped():
  # Plain dicts: ConfigDict's own type safety would refuse these assignments.
  reference = {"train": {"batch_size": 32, "learning_rate": 2e-4}, "loss": {"gan": "log"}}
  assert _problems({"train": {"batch_size": 3.5}}, reference) == [
      "train.batch_size=3.5 must be an integer"]
  assert _problems({"train": {"learning_rate": "fast"}}, reference) == [
      "train.learning_rate='fast' is not a number"]
  # A method without a `data` group (or without eval.stride) has nothing to check there.
  _validate({"train": {"batch_size": 4}}, reference)


def test_closest_field_message_uses_dotted_names():
  assert (config_validation.closest_field_message(_mri(), "trian.batch_size")
          == "unknown config field trian.batch_size; did you mean train.batch_size?")
  assert config_validation.dotted_fields({"a": {"b": 1, "c": {"d": 2}}, "e": 3}) == {
      "a.b": 1, "a.c.d": 2, "e": 3}


# str() of the exceptions ml_collections' config_flags raises, as observed with
# ml_collections 1.x for the overrides in the comments.
_BATCHSIZE = "'\\'batchsize\\'\\nDid you mean \"batch_size\" instead of \"batchsize\"?'"
_TRIAN = "'\\'trian\\'\\nDid you mean \"train\" instead of \"trian\"?'"
_BOGUS = "\"'bogus'\""


@pytest.mark.parametrize("text, arg, expected", [
    (_BATCHSIZE, "--config.train.batchsize=3", ("train.batchsize", "train.batch_size")),
    (_TRIAN, "--config.trian.batch_size=3", ("trian.batch_size", "train.batch_size")),
    (_BOGUS, "--config.bogus=1", ("bogus", None)),
    (_BOGUS, "--config.train.batch_size=1", None),  # Not about this command line.
])
def test_parse_unknown_override_finds_the_override_and_the_suggestion(text, arg, expected):
  argv = ["train.py", "--config=configs/mri.py", arg, "--workdir=w"]
  assert config_validation.parse_unknown_override(text, argv) == expected


def test_unknown_override_message_prefers_the_configs_dotted_names_when_given():
  argv = ["train.py", "--config.bogus=1"]
  exc = AttributeError(_BOGUS[1:-1])
  assert config_validation.unknown_override_message(exc, argv) == (
      "error: unknown config field bogus")
  argv = ["train.py", "--config.train.batchsize=3"]
  exc = KeyError("'batchsize'")
  assert config_validation.unknown_override_message(exc, argv, config=_mri()) == (
      "error: unknown config field train.batchsize; did you mean train.batch_size?")
  assert config_validation.unknown_override_message(KeyError("'x'"), argv) is None


def test_parse_flags_turns_config_flags_unknown_override_into_one_line(tmp_path):
  # A real absl app, so the test follows whatever ml_collections raises.
  script = tmp_path / "app.py"
  script.write_text(textwrap.dedent("""
      from absl import app
      from ml_collections import config_flags
      from clade_jax import config_validation
      CONFIG = config_flags.DEFINE_config_file("config")
      def main(argv):
        print("batch", CONFIG.value.train.batch_size)
      app.run(main, flags_parser=config_validation.parse_flags)
  """))
  path = os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))
  env = dict(os.environ, PYTHONPATH=path, JAX_PLATFORMS="cpu")

  def run(*args):
    return subprocess.run([sys.executable, str(script), f"--config={ROOT}/configs/mri.py", *args],
                          capture_output=True, text=True, env=env, timeout=120, check=False)

  bad = run("--config.train.batchsize=3")
  assert bad.returncode == 2
  assert bad.stderr.strip() == (
      "error: unknown config field train.batchsize; did you mean train.batch_size?")
  good = run("--config.train.batch_size=3")
  assert good.returncode == 0 and good.stdout.strip() == "batch 3"


def test_a_methods_own_ranges_and_enums_are_checked_too():
  config = {"sr": {"depth": 0, "upsampler": "shuffle"}}
  with pytest.raises(ConfigError) as err:
    config_validation.validate(
        config, ranges={"sr.depth": config_validation.Range(1)},
        enums={"sr.upsampler": ("interp", "none")})
  assert len(err.value.problems) == 2
  assert "sr.depth" in err.value.problems[0] and "sr.upsampler" in err.value.problems[1]
  config_validation.validate(config)  # The shared tables alone know neither field.


def test_the_shared_tables_check_the_base_fields_and_each_method_its_own():
  shared = set(config_validation.dotted_fields(base.get_config("any")))
  assert set(config_validation.RANGES) | set(config_validation.ENUMS) <= shared
  for name in CONFIGS:
    config = importlib.import_module(f"configs.{name}").get_config()
    fields = set(config_validation.dotted_fields(config))
    assert shared <= fields, name  # Every config derives from the base.
    method = methods.of(config)
    own = set(getattr(method, "config_ranges", {})) | set(getattr(method, "config_enums", {}))
    assert own <= fields, (name, own - fields)  # A method names only fields it has.
  # CLADE's fields are CLADE's to check: the shared tables alone pass them.
  config = _mri()
  config.loss.gan, config.model.disc_layers, config.data.hr_slices = "wgan", 0, "some"
  config_validation.validate(config, _mri())
  assert _problems(config) == ["model.disc_layers=0 is out of range: must be >= 1",
                               "data.hr_slices='some' is not one of acquired, all",
                               "loss.gan='wgan' is not one of log, lsgan"]


def test_a_range_can_say_why():
  with pytest.raises(ConfigError, match=r"^steps=0 is out of range: must be >= 1 \(because\)$"):
    config_validation.validate({"steps": 0},
                               ranges={"steps": config_validation.Range(1, why="because")})
