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
  """One budget: its config argument, its size, and what it cost and bought when measured.

  The machine was shared with other jobs, so `seconds` is an upper bound: the fastest
  wall time measured per scan, with the load average then in `measured_under`.
  """
  name: str
  config_arg: str  # configs/smore.py:<config_arg>
  num_steps: int
  network: str  # e.g. '16 channels x 4 residual blocks, 32x32 patches'
  seconds: float  # Wall seconds per MNI152-size scan (197x233x189 at 1 mm), all included.
  psnr_gain_db: float  # Mean PSNR gain over cubic B-spline, Gaussian profile, 6 mm.
  measured_under: str  # The load and the phases behind the two figures.
  measured_by: str  # The command that measured them.

  def describe(self) -> str:
    """One line for `--help`."""
    return (f"{self.name}: {self.network}, {self.num_steps} steps; {self.seconds:.0f} s per "
            f"197x233x189 scan on 2 CPU cores, cubic {self.psnr_gain_db:+.1f} dB PSNR")


MEASURED_BY = "python benchmarks/time_to_quality.py (benchmarks/RESULTS.md, 2026-12-03)"


def _budget(name: str, seconds: float, gain: float, measured_under: str) -> Budget:
  size = smore.BUDGETS[name]
  return Budget(
      name=name, config_arg=name, num_steps=size["num_steps"],
      network=(f"{size['features']} channels x {size['num_blocks']} residual blocks, "
               f"{size['patch_size']}x{size['patch_size']} patches"),
      seconds=seconds, psnr_gain_db=gain, measured_under=measured_under,
      measured_by=MEASURED_BY)


BUDGETS: dict[str, Budget] = {b.name: b for b in (
    _budget("quick", 45, 2.10, "45 s at load average 1.5 (121 s at 5.3); gain: phases 0-1"),
    _budget("standard", 139, 2.50,
            "139 s at load average 3.3 (a rect scan; 247-258 s at 5-6.5); gain: phases 0-1"),
    _budget("thorough", 540, 3.14, "540 s at load average 2-5; gain: phase 0 only"),
)}
DEFAULT = "standard"


def config_arg(budget: str) -> str:
  """The `configs/smore.py` argument of a budget name; a one-line error for others."""
  if budget not in BUDGETS:
    raise ValueError(f"unknown budget {budget!r}; choose one of {', '.join(BUDGETS)}")
  return BUDGETS[budget].config_arg
