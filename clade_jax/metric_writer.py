"""Scalars to JSON lines (for scripts) and TensorBoard event files (for people).

TensorBoard files come from tensorboardX, which needs no TensorFlow. It is imported at
the first write, after a run's first step: it also imports PyTorch when that is
installed, 2 s of a re-run's start-up.
"""

from __future__ import annotations

import json
import math
import os

METRICS_FILE = "metrics.jsonl"


class MetricWriter:
  """Appends `{"step": s, name: value, ...}` lines and TensorBoard scalars.

  Args:
    workdir: run directory; files go to WORKDIR/metrics.jsonl and WORKDIR/tensorboard.
    resume_step: when resuming, lines logged after this step (by a run that was killed
      before its next checkpoint) are dropped, so the log matches the restored state.
  """

  def __init__(self, workdir: str, resume_step: int = 0):
    self.path = os.path.join(workdir, METRICS_FILE)
    if os.path.exists(self.path):
      with open(self.path) as f:
        kept = [line for line in f if line.strip() and json.loads(line)["step"] <= resume_step]
      with open(self.path, "w") as f:
        f.writelines(kept)
    self._workdir, self._resume_step = workdir, resume_step
    self._tensorboard = None

  @property
  def tensorboard(self):
    if self._tensorboard is None:
      from tensorboardX import SummaryWriter  # pylint: disable=g-import-not-at-top
      self._tensorboard = SummaryWriter(os.path.join(self._workdir, "tensorboard"),
                                        purge_step=self._resume_step + 1)
    return self._tensorboard

  def write_scalars(self, step: int, scalars: dict[str, float]) -> None:
    scalars = {k: float(v) for k, v in scalars.items()}
    with open(self.path, "a") as f:
      f.write(json.dumps({"step": step, **{k: (v if math.isfinite(v) else str(v))
                                            for k, v in scalars.items()}}) + "\n")
    for name, value in scalars.items():
      self.tensorboard.add_scalar(name, value, step)
    self.tensorboard.flush()

  def close(self) -> None:
    if self._tensorboard is not None:
      self._tensorboard.close()


def read_metrics(workdir: str) -> list[dict]:
  with open(os.path.join(workdir, METRICS_FILE)) as f:
    return [json.loads(line) for line in f if line.strip()]
