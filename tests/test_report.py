"""The QC report: maps of what a method added, the per-scan page in a real browser, the
cohort index, and the display windows the pages and figures share.

One tiny run (the random-weight workdir of tests/test_inference.py, with a stub method
that changes a known box) writes the output, its QC maps and its page; the browser test
opens that page from file:// in headless Chromium.
"""

import html.parser
import io
import os
import shutil
import urllib.parse

import nibabel as nib
import numpy as np
import PIL.Image
import pytest

from clade_jax import display
from clade_jax import inference
from clade_jax import qc_maps
from clade_jax import report
from clade_jax.data import consistency
from clade_jax.data import preprocess
from clade_jax.data import volume as volume_lib
from clade_jax.volume_srr import SROptions
from tests import phantoms
from tests import test_inference

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ARTIFACTS = os.path.join(REPO, "test-artifacts")
BOX = (slice(10, 20), slice(8, 24), slice(10, 22))  # where the stub method adds detail
workdir = test_inference.workdir  # the tiny random-weight run, as a fixture here too


class _AddsABox:
  """The run's real method, except that super-resolving adds 0.2 (normalised) in BOX."""

  def __init__(self, method):
    self._method = method

  def __getattr__(self, name):
    return getattr(self._method, name)

  def super_resolve(self, params, config, prepared, options):
    out = np.asarray(prepared.normalizer.forward(prepared.isotropic), np.float32).copy()
    out[BOX] += 0.2
    return out


@pytest.fixture(scope="module")
def stub_run(workdir, tmp_path_factory):
  """(Result, input path, output path) of `inference.run` with report and QC maps."""
  root = tmp_path_factory.mktemp("stub")
  data = 100.0 + 1000.0 * phantoms.body_phantom((40, 12, 36), seed=2)
  scan = test_inference.write_volume(root / "scan.nii.gz", data,
                                     test_inference.oblique_affine([1.0, 4.0, 1.0]))
  real_of = inference.methods.of
  with pytest.MonkeyPatch.context() as patch:
    patch.setattr(inference.methods, "of", lambda config: _AddsABox(real_of(config)))
    result = inference.run(workdir, scan, str(root / "scan_sr.nii.gz"),
                           options=SROptions(progress=False), report=True, qc_maps=True)
  return result, scan, str(root / "scan_sr.nii.gz")


def _prepared(workdir, scan):
  from clade_jax import checkpointing  # pylint: disable=g-import-not-at-top
  config = checkpointing.load_config(workdir)
  source = volume_lib.load_volume(scan)
  return source, preprocess.prepare_input(source.data, source.affine, config.data), config


# ---------------------------------------------------------------------- QC maps


def test_added_detail_is_output_minus_cubic_and_zero_where_nothing_changed(workdir, stub_run):
  result, scan, output_path = stub_run
  source, prepared, _ = _prepared(workdir, scan)
  output = volume_lib.load_volume(output_path)
  added = volume_lib.load_volume(result.qc_maps["added"])
  np.testing.assert_allclose(added.affine, output.affine, atol=1e-5)
  np.testing.assert_array_equal(added.data, output.data - prepared.isotropic)
  # The stub changed only BOX; elsewhere the output is the cubic input (clipped to the
  # acquired range, where the spline overshoots), so nothing was added.
  outside = np.ones(added.data.shape, bool)
  outside[BOX] = False
  lo, hi = prepared.acquired_range
  inside_range = (prepared.isotropic >= lo) & (prepared.isotropic <= hi)
  assert (outside & inside_range).sum() > 0.5 * outside.sum()
  np.testing.assert_array_equal(added.data[outside & inside_range], 0.0)
  # Inside BOX, 0.2 normalised units = 0.1 of the window, faded out near its edges.
  width = prepared.normalizer.hi - prepared.normalizer.lo
  assert 0.09 * width < np.max(added.data[BOX]) <= 0.1 * width + 1e-3


def test_slice_residual_map_is_reacquired_minus_acquired_at_the_nearest_slice(workdir, stub_run):
  result, scan, output_path = stub_run
  source, prepared, config = _prepared(workdir, scan)
  output = volume_lib.load_volume(output_path).data
  residual = volume_lib.load_volume(result.qc_maps["residual"]).data
  acquisition = inference.acquisition_model(source, prepared, config.data)
  axis = acquisition.thick_axis
  assert residual.shape == output.shape
  # Independently, line by line: slice k of A x - lr sits on output index round(centre_k).
  for k, centre in enumerate(acquisition.centres):
    j = int(round(centre))
    expected = (np.tensordot(acquisition.matrix[k], np.moveaxis(output, axis, 0), axes=1)
                - np.take(source.data, k, axis=axis))
    np.testing.assert_allclose(np.take(residual, j, axis=axis), expected, atol=1e-3)
  # Its RMS over the slices is the sidecar's residual.
  rms = np.sqrt(np.mean(np.square(np.take(residual, np.rint(acquisition.centres).astype(int),
                                          axis=axis))))
  np.testing.assert_allclose(rms, result.residual_before["rms"], rtol=1e-4)


