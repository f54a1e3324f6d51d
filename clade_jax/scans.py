"""The scans a `clade-jax sr` command names: files, globs, folders, DICOM series, BIDS.

`find(inputs, out)` turns the command line's inputs into `Scan`s, each with a unique
name and the paths its outputs go to:

- a NIfTI file (`.nii`, `.nii.gz`), or a quoted glob of them: `<out>/<name>_sr.nii.gz`;
- a folder of NIfTI files, or of DICOM series folders (one series per folder);
- a DICOM series folder (read with pydicom, `data/dicom.py`);
- a BIDS dataset (a folder with `dataset_description.json`, indexed with pybids): its
  anatomical images, written as derivatives, `<out>/sub-X/[ses-Y/]anat/
  sub-X_[ses-Y_]..._desc-sr_<suffix>.nii.gz`, with `<out>` defaulting to
  `<dataset>/derivatives/clade-jax`.

Nothing is read beyond what finding the scans needs: a broken file fails later, on
its own, without stopping the others.
"""

from __future__ import annotations

import dataclasses
import glob
import json
import os

from clade_jax.data import volume as volume_lib

# BIDS suffixes of anatomical images worth super-resolving (maps and masks are not).
ANATOMICAL_SUFFIXES = ("T1w", "T2w", "PDw", "T2starw", "FLAIR", "inplaneT1", "inplaneT2",
                       "PD", "T1rho", "angio")
DERIVATIVE_NAME = "clade-jax"


class InputError(ValueError):
  """A command-line input that names no scan, or two scans with one name."""


@dataclasses.dataclass(frozen=True)
class Scan:
  """One scan to super-resolve and where its outputs go."""

  name: str  # Unique within the run; names the work folder and the summary row.
  source: str  # A NIfTI file or a DICOM series folder.
  kind: str  # 'nifti' or 'dicom'.
  output: str  # The super-resolved NIfTI; its sidecar and figure go beside it.

  @property
  def is_dicom(self) -> bool:
    return self.kind == "dicom"


def _nifti_stem(path: str) -> str:
  base = os.path.basename(os.path.normpath(path))
  for suffix in sorted(volume_lib.NIFTI_SUFFIXES, key=len, reverse=True):
    if base.endswith(suffix):
      return base[:-len(suffix)]
  return base


def is_bids_dataset(path: str) -> bool:
  return os.path.isfile(os.path.join(path, "dataset_description.json"))


def _is_dicom_dir(path: str) -> bool:
  from clade_jax.data import dicom  # pylint: disable=g-import-not-at-top
  return dicom.is_series_dir(path)


def _plain(path: str, out: str, kind: str) -> Scan:
  name = _nifti_stem(path)
  return Scan(name=name, source=path, kind=kind,
              output=os.path.join(out, f"{name}_sr.nii.gz"))


def _folder(path: str, out: str) -> list[Scan]:
  """A DICOM series folder, or a folder of NIfTI files and/or DICOM series folders."""
  if _is_dicom_dir(path):
    return [_plain(path, out, "dicom")]
  entries = sorted(glob.glob(os.path.join(path, "*")))
  scans = [_plain(p, out, "nifti") for p in entries if volume_lib.is_nifti(p)]
  scans += [_plain(p, out, "dicom") for p in entries
            if os.path.isdir(p) and _is_dicom_dir(p)]
  if not scans:
    raise InputError(f"{path}: no NIfTI files (.nii, .nii.gz) and no DICOM series folders "
                     "in it; give a scan, a folder of scans or a BIDS dataset")
  return scans


