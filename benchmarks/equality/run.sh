#!/usr/bin/env bash
# usage: benchmarks/equality/run.sh REPO OUT [train]
# Trains (with "train") tiny CLADE, CLADE+, SMORE and autoencoder runs into OUT/runs with
# the code in REPO, then runs REPO's infer.py on the runs in $RUNS (default OUT/runs) with
# several flag sets into OUT/sr. Run it for two commits and compare with compare.py: a
# refactor must leave every array bitwise equal.
set -euo pipefail  # Run from anywhere with the venv active; REPO and OUT absolute.
repo=$1; out=$2; mode=${3:-infer}; runs=${RUNS:-$out/runs}
export JAX_PLATFORMS=cpu JAX_COMPILATION_CACHE_DIR=${JAX_COMPILATION_CACHE_DIR:-$(dirname "$out")/jit_cache}
mkdir -p "$out"; cd "$repo"
data=${DATA:-$(dirname "$out")/data}
if [ ! -d $data ]; then
  mkdir -p $data && python -c "
import sys; sys.path.insert(0,'.')
from tests import phantoms
phantoms.thick_slice_volume('$data/a.nii.gz', seed=0); phantoms.thick_slice_volume('$data/b.nii.gz', seed=1)"
fi
tiny="--config.data.root=$data --config.train.num_steps=3 --config.train.log_every=1 --config.ckpt.every=3 --config.train.sample_every=3 --config.data.num_threads=1 --config.model.features=4 --config.model.num_blocks=1 --config.eval.batch_size=32"
if [ "$mode" = train ]; then
  python train.py --config=configs/mri.py:small $tiny --config.data.patch_size=16 --config.model.disc_features=4 --config.model.disc_layers=2 --config.model.conv_impl=im2col --config.eval.stride=8 --workdir=$runs/clade > $out/clade.log 2>&1
  python train.py --config=configs/clade_plus.py:small $tiny --config.data.patch_size=16 --config.model.disc_features=4 --config.model.disc_layers=2 --config.model.conv_impl=xla --config.eval.stride=8 --workdir=$runs/clade_plus > $out/clade_plus.log 2>&1
  python train.py --config=configs/smore.py:small $tiny --config.data.patch_size=16 --config.eval.stride=8 --workdir=$runs/smore > $out/smore.log 2>&1
  python train.py --config=configs/ae_interp.py:small $tiny --config.model.num_blocks=2 --workdir=$runs/ae > $out/ae.log 2>&1
fi
mkdir -p $out/sr
for r in clade clade_plus smore ae; do
  python infer.py --workdir $runs/$r --input $data/b.nii.gz --output $out/sr/${r}_default.nii.gz --no-progress --no-figure --overwrite > $out/sr/${r}_default.log 2>&1
done
python infer.py --workdir $runs/clade --input $data/b.nii.gz --output $out/sr/clade_flags.nii.gz --stride 4 --batch-size 7 --planes both --consistency --no-progress --no-figure --overwrite > $out/sr/clade_flags.log 2>&1
python infer.py --workdir $runs/smore --input $data/b.nii.gz --output $out/sr/smore_patch.nii.gz --mode patch --stride 4 --no-progress --no-figure --overwrite > $out/sr/smore_patch.log 2>&1
python infer.py --workdir $runs/clade_plus --input $data/a.nii.gz --output $out/sr/clade_plus_clip.nii.gz --outside-window clip --no-consistency --no-progress --no-figure --overwrite > $out/sr/clade_plus_clip.log 2>&1
python infer.py --workdir $runs/clade --input $data/b.nii.gz --output $out/sr/clade_taper.nii.gz --stride 5 --blend taper --no-progress --no-figure --overwrite > $out/sr/clade_taper.log 2>&1
python infer.py --workdir $runs/clade --input $data/b.nii.gz --output $out/sr/clade_full.nii.gz --mode full --no-progress --no-figure --overwrite > $out/sr/clade_full.log 2>&1
python infer.py --workdir $runs/smore --input $data/b.nii.gz --output $out/sr/smore_patch_taper.nii.gz --mode patch --stride 4 --blend taper --planes both --no-progress --no-figure --overwrite > $out/sr/smore_patch_taper.log 2>&1
echo done
