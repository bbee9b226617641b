"""Wall time of category-level evaluation on ml-100k over the history priors (prints measured figures).

    python benchmarks/bench_evaluate.py [--repeats 3] [--n-boot 1000] [--cli]

Times, separately: loading + splitting, building the history priors, ``evaluate`` (all metrics,
statistics, bootstrap CIs), writing the report (tables + PNG figures), and optionally the
whole ``spectra-rec evaluate`` command in a subprocess. Never part of the test pass/fail.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

PRIORS = ["uhf", "uhf-laplace", "markov", "popularity", "uniform"]


def _timed(fn, repeats: int):
    times, out = [], None
    for _ in range(repeats):
        t0 = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t0)
    return out, times


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dataset", default="ml-100k")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--n-boot", type=int, default=1000)
    ap.add_argument("--cli", action="store_true", help="also time the full `spectra-rec evaluate` command")
    args = ap.parse_args()

    from spectra_rec.data import load_dataset, split_dataset
    from spectra_rec.evaluate import EvalConfig, evaluate
    from spectra_rec.priors import history_prior
    from spectra_rec.report import headline_table, write_report

    (ds, split), t_load = _timed(lambda: (lambda d: (d, split_dataset(d)))(load_dataset(args.dataset)), 1)
    priors, t_priors = _timed(lambda: {m: history_prior(split, m) for m in PRIORS}, args.repeats)
    config = EvalConfig(n_boot=args.n_boot)
    result, t_eval = _timed(lambda: evaluate(split, priors, config), args.repeats)
    with tempfile.TemporaryDirectory() as tmp:
        _, t_report = _timed(lambda: write_report(result, Path(tmp) / "r"), args.repeats)
    figures = {
        "dataset": ds.name,
        "users_in_cohort": result.n_users,
        "categories": ds.K,
        "priors": PRIORS,
        "n_boot": args.n_boot,
        "cpus": os.cpu_count(),
        "load_split_s": t_load[0],
        "priors_median_s": statistics.median(t_priors),
        "evaluate_median_s": statistics.median(t_eval),
        "evaluate_runs_s": t_eval,
        "report_median_s": statistics.median(t_report),
    }
    if args.cli:
        with tempfile.TemporaryDirectory() as tmp:
            cmd = [sys.executable, "-m", "spectra_rec.cli", "evaluate", "--dataset", args.dataset,
                   "--n-boot", str(args.n_boot), "--out", f"{tmp}/out", "--runs", f"{tmp}/runs", "--priors", *PRIORS]
            t0 = time.perf_counter()
            subprocess.run(cmd, check=True, capture_output=True)
            figures["cli_wall_s"] = time.perf_counter() - t0
    print(headline_table(result))
    print(json.dumps(figures, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
