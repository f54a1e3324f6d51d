"""Tests of the evaluation library (statistics, tables, truth alignment) and evaluate.py."""

import json
import math
import os

import numpy as np
import pandas as pd
import pytest

import evaluate as evaluate_cli
from clade_jax import baselines, evaluation
from clade_jax.data.degrade import degrade
from clade_jax.data.volume import Volume, VolumeError, save_volume

# ----------------------------------------------------------------------- statistics


def _long(matrix: np.ndarray, methods, metric="psnr") -> pd.DataFrame:
  rows = [{"subject": f"s{i}", "method": m, metric: matrix[i, j]}
          for i in range(matrix.shape[0]) for j, m in enumerate(methods)]
  return pd.DataFrame(rows)


def test_anova_and_tukey_flag_the_clearly_better_method():
  rng = np.random.default_rng(0)
  subject_effect = rng.normal(0, 2, (6, 1))  # large between-subject spread, removed by RM
  values = 20 + subject_effect + rng.normal(0, 0.3, (6, 3)) + np.array([0.0, 0.0, 3.0])
  table = _long(values, ["a", "b", "c"])
  result = evaluation.compare_methods(table, "psnr", ["a", "b", "c"])
  assert result.anova["p"] < 0.05
  assert result.anova["df_num"] == 2 and result.anova["df_den"] == 10
  assert result.differs("c", "a") and result.differs("b", "c")
  assert not result.differs("a", "b")
  assert result.mean_ranks["c"] == 1.0  # higher PSNR is better: c ranks first everywhere


def test_identical_methods_are_not_significant():
  rng = np.random.default_rng(1)
  values = 20 + rng.normal(0, 1, (6, 1)) + rng.normal(0, 0.5, (6, 3))
  result = evaluation.compare_methods(_long(values, list("abc")), "psnr", list("abc"))
  assert result.anova["p"] > 0.05
  assert not any(result.tukey.reject)
  # Exactly identical columns: nothing to test, reported as not computable, no crash.
  same = np.repeat(values[:, :1], 3, axis=1)
  result = evaluation.compare_methods(_long(same, list("abc")), "psnr", list("abc"))
  assert not np.isfinite(result.anova["p"])
  assert not result.differs("a", "b")
  assert "n/a" in evaluation.stats_markdown({"psnr": result}, list("abc"), 0.05)


def test_friedman_matches_hand_computation():
  values = np.array([[1.0, 2.0, 3.0], [1.5, 3.5, 2.5], [0.1, 0.3, 0.2], [5.0, 7.0, 6.0]])
  matrix = pd.DataFrame(values, columns=list("abc"))
  ranks = np.array([[1, 2, 3], [1, 3, 2], [1, 3, 2], [1, 3, 2]], float)  # ascending
  n, k = ranks.shape
  expected = 12.0 / (n * k * (k + 1)) * np.sum(ranks.sum(axis=0) ** 2) - 3 * n * (k + 1)
  result = evaluation.friedman(matrix)
  assert result["test"] == "friedman"
  np.testing.assert_allclose(result["statistic"], expected)  # = 6.5
  # Lower-is-better ranks are the ascending ones; higher-is-better reverses them.
  np.testing.assert_array_equal(evaluation.rank_matrix(matrix, False).to_numpy(), ranks)
  np.testing.assert_array_equal(evaluation.rank_matrix(matrix, True).to_numpy(), k + 1 - ranks)


def test_two_methods_use_wilcoxon():
  matrix = pd.DataFrame({"a": [1.0, 2.0, 3.0, 4.0, 5.0], "b": [2.0, 3.5, 3.2, 6.0, 5.5]})
  result = evaluation.friedman(matrix)
  assert result["test"] == "wilcoxon" and 0 < result["p"] <= 1


