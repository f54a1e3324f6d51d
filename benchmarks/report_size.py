"""Size and writing time of the QC report of a 256^3 scan (`clade_jax/report`).

    python benchmarks/report_size.py --out /tmp/report_size

The MNI152 T1 template (1 mm, nilearn's wheel; scaled to 0..1000) padded to 256^3 is
the truth; thickened to 4 mm slices along the last axis with 1 % noise
(`degrade.degrade`, Gaussian profile) it is the acquired scan; its cubic-spline
resampling is the method's starting point and the truth stands in for the output, so
the added-detail map holds what a perfect method would add. Prints the bytes of the
page, of its folder and of each asset.
"""

import argparse
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import numpy as np  # noqa: E402

from clade_jax import report  # noqa: E402
from clade_jax.data import demo  # noqa: E402
from clade_jax.data import volume as volume_lib  # noqa: E402
from clade_jax.data.degrade import degrade  # noqa: E402


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("--out", required=True, help="folder for the report")
  parser.add_argument("--size", type=int, default=256, help="cube side in voxels")
  args = parser.parse_args()
  template = demo.load_template()
  data = np.zeros((args.size,) * 3, np.float32)
  src = np.asarray(template.data, np.float32)[:args.size, :args.size, :args.size] * 1000
  offset = [(args.size - n) // 2 for n in src.shape]
  data[tuple(slice(o, o + n) for o, n in zip(offset, src.shape))] = src
  affine = np.eye(4)
  affine[:3, 3] = -args.size / 2
  truth = volume_lib.Volume(data, affine)
  acquired = degrade(truth, 2, spacing_mm=4.0, noise_sigma=0.01, seed=0)
  cubic = volume_lib.resample_thick_axis(acquired, 2, 1.0)
  output = volume_lib.crop_truth(truth, cubic.data.shape, cubic.affine)
  page = os.path.join(args.out, "scan_report.html")
  start = time.perf_counter()
  report.write_scan_report(page, acquired=(acquired.data, acquired.affine), cubic=cubic.data,
                           output=output, affine=cubic.affine,
                           sidecar={"inference": {"step": 0, "method": "truth"}},
                           title=f"MNI152 {args.size}^3")
  seconds = time.perf_counter() - start
  folder = page[:-len(".html")]  # write_page puts the assets beside the page
  sizes = {os.path.relpath(os.path.join(root, name), args.out):
           os.path.getsize(os.path.join(root, name))
           for root, _, names in os.walk(folder) for name in names}
  total = os.path.getsize(page) + sum(sizes.values())
  print(f"acquired {acquired.data.shape}, output {cubic.data.shape}; written in {seconds:.1f} s")
  for name, size in sorted(sizes.items()):
    print(f"  {name}: {size / 1e6:.2f} MB")
  print(f"page + folder: {total / 1e6:.1f} MB")


if __name__ == "__main__":
  main()
