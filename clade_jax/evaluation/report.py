"""The report files: metrics.csv, table.md (the paper's Tables 1-2), stats.md."""

from __future__ import annotations

import math
import os

import numpy as np
import pandas as pd

from clade_jax import atomic
from clade_jax.data.volume import VolumeError
from clade_jax.evaluation.figures import plot_boxplots
from clade_jax.evaluation.metric_table import TRUTH_ROW, metric_columns, metric_info
from clade_jax.evaluation.statistics import ALPHA, Comparison, compare_methods

# Marks of "differs significantly from method j" in table.md, in method order, as the
# paper's Tables 1-2 use them.
SIGNIFICANCE_MARKS = ("*", "#", "†", "‡", "§", "¶", "‖", "**", "##", "††")


def atomic_write_text(path: str, text: str, protected: frozenset[str] = frozenset()) -> None:
  """Writes `text` to `path` via a temporary file and a rename.

  Args:
    path: destination.
    text: content.
    protected: real paths that must never be overwritten (the inputs).

  Raises:
    VolumeError: `path` is one of `protected`.
  """
  if os.path.realpath(path) in protected:
    raise VolumeError(f"{path}: refusing to overwrite an input")
  atomic.write_text(path, text)


def write_report(table: pd.DataFrame, out_dir: str, methods: list[str], *,
                 alpha: float = ALPHA, notes: list[str] | None = None,
                 protected: frozenset[str] = frozenset(), log=print) -> None:
  """Writes metrics.csv, stats.md, table.md and boxplots.png from the metrics table."""
  metric_names = metric_columns(table.columns)
  os.makedirs(out_dir, exist_ok=True)
  atomic_write_text(os.path.join(out_dir, "metrics.csv"),
                    table.to_csv(index=False, float_format="%.6g"), protected)
  results = {m: compare_methods(table, m, methods, alpha) for m in metric_names}
  atomic_write_text(os.path.join(out_dir, "stats.md"),
                    stats_markdown(results, methods, alpha, table), protected)
  atomic_write_text(os.path.join(out_dir, "table.md"),
                    summary_table_markdown(table, methods, results, alpha, notes), protected)
  plot_boxplots(table, methods, metric_names, os.path.join(out_dir, "boxplots.png"))
  log(f"wrote {out_dir}/metrics.csv, table.md, stats.md, boxplots.png")


def _fmt_p(p: float) -> str:
  if not np.isfinite(p):
    return "n/a"
  return "< 0.001" if p < 0.001 else f"{p:.3f}"


def _p_equals(p: float) -> str:
  text = _fmt_p(p)
  return f"p {text}" if text.startswith("<") else f"p = {text}"


def _markdown_table(header: list[str], rows: list[list[str]]) -> str:
  lines = ["| " + " | ".join(header) + " |", "|" + "|".join(["---"] * len(header)) + "|"]
  lines += ["| " + " | ".join(row) + " |" for row in rows]
  return "\n".join(lines)


def _escape_marks(text: str) -> str:
  """Backslash-escapes * and # so markdown shows them instead of emphasis/headings."""
  return text.replace("*", "\\*").replace("#", "\\#")


def _collapse_notes(notes: list[str]) -> list[str]:
  """Merges "<subject> / <method>: message" notes that share a message."""
  merged: dict[str, list[str]] = {}
  for note in notes:
    where, sep, message = note.partition(": ")
    if sep and " / " in where:
      merged.setdefault(message, []).append(where)
    else:
      merged.setdefault(note, [])
  out = []
  for message, where in merged.items():
    if not where:
      out.append(message)
    elif len(where) == 1:
      out.append(f"{where[0]}: {message}")
    else:
      out.append(f"{message} ({len(where)} volumes, e.g. {where[0]})")
  return out


