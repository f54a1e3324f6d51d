"""PROVISIONAL (replaced by the measured table of issue 24)."""

NAMES = ("quick", "standard", "thorough")


def config_arg(method: str, budget: str) -> str | None:
  if budget not in NAMES:
    raise ValueError(f"--budget {budget}: not one of {', '.join(NAMES)}")
  return "cpu" if method == "smore" else None


def describe() -> str:
  return "  (provisional)"
