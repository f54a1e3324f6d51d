"""The experiment scripts' shared steps (experiments/common.py) and their argument parsing."""

import importlib.util
import pathlib
import sys

import numpy as np
import pandas as pd
import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "experiments"))

import common  # noqa: E402


def _script(name):
  spec = importlib.util.spec_from_file_location(f"exp_{name}",
                                                ROOT / "experiments" / name / "run.py")
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


def test_load_config_applies_the_argument_and_dotted_overrides():
  config = common.load_config("configs/mri.py:demo", {"loss.gmap": 10.0, "train.num_steps": 7})
  assert config.loss.gmap == 10.0 and config.train.num_steps == 7
  assert config.model.features == 16  # From ':demo'.
  base = common.load_config(str(ROOT / "configs" / "mri.py"))
  assert base.model.features != 16 and base.loss.gmap != 10.0


def test_summary_keeps_method_order_and_markdown_lists_every_value():
  table = pd.DataFrame({"subject": ["a", "b", "a", "b"], "method": ["z", "z", "y", "y"],
                        "psnr": [20.0, 22.0, 30.0, 31.0], "ssim": [0.5, 0.7, 0.9, 0.8]})
  result = common.summary(table)
  assert list(result.index) == ["z", "y"]
  np.testing.assert_allclose(result.loc["z", "psnr"], 21.0)
  np.testing.assert_allclose(result.loc["y", "ssim"], 0.85)
  text = common.markdown(result)
  assert text.splitlines()[0] == "| method | psnr | ssim |"
  assert "| y | 30.500 | 0.850 |" in text


@pytest.mark.parametrize("script", ["stride_sweep", "epochs", "lambda_grid", "main_comparison"])
def test_every_script_explains_itself(script, capsys):
  module = _script(script)
  with pytest.raises(SystemExit) as exit_info:
    module.main(["--help"])
  assert exit_info.value.code == 0
  assert "usage:" in capsys.readouterr().out


def test_lambda_grid_cells_parse():
  module = _script("lambda_grid")
  assert module.cell("1,0,5") == (1.0, 0.0, 5.0)
  assert len(module.PAPER_GRID) == 27 and (1.0, 1.0, 5.0) in module.PAPER_GRID
  with pytest.raises(Exception, match="CYC,IDENT,GMAP"):
    module.cell("1,2")
