"""The protocol's 24 cases through `estimate_profile` with keyword arguments; counts only.

Used for the through-slice correction tried in README ("Tried and dropped"): apply
through_slice_correction.patch (adds `rounds` and `phases` to `estimate_profile`),
then, from the repository root,

    python experiments/profile_estimation/tried/variants.py '{"rounds": 2}' 0,125 e2e

prints, per template (0: whole, 125: cut to 125 L-R voxels), how many thicknesses are
within 10 % and families right, each case's error, and with `e2e` the estimate on the
end-to-end check's file (written by sr_default.sh:
runs/sr_default/rect3of4/ground_truth/rect/lr/mni152_phase0.nii.gz, or $E2E_FILE).
The acquisitions are cached (float32) under /tmp/est2.
"""
import json
import os
import sys
import time
sys.path.insert(0, os.getcwd())
sys.path.insert(0, os.path.join(os.getcwd(), "experiments/profile_estimation"))
os.makedirs("/tmp/est2", exist_ok=True)
import numpy as np
import run as protocol
from clade_jax.data import demo, profile_estimation as pe

def cases(keep):
  path = f"/tmp/est2/cache_{keep}.npz"
  if os.path.exists(path):
    z = np.load(path); return [(c, z[str(i)]) for i, c in enumerate(json.load(open(path + ".json")))]
  t = demo.load_template().data
  t = t[:keep] if keep else t
  out, keys = {}, []
  for profile, spacing, thickness in protocol.CASES:
    for noise in protocol.NOISE:
      out[str(len(keys))] = protocol.acquire(t, spacing, thickness, profile, noise).astype(np.float32)
      keys.append((profile, spacing, thickness, noise))
  np.savez(path, **out); json.dump(keys, open(path + ".json", "w"))
  return cases(keep)

def main():
  kw = json.loads(sys.argv[1]) if len(sys.argv) > 1 else {}
  if "_reg" in kw: pe.GAIN_REG = kw.pop("_reg")
  which = sys.argv[2] if len(sys.argv) > 2 else "0,125"
  for keep in [int(k) for k in which.split(",")]:
    n10 = right = 0; line = []
    for (profile, spacing, thickness, noise), lr in cases(keep):
      s = time.perf_counter()
      e = pe.estimate_profile(lr.astype(np.float64), (1.0, spacing, 1.0), 1, **kw)
      dt = time.perf_counter() - s
      rel = e.thickness_mm / thickness - 1
      n10 += abs(rel) <= 0.1; right += e.profile == profile
      line.append(f"{profile[0]}{spacing:g}/{thickness:g}{'n' if noise else ' '}:{e.profile[0]}{rel:+.0%}({dt:.1f})")
    print(f"keep={keep} {kw}: within10={n10} family={right}")
    for i in range(0, len(line), 6): print("   " + "  ".join(line[i:i+6]))
  if "e2e" in sys.argv:
    import nibabel as nib
    from clade_jax.data.volume import voxel_spacing
    img = nib.load(os.environ.get("E2E_FILE", "runs/sr_default/rect3of4/ground_truth/rect/lr/mni152_phase0.nii.gz"))
    sp = voxel_spacing(img.affine); ax = int(np.argmax(sp))
    e = pe.estimate_profile(np.asarray(img.dataobj, np.float64), sp, ax, **kw)
    print("e2e", e.profile, round(e.thickness_mm, 3), sp, ax)
main()
