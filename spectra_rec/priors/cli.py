"""``spectra-rec priors``: build a history prior table, or a pool of priors, and save it (Parquet or CSV)."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from spectra_rec.data.cli import add_data_arguments, data_config
from spectra_rec.data.stage import data_stage
from spectra_rec.priors.history import HISTORY_PRIORS, WINDOWED, history_prior
from spectra_rec.priors.pool import EXPOSURE_PART, POOL_SEPARATOR, is_pool_spec
from spectra_rec.priors.registry import SpectraOptions, resolve_prior

log = logging.getLogger(__name__)


def add_arguments(p: argparse.ArgumentParser) -> None:
    add_data_arguments(p)
    p.add_argument("--method", default="uhf", metavar="METHOD",
                   help=f"one of {sorted(HISTORY_PRIORS)}; {'/'.join(WINDOWED)}@N counts the last N train items only; "
                        f"A{POOL_SEPARATOR}B pools priors or prior tables log-linearly, weights fitted on the dev cohort "
                        f"(a part {EXPOSURE_PART!r} divides by popularity until the dev top-3 exposure entropy reaches uhf's)")
    p.add_argument("--dev-fraction", type=float, default=0.2, help="dev cohort share a pool fits its weights on")
    p.add_argument("--cohort-seed", type=int, default=0, help="seed of the dev cohort a pool fits its weights on")
    p.add_argument("--out", type=Path, help="output .parquet or .csv (default runs/priors/<dataset>-<method>.parquet)")
    p.add_argument("--runs", type=Path, default=Path("runs"))


def run(args) -> int:
    ds, split, _ = data_stage(data_config(args), args.runs)
    if is_pool_spec(args.method):  # its parts are any prior spec (a SPECTRA readout aligns and probes, cached)
        table = resolve_prior(args.method, split, flag="--method", spectra=SpectraOptions(runs=args.runs),
                              cohorts=(args.dev_fraction, args.cohort_seed))
    else:
        table = history_prior(split, args.method)
    stem = args.method.replace(POOL_SEPARATOR, "+").replace("/", "_")
    out = args.out or args.runs / "priors" / f"{ds.name}-{stem}.parquet"
    table.save(out)
    log.info("wrote %s (%d users x %d categories)", out, *table.probs.shape)
    print(out)
    return 0
