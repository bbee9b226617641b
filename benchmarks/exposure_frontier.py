"""Top-3 exposure entropy against JS on the dev cohort: the history priors' grid and the readouts under contrast.

    RUNS=runs bash benchmarks/eval_default.sh          # first: probes the default model (tau 1 tables)
    python benchmarks/exposure_frontier.py --tables runs/eval-default

A prior shrunk towards popularity lowers JS and puts the same head categories in every user's top 3,
so the two metrics trade against each other. This prints where each family sits, on the *dev*
cohort (the seeded users of ``spectra-rec evaluate --cohort dev``; the test cohort is never read):

- ``uhf-decay`` over a (decay, shrink) grid (``uhf`` is decay 1, shrink 0);
- ``uhf@N`` (the last N train items only, as many as the prompt lists) shrunk towards popularity,
  p = (1 - shrink) * uhf@N + shrink * pop: what a readout that counts the categories of the listed
  items, and nothing more, can reach (``--windows``; N = 20 is the default prompt's);
- each readout's tau-1 table ``spectra-<readout>.parquet`` under a per-category contrast,
  p = softmax((log p_u - beta * m) / tau) with m the dev mean of log p_u and tau refit on dev for
  each beta (beta 0 is ``--tau auto``). beta > 0 takes mass from the categories every user gets;
- with ``--averages``, the mean of two or three readouts' log p (an ensemble of the readouts), tau
  refit on dev.

Columns: mean per-user JS to the long-term held-out truth, top-3 exposure entropy (bits), the mean
over categories of p's std across users, and ``both`` when JS <= uhf's and entropy >= uhf's.
Not part of the test pass/fail.
"""

from __future__ import annotations

import argparse
import itertools
from pathlib import Path

import numpy as np

READOUTS = ("logit", "name", "choice")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dataset", default="ml-100k")
    ap.add_argument("--tables", type=Path, default=Path("runs/eval-default"),
                    help="folder with spectra-<readout>.parquet prior tables at tau 1 (benchmarks/eval_default.sh)")
    ap.add_argument("--decays", type=float, nargs="+", default=[0.9, 0.95, 0.97, 0.99, 1.0])
    ap.add_argument("--shrinks", type=float, nargs="+", default=[0.0, 0.1, 0.2, 0.3, 0.4])
    ap.add_argument("--betas", type=float, nargs="+", default=[0.0, 0.25, 0.5, 0.75])
    ap.add_argument("--windows", type=int, nargs="*", default=[20, 40, 60],
                    help="context sizes N of the uhf@N rows (none: skip them)")
    ap.add_argument("--averages", action="store_true",
                    help="add rows for the mean log p of each pair of readouts and of all three")
    args = ap.parse_args(argv)
    from spectra_rec.data import load_dataset, split_dataset
    from spectra_rec.evaluate import EvalConfig, cohort_users
    from spectra_rec.metrics.distribution import js_divergence
    from spectra_rec.metrics.exposure import exposure_entropy, topk_exposure
    from spectra_rec.priors import PriorTable
    from spectra_rec.priors.history import popularity, uhf, uhf_decay
    from spectra_rec.probe.temperature import fit_tau, tempered

    ds = load_dataset(args.dataset)
    split = split_dataset(ds)
    dev = cohort_users(split, EvalConfig(cohort="dev"))
    q = split.ground_truth(users=dev)

    def scores(p):
        return float(js_divergence(p, q).mean()), float(exposure_entropy(topk_exposure(p, 3))), float(p.std(0).mean())

    uhf_js, uhf_ent, _ = scores(uhf(split)[dev])
    print(f"{ds.name}: dev cohort {len(dev)} users; uhf JS {uhf_js:.4f}, top-3 exposure entropy {uhf_ent:.3f}")
    print(f"{'prior':<34}{'JS':>8}{'ent@3':>8}{'std':>8}")

    def line(name, p):
        js, ent, std = scores(p)
        both = "  both" if js <= uhf_js and ent >= uhf_ent else ""
        print(f"{name:<34}{js:>8.4f}{ent:>8.3f}{std:>8.4f}{both}")

    for d in args.decays:
        for s in args.shrinks:
            line(f"uhf-decay {d:g} shrink {s:g}", uhf_decay(split, d, s)[dev])
    pop = popularity(split)[dev]
    for n in args.windows:
        recent = uhf(split, n)[dev]
        for s in args.shrinks:
            line(f"uhf@{n} shrink {s:g}", (1 - s) * recent + s * pop)
    logps = {}
    for readout in READOUTS:
        path = args.tables / f"spectra-{readout}.parquet"
        if not path.exists():
            print(f"{path}: not found (run benchmarks/eval_default.sh first)")
            continue
        # log p differs from the raw scores by a per-user constant, which the softmax ignores
        logp = logps[readout] = np.log(np.clip(PriorTable.load(path).matrix(ds, dev), 1e-12, 1.0))
        m = logp.mean(axis=0)
        for beta in args.betas:
            s = logp - beta * m
            tau = fit_tau(s, q, readout)["tau"]
            line(f"spectra-{readout} beta {beta:g} tau {tau:.3f}", tempered(s, tau))
    if args.averages:
        for size in (2, 3):
            for combo in itertools.combinations(logps, size):
                s = np.mean([logps[r] for r in combo], axis=0)
                tau = fit_tau(s, q, "+".join(combo))["tau"]
                line(f"mean {'+'.join(combo)} tau {tau:.3f}", tempered(s, tau))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
