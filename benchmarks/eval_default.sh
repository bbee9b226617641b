#!/usr/bin/env bash
# The default aligned model on ml-100k against the history priors and DG, on the dev and the test cohort.
#
#   RUNS=runs bash benchmarks/eval_default.sh        # aligns the default model first if it is not cached
#   RUNS=runs-c ALIGN_ARGS="--epochs 1 1" bash benchmarks/eval_default.sh   # a candidate: extra `align` flags
#
# Writes $RUNS/eval-default/{dev,test}/ (report.md, summary CSVs, results.json) and prints both headline
# tables. Readouts at tau = 1 and with --tau auto (fitted on the dev cohort), and each readout pooled with
# uhf (``spectra-name*uhf``, weights fitted on the dev cohort), also with the ``exposure`` part
# (``spectra-name*uhf*exposure``: divided by popularity^c, c the smallest that matches uhf's dev top-3
# exposure entropy). Not part of the test pass/fail.
set -euo pipefail
RUNS=${RUNS:-runs}
PY=${PY:-python}
OUT=$RUNS/eval-default
mkdir -p "$OUT"
# ALIGN_ARGS is split into words on purpose: it holds several flags
# shellcheck disable=SC2086
ADAPTER=$($PY -m spectra_rec.cli align --dataset ml-100k --runs "$RUNS" ${ALIGN_ARGS:-} | sed -n 's/^sft folder: //p')
echo "adapter: $ADAPTER"
for r in logit name choice; do
  $PY -m spectra_rec.cli probe --dataset ml-100k --runs "$RUNS" --adapter "$ADAPTER" --readout $r --out "$OUT/spectra-$r.parquet" --no-progress
  $PY -m spectra_rec.cli probe --dataset ml-100k --runs "$RUNS" --adapter "$ADAPTER" --readout $r --tau auto --out "$OUT/spectra-$r-auto.parquet" --no-progress
done
$PY -m spectra_rec.cli dg --dataset ml-100k --runs "$RUNS" --adapter "$ADAPTER" --out "$OUT/dg.parquet" --no-progress
for cohort in dev test; do
  $PY -m spectra_rec.cli evaluate --dataset ml-100k --runs "$RUNS" --cohort $cohort --no-figures --out "$OUT/$cohort" \
    --priors uhf uhf-decay popularity dg="$OUT/dg.parquet" \
    spectra-logit="$OUT/spectra-logit.parquet" spectra-name="$OUT/spectra-name.parquet" spectra-choice="$OUT/spectra-choice.parquet" \
    spectra-logit-auto="$OUT/spectra-logit-auto.parquet" spectra-name-auto="$OUT/spectra-name-auto.parquet" \
    spectra-choice-auto="$OUT/spectra-choice-auto.parquet" \
    "spectra-logit*uhf=$OUT/spectra-logit.parquet*uhf" "spectra-name*uhf=$OUT/spectra-name.parquet*uhf" \
    "spectra-choice*uhf=$OUT/spectra-choice.parquet*uhf" \
    "spectra-logit*uhf*exposure=$OUT/spectra-logit.parquet*uhf*exposure" \
    "spectra-name*uhf*exposure=$OUT/spectra-name.parquet*uhf*exposure" \
    "spectra-choice*uhf*exposure=$OUT/spectra-choice.parquet*uhf*exposure"
done
# Per-user spread: the mean over categories of the std of p_u(c) across test-cohort users, next to the truth's.
OUT="$OUT" $PY - <<'PYEOF'
import os
from pathlib import Path
from spectra_rec.data import load_dataset, split_dataset
from spectra_rec.evaluate import EvalConfig, cohort_users
from spectra_rec.priors import PriorTable
from spectra_rec.priors.history import uhf, uhf_decay
from spectra_rec.priors.registry import resolve_prior
ds = load_dataset("ml-100k"); split = split_dataset(ds)
test = cohort_users(split, EvalConfig(cohort="test"))
out = Path(os.environ["OUT"])
print(f"per-category std across {len(test)} test users: truth {split.ground_truth(users=test).std(0).mean():.4f}, "
      f"uhf {uhf(split)[test].std(0).mean():.4f}, uhf-decay {uhf_decay(split)[test].std(0).mean():.4f}")
for name in ["logit", "name", "choice", "logit-auto", "name-auto", "choice-auto"]:
    t = PriorTable.load(out / f"spectra-{name}.parquet")
    print(f"  spectra-{name}: {t.matrix(ds, test).std(0).mean():.4f} (tau {t.meta.get('tau')})")
for name in ["logit", "name", "choice"]:
    t = resolve_prior(f"{out}/spectra-{name}.parquet*uhf", split)
    print(f"  spectra-{name}*uhf: {t.matrix(ds, test).std(0).mean():.4f} (weights {t.meta['pool']['weights']})")
    t = resolve_prior(f"{out}/spectra-{name}.parquet*uhf*exposure", split)
    e = t.meta["pool"]["exposure"]
    print(f"  spectra-{name}*uhf*exposure: {t.matrix(ds, test).std(0).mean():.4f} (weights {t.meta['pool']['weights']}, "
          f"contrast {e['contrast']}, dev entropy {e['dev_entropy']:.3f} against uhf's {e['reference_dev_entropy']:.3f})")
PYEOF
