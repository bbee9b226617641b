#!/usr/bin/env bash
# The default aligned model's best readout fused into a backbone, next to the history priors.
#
#   RUNS=runs MODEL=SASRec bash benchmarks/fuse_default.sh     # aligns the default model first if it is not cached
#   READOUT=logit bash benchmarks/fuse_default.sh               # another readout
#
# The readout (default: name, the best on the dev cohort in benchmarks/eval_default.sh) is probed with
# tau fitted on the dev cohort (--tau auto), and pooled with uhf (``*uhf``: a log-linear pool, weights fitted
# on the dev cohort; spectra-<readout>-pool), and that pool with the ``exposure`` part (divided by popularity^c,
# c the smallest that matches uhf's dev top-3 exposure entropy; spectra-<readout>-exposure). Each prior runs the main job with the same backbone,
# cohorts and dev-chosen (normalization, w); the per-slice tables are in $RUNS/fuse-default/<prior>/results.md.
# Not part of the test pass/fail.
set -euo pipefail
RUNS=${RUNS:-runs}
PY=${PY:-python}
MODEL=${MODEL:-SASRec}
READOUT=${READOUT:-name}
OUT=$RUNS/fuse-default
mkdir -p "$OUT"
ADAPTER=$($PY -m spectra_rec.cli align --dataset ml-100k --runs "$RUNS" | sed -n 's/^sft folder: //p')
echo "adapter: $ADAPTER"
$PY -m spectra_rec.cli probe --dataset ml-100k --runs "$RUNS" --adapter "$ADAPTER" --readout "$READOUT" --tau auto \
  --out "$OUT/spectra-$READOUT-auto.parquet" --no-progress
# NAME=PRIOR pairs; the last two are the readout pooled with uhf, their weights fitted on the fusion's dev cohort
for pair in uhf=uhf uhf-decay=uhf-decay "spectra-$READOUT-auto=$OUT/spectra-$READOUT-auto.parquet" \
            "spectra-$READOUT-pool=$OUT/spectra-$READOUT-auto.parquet*uhf" \
            "spectra-$READOUT-exposure=$OUT/spectra-$READOUT-auto.parquet*uhf*exposure"; do
  $PY run_fusion.py --model "$MODEL" --runs "$RUNS" --prior "${pair#*=}" --out "$OUT/$MODEL-${pair%%=*}"
done
for name in uhf uhf-decay "spectra-$READOUT-auto" "spectra-$READOUT-pool" "spectra-$READOUT-exposure"; do
  echo; echo "== $MODEL + $name (test cohort) =="
  tail -n +3 "$OUT/$MODEL-$name/results.md"
done
