"""QC reports: one HTML page per super-resolved scan, and an index per cohort.

A page (`write_scan_report`, or `write_page` for any set of volumes) opens from a
double click, offline, in any current browser: beside ``<stem>_report.html`` a folder
``<stem>_report/`` holds NiiVue's browser bundle (``vendor/``, its licence included),
the viewer script and ``volumes.js``, the volumes reduced for display (at most
`DISPLAY_MAX_DIM` voxels along any axis, never finer than the output; int16, gzipped
NIfTI) and embedded as base64 in a classic script, because Chromium refuses fetch/XHR
of file:// URLs. Move the page with its folder.

The page shows, linked by one crosshair over the three planes: the input (its acquired
slices repeated, "nearest"), the cubic spline the methods start from, the output, and
the output with the **added detail** (output minus cubic, `qc_maps.added_detail`) as a
diverging overlay (warm: brighter than cubic, cold: darker; transparent below 2 % of
the display window). Display windows fit the modality (`display.windows`): CT brain and
bone presets, MRI robust percentiles. Below the viewers: the sidecar's facts in words.

Cohorts: `write_cohort_index` writes a table of scans (status, reason, residual, time)
linking each page.
"""

from __future__ import annotations

import base64
import dataclasses
import datetime
import gzip
import html
import json
import os
import shutil

import nibabel as nib
import numpy as np
from scipy import ndimage

from clade_jax import atomic
from clade_jax import display
from clade_jax import qc_maps

# Longest field of view of the displayed volumes, in voxels: 176 keeps a 256 mm head at
# 1.45 mm (the ~1.5 mm a reader needs to judge the added detail) and a page of a
# 256^3 scan at a few MB. Axes already coarser (the acquired slices) keep their voxels.
DISPLAY_MAX_DIM = 176
_HERE = os.path.dirname(os.path.abspath(__file__))
_VENDOR = os.path.join(_HERE, "vendor")
_ASSETS = ("vendor/niivue.umd.js", "vendor/LICENSE", "vendor/LICENSES-bundled.txt",
           "vendor/README.md", "viewer.js")
# Added detail below this fraction of the display window is drawn transparent.
_OVERLAY_THRESHOLD = 0.02
STATUSES = ("done", "failed", "skipped")


def report_paths(output_path: str) -> tuple[str, str]:
  """``(<stem>_report.html, <stem>_report/)`` beside ``output_path`` (a NIfTI)."""
  stem = os.fspath(output_path)
  for suffix in (".nii.gz", ".nii"):
    if stem.endswith(suffix):
      stem = stem[:-len(suffix)]
      break
  return stem + "_report.html", stem + "_report"


# --------------------------------------------------------------------- volumes


def display_grid(shape, affine: np.ndarray, max_dim: int = DISPLAY_MAX_DIM):
  """The grid a volume is shown on: ``(shape, affine)``, no finer than the field of
  view over ``max_dim``.

  Axes finer than that spacing are resampled to it, coarser ones (the thick axis of
  an acquisition) are kept; voxel centres at both ends of every axis stay where they
  are, so the display volume overlays the original exactly.
  """
  shape = tuple(int(n) for n in shape)
  affine = np.asarray(affine, np.float64)
  spacing = np.sqrt((affine[:3, :3] ** 2).sum(axis=0))
  target = max(n * s for n, s in zip(shape, spacing)) / max_dim
  new_shape = tuple(n if s >= target or n < 3 else max(2, int(round((n - 1) * s / target)) + 1)
                    for n, s in zip(shape, spacing))
  step = [(n - 1) / (m - 1) if m > 1 else 1.0 for n, m in zip(shape, new_shape)]
  new_affine = affine.copy()
  new_affine[:3, :3] = affine[:3, :3] @ np.diag(step)
  return new_shape, new_affine


def to_display(data: np.ndarray, shape, order: int = 1) -> np.ndarray:
  """``data`` resampled onto a `display_grid` shape (same end voxel centres)."""
  data = np.asarray(data, np.float32)
  if tuple(data.shape) == tuple(shape):
    return data
  # Output voxel i samples input index i * step, the mapping of `display_grid`.
  step = [(n - 1) / (m - 1) if m > 1 else 1.0 for n, m in zip(data.shape, shape)]
  return ndimage.affine_transform(data, step, output_shape=tuple(shape), order=order,
                                  mode="nearest")


