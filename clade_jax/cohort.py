"""`clade-jax sr`: train on each scan, super-resolve it, and keep a cohort run resumable.

For each `scans.Scan` (`process_scan`): read it (a DICOM series is converted once to
NIfTI), choose the slice profile (`choose_profile`: the command line, then the
scan's own metadata, then the method's default), build the method's config for the
chosen budget (`make_config`), train it on the scan (`train.train_and_evaluate`, which
resumes from the latest checkpoint), super-resolve the scan (`inference.run`) and add
what was chosen, and why, to the output's JSON sidecar.

A cohort never stops for one bad scan: each failure becomes a row of the summary CSV
with a one-line reason (the traceback of an unexpected one goes to its work folder's
`error.log`). Work lives in `<out>/.clade-jax/<scan>/<run key>/`; a scan whose
`status.json` says done for the same settings is skipped on a re-run, and a scan that
was killed mid-training resumes from its last checkpoint. The summary is rewritten
(atomically) after every scan, so a killed run still leaves an accurate one.
"""

from __future__ import annotations

import ast
import csv
import dataclasses
import hashlib
import importlib
import io
import json
import os
import time
import traceback
from typing import Any, Callable

from clade_jax import atomic
from clade_jax import scans as scans_lib
from clade_jax.data import volume as volume_lib

WORK_FOLDER = ".clade-jax"
SUMMARY_COLUMNS = ("name", "status", "reason", "source", "output", "seconds",
                   "train_seconds", "infer_seconds", "slice_profile", "slice_thickness_mm",
                   "profile_source", "residual_before", "residual_after")

# `--method` names: the config module of each (clade_jax/configs/).
METHOD_CONFIGS = {
    "smore": "smore",
    "clade_plus": "clade_plus",
    "clade": "mri",
    "clade_no_gmap": "clade_no_gmap",
    "cyclegan": "cyclegan",
    "glade": "glade",
    "ae_interp": "ae_interp",
}
DEFAULT_METHOD = "smore"
# The slice profile of a scan whose metadata says nothing; chosen by measurement
# (experiments/profile_estimation/README.md, "clade-jax sr's default").
UNKNOWN_PROFILE = "estimate"


class SetupError(ValueError):
  """A bad `--set` override or option: stops the command before any scan is read."""


@dataclasses.dataclass(frozen=True)
class Options:
  """What `clade-jax sr` was asked for (the same for every scan)."""

  method: str = DEFAULT_METHOD
  budget: str = "standard"
  slice_thickness: float | None = None  # mm; None: from metadata or the default.
  slice_profile: str | None = None  # 'gaussian', 'rect' or 'estimate'; None: see below.
  overrides: tuple[tuple[str, str], ...] = ()  # --set FIELD=VALUE, in order.
  report: bool = True
  progress: bool = True


@dataclasses.dataclass(frozen=True)
class Profile:
  """The slice profile a scan is trained and checked with, and where it came from."""

  shape: str | None  # 'gaussian', 'rect' or 'estimate'; None keeps the config's.
  thickness_mm: float | None  # None: the slice spacing.
  spacing_mm: float | None
  source: str  # In words, for the log and the sidecar.

  def as_dict(self) -> dict[str, Any]:
    return dataclasses.asdict(self)


@dataclasses.dataclass
class Row:
  """One scan's line of the summary."""

  name: str
  source: str
  output: str
  status: str = "pending"  # 'done', 'skipped' (done before), 'failed' or 'pending'.
  reason: str = ""
  seconds: float | None = None
  train_seconds: float | None = None
  infer_seconds: float | None = None
  slice_profile: str | None = None
  slice_thickness_mm: float | None = None
  profile_source: str = ""
  residual_before: float | None = None
  residual_after: float | None = None
  report: str | None = None  # The scan's report page, when written.


# ---------------------------------------------------------------------------- config


def _parse_value(text: str, current: Any, field: str) -> Any:
  """`text` as the type of the field's current value (--set train.num_steps=300)."""
  if isinstance(current, bool):
    if text.lower() in ("1", "true", "yes", "on"):
      return True
    if text.lower() in ("0", "false", "no", "off"):
      return False
    raise SetupError(f"--set {field}={text}: expected true or false")
  if isinstance(current, str):
    return text
  try:
    value = ast.literal_eval(text)
  except (ValueError, SyntaxError):
    raise SetupError(f"--set {field}={text}: not a {type(current).__name__}") from None
  if isinstance(current, float) and isinstance(value, int):
    value = float(value)
  if isinstance(current, (tuple, list)) and isinstance(value, (tuple, list)):
    return tuple(value)
  if current is not None and not isinstance(value, type(current)):
    raise SetupError(f"--set {field}={text}: expected a {type(current).__name__}")
  return value


