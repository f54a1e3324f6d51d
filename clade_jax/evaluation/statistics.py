"""The statistics of the paper's section 4.9, per metric across methods.

One-way repeated-measures ANOVA with Tukey HSD post hoc; Friedman (Wilcoxon for 2
methods) with the Nemenyi post hoc on the per-subject rankings. `compare_methods`
runs them all for one metric and returns a `Comparison`.
"""

from __future__ import annotations

import dataclasses
import functools
import itertools
import math
import warnings

import numpy as np
import pandas as pd
from scipy import stats as scipy_stats

from clade_jax.evaluation.metric_table import metric_info

ALPHA = 0.05


def complete_matrix(table: pd.DataFrame, metric: str, methods: list[str]) -> pd.DataFrame:
  """Subjects x methods values of `metric`, keeping subjects scored by every method."""
  wide = table.pivot(index="subject", columns="method", values=metric)
  wide = wide.reindex(columns=methods)
  return wide.replace([np.inf, -np.inf], np.nan).dropna(axis=0, how="any")


def repeated_measures_anova(matrix: pd.DataFrame) -> dict:
  """One-way repeated-measures ANOVA (statsmodels AnovaRM), method as the factor.

  Args:
    matrix: subjects x methods, complete.

  Returns:
    {'F', 'df_num', 'df_den', 'p'}; F and p are NaN when there is no within-subject
    variation at all (e.g. identical methods).
  """
  from statsmodels.stats.anova import AnovaRM  # pylint: disable=g-import-not-at-top
  values = matrix.to_numpy(np.float64)
  if np.all(np.ptp(values, axis=1) == 0):
    # statsmodels reports F = 0, p = 1 here; there is simply nothing to test.
    k, n = values.shape[1], values.shape[0]
    return {"F": math.nan, "df_num": float(k - 1), "df_den": float((k - 1) * (n - 1)),
            "p": math.nan}
  long = matrix.rename_axis(index="subject", columns="method").stack().rename("value")
  long = long.reset_index()
  long["method"] = long["method"].astype(str)
  long["subject"] = long["subject"].astype(str)
  result = AnovaRM(long, depvar="value", subject="subject", within=["method"]).fit()
  row = result.anova_table.iloc[0]
  return {"F": float(row["F Value"]), "df_num": float(row["Num DF"]),
          "df_den": float(row["Den DF"]), "p": float(row["Pr > F"])}


def tukey_hsd(matrix: pd.DataFrame, alpha: float = ALPHA) -> pd.DataFrame:
  """Tukey HSD over all method pairs (statsmodels pairwise_tukeyhsd).

  As in the paper (statsmodels), this treats the methods as independent groups: it
  does not use the pairing by subject, so it is conservative next to the ANOVA.

  Returns:
    One row per pair: group1, group2, meandiff (group2 - group1), p, lower, upper,
    reject.
  """
  from statsmodels.stats.multicomp import pairwise_tukeyhsd  # pylint: disable=g-import-not-at-top
  methods = list(matrix.columns)
  values = np.concatenate([matrix[m].to_numpy(np.float64) for m in methods])
  # Integer codes keep the method order (statsmodels sorts group labels).
  groups = np.repeat(np.arange(len(methods)), len(matrix))
  result = pairwise_tukeyhsd(values, groups, alpha=alpha)
  rows = []
  for (i, j), diff, p, (lo, hi), reject in zip(
      itertools.combinations(result.groupsunique, 2), result.meandiffs, result.pvalues,
      result.confint, result.reject):
    rows.append({"group1": methods[int(i)], "group2": methods[int(j)], "meandiff": diff,
                 "p": float(p), "lower": lo, "upper": hi, "reject": bool(reject)})
  return pd.DataFrame(rows)


def rank_matrix(matrix: pd.DataFrame, higher_is_better: bool | None) -> pd.DataFrame:
  """Per-subject ranks, 1 = best (ties share the mean rank).

  When neither direction is better, rank 1 is the highest value.
  """
  sign = 1.0 if higher_is_better is False else -1.0
  ranks = np.apply_along_axis(scipy_stats.rankdata, 1, sign * matrix.to_numpy(np.float64))
  return pd.DataFrame(ranks, index=matrix.index, columns=matrix.columns)


def friedman(matrix: pd.DataFrame) -> dict:
  """Friedman chi-squared test over methods (scipy), subjects as blocks.

  scipy needs at least 3 methods; with 2 the Wilcoxon signed-rank test is the paired
  alternative and is returned instead (test='wilcoxon').

  Returns:
    {'test', 'statistic', 'p'}.
  """
  columns = [matrix[m].to_numpy(np.float64) for m in matrix.columns]
  if len(columns) >= 3:
    result = scipy_stats.friedmanchisquare(*columns)
    return {"test": "friedman", "statistic": float(result.statistic),
            "p": float(result.pvalue)}
  diff = columns[1] - columns[0]
  if not np.any(diff):
    return {"test": "wilcoxon", "statistic": math.nan, "p": math.nan}
  result = scipy_stats.wilcoxon(columns[0], columns[1])
  return {"test": "wilcoxon", "statistic": float(result.statistic), "p": float(result.pvalue)}