def test_nemenyi_critical_difference_matches_the_formula():
  # Demsar (2006), Table 5(a): q_0.05 = 2.343 (k=3), 2.569 (k=4), 2.728 (k=5).
  for k, q in [(3, 2.343), (4, 2.569), (5, 2.728)]:
    cd = evaluation.nemenyi_critical_difference(k, 6)
    np.testing.assert_allclose(cd, q * math.sqrt(k * (k + 1) / 36.0), rtol=1e-3)
  # A mean-rank difference equal to the CD has p = alpha.
  k, n = 4, 10
  cd = evaluation.nemenyi_critical_difference(k, n)
  ranks = pd.DataFrame(np.tile([1.0, 2.0, 3.0, 4.0], (n, 1)), columns=list("abcd"))
  ranks.iloc[:, 3] = ranks.iloc[:, 0] + cd  # only the means matter
  p = evaluation.nemenyi(ranks)
  np.testing.assert_allclose(p.loc["a", "d"], 0.05, rtol=1e-4)
  assert p.loc["a", "a"] == 1.0


def test_statistics_need_two_subjects_and_two_methods():
  table = _long(np.array([[1.0, 2.0]]), ["a", "b"])
  assert "2 subjects" in evaluation.compare_methods(table, "psnr", ["a", "b"]).skipped
  table = _long(np.array([[1.0], [2.0]]), ["a"])
  assert "2 methods" in evaluation.compare_methods(table, "psnr", ["a"]).skipped

# -------------------------------------------------------------------------- tables


def test_markdown_table_bolds_the_best_by_direction():
  table = pd.DataFrame({
      "subject": ["s0", "s1"] * 3,
      "method": ["a", "a", "b", "b", "c", "c"],
      "psnr": [20.0, 21.0, 30.0, 31.0, 25.0, 26.0],     # higher better: b
      "pique_sagittal": [50.0, 52.0, 40.0, 41.0, 30.0, 33.0],  # lower better: c
      "signal": [1.0, 1.0, 9.0, 9.0, 5.0, 5.0],          # no direction: no bold
  })
  text = evaluation.summary_table_markdown(table, ["a", "b", "c"])
  lines = {line.split("|")[1].strip(): line for line in text.splitlines()
           if line.startswith("| ") and not line.startswith("| Method")}
  assert "**30.50 ± 0.71**" in lines["b"]
  assert "**31.5 ± 2.1**" in lines["c"]
  assert "PSNR (dB) ↑" in text and "PIQUE sagittal ↓" in text
  assert "**" not in lines["a"]
  assert lines["b"].count("**") == 2 and "9.000 ± 0.000" in lines["b"]
  # Columns come in the canonical order: fidelity, PIQUE, then ROI metrics.
  header = text.splitlines()[2]
  assert header.index("PSNR") < header.index("PIQUE") < header.index("Signal")


def test_markdown_table_marks_significant_differences():
  rng = np.random.default_rng(0)
  values = 20 + rng.normal(0, 2, (6, 1)) + rng.normal(0, 0.3, (6, 3)) + [0.0, 0.0, 3.0]
  table = _long(values, list("abc"))
  comparisons = {"psnr": evaluation.compare_methods(table, "psnr", list("abc"))}
  text = evaluation.summary_table_markdown(table, list("abc"), comparisons)
  row_c = next(l for l in text.splitlines() if l.startswith("| c "))
  assert r"<sup>\*\#</sup>" in row_c
  assert r"<sup>\*</sup> differs from a" in text and r"<sup>\#</sup> differs from b" in text

# ------------------------------------------------------------------ truth alignment


def _phantom(shape=(24, 40, 20), seed=0):
  """A bright ball with a smooth ramp and texture: edges in every direction."""
  rng = np.random.default_rng(seed)
  idx = np.indices(shape).astype(np.float64)
  centre = (np.asarray(shape) - 1) / 2 + rng.uniform(-1, 1, 3)
  r = np.sqrt(sum(((idx[a] - centre[a]) / (shape[a] * 0.35)) ** 2 for a in range(3)))
  data = np.where(r < 1, 100.0 + 20 * idx[0] / shape[0], 0.0)
  data += np.where(r < 0.5, -40.0, 0.0)  # a dark "ventricle"
  return data + rng.normal(0, 1.0, shape) * (r < 1)


