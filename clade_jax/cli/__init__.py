"""The `clade-jax` command: `sr` for users, `train`, `infer` and `evaluate` for research.

    clade-jax sr scan.nii.gz --out out/        # train on the scan, super-resolve it
    clade-jax train --config=configs/smore.py --config.data.root=scan.nii.gz --workdir=W
    clade-jax infer --workdir W --input scan.nii.gz --output scan_sr.nii.gz
    clade-jax evaluate --method cubic=DIR --method smore=DIR --truth DIR --out eval/

`train`, `infer` and `evaluate` are the programs of the clone's `train.py`, `infer.py`
and `evaluate.py`, with the same flags; configs are found from any folder.
"""

from __future__ import annotations

import sys

COMMANDS = {
    "sr": ("clade_jax.cli.sr", "train on each scan and super-resolve it (scans, DICOM, "
                               "BIDS, cohorts)"),
    "train": ("clade_jax.cli.train", "train a method from a config (python train.py)"),
    "infer": ("clade_jax.cli.infer", "super-resolve a scan with a trained workdir "
                                     "(python infer.py)"),
    "evaluate": ("clade_jax.cli.evaluate", "score outputs against a truth, PIQUE, "
                                           "statistics (python evaluate.py)"),
}


def usage() -> str:
  lines = ["usage: clade-jax COMMAND [options]   (clade-jax COMMAND --help for each)", "",
           "Unsupervised super-resolution of anisotropic 3D MRI and CT.", "", "commands:"]
  lines += [f"  {name:<9} {text}" for name, (_, text) in COMMANDS.items()]
  lines += ["", "Start with: clade-jax sr scan.nii.gz --out out/"]
  return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
  """Entry point of the `clade-jax` console script."""
  import importlib  # pylint: disable=g-import-not-at-top
  argv = list(sys.argv[1:] if argv is None else argv)
  if not argv or argv[0] in ("-h", "--help", "help"):
    print(usage())
    return 0
  if argv[0] in ("-V", "--version"):
    from importlib import metadata  # pylint: disable=g-import-not-at-top
    try:
      print(f"clade-jax {metadata.version('clade-jax')}")
    except metadata.PackageNotFoundError:
      print("clade-jax (not installed)")
    return 0
  command, rest = argv[0], argv[1:]
  if command not in COMMANDS:
    print(f"clade-jax: error: unknown command {command!r}\n\n{usage()}", file=sys.stderr)
    return 2
  module = importlib.import_module(COMMANDS[command][0])
  prog = f"clade-jax {command}"
  if command == "train":  # absl parses sys.argv-style lists (program name first).
    module.run([prog, *rest])
    return 0
  sys.argv[0] = prog  # argparse's usage line names the program from it.
  return module.main(rest)
