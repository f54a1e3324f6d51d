#!/usr/bin/env bash
# SMORE on the MNI152 protocol with 3 mm rectangular slices every 4 mm and 2 % Rician
# noise (issue 27's hard case), phase 0: told the profile, and with
# data.slice_profile=estimate; scored beside cubic against the truth.
# Usage: experiments/profile_estimation/smore_mni.sh [OUT=runs/profile_smore]
set -euo pipefail
OUT=${1:-runs/profile_smore}
GT=$OUT/ground_truth
python experiments/ground_truth/run.py --workdir "$GT" --profiles rect --spacing-mm 4 \
    --thickness-mm 3 --noise 0.02 --phases 1 --stage degrade
LR=$GT/rect/lr/mni152_phase0.nii.gz
COMMON=(--config=configs/smore.py:demo --config.data.make_demo=False
        "--config.data.root=$LR" --config.train.num_steps=600)
for run in told estimate; do
  if [ $run = told ]; then
    extra=(--config.data.slice_profile=rect --config.data.slice_thickness=3)
  else
    extra=(--config.data.slice_profile=estimate)
  fi
  /usr/bin/time -f "$run: train %e s" python train.py "${COMMON[@]}" "${extra[@]}" \
      --workdir "$OUT/$run"
  mkdir -p "$OUT/sr_$run"
  /usr/bin/time -f "$run: infer %e s" python infer.py --workdir "$OUT/$run" --input "$LR" \
      --output "$OUT/sr_$run/mni152_phase0.nii.gz" --no-progress --overwrite
done
python evaluate.py --truth "$GT/truth" --thick-axis 1 --no-figures --out "$OUT/eval" \
    --method cubic="$GT/rect/cubic" --method smore_told="$OUT/sr_told" \
    --method smore_estimate="$OUT/sr_estimate"
cat "$OUT/eval/table.md"