def summary_table_markdown(table: pd.DataFrame, methods: list[str],
                           comparisons: dict[str, Comparison] | None = None,
                           alpha: float = ALPHA, notes: list[str] | None = None) -> str:
  """Mean +/- sd per method and metric, the paper's Tables 1-2 layout.

  The best mean per metric is bold (by the metric's direction; metrics with no
  better direction are not bolded). A mark after a value says the method differs
  significantly (Tukey HSD after a significant repeated-measures ANOVA, p < alpha)
  from the earlier method that mark stands for.

  Returns:
    Markdown text.
  """
  comparisons = comparisons or {}
  metric_names = metric_columns(table.columns)
  marks = dict(zip(methods, SIGNIFICANCE_MARKS))
  header = ["Method"]
  for m in metric_names:
    info = metric_info(m)
    arrow = {True: " ↑", False: " ↓", None: ""}[info.higher_is_better]
    header.append(info.label + arrow)
  grouped = table.groupby("method")
  rows = []
  best = {}
  for m in metric_names:
    means = grouped[m].mean().reindex(methods)
    direction = metric_info(m).higher_is_better
    finite = means[np.isfinite(means)]
    if direction is None or finite.empty:
      best[m] = set()
    else:
      target = finite.max() if direction else finite.min()
      best[m] = set(finite.index[np.isclose(finite, target, rtol=1e-12, atol=0)])
  used_marks = set()
  for method in methods:
    row = [method]
    for m in metric_names:
      values = table.loc[table.method == method, m].to_numpy(np.float64)
      values = values[np.isfinite(values)]
      decimals = metric_info(m).decimals
      if values.size == 0:
        row.append("–")
        continue
      sd = values.std(ddof=1) if values.size > 1 else math.nan
      text = f"{values.mean():.{decimals}f}"
      if np.isfinite(sd):
        text += f" ± {sd:.{decimals}f}"
      if method in best[m]:
        text = f"**{text}**"
      comparison = comparisons.get(m)
      if comparison is not None:
        sig = "".join(marks[other] for other in methods[:methods.index(method)]
                      if other in marks and comparison.differs(method, other, alpha))
        if sig:
          used_marks.update(o for o in methods[:methods.index(method)]
                            if comparison.differs(method, o, alpha))
          text += f"<sup>{_escape_marks(sig)}</sup>"
      row.append(text)
    rows.append(row)
  reference = table[table.method == TRUTH_ROW]
  if len(reference):
    row = [f"*{TRUTH_ROW} (reference)*"]
    for m in metric_names:
      values = reference[m].to_numpy(np.float64)
      values = values[np.isfinite(values)]
      decimals = metric_info(m).decimals
      if values.size == 0:
        row.append("–")
      else:
        sd = f" ± {values.std(ddof=1):.{decimals}f}" if values.size > 1 else ""
        row.append(f"*{values.mean():.{decimals}f}{sd}*")
    rows.append(row)
  n_subjects = table.loc[table.method != TRUTH_ROW, "subject"].nunique()
  lines = [f"Mean ± sd over {n_subjects} volume(s); ↑ higher is better, ↓ lower is better; "
           f"best mean in bold.", "", _markdown_table(header, rows), ""]
  if len(reference):
    lines.append(f"*{TRUTH_ROW} (reference)*: the ground truth on the output grid, scored by "
                 f"the no-reference metrics only (what a perfect reconstruction would get); "
                 f"not part of the ranking or statistics.  ")
  for method in methods:
    if method in used_marks:
      lines.append(f"<sup>{_escape_marks(marks[method])}</sup> differs from {method} (Tukey "
                   f"HSD after repeated-measures ANOVA, p < {alpha:g}).  ")
  skipped = [f"{metric_info(m).label}: {c.skipped}" for m, c in comparisons.items()
             if c.skipped]
  if skipped:
    lines += ["", "Statistics skipped: " + "; ".join(skipped) + "."]
  if notes:
    lines += ["", "Notes:", ""] + [f"- {n}" for n in _collapse_notes(notes)]
  return "\n".join(lines).rstrip() + "\n"


def stats_markdown(comparisons: dict[str, Comparison], methods: list[str], alpha: float,
                   table: pd.DataFrame | None = None) -> str:
  """The statistics of every metric as markdown (section 4.9 of the paper)."""
  lines = ["# Statistics", "",
           f"Methods (in order): {', '.join(methods)}. Significance level {alpha:g}.", "",
           "Per metric: one-way repeated-measures ANOVA (statsmodels `AnovaRM`, method as "
           "the within-subject factor) with Tukey HSD post hoc (statsmodels "
           "`pairwise_tukeyhsd`, which treats methods as independent groups, as the paper "
           "did); Friedman test on the per-subject values (scipy; Wilcoxon signed-rank "
           "for 2 methods) with the Nemenyi post hoc on mean ranks (rank 1 = best; "
           "studentized range, infinite df; Demšar 2006).", ""]
  for metric, c in comparisons.items():
    info = metric_info(metric)
    lines += [f"## {info.label} (`{metric}`)", ""]
    if c.skipped:
      lines += [f"Skipped: {c.skipped}.", ""]
      continue
    a = c.anova
    verdict = ("no within-subject variation (identical values): not computable"
               if not np.isfinite(a["p"]) else
               ("significant" if a["p"] < alpha else "not significant"))
    lines += [f"Repeated-measures ANOVA over {c.n_subjects} subjects: "
              f"F({a['df_num']:g}, {a['df_den']:g}) = {a['F']:.3f}, {_p_equals(a['p'])} "
              f"({verdict}).", "", "Tukey HSD:", ""]
    lines.append(_markdown_table(
        ["group1", "group2", "mean diff (2 - 1)", "95% CI", "p-adj", "reject"],
        [[r.group1, r.group2, f"{r.meandiff:.4g}", f"[{r.lower:.4g}, {r.upper:.4g}]",
          _fmt_p(r.p), "yes" if r.reject else "no"] for r in c.tukey.itertuples()]))
    f = c.friedman
    name = "Friedman chi²" if f["test"] == "friedman" else "Wilcoxon W"
    lines += ["", f"{name} = {f['statistic']:.3f}, {_p_equals(f['p'])}. Nemenyi "
              f"critical difference of mean ranks: {c.critical_difference:.3f}.", ""]
    header = ["method", "mean rank"] + methods
    rows = [[m, f"{c.mean_ranks[m]:.2f}"] + [
        "–" if m == o else _fmt_p(c.nemenyi_p.loc[m, o]) for o in methods] for m in methods]
    lines += ["Nemenyi p-values:", "", _markdown_table(header, rows), ""]
  return "\n".join(lines).rstrip() + "\n"