def test_added_detail_refuses_arrays_on_different_grids():
  with pytest.raises(ValueError, match="not on one grid"):
    qc_maps.added_detail(np.zeros((2, 3, 4)), np.zeros((2, 3, 5)))


def test_nearest_slice_index_on_a_fractional_grid():
  matrix = np.full((3, 12), 1 / 12)
  acquisition = consistency.Acquisition(matrix=matrix, thick_axis=0,
                                        centres=np.array([0.0, 5.5, 11.0]))
  np.testing.assert_array_equal(qc_maps.nearest_slice_index(acquisition),
                                [0, 0, 0, 1, 1, 1, 1, 1, 1, 2, 2, 2])


# ------------------------------------------------------------------------ page


def test_scan_page_states_the_sidecar_facts(stub_run):
  result, _, _ = stub_run
  assert result.report == report.report_paths(result.output)[0]
  text = open(result.report, encoding="utf-8").read()
  for fact in ("checkpoint step", "slice profile", "gaussian, thickness 4 mm",
               "intensity window", "slice residual", "data consistency off", "time",
               "versions", "jax ", os.path.basename(result.qc_maps["added"])):
    assert fact in text, fact
  assert f"{100 * result.residual_before['rms_relative']:.3g}%" in text
  folder = report.report_paths(result.output)[1]
  for asset in ("vendor/niivue.umd.js", "vendor/LICENSE", "viewer.js", "volumes.js"):
    assert os.path.getsize(os.path.join(folder, asset)) > 0, asset


def test_facts_name_the_gap_between_slices_and_the_data_consistency_residual():
  sidecar = {"config": {"method": "smore", "data": {"slice_thickness": 3.0}},
             "inference": {"step": 7, "residual_before": {"rms_relative": 0.05,
                                                          "max_abs_relative": 0.2},
                           "residual_after": {"rms_relative": 1e-6, "max_abs_relative": 1e-5}}}
  rows = dict(report.scan_facts(sidecar, slice_spacing=5.0))
  assert rows["slice profile"] == "gaussian, thickness 3 mm, slice spacing 5 mm; gap 2 mm"
  assert rows["slice residual"] == ("5% (max 20%) RMS of the input&#x27;s robust range; "
                                    "after data consistency 0.0001% (max 0.001%)")


def test_display_volumes_keep_the_end_voxel_centres_and_the_thick_axis():
  affine = test_inference.oblique_affine([1.0, 1.0, 6.0])
  shape, small = report.display_grid((400, 200, 30), affine, max_dim=100)
  # Field of view 400 mm over 100 voxels: 4 mm, but the 6 mm axis stays as it is.
  assert shape == (101, 51, 30)
  np.testing.assert_allclose(np.linalg.norm(small[:3, :3], axis=0), [399 / 100, 199 / 50, 6.0])
  for corner in [(0, 0, 0), (399, 199, 29)]:
    scaled = [c * (m - 1) / (n - 1) for c, n, m in zip(corner, (400, 200, 30), shape)]
    np.testing.assert_allclose(small @ [*scaled, 1], affine @ [*corner, 1], atol=1e-9)
  data = np.random.default_rng(0).normal(size=(400, 200, 30)).astype(np.float32)
  reduced = report.to_display(data, shape)
  assert reduced.shape == shape
  assert reduced[0, 0, 0] == data[0, 0, 0] and reduced[-1, -1, -1] == data[-1, -1, -1]
  # Linear interpolation is exact on a linear ramp: voxel i samples index i * step.
  ramp = np.add.outer(np.add.outer(np.arange(400) * 1.0, np.arange(200) * 3.0), np.arange(30) * 7.0)
  i, j, k = np.meshgrid(*[np.arange(n) for n in shape], indexing="ij")
  np.testing.assert_allclose(report.to_display(ramp, shape),
                             i * 399 / 100 + j * 3.0 * 199 / 50 + k * 7.0, atol=1e-3)


