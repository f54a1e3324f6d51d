"""The metrics table (metrics.csv): its metric columns and the ground-truth row.

Columns, one per metric (`metric_info` gives each one's label, direction and
precision, `metric_columns` their order):

* without a reference (the paper's section 4.8): mean PIQUE over the 2D slices of
  each requested plane (``pique_<plane>``, lower is better), mean edge sharpness over
  the borders of the ROI file (``es``, mm^-1), and the estimated SNR with its signal
  mean and background standard deviation (``signal``, ``noise``, ``snr``);
* against a ground-truth isotropic volume (beyond the paper): ``psnr`` and 3D
  ``ssim`` within the truth's foreground, and the mean per-slice SSIM of each plane
  (``ssim_<plane>``).

Rows are subject x method, plus the ``truth`` reference row (`TRUTH_ROW`) when a
truth is given.
"""

from __future__ import annotations

import dataclasses

# metrics.csv/table.md row of the ground truth scored by the no-reference metrics; it
# is a reference, never part of the statistics.
TRUTH_ROW = "truth"


@dataclasses.dataclass(frozen=True)
class MetricInfo:
  """How a metric is labelled and judged.

  Attributes:
    label: column header in table.md.
    higher_is_better: True, False, or None when neither is better (signal, noise).
    decimals: digits after the point in table.md.
  """

  label: str
  higher_is_better: bool | None
  decimals: int


_FIXED_METRICS = {
    "psnr": MetricInfo("PSNR (dB)", True, 2),
    "ssim": MetricInfo("SSIM 3D", True, 4),
    "es": MetricInfo("Edge sharpness (mm⁻¹)", True, 3),
    "signal": MetricInfo("Signal", None, 3),
    "noise": MetricInfo("Noise", None, 4),
    "snr": MetricInfo("SNR", True, 1),
}
# The column order of metrics.csv and table.md: fidelity first, then the paper's.
_ORDER = ("psnr", "ssim", "ssim_", "pique_", "es", "signal", "noise", "snr")


def metric_info(name: str) -> MetricInfo:
  """Label, direction and precision of a metric column (see the module docstring)."""
  if name in _FIXED_METRICS:
    return _FIXED_METRICS[name]
  if name.startswith("pique_"):
    return MetricInfo(f"PIQUE {name[6:]}", False, 1)
  if name.startswith("ssim_"):
    return MetricInfo(f"SSIM {name[5:]} slices", True, 4)
  raise KeyError(f"unknown metric {name!r}")


def metric_columns(columns) -> list[str]:
  """The metric columns among `columns`, in the canonical order."""
  def known(c):
    try:
      metric_info(c)
      return True
    except KeyError:
      return False
  found = [c for c in columns if known(c)]
  def key(c):
    for i, prefix in enumerate(_ORDER):
      if c == prefix or (prefix.endswith("_") and c.startswith(prefix)):
        return (i, c)
    return (len(_ORDER), c)
  return sorted(found, key=key)
