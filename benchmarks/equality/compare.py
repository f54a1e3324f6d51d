"""compare.py A B: bitwise comparison of two benchmarks/equality/run.sh outputs.

Every output volume (voxels and affine) and every array of each saved train state (read
with Orbax alone, so a changed layout still compares: the multiset of arrays) must be
equal. Prints one line per file and a verdict.
"""
import glob, os, sys
import numpy as np, nibabel as nib
import jax, orbax.checkpoint as ocp

a, b = sys.argv[1:3]
bad = 0
for path in sorted(glob.glob(f"{a}/sr/*.nii.gz")):
  other = path.replace(a, b, 1)
  if not os.path.exists(other):
    print("MISSING", other); bad += 1; continue
  x, y = nib.load(path), nib.load(other)
  same = np.array_equal(np.asarray(x.dataobj), np.asarray(y.dataobj)) and np.array_equal(x.affine, y.affine)
  print("same" if same else "DIFFERENT", os.path.basename(path)); bad += not same
for ck in sorted(glob.glob(f"{a}/runs/*/checkpoints/*/state")):
  other = ck.replace(a, b, 1)
  if not os.path.exists(other):
    print("MISSING", other); bad += 1; continue
  ta = ocp.StandardCheckpointer().restore(os.path.abspath(ck))
  tb = ocp.StandardCheckpointer().restore(os.path.abspath(other))
  fa = {jax.tree_util.keystr(k): v for k, v in jax.tree_util.tree_flatten_with_path(ta)[0]}
  fb = {jax.tree_util.keystr(k): v for k, v in jax.tree_util.tree_flatten_with_path(tb)[0]}
  # Layout may legitimately move (e.g. batch stats out of params): compare the multiset of arrays.
  key = lambda v: (np.asarray(v).shape, np.asarray(v).tobytes())
  sa, sb = sorted(map(key, fa.values())), sorted(map(key, fb.values()))
  same = sa == sb
  print("same" if same else "DIFFERENT", ck, "" if fa.keys() == fb.keys() else f"(keys differ: {sorted(set(fa) ^ set(fb))[:6]})")
  bad += not same
print("ALL BITWISE EQUAL" if not bad else f"{bad} DIFFERENCES")
