#!/usr/bin/env bash
# SMORE on the MNI152 ground-truth protocol: one network per input volume.
#
#   experiments/ground_truth/smore.sh GT_DIR OUT_DIR [PROFILES] [PHASES] [-- train.py overrides]
#
# GT_DIR is run.py's --workdir after `--stage degrade` (inputs in GT_DIR/<profile>/lr/).
# For every profile and phase it trains configs/smore.py:cpu on that input (workdir
# OUT_DIR/work/<profile>/phase<k>) and writes OUT_DIR/<profile>/mni152_phase<k>.nii.gz,
# ready for `run.py --method smore=OUT_DIR/{profile}`. Re-running resumes or skips
# finished steps. Defaults: PROFILES="gaussian rect", PHASES="0 1 2 3 4 5".
set -euo pipefail
gt=${1:?usage: smore.sh GT_DIR OUT_DIR [PROFILES] [PHASES] [-- overrides]}
out=${2:?usage: smore.sh GT_DIR OUT_DIR [PROFILES] [PHASES] [-- overrides]}
profiles=${3:-gaussian rect}
phases=${4:-0 1 2 3 4 5}
shift $(( $# < 4 ? $# : 4 ))
[[ ${1:-} == -- ]] && shift
for profile in $profiles; do
  for k in $phases; do
    lr=$gt/$profile/lr/mni152_phase$k.nii.gz
    work=$out/work/$profile/phase$k
    result=$out/$profile/mni152_phase$k.nii.gz
    start=$(date +%s)
    python train.py --config=configs/smore.py:cpu --config.data.root="$lr" \
        --config.data.slice_profile="$profile" --workdir="$work" "$@"
    trained=$(date +%s)
    [[ -e $result ]] || python infer.py --workdir "$work" --input "$lr" --output "$result" \
        --no-progress
    echo "$profile phase $k: trained in $((trained - start)) s, inferred in $(( $(date +%s) - trained )) s"
  done
done
