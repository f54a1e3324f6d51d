#!/usr/bin/env bash
# Which slice profile should `clade-jax sr` assume when a scan's metadata says nothing?
# Two MNI152 cases (phase 0, thick axis A-P), each run the way a user runs it
# (`clade-jax sr`, one fresh process per run, the given budget), scored beside cubic:
#   rect 3 mm every 4 mm with 2 % Rician noise (issue 27's hard case), and
#   Gaussian 6 mm every 6 mm, noise-free (the ground-truth protocol's main case);
# each with the method's default (Gaussian, FWHM = spacing), with the profile
# estimated from the scan, and told the true profile.
# Usage: experiments/profile_estimation/sr_default.sh [OUT=runs/sr_default] [BUDGET=quick]
set -euo pipefail
OUT=${1:-runs/sr_default}
BUDGET=${2:-quick}
sr() { /usr/bin/time -f "$1: %e s" python -m clade_jax.cli sr "${@:2}" --budget "$BUDGET" \
         --no-progress --no-report; }
for case in rect3of4 gauss6; do
  if [ $case = rect3of4 ]; then
    args=(--profiles rect --spacing-mm 4 --thickness-mm 3 --noise 0.02); profile=rect
    told=(--slice-profile rect --slice-thickness 3)
  else
    args=(--profiles gaussian); profile=gaussian
    told=(--slice-profile gaussian --slice-thickness 6)
  fi
  GT=$OUT/$case/ground_truth
  LR=$GT/$profile/lr/mni152_phase0.nii.gz
  [ -f "$LR" ] || python experiments/ground_truth/run.py --workdir "$GT" "${args[@]}" \
      --phases 1 --stage degrade
  python -c "import sys; sys.path.insert(0, 'experiments'); import common; \
common.upsample_missing(['$LR'], '$GT/$profile/cubic', 'cubic', target_spacing=1.0)"
  sr "$case default" "$LR" --out "$OUT/$case/default" --slice-profile gaussian
  sr "$case estimate" "$LR" --out "$OUT/$case/estimate" --slice-profile estimate
  [ $case = gauss6 ] || sr "$case told" "$LR" --out "$OUT/$case/told" "${told[@]}"
done
for case in rect3of4 gauss6; do
  GT=$OUT/$case/ground_truth
  profile=$([ $case = rect3of4 ] && echo rect || echo gaussian)
  methods=(--method cubic="$GT/$profile/cubic")
  for run in default estimate told; do
    [ -d "$OUT/$case/$run" ] && methods+=(--method "$run=$OUT/$case/$run/*_sr.nii.gz")
  done
  python evaluate.py --truth "$GT/truth" --thick-axis 1 --no-figures \
      --subject-regex '(mni152_phase\d)' --out "$OUT/$case/eval" "${methods[@]}"
  echo "== $case"; cat "$OUT/$case/eval/table.md"
done
