"""The Colab notebook runs top to bottom (at 4 training steps), so it cannot rot unseen."""

import pathlib

import nbformat
import numpy as np
from nbclient import NotebookClient

from clade_jax.data.volume import load_volume

ROOT = pathlib.Path(__file__).resolve().parents[1]
NOTEBOOK = ROOT / "notebooks" / "clade_colab.ipynb"


def test_notebook_trains_super_resolves_and_scores(tmp_path, monkeypatch):
  monkeypatch.setenv("CLADE_NOTEBOOK_STEPS", "4")
  monkeypatch.setenv("CLADE_NOTEBOOK_WORKDIR", str(tmp_path / "run"))
  monkeypatch.setenv("JAX_PLATFORMS", "cpu")
  # The kernel is a fresh process: it must not inherit the test session's fake devices.
  monkeypatch.delenv("XLA_FLAGS", raising=False)
  notebook = nbformat.read(NOTEBOOK, as_version=4)
  NotebookClient(notebook, timeout=600, kernel_name="python3",
                 resources={"metadata": {"path": str(ROOT)}}).execute()
  out = load_volume(tmp_path / "run" / "sr.nii.gz")
  np.testing.assert_allclose(out.spacing, 1.0, atol=1e-5)
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