def grey_storage(lo: float, hi: float, kind: str) -> tuple[type, float, float]:
  """(dtype, slope, intercept) of the displayed grey volumes (``value = slope * q + inter``).

  CT keeps whole HU in int16 (-1024..3071 at 1 HU), so the brain and bone presets both
  work from one file. MRI gets 255 levels over [lo, hi] in uint8, finer than any
  display shows and half the size of int16 once compressed (the low bits of noisy
  float data do not compress).
  """
  if kind == "ct":
    return np.int16, 1.0, 0.0
  return np.uint8, max(hi - lo, 1e-12) / 255.0, lo


def encode_nifti(data: np.ndarray, affine: np.ndarray, storage: tuple[type, float, float]) -> str:
  """Base64 of a gzipped NIfTI of ``data`` stored as ``storage`` (`grey_storage`)."""
  dtype, slope, inter = storage
  info = np.iinfo(dtype)
  stored = np.clip(np.rint((np.asarray(data, np.float64) - inter) / slope), info.min, info.max)
  image = nib.Nifti1Image(stored.astype(dtype), affine)
  image.header.set_slope_inter(slope, inter)
  image.set_qform(affine, code=1)
  image.set_sform(affine, code=1)
  return base64.b64encode(gzip.compress(image.to_bytes(), compresslevel=6)).decode("ascii")


@dataclasses.dataclass(frozen=True)
class Panel:
  """One viewer: a grey volume, optionally a diverging overlay over it.

  Attributes:
    title: shown above the viewer.
    volume: key into the page's volumes (the grey image).
    overlay: key of a signed map drawn over it in warm/cold colours, or None.
    note: a short line under the title.
    nearest: show voxels as blocks (no interpolation), e.g. the acquired slices.
  """

  title: str
  volume: str
  overlay: str | None = None
  note: str = ""
  nearest: bool = False  # nearest-neighbour display: the acquired slices as they are


# ------------------------------------------------------------------------ HTML

_STYLE = """
:root { --ink: #1f2933; --muted: #52606d; --line: #d9e2ec; --accent: #1f6feb; --bg: #f5f7fa; }
* { box-sizing: border-box; }
body { margin: 0; font: 14px/1.5 -apple-system, "Segoe UI", Helvetica, Arial, sans-serif;
       color: var(--ink); background: var(--bg); }
header { background: #102a43; color: #f0f4f8; padding: 14px 28px; }
header h1 { margin: 0; font-size: 20px; font-weight: 600; }
header p { margin: 2px 0 0; color: #9fb3c8; font-size: 13px; }
nav { background: #243b53; padding: 6px 28px; }
nav a { color: #d9e2ec; margin-right: 18px; text-decoration: none; font-size: 13px; }
main { padding: 18px 28px 40px; max-width: 1500px; }
section { background: #fff; border: 1px solid var(--line); border-radius: 6px; padding: 14px 18px;
          margin-bottom: 18px; }
h2 { font-size: 16px; margin: 0 0 10px; border-bottom: 1px solid var(--line); padding-bottom: 6px; }
.status { display: inline-block; padding: 1px 8px; border-radius: 10px; font-size: 12px;
          font-weight: 600; }
.status.done { background: #e3f9e5; color: #05400a; }
.status.failed { background: #ffe3e3; color: #8a041a; }
.status.skipped { background: #fff3c4; color: #5c4813; }
table { border-collapse: collapse; width: 100%; }
th, td { text-align: left; padding: 5px 10px; border-bottom: 1px solid var(--line);
         vertical-align: top; }
th { color: var(--muted); font-weight: 600; font-size: 12px; text-transform: uppercase; }
td.num, th.num { text-align: right; font-variant-numeric: tabular-nums; }
table.facts th { width: 230px; text-transform: none; font-size: 13px; }
.grid { display: grid; grid-template-columns: repeat(auto-fill, minmax(560px, 1fr)); gap: 14px; }
.panel { border: 1px solid var(--line); border-radius: 4px; overflow: hidden; background: #000; }
.panel h3 { margin: 0; padding: 5px 10px; font-size: 13px; background: #f0f4f8; color: var(--ink); }
.panel h3 span { font-weight: normal; color: var(--muted); margin-left: 6px; }
.panel .canvas-box { width: 100%; height: 240px; }
.panel canvas { display: block; width: 100%; height: 100%; outline: none; }
.panel .value { background: #f0f4f8; color: var(--muted); font: 12px monospace; padding: 3px 10px;
                min-height: 22px; white-space: nowrap; overflow: hidden; }
.controls { margin-bottom: 10px; color: var(--muted); }
.controls button { font: inherit; border: 1px solid var(--line); background: #fff;
                   padding: 3px 12px; border-radius: 4px; cursor: pointer; margin-right: 4px; }
.controls button.active { background: var(--accent); color: #fff; border-color: var(--accent); }
.controls label { margin-left: 18px; }
.help { color: var(--muted); font-size: 13px; margin: 8px 0 0; }
img.figure { max-width: 100%; border: 1px solid var(--line); }
details pre { background: #f0f4f8; padding: 10px; overflow: auto; font-size: 12px;
              max-height: 420px; }
footer { color: var(--muted); font-size: 12px; padding: 0 28px 24px; }
"""


