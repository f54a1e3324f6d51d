#!/usr/bin/env bash
# Issue 27's "best method, measured" table: every candidate on the issue's hard case
# (MNI152 phase 0, rect 3 mm slices every 4 mm along voxel axis 1, 2 % Rician noise),
# run as a user runs it, with no slice profile given (estimated from the scan), scored
# by evaluate.py against the truth (PSNR, 3D SSIM, PIQUE, edge sharpness) beside cubic.
# Each run's wall time and the load average before and after go to $OUT/times.txt.
# Rows already on disk are not run again (delete their folder to re-run one).
# Usage: experiments/recommended_method/run.sh [OUT=runs/recommended_method]
set -euo pipefail
OUT=${1:-runs/recommended_method}
GT=runs/sr_default/rect3of4/ground_truth  # experiments/profile_estimation/sr_default.sh
LR=$GT/rect/lr/mni152_phase0.nii.gz
TRUTH=$GT/truth/mni152_phase0.nii.gz
[ -f "$LR" ] || python experiments/ground_truth/run.py --workdir "$GT" --profiles rect \
    --spacing-mm 4 --thickness-mm 3 --noise 0.02 --phases 1 --stage degrade
python -c "import sys; sys.path.insert(0, 'experiments'); import common; \
common.upsample_missing(['$LR'], '$GT/rect/cubic', 'cubic', target_spacing=1.0)"
mkdir -p "$OUT"

timed() {  # timed LABEL COMMAND...: wall time and load average into $OUT/times.txt
  local label=$1 before start
  shift
  before=$(cut -d' ' -f1-3 /proc/loadavg)
  start=$(date +%s)
  nice -n 10 "$@"
  echo "$label: $(( $(date +%s) - start )) s, load average $before -> $(cut -d' ' -f1-3 /proc/loadavg)" \
      | tee -a "$OUT/times.txt"
}
sr() {  # sr NAME ARGS...: clade-jax sr on the scan at the standard budget
  local name=$1
  shift
  [ -f "$OUT/$name/mni152_phase0_sr.nii.gz" ] || timed "$name" python -m clade_jax.cli sr \
      "$LR" --out "$OUT/$name" --budget standard --no-progress --no-report "$@"
}

# SMORE, the clade-jax sr default (2,000 steps, 16 channels x 4 blocks): the profile
# estimated (what a user gets), and told the true one for reference.
sr smore_estimate
sr smore_told --slice-profile rect --slice-thickness 3
# ECLARE-like (README): SMORE at the same budget with ECLARE/ESPRESO's estimated profile
# on this scan (a Gaussian of FWHM 3.97 mm), then also with ECLARE's wide-activation
# blocks (model.expansion=4) and its one-cycle schedule (30 % warm-up, cosine decay).
sr eclare_like_profile --slice-profile gaussian --slice-thickness 3.97
sr eclare_like_recipe --slice-profile gaussian --slice-thickness 3.97 \
    --set model.expansion=4 --set train.warmup_steps=600
# CLADE+ at demo size (16-channel generators, 4 blocks, batch 8), 300 steps, the
# profile estimated, trained on both low-resolution planes (inferred on both, its
# default then) and, for reference, on the trained plane only (the paper's, the default).
for planes in both trained; do
  run=$OUT/clade_plus_$planes
  [ ! -f "$run/mni152_phase0_sr.nii.gz" ] || continue
  timed "clade_plus_$planes train" python train.py --config=configs/clade_plus.py:demo \
      --config.data.root="$LR" --config.data.make_demo=False --config.data.truth="$TRUTH" \
      --config.data.slice_profile=estimate --config.data.lr_planes=$planes --workdir="$run"
  timed "clade_plus_$planes infer" python infer.py --workdir "$run" --input "$LR" \
      --output "$run/mni152_phase0_sr.nii.gz" --batch-size 32 --no-figure --no-progress
done

methods=(--method cubic="$GT/rect/cubic")
for name in smore_estimate smore_told eclare_like_profile eclare_like_recipe clade_plus_both \
    clade_plus_trained; do
  methods+=(--method "$name=$OUT/$name/*_sr.nii.gz")
done
nice -n 10 python evaluate.py --truth "$GT/truth" --rois experiments/ground_truth/mni152_rois.json \
    --thick-axis 1 --no-figures --subject-regex '(mni152_phase\d)' --out "$OUT/eval" \
    "${methods[@]}"
cat "$OUT/eval/table.md" "$OUT/times.txt"
# The same PSNR / 3D SSIM as benchmarks/time_to_quality.py:fidelity computes them.
python - "$TRUTH" "$GT/rect/cubic/mni152_phase0.nii.gz" "$OUT"/*/mni152_phase0_sr.nii.gz <<'PY'
import sys
sys.path.insert(0, "benchmarks")
from time_to_quality import fidelity
for path in sys.argv[2:]:
  print("%-60s PSNR %.2f dB  SSIM %.4f" % ((path,) + fidelity(path, sys.argv[1])))
PY
