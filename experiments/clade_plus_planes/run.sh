#!/usr/bin/env bash
# CLADE+ trained on one low-resolution plane vs on both (data.lr_planes), on issue 27's
# hard case: MNI152 phase 0, rect 3 mm slices every 4 mm (thick axis A-P), 2 % Rician
# noise; told the profile. Each run trains configs/clade_plus.py:demo (16 channels,
# 4 blocks, batch 8) for STEPS steps, super-resolves the scan (--planes trained for the
# one-plane run, --planes both for the two-plane run) and is scored like evaluate.py
# (PSNR / 3D SSIM in the truth's foreground, benchmarks/time_to_quality.py:fidelity).
# Usage: experiments/clade_plus_planes/run.sh [OUT=runs/clade_plus_planes] [STEPS=300]
set -euo pipefail
OUT=${1:-runs/clade_plus_planes}
STEPS=${2:-300}
GT=runs/sr_default/rect3of4/ground_truth  # experiments/profile_estimation/sr_default.sh
LR=$GT/rect/lr/mni152_phase0.nii.gz
TRUTH=$GT/truth/mni152_phase0.nii.gz
[ -f "$LR" ] || python experiments/ground_truth/run.py --workdir "$GT" --profiles rect \
    --spacing-mm 4 --thickness-mm 3 --noise 0.02 --phases 1 --stage degrade
for planes in trained both; do
  run=$OUT/${planes}_$STEPS
  /usr/bin/time -f "$planes train: %e s" python train.py --config=configs/clade_plus.py:demo \
      --config.data.root="$LR" --config.data.make_demo=False --config.data.truth="$TRUTH" \
      --config.data.slice_profile=rect --config.data.slice_thickness=3 \
      --config.data.lr_planes=$planes --config.train.num_steps="$STEPS" --workdir="$run"
  /usr/bin/time -f "$planes infer: %e s" python infer.py --workdir "$run" --input "$LR" \
      --output "$run/sr.nii.gz" --planes $planes --no-figure --no-progress --overwrite
done
python - "$OUT" "$STEPS" "$TRUTH" "$GT/rect/cubic/mni152_phase0.nii.gz" <<'PY'
import sys
sys.path.insert(0, "benchmarks")
from time_to_quality import fidelity
out, steps, truth, cubic = sys.argv[1:]
for name, path in [("cubic", cubic)] + [(f"CLADE+ {p} ({steps} steps)", f"{out}/{p}_{steps}/sr.nii.gz")
                                        for p in ("trained", "both")]:
  print("%-28s PSNR %.2f dB  SSIM %.4f" % ((name,) + fidelity(path, truth)))
PY