def _esc(value) -> str:
  return html.escape(str(value), quote=True)


def _page(title: str, subtitle: str, body: str, head: str = "", nav=()) -> str:
  links = "".join(f'<a href="#{_esc(a)}">{_esc(t)}</a>' for a, t in nav)
  nav_html = f"<nav>{links}</nav>" if links else ""
  made = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
  return (f'<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
          f'<meta name="viewport" content="width=device-width, initial-scale=1">\n'
          f"<title>{_esc(title)}</title>\n<style>{_STYLE}</style>\n{head}</head>\n<body>\n"
          f"<header><h1>{_esc(title)}</h1><p>{_esc(subtitle)}</p></header>\n{nav_html}\n"
          f"<main>\n{body}\n</main>\n<footer>Written by clade-jax on {made}. Viewer: NiiVue "
          f"(BSD-2-Clause), bundled beside this page.</footer>\n</body>\n</html>\n")


def _facts_table(rows) -> str:
  cells = "".join(f"<tr><th>{_esc(k)}</th><td>{v}</td></tr>" for k, v in rows)
  return f'<table class="facts">{cells}</table>'


def _write_text(path: str, text: str) -> None:
  os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
  atomic.write_text(path, text)


def _copy_assets(folder: str) -> None:
  os.makedirs(os.path.join(folder, "vendor"), exist_ok=True)
  for name in _ASSETS:
    shutil.copyfile(os.path.join(_HERE, name), os.path.join(folder, name))