def apply_overrides(config, overrides) -> None:
  """Sets each `--set FIELD=VALUE` on `config`, failing on a field it does not have."""
  from clade_jax import config_validation  # pylint: disable=g-import-not-at-top
  fields = config_validation.dotted_fields(config)
  for field, text in overrides:
    if field not in fields:
      raise SetupError(f"--set {field}: {config_validation.closest_field_message(config, field)}")
    *groups, leaf = field.split(".")
    node = config
    for group in groups:
      node = node[group]
    node[leaf] = _parse_value(text, fields[field], field)


def base_config(method: str, budget: str):
  """The method's config at the budget (`budgets.config_arg`), before any scan.

  Raises:
    SetupError: an unknown method or budget.
  """
  from clade_jax import budgets  # pylint: disable=g-import-not-at-top
  if method not in METHOD_CONFIGS:
    raise SetupError(f"--method {method}: not one of {', '.join(METHOD_CONFIGS)}")
  if budget not in budgets.BUDGETS:
    raise SetupError(f"--budget {budget}: not one of {', '.join(budgets.BUDGETS)}")
  module = importlib.import_module(f"clade_jax.configs.{METHOD_CONFIGS[method]}")
  # The budgets are SMORE's (measured); other methods train their config as shipped.
  return module.get_config(budgets.config_arg(budget) if method == "smore" else None)


def make_config(options: Options, data_root: str, profile: Profile):
  """The run's config: the method at the budget, on `data_root`, with the profile."""
  config = base_config(options.method, options.budget)
  config.data.root = data_root
  config.data.make_demo = False
  if "truth" in config.data:
    config.data.truth = ""
  if profile.shape is not None and "slice_profile" in config.data:
    config.data.slice_profile = profile.shape
  if profile.thickness_mm is not None and "slice_thickness" in config.data:
    config.data.slice_thickness = float(profile.thickness_mm)
  apply_overrides(config, options.overrides)
  return config


def check(options: Options) -> None:
  """Fails now, with the field's name, on a config no scan could run with.

  Raises:
    SetupError: an unknown method, budget or --set field, or a value out of range.
  """
  from clade_jax import config_validation, methods  # pylint: disable=g-import-not-at-top
  try:
    config = make_config(options, "scan.nii.gz", Profile(None, None, None, ""))
    method = methods.of(config)
    config_validation.validate(config, ranges=getattr(method, "config_ranges", None),
                               enums=getattr(method, "config_enums", None))
  except config_validation.ConfigError as e:
    raise SetupError("; ".join(e.problems)) from None
  except ValueError as e:  # An unknown budget or config argument.
    raise SetupError(str(e)) from None


def run_key(options: Options, profile: Profile, scan_names: tuple[str, ...] = ()) -> str:
  """Names a run folder: another method, budget, profile, --set (or, for a shared
  model, another set of scans) trains anew."""
  text = json.dumps([options.method, options.budget, list(options.overrides),
                     profile.shape, profile.thickness_mm, list(scan_names)], sort_keys=True)
  return f"{options.method}-{options.budget}-{hashlib.sha1(text.encode()).hexdigest()[:8]}"


# ---------------------------------------------------------------------------- profile


def choose_profile(options: Options, metadata=None, spacing_mm: float | None = None) -> Profile:
  """The slice profile for a scan: the command line, else its metadata, else the default.

  Args:
    options: `--slice-thickness` and `--slice-profile` win.
    metadata: what the scan says of its slices (`acquisition.SliceMetadata`: a DICOM
      header or a BIDS/dcm2niix JSON sidecar), or None.
    spacing_mm: the slice spacing of the NIfTI (for the record).
  """
  thickness, shape, said = options.slice_thickness, options.slice_profile, []
  if thickness is not None:
    said.append(f"thickness {thickness:g} mm from --slice-thickness")
  elif metadata is not None and metadata.thickness_mm is not None:
    thickness = metadata.thickness_mm
    said.append(f"thickness {thickness:g} mm from {metadata.thickness_source}")
  if metadata is not None and metadata.spacing_mm is not None:
    spacing_mm = metadata.spacing_mm
  if shape is not None:
    said.append(f"{shape} profile from --slice-profile")
  elif thickness is not None and options.slice_thickness is None:
    # A scanner's slice (a slice-selective pulse, a CT detector row) is closer to a
    # rectangle than to a Gaussian of the same width; the header says only its width.
    shape = "rect"
    said.append("rect profile (the shape of a scanner's slice; the header gives only "
                "its width)")
  if not said and UNKNOWN_PROFILE == "estimate":
    shape = "estimate"
    said.append("no slice metadata: profile and thickness estimated from the scan; give "
                "--slice-thickness/--slice-profile if you know them")
  elif not said:
    said.append("no slice metadata: the method's default profile (Gaussian, FWHM = "
                "slice spacing); give --slice-thickness/--slice-profile if you know them")
  return Profile(shape=shape, thickness_mm=thickness, spacing_mm=spacing_mm,
                 source="; ".join(said))


