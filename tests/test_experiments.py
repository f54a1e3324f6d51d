"""The experiment scripts' shared steps (experiments/common.py) and their argument parsing."""

import importlib.util
import json
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


def test_train_uses_the_protocol_inputs_not_the_demo_data(monkeypatch, tmp_path):
  seen = {}
  monkeypatch.setattr(common.train_lib, "train_and_evaluate",
                      lambda config, workdir: seen.update(config=config, workdir=workdir))
  config = common.load_config("configs/mri.py:demo")
  assert config.data.truth and config.data.make_demo  # What the demo config would do.
  common.train(config, str(tmp_path), {"train": "gt/gaussian/lr/mni152_phase[0-1].nii.gz",
                                  "profile": "rect"})
  assert seen["workdir"] == str(tmp_path)
  assert seen["config"].data.root == "gt/gaussian/lr/mni152_phase[0-1].nii.gz"
  assert not seen["config"].data.make_demo and seen["config"].data.truth == ""
  assert seen["config"].data.slice_profile == "rect"  # The protocol's, not the default.


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


@pytest.mark.parametrize("script", ["stride_sweep", "epochs", "lambda_grid", "main_comparison",
                                    "ablation"])
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


# ----------------------------------------------------------------- the tiny setting, end to end
# Every script on the 64 x 96 x 64 mm block of the template (experiments/common.TINY): it
# checks that the scripts run and write their tables, not what they measure.


def _table(path):
  """The markdown table a script wrote, as {row name: {column: value}}."""
  lines = [line for line in path.read_text().splitlines() if line.startswith("|")]
  rows, header = {}, None
  for line, following in zip(lines, lines[1:] + [""]):
    cells = [c.strip() for c in line.strip("|").split("|")]
    if following.startswith("|---"):  # A header (a file may hold several tables).
      header = cells
    elif not line.startswith("|---"):
      rows[cells[0]] = {h: float(v) for h, v in zip(header[1:], cells[1:])}
  return rows


@pytest.fixture(scope="module")
def tiny_comparison(tmp_path_factory):
  """main_comparison --tiny with CLADE and SMORE: the protocol and two trained runs."""
  root = tmp_path_factory.mktemp("experiments")
  protocol, out = root / "protocol", root / "main"
  assert _script("main_comparison").main([
      "--tiny", "--phases", "2", "--methods", "clade", "smore", "--no-figures",
      "--protocol", str(protocol), "--out", str(out)]) == 0
  return protocol, out


def test_tiny_protocol_is_a_block_of_the_template_at_its_own_world_position(tiny_comparison):
  from clade_jax.data.demo import load_template
  from clade_jax.data.volume import load_volume
  ground_truth = _script("ground_truth")
  protocol, _ = tiny_comparison
  truth = load_volume(str(protocol / "truth" / "mni152_phase0.nii.gz"))
  template = load_template()
  assert truth.data.shape == (64, 96, 64)
  np.testing.assert_array_equal(truth.data, template.data[ground_truth.TINY_BLOCK])
  start = [s.start for s in ground_truth.TINY_BLOCK]
  np.testing.assert_allclose(truth.affine @ [0, 0, 0, 1], template.affine @ [*start, 1])
  lr = load_volume(str(protocol / "gaussian" / "lr" / "mni152_phase1.nii.gz"))
  assert lr.data.shape == (64, 16, 64) and lr.spacing[1] == pytest.approx(6.0)


def test_tiny_main_comparison_scores_every_row_against_the_truth(tiny_comparison):
  protocol, out = tiny_comparison
  rows = _table(out / "summary.md")
  assert list(rows) == ["low_res", "linear", "cubic", "lanczos", "clade", "smore", "truth"]
  # Independent of the networks: interpolation beats the slice staircase on the truth.
  assert rows["cubic"]["psnr"] > rows["linear"]["psnr"] > rows["low_res"]["psnr"]
  assert rows["clade"]["train_seconds"] > 0 and np.isnan(rows["cubic"]["train_seconds"])
  recorded = json.loads((out / "runs" / "clade" / common.TRAIN_SECONDS_FILE).read_text())
  assert recorded["seconds"] == pytest.approx(rows["clade"]["train_seconds"], abs=1e-3)
  for method in ("clade", "smore"):
    outputs = sorted(p.name for p in (out / method).glob("*.nii.gz"))
    assert outputs == ["mni152_phase0.nii.gz", "mni152_phase1.nii.gz"]
  assert (out / "eval" / "stats.md").exists() and (out / "eval" / "metrics.csv").exists()