def write_page(html_path: str, *, title: str, subtitle: str, volumes: dict,
               affine: np.ndarray | None, panels: list[Panel], facts_html: str = "",
               windows: list[tuple[str, tuple[float, float]]] | None = None,
               overlay_max: float | None = None, figures: list[str] = ()) -> str:
  """Writes a page of linked viewers (and its asset folder).

  Args:
    html_path: the page; its assets go to the folder of the same name without
      ``.html`` (``x_report.html`` -> ``x_report/``).
    title, subtitle: the header.
    volumes: name -> 3D array on the grid of ``affine``, or ``(array, its affine)``
      for a volume on another grid (e.g. the acquired slices); each is reduced to its
      `display_grid`. Grey volumes share one storage (`grey_storage`), so one window
      fits all; overlays (names used as `Panel.overlay`) get a signed uint8 scale.
    affine: the voxel-to-world affine of the plain arrays.
    panels: the viewers, in order.
    facts_html: HTML of the facts section(s), placed after the viewers.
    windows: display windows, the default first; default `display.windows` of the
      first panel's volume.
    overlay_max: the overlays' colour scale reaches +-this; default the 99.5th
      percentile of their absolute values.
    figures: PNG paths shown below (linked relative to the page).

  Returns:
    ``html_path``.
  """
  html_path = os.fspath(html_path)
  folder = html_path[:-5] if html_path.endswith(".html") else html_path + "_files"
  overlays = {p.overlay for p in panels if p.overlay}
  grids = {n: (v if isinstance(v, tuple) else (v, affine)) for n, v in volumes.items()}
  reduced = {}
  for name, (data, grid_affine) in grids.items():
    shape, disp_affine = display_grid(np.shape(data), grid_affine)
    reduced[name] = (to_display(data, shape), disp_affine)
  first = reduced[panels[0].volume][0]
  kind = display.modality(first)
  windows = windows or display.windows(first, kind)
  greys = [v for n, (v, _) in reduced.items() if n not in overlays]
  lo = min(min(float(v.min()) for v in greys), min(w[0] for _, w in windows))
  hi = max(float(np.percentile(first, 99.9)), max(w[1] for _, w in windows))
  storage = {n: grey_storage(lo, hi, kind) for n in reduced if n not in overlays}
  if overlays:
    values = np.concatenate([np.abs(reduced[n][0]).ravel() for n in overlays])
    if overlay_max is None:
      overlay_max = float(np.percentile(values, 99.5)) or float(values.max()) or 1.0
    # Signed values in uint8, 128 = 0: +-127 steps up to the colour scale's end.
    storage |= {n: (np.uint8, overlay_max / 127.0, -128 * overlay_max / 127.0) for n in overlays}
  encoded = {n: encode_nifti(v, a, storage[n]) for n, (v, a) in reduced.items()}
  span = windows[0][1][1] - windows[0][1][0]
  config = {
      "volumes": encoded,
      "windows": [{"name": n, "lo": lo, "hi": hi} for n, (lo, hi) in windows],
      "panels": [{"canvas": f"viewer{i}", "volume": p.volume, "overlay": p.overlay,
                  "nearest": p.nearest} for i, p in enumerate(panels)],
      "overlay_scale": ({"threshold": min(_OVERLAY_THRESHOLD * span, 0.5 * overlay_max),
                         "max": overlay_max} if overlays else None),
  }
  _copy_assets(folder)
  _write_text(os.path.join(folder, "volumes.js"),
              "window.CLADE_REPORT = " + json.dumps(config) + ";\n")
  rel = os.path.basename(folder)
  shape, disp_affine = max(((v.shape, a) for v, a in reduced.values()),
                          key=lambda pair: np.prod(pair[0]))
  spacing = np.sqrt((disp_affine[:3, :3] ** 2).sum(axis=0))
  buttons = "".join(
      f'<button class="window-button{" active" if i == 0 else ""}" type="button">'
      f"{_esc(n)} ({lo:g}..{hi:g})</button>" for i, (n, (lo, hi)) in enumerate(windows))
  opacity = ('<label>overlay opacity <input id="overlay-opacity" type="range" min="0" '
             'max="100" value="80"></label>' if overlays else "")
  cells = "".join(
      f'<div class="panel"><h3>{_esc(p.title)}<span>{_esc(p.note)}</span></h3>'
      f'<div class="canvas-box"><canvas id="viewer{i}" tabindex="0"></canvas></div>'
      f'<div class="value" id="viewer{i}-value"></div></div>' for i, p in enumerate(panels))
  legend = ""
  if overlays:
    legend = (f" Overlay: warm colours where the output is brighter than the cubic spline, "
              f"cold where darker, up to &plusmn;{overlay_max:.4g} (transparent within "
              f"&plusmn;{config['overlay_scale']['threshold']:.3g}).")
  viewer = (
      f'<section id="viewer"><h2>Volumes</h2><div class="controls">window: {buttons}{opacity}'
      f"</div><div class=\"grid\">{cells}</div>"
      f'<p class="help">Click or drag in any panel to move the shared crosshair; scroll to '
      f"page through slices; right-drag to pan. Shown at "
      f"{' x '.join(map(str, shape))} voxels of {' x '.join(f'{s:.2f}' for s in spacing)} mm"
      f" (reduced for display; the NIfTI files hold the full resolution).{legend}</p>"
      f"</section>")
  figure_html = ""
  if figures:
    base = os.path.dirname(os.path.abspath(html_path))
    imgs = "".join(f'<p><img class="figure" src="{_esc(os.path.relpath(os.path.abspath(f), base))}"'
                   f' alt="{_esc(os.path.basename(f))}"></p>' for f in figures)
    figure_html = f'<section id="figures"><h2>Static figure</h2>{imgs}</section>'
  head = "".join(f'<script src="{rel}/{name}"></script>\n'
                 for name in ("vendor/niivue.umd.js", "volumes.js"))
  body = viewer + facts_html + figure_html + f'<script src="{rel}/viewer.js"></script>'
  nav = [("viewer", "Volumes"), ("summary", "Summary")]
  nav += [("figures", "Figure")] if figures else []
  _write_text(html_path, _page(title, subtitle, body, head=head, nav=nav))
  return html_path