# The studentized range distribution is a numerical integral (a root search for the
# quantile), ~10 ms a call; metrics of one report share k and often the same ranks.
@functools.lru_cache(maxsize=1024)
def _studentized_range_sf(q: float, k: int) -> float:
  return min(1.0, float(scipy_stats.studentized_range.sf(q, k, np.inf)))


@functools.lru_cache(maxsize=64)
def _studentized_range_quantile(p: float, k: int) -> float:
  return float(scipy_stats.studentized_range.ppf(p, k, np.inf))


def nemenyi_critical_difference(k: int, n: int, alpha: float = ALPHA) -> float:
  """Demšar's (2006) Nemenyi critical difference of mean ranks.

  ``CD = q_alpha * sqrt(k (k + 1) / (6 n))`` with ``q_alpha`` the studentized range
  quantile for k groups and infinite degrees of freedom, divided by sqrt(2).

  Args:
    k: number of methods.
    n: number of subjects.
    alpha: significance level.
  """
  q = _studentized_range_quantile(1 - alpha, k) / math.sqrt(2)
  return float(q * math.sqrt(k * (k + 1) / (6.0 * n)))


def nemenyi(ranks: pd.DataFrame) -> pd.DataFrame:
  """Nemenyi post hoc p-values of every pair of methods from per-subject ranks.

  The mean-rank difference divided by ``sqrt(k (k + 1) / (6 n))`` times sqrt(2)
  follows the studentized range distribution (k groups, infinite df) under the
  null; the p-value is its survival function.

  Returns:
    methods x methods p-values (1 on the diagonal).
  """
  n, k = ranks.shape
  mean = ranks.mean(axis=0).to_numpy()
  se = math.sqrt(k * (k + 1) / (6.0 * n))
  p = np.ones((k, k))
  for i, j in itertools.combinations(range(k), 2):
    q = abs(mean[i] - mean[j]) / se * math.sqrt(2)
    if q > 0:
      p[i, j] = p[j, i] = _studentized_range_sf(round(q, 12), k)
  return pd.DataFrame(p, index=ranks.columns, columns=ranks.columns)


@dataclasses.dataclass
class Comparison:
  """Statistics of one metric across methods; `skipped` says why when not computed."""

  metric: str
  n_subjects: int
  skipped: str | None = None
  anova: dict | None = None
  tukey: pd.DataFrame | None = None
  friedman: dict | None = None
  mean_ranks: pd.Series | None = None
  nemenyi_p: pd.DataFrame | None = None
  critical_difference: float | None = None

  def differs(self, a: str, b: str, alpha: float = ALPHA) -> bool:
    """Whether Tukey HSD separates methods a and b (after a significant ANOVA)."""
    if self.tukey is None or self.anova is None or not self.anova["p"] < alpha:
      return False
    pair = self.tukey[((self.tukey.group1 == a) & (self.tukey.group2 == b))
                      | ((self.tukey.group1 == b) & (self.tukey.group2 == a))]
    return bool(len(pair)) and bool(pair.p.iloc[0] < alpha)


def compare_methods(table: pd.DataFrame, metric: str, methods: list[str],
                    alpha: float = ALPHA) -> Comparison:
  """Runs the section-4.9 statistics for one metric (or says why it cannot)."""
  matrix = complete_matrix(table, metric, methods)
  result = Comparison(metric=metric, n_subjects=len(matrix))
  if len(methods) < 2:
    result.skipped = "needs at least 2 methods"
  elif len(matrix) < 2:
    result.skipped = (f"needs at least 2 subjects scored by every method "
                      f"(have {len(matrix)})")
  if result.skipped:
    return result
  # Degenerate inputs (identical methods, a zero-noise column) make statsmodels and
  # scipy divide by zero; their NaN results are reported as "not computable".
  with warnings.catch_warnings(), np.errstate(divide="ignore", invalid="ignore"):
    warnings.simplefilter("ignore", RuntimeWarning)
    _run_tests(result, matrix, metric, methods, alpha)
  return result


def _run_tests(result: Comparison, matrix: pd.DataFrame, metric: str, methods: list[str],
               alpha: float) -> None:
  result.anova = repeated_measures_anova(matrix)
  result.tukey = tukey_hsd(matrix, alpha)
  ranks = rank_matrix(matrix, metric_info(metric).higher_is_better)
  result.friedman = friedman(matrix)
  result.mean_ranks = ranks.mean(axis=0)
  result.nemenyi_p = nemenyi(ranks)
  result.critical_difference = nemenyi_critical_difference(len(methods), len(matrix), alpha)
