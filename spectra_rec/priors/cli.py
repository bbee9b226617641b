"""``spectra-rec priors``: build a history prior table and save it (Parquet or CSV)."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from spectra_rec.data.cli import add_data_arguments, data_config
from spectra_rec.data.stage import data_stage
from spectra_rec.priors.history import HISTORY_PRIORS, WINDOWED, history_prior

log = logging.getLogger(__name__)


def add_arguments(p: argparse.ArgumentParser) -> None:
    add_data_arguments(p)
    p.add_argument("--method", default="uhf", metavar="METHOD",
                   help=f"one of {sorted(HISTORY_PRIORS)}; {'/'.join(WINDOWED)}@N counts the last N train items only")
    p.add_argument("--out", type=Path, help="output .parquet or .csv (default runs/priors/<dataset>-<method>.parquet)")
    p.add_argument("--runs", type=Path, default=Path("runs"))


def run(args) -> int:
    ds, split, _ = data_stage(data_config(args), args.runs)
    table = history_prior(split, args.method)
    out = args.out or args.runs / "priors" / f"{ds.name}-{args.method}.parquet"
    table.save(out)
    log.info("wrote %s (%d users x %d categories)", out, *table.probs.shape)
    print(out)
    return 0