# ------------------------------------------------------------------- scan page


def _pct(value) -> str:
  # Three significant digits: a residual after data consistency can be 1e-6.
  return "n/a" if value is None or not np.isfinite(value) else f"{100 * value:.3g}%"


def _range(pair) -> str:
  return f"{pair[0]:.6g} .. {pair[1]:.6g}"


def _profile_text(data_config: dict, slice_spacing: float | None) -> str:
  """The slice profile in words: shape, thickness, spacing, and the gap or overlap."""
  if data_config.get("slice_kernel"):
    return f"measured kernel {data_config['slice_kernel']} (output voxels)"
  thickness = data_config.get("slice_thickness") or 0
  spacing = f"{slice_spacing:.3g} mm" if slice_spacing else "the slice spacing"
  thick = f"{thickness:g} mm" if thickness else f"{spacing} (= spacing: NIfTI has no thickness)"
  gap = ""
  if thickness and slice_spacing and thickness != slice_spacing:
    gap = (f"; gap {slice_spacing - thickness:.3g} mm" if thickness < slice_spacing
           else f"; overlap {thickness - slice_spacing:.3g} mm")
  profile = data_config.get("slice_profile", "gaussian")
  return f"{profile}, thickness {thick}, slice spacing {spacing}{gap}"


def scan_facts(sidecar: dict, *, seconds: float | None = None, slice_spacing: float | None = None,
               truth_metrics: dict | None = None) -> list[tuple[str, str]]:
  """The sidecar's facts as (label, HTML) rows: what was done, with what, how it went.

  Args:
    sidecar: the JSON sidecar (`provenance.collect` plus ``inference``).
    seconds: wall time of the run.
    slice_spacing: mm between the acquired slices.
    truth_metrics: ``{'output': {'psnr', 'ssim'}, 'cubic': {...}}`` against a truth.
  """
  inf = sidecar.get("inference", {})
  config = sidecar.get("config", {})
  data = config.get("data", {})
  options = inf.get("options", {})
  method = config.get("method", "clade") + (f" ({inf['method']})" if inf.get("method") else "")
  rows = [("method", _esc(method)),
          ("checkpoint step", _esc(inf.get("step", "n/a"))),
          ("input", _esc(inf.get("input", "n/a")))]
  how = ("whole slices" if options.get("mode") == "full"
         else f"sliding window, stride {options.get('stride')}")
  rows.append(("reconstruction", _esc(f"{how}; planes: {options.get('planes', 'n/a')}")))
  rows.append(("slice profile", _esc(_profile_text(data, slice_spacing))))
  ranges = inf.get("intensity")
  if ranges:
    what = ("restored from the cubic-spline input"
            if ranges.get("outside_window", "restore") == "restore" else "clipped to the window")
    rows.append(("intensity window", _esc(
        f"{_range(ranges['window'])} ({ranges.get('normalization', 'percentile')}); "
        f"{_pct(ranges['below_window'])} of input voxels below, "
        f"{_pct(ranges['above_window'])} above ({what})")))
    rows.append(("intensity ranges", _esc(f"input {_range(ranges['input_range'])}, "
                                          f"output {_range(ranges['output_range'])}")))
  before, after = inf.get("residual_before"), inf.get("residual_after")
  if before:
    pair = lambda r: f"{_pct(r['rms_relative'])} (max {_pct(r['max_abs_relative'])})"
    text = f"{pair(before)} RMS of the input's robust range; "
    text += f"after data consistency {pair(after)}" if after else "data consistency off"
    rows.append(("slice residual", _esc(text)))
  else:
    rows.append(("slice residual", "n/a (no acquisition model for this geometry)"))
  if truth_metrics:
    nan = float("nan")
    out, cubic = truth_metrics.get("output", {}), truth_metrics.get("cubic", {})
    rows.append(("against the truth", _esc(
        f"PSNR {out.get('psnr', nan):.2f} dB (cubic {cubic.get('psnr', nan):.2f}), "
        f"SSIM {out.get('ssim', nan):.3f} (cubic {cubic.get('ssim', nan):.3f})")))
  if seconds is not None:
    rows.append(("time", _esc(f"{seconds:.1f} s")))
  versions = sidecar.get("packages") or {}
  git = sidecar.get("git") or {}
  version_text = ", ".join(f"{k} {v}" for k, v in versions.items() if v)
  if git.get("commit"):
    dirty = " (modified)" if git.get("dirty") else ""
    version_text = f"commit {git['commit'][:10]}{dirty}; " + version_text
  if sidecar.get("version"):
    version_text = f"clade-jax {sidecar['version']}; " + version_text
  rows.append(("versions", _esc(version_text or "n/a")))
  if sidecar.get("devices"):
    rows.append(("devices", _esc(", ".join(map(str, sidecar["devices"])))))
  return rows


