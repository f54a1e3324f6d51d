"""Scoring super-resolved volumes: metrics per volume, the paper's tables, statistics, figures.

`evaluate` is the library behind the top-level ``evaluate.py``. For every subject and
method it computes the no-reference metrics of the paper (PIQUE, edge sharpness, SNR)
and, against a ground-truth isotropic volume, PSNR and SSIM (`metric_table` lists them).
With a truth, the truth itself is also scored by the no-reference metrics (method
``truth``: the value a perfect reconstruction gets, e.g. the true edge sharpness); it is
shown as a reference row and line, never ranked or tested.

It writes ``metrics.csv`` (one row per subject x method), ``table.md`` (mean +/- sd
per method, the layout of the paper's Tables 1-2, best in bold, significance marks),
``boxplots.png`` (like Fig. 5), ``figures/<subject>.png`` (orthogonal slices, methods
side by side, a magnified inset) and ``stats.md`` (section 4.9: one-way repeated
measures ANOVA with Tukey HSD post hoc per metric; Friedman with Nemenyi post hoc on
the per-subject rankings).

Modules:
* `scoring`: input files by subject, truth geometry, ROIs, `score_volume`, `evaluate`;
* `metric_table`: the metric columns (label, direction, precision, order), `TRUTH_ROW`;
* `statistics`: ANOVA, Tukey HSD, Friedman, Nemenyi, `compare_methods`;
* `report`: metrics.csv, table.md and stats.md (`write_report`);
* `figures`: box plots (the orthogonal-slice figure is `clade_jax.plotting`'s).
"""

from clade_jax.evaluation.figures import plot_boxplots
from clade_jax.evaluation.metric_table import TRUTH_ROW, MetricInfo, metric_columns, metric_info
from clade_jax.evaluation.report import (SIGNIFICANCE_MARKS, atomic_write_text, stats_markdown,
                                         summary_table_markdown, write_report)
from clade_jax.evaluation.scoring import (NIFTI_SUFFIX_RE, AlignmentError, crop_truth, evaluate,
                                          find_volumes, load_rois, low_resolution_planes,
                                          match_subjects, plane_axis, roi_mask, rois_for,
                                          score_volume, subject_id)
from clade_jax.evaluation.statistics import (ALPHA, Comparison, compare_methods, complete_matrix,
                                             friedman, nemenyi, nemenyi_critical_difference,
                                             rank_matrix, repeated_measures_anova, tukey_hsd)
from clade_jax.plotting import orthogonal_slices
