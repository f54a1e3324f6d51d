"""Data consistency within the acquired range on the MNI152 template (issue 27).

5 mm Gaussian slices along L-R (voxel axis 0), noise-free and with 2 % Rician noise;
the cubic spline stands in for a method's output. Compares the clip alone, the old
clip-then-project, and `consistency.project_within` (alternating projections ending
on the clip): PSNR inside the brain (truth > 5 % of its max), negative voxels, maximum,
slice residual.

    python experiments/consistency_range/run.py
"""

import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.abspath(os.path.join(os.path.dirname(__file__), "..", "..")))

from clade_jax import baselines  # noqa: E402
from clade_jax.data import consistency, degrade, demo  # noqa: E402


def main() -> int:
  template = demo.load_template()
  print("| noise | output | PSNR (dB) | min | negative voxels | max (acquired max) | "
        "slice residual (rms, of range) | seconds |")
  print("|---|---|---|---|---|---|---|---|")
  for noise in (0.0, 0.02):
    lr = degrade.degrade(template, 0, 5.0, profile="gaussian", noise_sigma=noise, offset_vox=0)
    cubic = baselines.upsample(lr, 0, "cubic", 1.0)
    acquisition = consistency.for_grid(lr.data.shape, lr.affine, cubic.data.shape,
                                       cubic.affine, 0)
    truth = template.data[:cubic.data.shape[0]]
    mask = truth > 0.05 * truth.max()
    data_range = float(truth.max() - truth.min())
    limits = (float(lr.data.min()), float(lr.data.max()))
    clipped = np.clip(cubic.data, *limits)
    outputs = [("clip", lambda: clipped),
               ("clip, then project", lambda: consistency.project(clipped, lr.data, acquisition)),
               ("project_within", lambda: consistency.project_within(
                   clipped, lr.data, acquisition, limits))]
    for name, make in outputs:
      start = time.perf_counter()
      x = make()
      seconds = time.perf_counter() - start
      psnr = 10 * np.log10(data_range ** 2 / np.mean((x[mask] - truth[mask]) ** 2))
      residual = consistency.residual(x, lr.data, acquisition)["rms_relative"]
      print(f"| {noise:.0%} | {name} | {psnr:.2f} | {x.min():.4f} | {np.mean(x < 0):.2%} | "
            f"{x.max():.3f} ({limits[1]:.3f}) | {residual:.1e} | {seconds:.1f} |")
  return 0


if __name__ == "__main__":
  sys.exit(main())