def write_scan_report(html_path: str, *, acquired: tuple[np.ndarray, np.ndarray], cubic: np.ndarray,
                      output: np.ndarray, affine: np.ndarray, sidecar: dict, title: str,
                      seconds: float | None = None, slice_spacing: float | None = None,
                      truth_metrics: dict | None = None, figure: str | None = None,
                      qc_map_files: dict[str, str] | None = None) -> str:
  """The QC page of one super-resolved scan (arrays but ``acquired`` on the output grid).

  Args:
    html_path: ``report_paths(output)[0]``.
    acquired: ``(data, affine)`` of the input scan as acquired, shown with nearest
      neighbour interpolation (its slices as blocks), on its own grid: 1/k of the
      voxels of the output grid for slices k times thicker.
    cubic: the cubic-spline input the methods start from.
    output: the method's output (scan units).
    affine: the output grid's affine.
    sidecar: the output's JSON sidecar (facts in words).
    title: page title (the scan's name).
    seconds, slice_spacing, truth_metrics: see `scan_facts`.
    figure: the static comparison PNG, shown below.
    qc_map_files: ``qc_maps.paths`` written beside the output, listed.

  Returns:
    ``html_path``.
  """
  added = qc_maps.added_detail(output, cubic)
  windows = display.windows(cubic)
  rows = scan_facts(sidecar, seconds=seconds, slice_spacing=slice_spacing,
                    truth_metrics=truth_metrics)
  changed = float(np.mean(added != 0))
  rows.append(("added detail", _esc(
      f"output minus cubic: RMS {float(np.sqrt(np.mean(added ** 2))):.4g}, "
      f"99.5th percentile of |added| {float(np.percentile(np.abs(added), 99.5)):.4g}; "
      f"{100 * changed:.1f}% of voxels changed")))
  if qc_map_files:
    rows.append(("QC maps (NIfTI, output grid)", "<br>".join(
        _esc(os.path.basename(p)) for p in qc_map_files.values())))
  facts = f'<section id="summary"><h2>Summary</h2>{_facts_table(rows)}</section>'
  sidecar_text = json.dumps(sidecar, indent=1, default=str)
  facts += (f'<section id="sidecar"><details><summary>JSON sidecar</summary>'
            f"<pre>{_esc(sidecar_text)}</pre></details></section>")
  inf = sidecar.get("inference", {})
  panels = [Panel("Input", "acquired", note="acquired slices, nearest neighbour", nearest=True),
            Panel("Input", "cubic", note="cubic spline, what the method starts from"),
            Panel("Output", "output", note=inf.get("method", "")),
            Panel("Added detail", "output", overlay="added",
                  note="output minus cubic, over the output")]
  subtitle = (f"{inf.get('method') or sidecar.get('config', {}).get('method', '')} "
              f"step {inf.get('step', '')} \u00b7 {display.modality(cubic).upper()}")
  return write_page(html_path, title=title, subtitle=subtitle,
                    volumes={"acquired": tuple(acquired), "cubic": cubic, "output": output,
                             "added": added},
                    affine=affine, panels=panels, facts_html=facts, windows=windows,
                    figures=[figure] if figure else [])