@pytest.mark.parametrize("kind", ["ct", "mri"])
def test_embedded_volume_round_trips_within_its_step(kind):
  rng = np.random.default_rng(1)
  data = (rng.integers(-1024, 3000, size=(6, 5, 4)) if kind == "ct"
          else rng.uniform(-3.5, 812.25, size=(6, 5, 4))).astype(np.float32)
  storage = report.grey_storage(float(data.min()), float(data.max()), kind)
  encoded = report.encode_nifti(data, np.eye(4), storage)
  import base64, gzip  # pylint: disable=g-import-not-at-top,multiple-imports
  image = nib.Nifti1Image.from_bytes(gzip.decompress(base64.b64decode(encoded)))
  assert image.get_data_dtype() == (np.int16 if kind == "ct" else np.uint8)
  np.testing.assert_allclose(image.get_fdata(), data, atol=storage[1] / 2 + 1e-4)


class _Links(html.parser.HTMLParser):
  def __init__(self):
    super().__init__()
    self.links = []

  def handle_starttag(self, tag, attrs):
    if tag == "a" and dict(attrs).get("href", "").endswith(".html"):
      self.links.append(dict(attrs)["href"])


def test_cohort_index_links_every_page(tmp_path):
  rng = np.random.default_rng(0)
  rows = []
  for i, name in enumerate(["sub-01", "sub-02", "sub-03"]):
    cubic = rng.normal(100, 10, size=(10, 9, 8)).astype(np.float32)
    page = str(tmp_path / "scans" / f"{name}_report.html")
    report.write_scan_report(page, acquired=(cubic[:, :, ::2], np.diag([1, 1, 2, 1])),
                             cubic=cubic, output=cubic + 1,
                             affine=np.eye(4), sidecar={"inference": {"step": 5}},
                             title=name, seconds=10.0 + i)
    rows.append({"name": name, "status": "done", "seconds": 10.0 + i, "residual": 0.01,
                 "link": page if i != 1 else os.path.relpath(page, tmp_path)})
  rows.append({"name": "sub-04", "status": "failed", "reason": "sub-04.nii.gz: not a NIfTI "
               "file", "link": None})
  index = report.write_cohort_index(str(tmp_path / "index.html"), rows)
  parser = _Links()
  text = open(index, encoding="utf-8").read()
  parser.feed(text)
  assert len(parser.links) == 3
  for link, name in zip(parser.links, ["sub-01", "sub-02", "sub-03"]):
    assert not os.path.isabs(link)  # the folder can move
    assert os.path.isfile(tmp_path / urllib.parse.unquote(link))
    assert link.endswith(f"{name}_report.html")
  assert "not a NIfTI file" in text and 'class="status failed"' in text
  with pytest.raises(ValueError, match="status"):
    report.write_cohort_index(str(tmp_path / "bad.html"), [{"name": "x", "status": "ok"}])


# ------------------------------------------------------------------- windows


def test_ct_gets_brain_and_bone_presets_and_mri_robust_percentiles():
  rng = np.random.default_rng(0)
  ct = np.full((20, 20, 20), -1000.0)
  ct[4:16, 4:16, 4:16] = rng.normal(35, 5, size=(12, 12, 12))
  assert display.modality(ct) == "ct"
  assert display.windows(ct) == [("brain", (0.0, 80.0)), ("bone", (-500.0, 1500.0))]
  mri = np.zeros((20, 20, 20))
  mri[4:16, 4:16, 4:16] = rng.uniform(200, 600, size=(12, 12, 12))
  assert display.modality(mri) == "mri"
  [(name, (lo, hi))] = display.windows(mri)
  fg = mri[4:16, 4:16, 4:16]
  assert name == "robust"
  # Background black (the low end among all voxels), the top from the tissue alone.
  assert lo == 0.0
  np.testing.assert_allclose(hi, np.percentile(fg, 99.5))


def test_structure_point_finds_the_textured_corner_not_the_centre():
  image = np.zeros((64, 64))
  image[8:56, 8:56] = 1.0  # a flat disc of tissue
  image[40:52, 12:24] += np.random.default_rng(0).uniform(0, 1, size=(12, 12))
  row, col = display.structure_point(image, 12, mask=image > 0.5)
  assert 40 <= row < 52 and 12 <= col < 24


# ------------------------------------------------------------------- browser


def _chromium() -> str | None:
  for name in ("chromium", "chromium-browser", "google-chrome"):
    path = shutil.which(name)
    if path:
      return path
  return None


