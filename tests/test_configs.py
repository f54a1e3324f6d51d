"""Configs load, derive from the base, and document their command; README matches CI."""

import importlib
import pathlib
import re

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
CONFIGS = sorted(p.stem for p in (ROOT / "configs").glob("*.py") if p.stem != "__init__")


@pytest.mark.parametrize("name", CONFIGS)
def test_config_loads_and_its_docstring_gives_the_command(name):
  module = importlib.import_module(f"configs.{name}")
  config = module.get_config()
  assert {"data", "model", "loss", "train", "ckpt", "eval"} <= set(config.keys())
  assert f"--config=configs/{name}.py" in module.__doc__


def test_paper_weights_and_ablations():
  get = lambda name, arg=None: importlib.import_module(f"configs.{name}").get_config(arg)
  mri, ct = get("mri"), get("ct")
  assert (mri.loss.cyc, mri.loss.ident, mri.loss.gmap) == (1.0, 1.0, 5.0)
  assert (ct.loss.cyc, ct.loss.ident, ct.loss.gmap) == (1.0, 1.0, 10.0)
  assert (mri.eval.stride, ct.eval.stride) == (12, 6)
  assert get("cyclegan").model.generator_norm == "instance" and get("cyclegan").loss.gmap == 0
  assert get("clade_no_gmap").model.generator_norm == "demod"
  assert get("clade_no_gmap", "ct").loss.gmap == 0 and get("cyclegan", "ct").eval.stride == 6
  assert get("mri", "small").model.features < mri.model.features


def test_ci_runs_the_readme_test_command():
  readme = (ROOT / "README.md").read_text().splitlines()
  commands = [line.strip() for line in readme[:12] if line.startswith("    python3 -m venv")]
  assert len(commands) == 2 and "train.py --config=configs/demo.py" in commands[0]
  assert re.search(r"pip install -e '\.\[test\]' && python -m pytest", commands[1])
  ci = (ROOT / ".ci" / "run").read_text()
  assert "grep -m1 -E '^    python3 -m venv .*pytest'" in ci  # CI extracts commands[1].