def _truth(seed=0, oblique=False):
  affine = np.diag([1.0, 1.0, 1.0, 1.0])
  if oblique:
    c, s = math.cos(0.2), math.sin(0.2)
    affine[:3, :3] = np.array([[1, 0, 0], [0, c, -s], [0, s, c]]) @ np.diag([0.8, 0.5, 0.9])
  affine[:3, 3] = [-10.0, -20.0, -8.0]
  return Volume(_phantom(seed=seed).astype(np.float32), affine)


@pytest.mark.parametrize("method", ["nearest", "cubic"])
def test_crop_truth_is_exact_for_degrade_then_upsample(method):
  truth = _truth(oblique=True)
  lr = degrade(truth, 1, spacing_mm=2.0, offset_vox=3)  # 4 voxels of 0.5 mm
  up = baselines.upsample(lr, 1, method, target_spacing=0.5)
  crop = evaluation.crop_truth(truth, up.data.shape, up.affine)
  n = up.data.shape[1]
  np.testing.assert_array_equal(crop, truth.data[:, 3:3 + n, :])
  # The same through NIfTI's float32 affine.
  crop2 = evaluation.crop_truth(truth, up.data.shape, up.affine.astype(np.float32))
  np.testing.assert_array_equal(crop2, crop)
  # The LR volume itself is a strided sub-grid: every 4th truth voxel from 3.
  strided = evaluation.crop_truth(truth, lr.data.shape, lr.affine)
  np.testing.assert_array_equal(strided, truth.data[:, 3::4, :][:, :lr.data.shape[1]])


def test_crop_truth_rejects_misaligned_grids():
  truth = _truth()
  shifted = truth.affine.copy()
  shifted[:3, 3] += [0.0, 0.5, 0.0]
  with pytest.raises(evaluation.AlignmentError, match="off the truth's by 0.5 mm"):
    evaluation.crop_truth(truth, (10, 10, 10), shifted)
  scaled = truth.affine.copy()
  scaled[:3, 1] *= 1.5
  with pytest.raises(evaluation.AlignmentError, match="not a sub-grid"):
    evaluation.crop_truth(truth, (10, 10, 10), scaled)
  with pytest.raises(evaluation.AlignmentError, match="outside the truth"):
    evaluation.crop_truth(truth, (30, 10, 10), truth.affine)


def test_subject_matching(tmp_path):
  for method in ["m1", "m2"]:
    (tmp_path / method).mkdir()
    for sid in ["sub-01", "sub-02"] + (["sub-03"] if method == "m1" else []):
      (tmp_path / method / f"{sid}_{method}.nii.gz").write_bytes(b"")
  files = {m: evaluation.find_volumes(str(tmp_path / m), r"(sub-\d+)") for m in ["m1", "m2"]}
  subjects, notes = evaluation.match_subjects(files)
  assert subjects == ["sub-01", "sub-02"]
  assert "sub-03" in notes[0]
  glob_files = evaluation.find_volumes(str(tmp_path / "m2" / "*.nii.gz"))
  assert list(glob_files) == ["sub-01_m2", "sub-02_m2"]
  with pytest.raises(VolumeError, match="no subject is common"):
    evaluation.match_subjects({"m1": {"x": "a"}, "m2": {"y": "b"}})


def test_rois_defaults_and_overrides(tmp_path):
  path = tmp_path / "rois.json"
  path.write_text(json.dumps({"*": {"borders": [[[0, 0, 0], [1, 1, 1]]], "view": [0, 0, 0]},
                              "s1": {"view": [1, 2, 3]}}))
  rois = evaluation.load_rois(str(path))
  assert evaluation.rois_for(rois, "s1")["view"] == [1, 2, 3]
  assert evaluation.rois_for(rois, "s1")["borders"] == [[[0, 0, 0], [1, 1, 1]]]
  assert evaluation.rois_for(rois, "s2")["view"] == [0, 0, 0]
  path.write_text(json.dumps({"*": {"edges": []}}))
  with pytest.raises(VolumeError, match="keys among"):
    evaluation.load_rois(str(path))


