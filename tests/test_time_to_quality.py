"""benchmarks/time_to_quality.py's core (tiny setting, in process) and the budget table."""

import importlib.util
import pathlib

import numpy as np
import pytest

from clade_jax import budgets
from clade_jax.configs import smore

ROOT = pathlib.Path(__file__).resolve().parents[1]


def _script():
  spec = importlib.util.spec_from_file_location(
      "time_to_quality", ROOT / "benchmarks" / "time_to_quality.py")
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


def test_every_budget_is_a_smore_config_argument_of_its_size():
  assert list(budgets.BUDGETS) == ["quick", "standard", "thorough"]
  for name, budget in budgets.BUDGETS.items():
    config = smore.get_config(budgets.config_arg(name))
    assert config.train.num_steps == budget.num_steps
    assert f"{config.model.features} channels x {config.model.num_blocks}" in budget.network
    assert budget.name in budget.describe() and budget.seconds > 0
  costs = [b.seconds for b in budgets.BUDGETS.values()]
  assert costs == sorted(costs)  # Each budget costs more than the one before.
  with pytest.raises(ValueError, match="unknown budget 'fast'"):
    budgets.config_arg("fast")
  with pytest.raises(ValueError, match="exclude each other"):
    smore.get_config("quick,thorough")


def test_budgets_combine_with_the_demo_data():
  config = smore.get_config("demo,quick")
  assert config.data.make_demo and config.train.num_steps == smore.BUDGETS["quick"]["num_steps"]


def test_tiny_run_scores_each_scan_against_cubic(tmp_path):
  script = _script()
  table = script.measure(["quick"], ["gaussian"], 1, str(tmp_path / "out"),
                         protocol=str(tmp_path / "gt"), tiny=True, in_process=True,
                         log=lambda message: None)
  assert list(table.columns) == list(script.COLUMNS) and len(table) == 1
  row = table.iloc[0]
  assert row["budget"] == "quick" and row["profile"] == "gaussian" and row["phase"] == 0
  assert row["wall_s"] >= row["train_s"] + row["infer_s"] > 0 and row["cpu_s"] > 0
  assert 15 < row["cubic_psnr"] < 45 and 0 < row["ssim"] <= 1
  np.testing.assert_allclose(row["psnr_gain"], row["psnr"] - row["cubic_psnr"])
  # Two steps of a tiny network starting at the identity: cubic's output, nearly.
  assert abs(row["psnr_gain"]) < 0.5
  summary = script.summarise(table)
  np.testing.assert_allclose(summary["psnr_gain"].iloc[0], row["psnr_gain"])
  assert (tmp_path / "out" / "sr" / "quick" / "gaussian" / "phase0.nii.gz").exists()