def resample(volume, shape, affine: np.ndarray, order: int = 1) -> np.ndarray:
  """A `volume_lib.Volume` sampled at the voxel centres of the grid ``(shape, affine)``
  (world coordinates; outside its field of view, its edge values)."""
  index = np.indices(tuple(shape), dtype=np.float64).reshape(3, -1)
  to_source = np.linalg.solve(np.asarray(volume.affine, np.float64), np.asarray(affine, np.float64))
  coords = to_source[:3, :3] @ index + to_source[:3, 3:]
  values = ndimage.map_coordinates(np.asarray(volume.data, np.float32), coords, order=order,
                                   mode="nearest")
  return values.reshape(tuple(shape)).astype(np.float32)


def write_comparison_page(html_path: str, volumes: dict, *, title: str, subtitle: str = "",
                          facts: list[tuple[str, str]] = (), table_html: str = "") -> str:
  """A page of linked viewers of several volumes of one subject (``evaluate.py``).

  Args:
    html_path: the page (its folder beside it, as for `write_page`).
    volumes: name -> `volume_lib.Volume` (any grids, e.g. the truth and each method's
      output); all are resampled (linear, world coordinates) onto the display grid of
      the one with the most voxels.
    title, subtitle: the header.
    facts: (label, HTML) rows shown under the viewers.
    table_html: more HTML (e.g. the subject's metrics) after the facts.

  Returns:
    ``html_path``.
  """
  largest = max(volumes.values(), key=lambda v: np.size(v.data))
  shape, affine = display_grid(np.shape(largest.data), largest.affine)
  keys = {name: f"v{i}" for i, name in enumerate(volumes)}
  arrays = {keys[name]: resample(v, shape, affine) for name, v in volumes.items()}
  panels = [Panel(name, keys[name]) for name in volumes]
  summary = f'<section id="summary"><h2>Summary</h2>{_facts_table(facts)}{table_html}</section>'
  return write_page(html_path, title=title, subtitle=subtitle, volumes=arrays, affine=affine,
                    panels=panels, facts_html=summary)


# ----------------------------------------------------------------- cohort index


def write_cohort_index(path: str, rows: list[dict], *, title: str = "clade-jax cohort") -> str:
  """A table of scans linking each scan's page.

  Args:
    path: the index HTML (e.g. ``out/index.html``).
    rows: one dict per scan: ``name`` (str), ``status`` ('done', 'failed' or
      'skipped'), and optionally ``reason`` (one line, for failed/skipped),
      ``seconds`` (float), ``residual`` (the relative RMS slice residual, a fraction,
      after data consistency when it ran) and ``link`` (the page, absolute or relative
      to the index; None when there is none, e.g. a failed scan).

  Returns:
    ``path``.

  Raises:
    ValueError: a row without a name or with an unknown status.
  """
  base = os.path.dirname(os.path.abspath(path))
  body_rows = []
  counts = {s: 0 for s in STATUSES}
  for row in rows:
    name, status = row.get("name"), row.get("status")
    if not name or status not in STATUSES:
      raise ValueError(f"cohort row {row!r}: needs a name and a status in {STATUSES}")
    counts[status] += 1
    link = row.get("link")
    if link:
      href = os.path.relpath(os.path.abspath(link), base) if os.path.isabs(link) else link
      cell = f'<a href="{_esc(href)}">{_esc(name)}</a>'
    else:
      cell = _esc(name)
    seconds, residual = row.get("seconds"), row.get("residual")
    body_rows.append(
        f"<tr><td>{cell}</td><td><span class=\"status {status}\">{status}</span></td>"
        f"<td>{_esc(row.get('reason') or '')}</td>"
        f"<td class=\"num\">{_pct(residual) if residual is not None else ''}</td>"
        f"<td class=\"num\">{f'{seconds:.1f}' if seconds is not None else ''}</td></tr>")
  summary = ", ".join(f"{n} {s}" for s, n in counts.items() if n)
  table = ("<table><thead><tr><th>scan</th><th>status</th><th>reason</th>"
           '<th class="num">slice residual</th><th class="num">time (s)</th></tr></thead><tbody>'
           + "".join(body_rows) + "</tbody></table>")
  body = (f'<section id="scans"><h2>Scans</h2>{table}<p class="help">Slice residual: RMS of '
          f"the re-acquired output minus the acquired slices, as a fraction of the input's "
          f"robust range (after data consistency when it ran).</p></section>")
  _write_text(path, _page(title, f"{len(rows)} scans: {summary}", body))
  return path