def test_outputs_never_overwrite_inputs(tmp_path):
  path = tmp_path / "x.csv"
  path.write_text("input")
  with pytest.raises(VolumeError, match="refusing"):
    evaluation.atomic_write_text(str(path), "new", frozenset({os.path.realpath(path)}))
  assert path.read_text() == "input"

# ---------------------------------------------------------------------- end to end


def test_evaluate_py_end_to_end(tmp_path, capsys):
  methods = ["nearest", "cubic"]
  for seed in range(2):
    subject = f"subj{seed}"
    truth = _truth(seed=seed)
    save_volume(tmp_path / "truth" / f"{subject}.nii.gz", truth.data, truth.affine)
    lr = degrade(truth, 1, spacing_mm=4.0, noise_sigma=0.02, seed=seed)
    save_volume(tmp_path / "lr" / f"{subject}.nii.gz", lr.data, lr.affine)
    for method in methods:
      up = baselines.upsample(lr, 1, method, target_spacing=1.0)
      save_volume(tmp_path / method / f"{subject}.nii.gz", up.data, up.affine)
  # World mm: the ball spans roughly x -6..5, y -13..5, z -4..3 around (-0.5, -0.5, 1.5).
  rois = {"*": {"borders": [[[1.5, -18.0, 1.5], [1.5, -6.0, 1.5]]],
                "signal": {"sphere": {"centre": [2.0, -8.0, 1.5], "radius": 1.5}},
                "background": {"box": [[-10.0, 10.0, -8.0], [13.0, 19.0, 11.0]]},
                "view": [1.5, -1.0, 1.5]}}
  (tmp_path / "rois.json").write_text(json.dumps(rois))
  out = tmp_path / "eval"
  argv = ["--truth", str(tmp_path / "truth"), "--rois", str(tmp_path / "rois.json"),
          "--out", str(out), "--method", f"lr={tmp_path / 'lr'}"]
  for method in methods:
    argv += ["--method", f"{method}={tmp_path / method}"]
  assert evaluate_cli.main(argv) == 0, capsys.readouterr().err
  for name in ["metrics.csv", "table.md", "stats.md", "boxplots.png",
               "figures/subj0.png", "figures/subj1.png", "reports/index.html",
               "reports/subj0_report.html", "reports/subj1_report/volumes.js"]:
    assert (out / name).is_file(), name
  page = (out / "reports/subj0_report.html").read_text()
  # One linked viewer for the truth and each method, and the subject's metrics.
  assert page.count("<canvas") == 4 and "psnr" in page
  assert 'href="subj1_report.html"' in (out / "reports/index.html").read_text()
  table = pd.read_csv(out / "metrics.csv")
  assert len(table) == 2 * 4  # 3 methods and the truth's reference row
  reference = table[table.method == "truth"]
  assert reference.psnr.isna().all() and reference.pique_axial.notna().all()
  table = table[table.method != "truth"]
  # The thick axis was found from the anisotropic 'lr' input: both LR planes are scored.
  for column in ["psnr", "ssim", "ssim_sagittal", "ssim_axial", "pique_sagittal",
                 "pique_axial", "es", "signal", "noise", "snr"]:
    assert table[column].notna().all(), column
  by_method = table.groupby("method").psnr.mean()
  assert by_method["cubic"] > by_method["nearest"]
  assert "Repeated-measures ANOVA over 2 subjects" in (out / "stats.md").read_text()
  text = (out / "table.md").read_text()
  assert "**" in text and "*truth (reference)*" in text
  assert not list(out.glob(".tmp-*"))


def test_evaluate_py_help_and_errors(tmp_path, capsys):
  with pytest.raises(SystemExit):
    evaluate_cli.parse_args(["--help"])
  assert "--truth" in capsys.readouterr().out
  with pytest.raises(SystemExit):
    evaluate_cli.parse_args(["--method", "nameonly", "--out", str(tmp_path)])
  assert evaluate_cli.main(["--method", f"a={tmp_path}/none", "--out", str(tmp_path)]) == 2
  assert "no NIfTI volumes" in capsys.readouterr().err
