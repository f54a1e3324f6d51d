"""PROVISIONAL stub until the DICOM branch lands."""
import os


def is_series_dir(path):
  for name in os.listdir(path):
    p = os.path.join(path, name)
    if os.path.isfile(p):
      with open(p, "rb") as f:
        head = f.read(132)
      if head[128:132] == b"DICM":
        return True
  return False