def test_a_finished_run_reports_its_training_time_again(tiny_comparison, monkeypatch):
  protocol, out = tiny_comparison
  run = out / "runs" / "clade"
  recorded = json.loads((run / common.TRAIN_SECONDS_FILE).read_text())["seconds"]
  monkeypatch.setattr(common.train_lib, "train_and_evaluate", lambda config, workdir: None)
  config = common.load_config("configs/mri.py:small", tiny=True)
  assert common.train(config, str(run), {"train": "unused"}) == recorded


def test_tiny_epochs_scores_every_checkpoint(tiny_comparison, tmp_path):
  protocol, out = tiny_comparison
  assert _script("epochs").main(["--tiny", "--phases", "2", "--run", str(out / "runs" / "clade"),
                                 "--protocol", str(protocol), "--out", str(tmp_path)]) == 0
  rows = _table(tmp_path / "epochs.md")
  assert {"cubic", "step_1", "step_2"} <= set(rows)


def test_tiny_stride_sweep_times_every_setting(tiny_comparison, tmp_path):
  protocol, out = tiny_comparison
  assert _script("stride_sweep").main([
      "--tiny", "--phases", "2", "--run", str(out / "runs" / "clade"), "--strides", "8", "16",
      "--protocol", str(protocol), "--out", str(tmp_path)]) == 0
  rows = _table(tmp_path / "stride_sweep.md")
  assert list(rows) == ["cubic", "stride_8", "stride_16", "full_slice", "truth"]
  assert all(rows[name]["seconds_per_volume"] > 0 for name in ("stride_8", "full_slice"))


def test_tiny_lambda_grid_ranks_its_cells(tiny_comparison, tmp_path):
  protocol, _ = tiny_comparison
  assert _script("lambda_grid").main([
      "--tiny", "--phases", "2", "--config", "configs/mri.py:small", "--cells", "1,0,5",
      "--steps", "2", "--stride", "8", "--protocol", str(protocol), "--out", str(tmp_path)]) == 0
  text = (tmp_path / "lambda_grid.md").read_text()
  assert "Ranked by PIQUE" in text and "Ranked by PSNR" in text
  assert "cyc1_ident0_gmap5" in _table(tmp_path / "lambda_grid.md")
  first_table = text.split("## Ranked by PSNR")[0]
  names = [line.split("|")[1].strip() for line in first_table.splitlines()
           if line.startswith("| ") and not line.startswith("| method")]
  assert names[-1] == "truth" and set(names) == {"cubic", "cyc1_ident0_gmap5", "truth"}


def test_tiny_ablation_trains_each_system_for_one_budget_on_given_data(tiny_comparison, tmp_path):
  protocol, _ = tiny_comparison
  lr = protocol / "gaussian" / "lr"
  assert _script("ablation").main([
      "--tiny", "--data", str(lr / "mni152_phase[01].nii.gz"), "--truth", str(protocol / "truth"),
      "--systems", "clade_no_gmap", "glade", "--steps", "3", "--out", str(tmp_path)]) == 0
  rows = _table(tmp_path / "summary.md")
  assert list(rows) == ["cubic", "clade_no_gmap", "glade", "truth"]
  assert rows["cubic"]["psnr"] > 20 and rows["glade"]["train_seconds"] > 0
  for system in ("clade_no_gmap", "glade"):
    config = json.loads((tmp_path / "runs" / system / "config.json").read_text())
    assert config["train"]["num_steps"] == 3 and config["train"]["batch_size"] == 4
    assert sorted(p.name for p in (tmp_path / system).glob("*.nii.gz")) == [
        "mni152_phase0.nii.gz", "mni152_phase1.nii.gz"]
  # GLADE differs from the base in its patches and norm, CLADE without L_gmap in L_gmap.
  glade = json.loads((tmp_path / "runs" / "glade" / "config.json").read_text())
  assert glade["model"]["generator_norm"] == "instance" and glade["loss"]["ident"] == 0.0


def test_ablation_refuses_missing_data(tmp_path, capsys):
  with pytest.raises(SystemExit, match="--data .*no NIfTI volumes"):
    _script("ablation").main(["--data", str(tmp_path / "none*.nii.gz"), "--out", str(tmp_path)])


@pytest.mark.slow
def test_tiny_main_comparison_runs_every_method(tmp_path):
  module = _script("main_comparison")
  assert module.main(["--tiny", "--phases", "2", "--no-figures", "--protocol",
                      str(tmp_path / "protocol"), "--out", str(tmp_path / "main")]) == 0
  rows = _table(tmp_path / "main" / "summary.md")
  assert set(module.METHODS) < set(rows)