# ---------------------------------------------------------------------------- one scan


def _read_json(path: str) -> dict | None:
  try:
    with open(path, encoding="utf-8") as f:
      return json.load(f)
  except (OSError, ValueError):
    return None


def _scan_input(scan: scans_lib.Scan, work: str):
  """(NIfTI path, slice metadata or None, extra sidecar facts) for a scan."""
  from clade_jax.data import acquisition  # pylint: disable=g-import-not-at-top
  if not scan.is_dicom:
    return scan.source, acquisition.slice_metadata(scan.source), {}
  from clade_jax.data import dicom  # pylint: disable=g-import-not-at-top
  series = dicom.load_series(scan.source)
  nifti = os.path.join(work, "input.nii.gz")
  if not os.path.exists(nifti):  # Written atomically: present means complete.
    dicom.write_nifti(series, nifti)
  return nifti, acquisition.from_series(series), {"dicom": series.metadata}


def _update_sidecar(output: str, facts: dict, profile: Profile) -> None:
  """Adds what `clade-jax sr` chose, and why, to the sidecar inference wrote."""
  from clade_jax import inference  # pylint: disable=g-import-not-at-top
  path = inference.provenance_path(output)
  info = _read_json(path) or {}
  info.setdefault("inference", {}).update(facts)
  # Inference recorded the profile the run used (an estimate resolved); add why.
  used = info["inference"].setdefault("slice_profile", {})
  used["chosen_by"] = profile.source
  if profile.spacing_mm is not None:
    used["spacing_mm"] = profile.spacing_mm
  atomic.write_text(path, json.dumps(info, indent=2, sort_keys=True, default=str) + "\n")


def process_scan(scan: scans_lib.Scan, options: Options, work_root: str) -> Row:
  """Trains on `scan`, super-resolves it and returns its summary row.

  Never raises for a problem of the scan itself: the row says `failed` and why.
  """
  row = Row(name=scan.name, source=scan.source, output=scan.output)
  work = os.path.join(work_root, scan.name)
  os.makedirs(work, exist_ok=True)
  start = time.perf_counter()
  try:
    nifti, metadata, facts = _scan_input(scan, work)
    profile = choose_profile(options, metadata)
    key = run_key(options, profile)
    status_path = os.path.join(work, key, "status.json")
    if _skip_if_done(row, status_path):
      return row
    config = make_config(options, nifti, profile)
    workdir = os.path.join(work, key, "run")
    train_s = _train(config, workdir, options.progress)
    _infer_into(row, scan, workdir, nifti, profile, facts, options, train_s, status_path,
                start)
  except KeyboardInterrupt:
    raise
  except Exception as e:  # pylint: disable=broad-except  (one scan never stops a cohort)
    row.status, row.reason = "failed", _one_line(e)
    row.seconds = round(time.perf_counter() - start, 1)
    if not _expected(e):
      atomic.write_text(os.path.join(work, "error.log"), traceback.format_exc())
      row.reason += f" (traceback in {os.path.join(work, 'error.log')})"
  return row


def _expected(e: BaseException) -> bool:
  """Errors a user can cause and fix from their one-line message."""
  from clade_jax import checkpointing, config_validation, inference, train  # pylint: disable=g-import-not-at-top
  return isinstance(e, (volume_lib.VolumeError, checkpointing.CheckpointError,
                        config_validation.ConfigError, inference.UsageError,
                        train.TrainingDiverged, SetupError, scans_lib.InputError))


def _one_line(e: BaseException) -> str:
  problems = getattr(e, "problems", None)
  text = "; ".join(problems) if problems else str(e)
  text = " ".join(text.split())
  return text if _expected(e) else f"{type(e).__name__}: {text}"