def bids_scans(root: str, out: str, suffixes=ANATOMICAL_SUFFIXES) -> list[Scan]:
  """The anatomical NIfTI images of a BIDS dataset, with BIDS derivative output names."""
  import bids  # pylint: disable=g-import-not-at-top  (pybids: slow to import)
  try:
    layout = bids.BIDSLayout(root, validate=False, derivatives=False)
  except (ValueError, OSError) as e:  # pybids raises BIDSValidationError(ValueError).
    raise InputError(f"{root}: not a readable BIDS dataset ({' '.join(str(e).split())})") \
        from None
  files = layout.get(datatype="anat", suffix=list(suffixes), extension=[".nii", ".nii.gz"])
  if not files:
    raise InputError(f"{root}: a BIDS dataset with no anatomical images "
                     f"({', '.join(suffixes)}) under sub-*/[ses-*/]anat/")
  scans = []
  for f in sorted(files, key=lambda f: f.path):
    entities = f.get_entities()
    # Derivative names: the source's name with desc-sr before the suffix (BIDS
    # derivatives, "Common file level derivatives").
    parts = [f"{key}-{entities[ent]}" for key, ent in
             (("sub", "subject"), ("ses", "session"), ("acq", "acquisition"),
              ("ce", "ceagent"), ("rec", "reconstruction"), ("run", "run"))
             if ent in entities]
    stem = "_".join([*parts, "desc-sr", entities["suffix"]])
    folder = os.path.join(out, f"sub-{entities['subject']}",
                          *([f"ses-{entities['session']}"] if "session" in entities else []),
                          "anat")
    scans.append(Scan(name=_nifti_stem(f.path), source=f.path, kind="nifti",
                      output=os.path.join(folder, stem + ".nii.gz")))
  return scans


def default_out(inputs: list[str]) -> str | None:
  """`<dataset>/derivatives/clade-jax` for a single BIDS dataset input, else None."""
  if len(inputs) == 1 and os.path.isdir(inputs[0]) and is_bids_dataset(inputs[0]):
    return os.path.join(inputs[0], "derivatives", DERIVATIVE_NAME)
  return None


def find(inputs: list[str], out: str) -> list[Scan]:
  """The scans named by `inputs`, in a stable order (sorted within each input).

  Raises:
    InputError: an input that names nothing, or two scans with the same name (their
      outputs would collide).
  """
  scans: list[Scan] = []
  for item in inputs:
    if os.path.isdir(item):
      scans += bids_scans(item, out) if is_bids_dataset(item) else _folder(item, out)
    elif os.path.isfile(item):
      if not volume_lib.is_nifti(item):
        raise InputError(f"{item}: not a NIfTI file (.nii, .nii.gz); for DICOM give the "
                         "series folder")
      scans.append(_plain(item, out, "nifti"))
    elif glob.has_magic(item):
      matches = sorted(glob.glob(item))
      found = [p for p in matches if volume_lib.is_nifti(p) or os.path.isdir(p)]
      if not found:
        raise InputError(f"{item}: the pattern matches no NIfTI file or folder")
      scans += find(found, out)
    else:
      raise InputError(f"{item}: no such file or folder")
  by_name: dict[str, Scan] = {}
  for scan in scans:
    if scan.name in by_name and by_name[scan.name].source != scan.source:
      raise InputError(f"two scans are both named {scan.name!r} ({by_name[scan.name].source} "
                       f"and {scan.source}); their outputs would collide: run them with "
                       "different --out folders")
    by_name[scan.name] = scan
  return list(by_name.values())


def write_dataset_description(out: str, datasets: list[str]) -> None:
  """The derivative dataset's `dataset_description.json` (BIDS), kept if present."""
  path = os.path.join(out, "dataset_description.json")
  if os.path.exists(path):
    return
  from importlib import metadata  # pylint: disable=g-import-not-at-top
  from clade_jax import atomic  # pylint: disable=g-import-not-at-top
  try:
    version = metadata.version("clade-jax")
  except metadata.PackageNotFoundError:
    version = "unknown"
  description = {
      "Name": "clade-jax super-resolution",
      "BIDSVersion": "1.9.0",
      "DatasetType": "derivative",
      "GeneratedBy": [{"Name": DERIVATIVE_NAME, "Version": version,
                       "Description": "unsupervised super-resolution to isotropic voxels, "
                                      "trained on each scan (clade-jax sr)"}],
      "SourceDatasets": [{"URL": "file://" + os.path.abspath(d)} for d in datasets],
  }
  atomic.write_text(path, json.dumps(description, indent=2) + "\n")


def shard(scans: list[Scan], index: int, count: int) -> list[Scan]:
  """The scans of shard `index` of `count` (0-based): every count-th, by name."""
  return sorted(scans, key=lambda s: s.name)[index::count]
