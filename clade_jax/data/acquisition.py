"""PROVISIONAL stub until the DICOM branch lands."""
import dataclasses, json, os


@dataclasses.dataclass(frozen=True)
class SliceMetadata:
  thickness_mm: float | None
  spacing_mm: float | None
  source: str


def slice_metadata(path):
  stem = path[:-7] if path.endswith(".nii.gz") else path[:-4]
  side = stem + ".json"
  if not os.path.exists(side):
    return None
  with open(side) as f:
    d = json.load(f)
  return SliceMetadata(d.get("SliceThickness"), d.get("SpacingBetweenSlices"),
                       f"{os.path.basename(side)}: SliceThickness")
