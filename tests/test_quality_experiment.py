"""experiments/quality/run.py: the seam measure and the table's training variants."""

import importlib.util
import os
import sys

import numpy as np

from clade_jax import srr

HERE = os.path.dirname(os.path.abspath(__file__))
spec = importlib.util.spec_from_file_location(
    "quality_run", os.path.join(HERE, "..", "experiments", "quality", "run.py"))
quality = importlib.util.module_from_spec(spec)
sys.modules["quality_run"] = quality  # Its dataclasses look their module up.
spec.loader.exec_module(quality)


def test_seam_ratio_is_one_without_a_grid_and_grows_with_one():
  rng = np.random.default_rng(0)
  image = 0.1 * rng.normal(size=(4, 80, 90))
  mask = np.ones(image.shape, bool)
  assert abs(quality.seam_ratio(image, mask, 32, 12) - 1.0) < 0.05
  # Steps where patches start or end, along both axes: a flat average's grid.
  grid = image.copy()
  for axis, n in ((1, 80), (2, 90)):
    starts = srr.patch_starts(n, 32, 12)
    for edge in {*starts[1:], *(starts[:-1] + 32)}:
      index = [slice(None)] * 3
      index[axis] = slice(edge, None)
      grid[tuple(index)] += 0.2
  assert quality.seam_ratio(grid, mask, 32, 12) > 1.5


def test_every_row_names_a_trained_variant_or_the_cubic_spline():
  for row in quality.ROWS:
    assert row.trained is None or row.trained in quality.TRAINED
  args = quality.parse_args(["--size", "demo", "--steps", "10"])
  config = quality.make_config("plus_no_residual", args, "lr.nii.gz", "t.nii.gz", "rect", 10)
  assert not config.model.residual and config.data.slice_profile == "rect"
  assert config.train.num_steps == 10 and config.data.truth == "t.nii.gz"
  assert config.eval.data_consistency and config.model.features == 16