def _train(config, workdir: str, progress: bool = True) -> float:
  """Trains (or resumes, or finds finished) the run in `workdir`; returns seconds."""
  from clade_jax import train  # pylint: disable=g-import-not-at-top
  start = time.perf_counter()
  train.train_and_evaluate(config, workdir, progress=progress)
  return time.perf_counter() - start


def _infer_into(row: Row, scan: scans_lib.Scan, workdir: str, nifti: str, profile: Profile,
                facts: dict, options: Options, train_s: float, status_path: str,
                started: float) -> None:
  """Super-resolves `nifti` with the trained `workdir`, fills `row`, marks it done."""
  from clade_jax import inference  # pylint: disable=g-import-not-at-top
  from clade_jax import volume_srr  # pylint: disable=g-import-not-at-top
  start = time.perf_counter()
  os.makedirs(os.path.dirname(os.path.abspath(scan.output)), exist_ok=True)
  result = inference.run(workdir, nifti, scan.output, overwrite=True,
                         options=volume_srr.SROptions(progress=options.progress),
                         report=options.report)
  infer_s = time.perf_counter() - start
  _update_sidecar(scan.output, {"source": os.path.abspath(scan.source),
                                "method": options.method, "budget": options.budget,
                                "train_seconds": train_s, "infer_seconds": infer_s, **facts},
                  profile)
  row.status = "done"
  row.slice_profile, row.slice_thickness_mm = profile.shape, profile.thickness_mm
  row.profile_source = profile.source
  row.train_seconds, row.infer_seconds = round(train_s, 1), round(infer_s, 1)
  if result.residual_before is not None:
    row.residual_before = result.residual_before["rms_relative"]
  if result.residual_after is not None:
    row.residual_after = result.residual_after["rms_relative"]
  row.report = result.report
  row.seconds = round(time.perf_counter() - started, 1)
  atomic.write_text(status_path, json.dumps(dataclasses.asdict(row), indent=2) + "\n")


# ---------------------------------------------------------------------------- cohort


def write_summary(path: str, rows: list[Row]) -> None:
  """The cohort's summary CSV, one row per scan (atomic)."""
  buffer = io.StringIO()
  writer = csv.DictWriter(buffer, fieldnames=SUMMARY_COLUMNS, extrasaction="ignore",
                          lineterminator="\n")
  writer.writeheader()
  for row in rows:
    writer.writerow({k: ("" if v is None else v) for k, v in dataclasses.asdict(row).items()})
  atomic.write_text(path, buffer.getvalue())


def index_name(summary_name: str) -> str:
  """The cohort page beside a summary: summary.csv -> report.html (per shard too)."""
  return "report" + summary_name[len("summary"):-len(".csv")] + ".html"


def write_index(path: str, rows: list[Row]) -> None:
  """The cohort's report page: a table of scans, each linking its own page."""
  from clade_jax import report  # pylint: disable=g-import-not-at-top
  entries = []
  for row in rows:
    status, reason = row.status, row.reason
    if status == "pending":
      status, reason = "skipped", "not processed yet: re-run the command to continue"
    residual = row.residual_after if row.residual_after is not None else row.residual_before
    entries.append({"name": row.name, "status": status, "reason": reason,
                    "seconds": row.seconds, "residual": residual,
                    "link": row.report if row.report and os.path.exists(row.report) else None})
  report.write_cohort_index(path, entries, title=f"clade-jax sr: {len(rows)} scan(s)")


def _record(out: str, summary_name: str, rows: list[Row], options: Options) -> None:
  write_summary(os.path.join(out, summary_name), rows)
  if options.report:
    write_index(os.path.join(out, index_name(summary_name)), rows)


def run(scans: list[scans_lib.Scan], out: str, options: Options, *,
        summary_name: str = "summary.csv",
        on_row: Callable[[Row, int, int], None] | None = None) -> list[Row]:
  """Processes every scan in turn; returns their rows (the summary CSV holds them too).

  Args:
    scans: what to process, in order.
    out: the output folder (the summary and the work folder go there).
    options: the command's options.
    summary_name: the summary's file name in `out` (one per shard).
    on_row: called after each scan with (row, index, count), e.g. for a progress bar.
  """
  from tqdm.auto import tqdm  # pylint: disable=g-import-not-at-top
  work_root = os.path.join(out, WORK_FOLDER)
  os.makedirs(work_root, exist_ok=True)
  rows = [Row(name=s.name, source=s.source, output=s.output) for s in scans]
  _record(out, summary_name, rows, options)
  bar = tqdm(total=len(scans), desc="scans", unit="scan", disable=not options.progress,
             dynamic_ncols=True, position=0)
  for i, scan in enumerate(scans):
    bar.set_postfix_str(scan.name)
    rows[i] = process_scan(scan, options, work_root)
    _record(out, summary_name, rows, options)
    bar.update(1)
    if on_row:
      on_row(rows[i], i, len(scans))
  bar.close()
  return rows


