"""Reader-study kit: blinded panels, a sheet, a key, and the ranking table from a filled sheet."""

import os

import numpy as np
import pandas as pd
import pytest
from scipy import stats as scipy_stats

import evaluate
from clade_jax.data.volume import VolumeError, save_volume
from clade_jax.evaluation import reader_study

METHODS = ("low_res", "smore", "clade")
SUBJECTS = ("sub1", "sub2", "sub3", "sub4")


@pytest.fixture
def outputs(tmp_path):
  rng = np.random.default_rng(0)
  affine = np.diag([1.0, 1.0, 1.0, 1.0])
  dirs = {}
  for m in METHODS:
    dirs[m] = str(tmp_path / m)
    for s in SUBJECTS:
      save_volume(os.path.join(dirs[m], f"{s}.nii.gz"),
                  rng.random((12, 10, 8)).astype(np.float32), affine)
  return dirs


def _fill(kit, key_path, rank_of):
  """Every reader ranks every panel by `rank_of[method]` (decoded with the key)."""
  key = pd.read_csv(key_path)
  sheet = pd.read_csv(os.path.join(kit, "scores.csv"), dtype=str, keep_default_na=False)
  for i, row in sheet.iterrows():
    for r in key[key.panel == row.panel].itertuples():
      sheet.loc[i, r.letter] = str(rank_of(row.reader, r.subject, r.method))
  path = os.path.join(os.path.dirname(kit), "filled.csv")
  sheet.to_csv(path, index=False)
  return path


def test_kit_is_blinded_and_complete(outputs, tmp_path):
  kit, key_path = str(tmp_path / "kit"), str(tmp_path / "key.csv")
  panels = reader_study.make_kit(outputs, kit, key_path, readers=("r1", "r2"), thick_axis=2,
                                 seed=3)
  # Two low-resolution planes (those containing axis 2) per subject.
  assert len(panels) == 2 * len(SUBJECTS) and all(os.path.isfile(p) for p in panels.values())
  key = pd.read_csv(key_path)
  for _, group in key.groupby("panel"):
    assert sorted(group.method) == sorted(METHODS)
    assert sorted(group.letter) == ["A", "B", "C"]
  orders = {tuple(g.sort_values("letter").method) for _, g in key.groupby("panel")}
  assert len(orders) > 1  # Randomised, not one fixed order.
  sheet = pd.read_csv(os.path.join(kit, "scores.csv"))
  assert len(sheet) == 2 * len(panels) * len(reader_study.QUESTIONS)
  assert list(sheet.columns) == ["reader", "panel", "question", "A", "B", "C"]
  sheet_text = open(os.path.join(kit, "scores.csv")).read()
  assert not any(m in sheet_text for m in METHODS)  # Readers never see method names.


def test_key_inside_the_kit_is_refused(outputs, tmp_path):
  with pytest.raises(VolumeError, match="outside the kit"):
    reader_study.make_kit(outputs, str(tmp_path / "kit"), str(tmp_path / "kit" / "key.csv"),
                          thick_axis=2)


def test_filled_sheet_decodes_to_methods_and_friedman_matches_scipy(outputs, tmp_path):
  kit, key_path = str(tmp_path / "kit"), str(tmp_path / "key.csv")
  reader_study.make_kit(outputs, kit, key_path, readers=("r1", "r2"), thick_axis=2, seed=1)
  # clade always best; smore and low_res swap by subject and reader, so means differ.
  def rank_of(reader, subject, method):
    if method == "clade":
      return 1
    flip = (reader == "r2") and subject in ("sub1", "sub2")
    return {"smore": 3 if flip else 2, "low_res": 2 if flip else 3}[method]
  filled = _fill(kit, key_path, rank_of)
  table = reader_study.rankings(filled, key_path)
  assert set(table.method) == set(METHODS)
  assert (table[table.method == "clade"]["rank"] == 1).all()
  report = reader_study.ranking_report(table)
  # Independent Friedman on the reader-averaged per-subject ranks.
  means = {"clade": [1, 1, 1, 1], "smore": [2.5, 2.5, 2, 2], "low_res": [2.5, 2.5, 3, 3]}
  expected = scipy_stats.friedmanchisquare(*means.values()).pvalue
  assert f"p = {expected:.4g}" in report
  assert "| clade | 1.00 |" in report

  out = tmp_path / "eval"
  assert evaluate.main(["--reader-scores", filled, "--reader-key", key_path,
                        "--out", str(out)]) == 0
  assert (out / "reader_ranking.md").read_text() == report


def test_an_unfilled_rank_names_the_line(outputs, tmp_path, capsys):
  kit, key_path = str(tmp_path / "kit"), str(tmp_path / "key.csv")
  reader_study.make_kit(outputs, kit, key_path, thick_axis=2)
  with pytest.raises(VolumeError, match=r"scores.csv:2: rank of A is ''"):
    reader_study.rankings(os.path.join(kit, "scores.csv"), key_path)
  assert evaluate.main(["--reader-scores", os.path.join(kit, "scores.csv"),
                        "--reader-key", key_path, "--out", str(tmp_path / "e")]) == 2
  assert "rank of A" in capsys.readouterr().err


def test_panels_cut_through_the_anatomy_and_crop_the_background():
  data = np.zeros((40, 30, 20), np.float32)
  data[10:30, 5:25, 4:16] = 1.0  # The "anatomy": a box in an empty field of view.
  picks, crop = reader_study.panel_geometry(data, normal=0, n_slices=3)
  # The middle 60% of the box's extent along axis 0 (10..29), not of the volume (0..39).
  np.testing.assert_array_equal(picks, [14, 20, 25])
  # Axes 1 and 2 cropped to the box widened by 5% of its size (one voxel each side).
  assert crop == (slice(4, 26), slice(3, 17))
  assert np.take(data, picks[0], axis=0)[crop].shape == (22, 14)
  empty_picks, empty_crop = reader_study.panel_geometry(np.zeros((9, 8, 7)), 2, 2)
  assert list(empty_picks) == [1, 5] and empty_crop == (slice(0, 9), slice(0, 8))