def test_report_opens_from_file_url_in_headless_chromium(stub_run, tmp_path):
  chromium = _chromium()
  if chromium is None:
    pytest.skip("chromium is not installed (Debian package 'chromium')")
  sync_api = pytest.importorskip("playwright.sync_api",
                                 reason="playwright (test extra) drives chromium")
  result, _, _ = stub_run
  url = "file://" + urllib.parse.quote(os.path.abspath(result.report))
  errors = []
  flags = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
           "--disable-background-networking", "--disable-component-update", "--disable-sync",
           "--enable-unsafe-swiftshader"]  # WebGL2 in software, as on a GPU-less machine
  with sync_api.sync_playwright() as p:
    browser = p.chromium.launch(executable_path=chromium, args=flags, headless=True)
    page = browser.new_page(viewport={"width": 1300, "height": 1000})
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    page.on("pageerror", lambda e: errors.append(str(e)))
    try:
      page.goto(url)
      page.wait_for_function("document.body.dataset.viewersReady !== undefined",
                             timeout=60_000)
      assert page.evaluate("document.body.dataset.viewersReady") == "4", errors
      page.wait_for_timeout(300)
      # Every canvas shows an image (as composited on screen: a WebGL canvas cannot be
      # read back once drawn): many distinct colours, not one blank fill.
      levels = []
      for i in range(4):
        png = page.locator(f"#viewer{i}").screenshot()
        pixels = np.asarray(PIL.Image.open(io.BytesIO(png)).convert("RGB")).reshape(-1, 3)
        levels.append(len(np.unique(pixels, axis=0)))
      assert min(levels) > 20, levels
      where = ("() => window.cladeViewers.map("
               "(nv) => Array.from(nv.frac2mm(nv.scene.crosshairPos)).slice(0, 3))")
      before = np.array(page.evaluate(where))
      box = page.locator("#viewer1").bounding_box()
      # Into the first (left) plane of the second panel, off its centre.
      page.mouse.click(box["x"] + box["width"] * 0.12, box["y"] + box["height"] * 0.3)
      page.wait_for_timeout(300)
      after = np.array(page.evaluate(where))
      moved = np.abs(after[1] - before[1]).max()
      assert moved > 1.0, (before, after)
      # Every panel's crosshair followed, to the same world point.
      np.testing.assert_allclose(after, np.repeat(after[1:2], 4, axis=0), atol=0.5)
      assert not errors, errors
    except Exception:
      os.makedirs(ARTIFACTS, exist_ok=True)
      page.screenshot(path=os.path.join(ARTIFACTS, "report_failure.png"), full_page=True)
      raise
    finally:
      browser.close()


def test_infer_py_report_and_qc_maps_flags(workdir, stub_run, tmp_path, capsys):
  import infer  # pylint: disable=g-import-not-at-top
  _, scan, first_output = stub_run
  output = str(tmp_path / "cli_sr.nii.gz")
  real_of = inference.methods.of
  with pytest.MonkeyPatch.context() as patch:
    patch.setattr(inference.methods, "of", lambda config: _AddsABox(real_of(config)))
    # The same stub's first output as the "truth": the output matches it exactly.
    assert infer.main(["--workdir", workdir, "--input", scan, "--output", output,
                       "--no-progress", "--no-figure", "--report", "--qc-maps",
                       "--truth", first_output]) == 0
  printed = capsys.readouterr().out
  for path in [*qc_maps.paths(output).values(), report.report_paths(output)[0]]:
    assert os.path.isfile(path) and f"wrote {path}" in printed, path
  assert "against the truth: PSNR inf dB" in printed and "SSIM 1.0000" in printed
  page = open(report.report_paths(output)[0], encoding="utf-8").read()
  assert "against the truth" in page and "SSIM 1.000 (cubic 0." in page


def test_every_asset_a_page_copies_is_package_data():
  """`pip install .` (not -e) ships only what setup.cfg's package_data names."""
  import configparser  # pylint: disable=g-import-not-at-top
  import fnmatch  # pylint: disable=g-import-not-at-top
  parser = configparser.ConfigParser()
  parser.read(os.path.join(REPO, "setup.cfg"))
  patterns = [p.strip() for p in parser["options.package_data"]["clade_jax.report"].split(",")]
  for asset in report._ASSETS:  # pylint: disable=protected-access
    assert os.path.isfile(os.path.join(REPO, "clade_jax", "report", asset)), asset
    assert any(fnmatch.fnmatch(asset, p) for p in patterns), asset
