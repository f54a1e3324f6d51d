"""Scalars to JSON lines (for scripts) and TensorBoard event files (for people).

TensorBoard files come from tensorboardX, which needs no TensorFlow.
"""

from __future__ import annotations

import json
import math
import os

from tensorboardX import SummaryWriter

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
    self.tensorboard = SummaryWriter(os.path.join(workdir, "tensorboard"), purge_step=resume_step + 1)

  def write_scalars(self, step: int, scalars: dict[str, float]) -> None:
    scalars = {k: float(v) for k, v in scalars.items()}
    with open(self.path, "a") as f:
      f.write(json.dumps({"step": step, **{k: (v if math.isfinite(v) else str(v))
                                            for k, v in scalars.items()}}) + "\n")
    for name, value in scalars.items():
      self.tensorboard.add_scalar(name, value, step)
    self.tensorboard.flush()

  def close(self) -> None:
    self.tensorboard.close()


def read_metrics(workdir: str) -> list[dict]:
  with open(os.path.join(workdir, METRICS_FILE)) as f:
    return [json.loads(line) for line in f if line.strip()]