def _skip_if_done(row: Row, status_path: str) -> bool:
  """Fills `row` from an earlier run's status and says so, if that run finished."""
  status = _read_json(status_path)
  if not (status and status.get("status") == "done" and os.path.exists(row.output)):
    return False
  row.__dict__.update({k: v for k, v in status.items() if k in Row.__dataclass_fields__})
  row.status, row.reason = "skipped", "done in an earlier run"
  return True


def run_shared(scans: list[scans_lib.Scan], out: str, options: Options, *,
               summary_name: str = "summary.csv",
               on_row: Callable[[Row, int, int], None] | None = None) -> list[Row]:
  """`--shared-model`: one model trained on every readable scan, applied to each.

  The paper's setting. The scans must agree on the slice profile (one model learns
  one degradation); a scan that cannot be read is listed as failed and left out of
  training.
  """
  from tqdm.auto import tqdm  # pylint: disable=g-import-not-at-top
  work_root = os.path.join(out, WORK_FOLDER)
  rows = [Row(name=s.name, source=s.source, output=s.output) for s in scans]
  _record(out, summary_name, rows, options)
  readable = []  # (index, nifti, profile, facts)
  for i, scan in enumerate(scans):
    work = os.path.join(work_root, scan.name)
    os.makedirs(work, exist_ok=True)
    try:
      nifti, metadata, facts = _scan_input(scan, work)
      volume_lib.load_volume(nifti)  # A broken file fails here, not inside training.
      readable.append((i, nifti, choose_profile(options, metadata), facts))
    except Exception as e:  # pylint: disable=broad-except
      rows[i].status, rows[i].reason = "failed", _one_line(e)
  kinds = {(p.shape, p.thickness_mm) for _, _, p, _ in readable}
  if len(kinds) > 1:
    reason = (f"--shared-model: the scans disagree on the slice profile ({sorted(kinds, key=str)}); "
              "give --slice-thickness and --slice-profile, or train one model per scan")
    for i, *_ in readable:
      rows[i].status, rows[i].reason = "failed", reason
    readable = []
  if readable:
    profile = readable[0][2]
    names = sorted(scans[i].name for i, *_ in readable)
    key = run_key(options, profile, tuple(names))
    shared = os.path.join(work_root, "shared-model", key)
    inputs = os.path.join(shared, "inputs")
    os.makedirs(inputs, exist_ok=True)
    for i, nifti, _, _ in readable:
      link = os.path.join(inputs, scans[i].name + (".nii.gz" if nifti.endswith(".gz") else ".nii"))
      if not os.path.lexists(link):
        os.symlink(os.path.abspath(nifti), link)
    try:
      train_s = _train(make_config(options, inputs, profile), os.path.join(shared, "run"),
                       options.progress)
    except Exception as e:  # pylint: disable=broad-except
      for i, *_ in readable:
        rows[i].status, rows[i].reason = "failed", "training the shared model: " + _one_line(e)
      readable = []
    bar = tqdm(total=len(readable), desc="scans", unit="scan", disable=not options.progress,
               dynamic_ncols=True, position=0)
    for i, nifti, _, facts in readable:
      status_path = os.path.join(shared, "status", scans[i].name + ".json")
      start = time.perf_counter()
      if not _skip_if_done(rows[i], status_path):
        try:
          _infer_into(rows[i], scans[i], os.path.join(shared, "run"), nifti, profile,
                      facts | {"shared_model": shared}, options, train_s, status_path,
                      start)
        except Exception as e:  # pylint: disable=broad-except
          rows[i].status, rows[i].reason = "failed", _one_line(e)
          rows[i].seconds = round(time.perf_counter() - start, 1)
      _record(out, summary_name, rows, options)
      bar.update(1)
      if on_row:
        on_row(rows[i], i, len(scans))
    bar.close()
  _record(out, summary_name, rows, options)
  return rows
