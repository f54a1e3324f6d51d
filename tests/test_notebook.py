"""The Colab notebook runs top to bottom (at 4 training steps), so it cannot rot unseen."""

import pathlib

import nbformat
import nibabel as nib
import numpy as np
from nbclient import NotebookClient

from clade_jax.data import demo
from clade_jax.data.volume import load_volume

ROOT = pathlib.Path(__file__).resolve().parents[1]
NOTEBOOK = ROOT / "notebooks" / "clade_colab.ipynb"


def test_notebook_trains_super_resolves_and_scores(tmp_path, monkeypatch):
  # The user's path ("your thick-slice NIfTI" and its truth): a 64 x 22 x 64-voxel block
  # of the demo input, which keeps its world position, so the whole-head truth still
  # scores it; super-resolving all of the demo head would take a minute of CI.
  lr_path, truth_path = demo.ensure_demo_data(str(tmp_path / "demo_data"))
  block = tmp_path / "block.nii.gz"
  nib.save(nib.load(lr_path).slicer[64:128, 8:30, 56:120], block)
  notebook = nbformat.read(NOTEBOOK, as_version=4)
  assert notebook.cells[1].source.startswith("# Parameters")
  # As papermill injects parameters: a cell right after the parameters cell.
  notebook.cells.insert(2, nbformat.v4.new_code_cell(
      f"INPUT, TRUTH = {str(block)!r}, {truth_path!r}"))
  monkeypatch.setenv("CLADE_NOTEBOOK_STEPS", "4")
  monkeypatch.setenv("CLADE_NOTEBOOK_WORKDIR", str(tmp_path / "run"))
  monkeypatch.setenv("JAX_PLATFORMS", "cpu")
  # The kernel is a fresh process: it must not inherit the test session's fake devices.
  monkeypatch.delenv("XLA_FLAGS", raising=False)
  NotebookClient(notebook, timeout=600, kernel_name="python3",
                 resources={"metadata": {"path": str(ROOT)}}).execute()
  out = load_volume(tmp_path / "run" / "sr.nii.gz")
  np.testing.assert_allclose(out.spacing, 1.0, atol=1e-5)
  assert out.data.shape == (64, (22 - 1) * 6 + 1, 64)  # From the first slice to the last.
  text = "".join(o.get("text", "") for cell in notebook.cells if cell.cell_type == "code"
                 for o in cell.get("outputs", []))
  assert "trained to step 4" in text
  scores = "".join(o.get("text", "") for o in notebook.cells[-1].get("outputs", []))
  assert "cubic: PSNR" in scores and scores.count("PSNR") == 2  # Cubic and the method.
  assert not [o for cell in notebook.cells for o in cell.get("outputs", [])
              if o.get("output_type") == "error"]
  figures = [o for cell in notebook.cells for o in cell.get("outputs", [])
             if "image/png" in o.get("data", {})]
  assert len(figures) >= 3  # Losses, samples, orthogonal slices.
