"""Choose the ``uhf-decay`` history prior's decay and popularity shrinkage on the dev cohort (prints the grid).

    python benchmarks/tune_uhf_decay.py                       # ml-100k, dev cohort of spectra-rec evaluate
    python benchmarks/tune_uhf_decay.py --dataset DIR --decays 0.9 0.95 0.99 --shrinks 0 0.2 0.4

For every (decay, shrink) on the grid: mean per-user JS to the long-term held-out truth on the
dev cohort (the same seeded dev users as ``spectra-rec evaluate --cohort dev``). The best pair is
printed last; the defaults in ``spectra_rec/priors/history.py`` come from this run on ml-100k.
The test cohort is never read.
"""

from __future__ import annotations

import argparse

import numpy as np


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dataset", default="ml-100k")
    ap.add_argument("--decays", type=float, nargs="+", default=[0.9, 0.93, 0.95, 0.97, 0.98, 0.99, 1.0])
    ap.add_argument("--shrinks", type=float, nargs="+", default=[0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6])
    args = ap.parse_args(argv)
    from spectra_rec.data import load_dataset, split_dataset
    from spectra_rec.evaluate import EvalConfig, cohort_users
    from spectra_rec.metrics.distribution import js_divergence
    from spectra_rec.priors.history import uhf_decay

    ds = load_dataset(args.dataset)
    split = split_dataset(ds)
    dev = cohort_users(split, EvalConfig(cohort="dev"))
    q = split.ground_truth(users=dev)
    print(f"{ds.name}: dev cohort {len(dev)} users; mean JS(p_u, q_u), long-term truth")
    print("decay \\ shrink " + "".join(f"{s:>8.2f}" for s in args.shrinks))
    best = (np.inf, None, None)
    for d in args.decays:
        row = []
        for s in args.shrinks:
            js = float(js_divergence(uhf_decay(split, d, s)[dev], q).mean())
            row.append(js)
            if js < best[0]:
                best = (js, d, s)
        print(f"{d:>14.3f} " + "".join(f"{v:>8.4f}" for v in row))
    print(f"best on dev: decay {best[1]}, shrink {best[2]} (JS {best[0]:.4f})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
