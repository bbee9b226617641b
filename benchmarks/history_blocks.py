"""Does a readout gain from the history its prompt leaves out? Older windows probed one by one, then combined.

    RUNS=runs bash benchmarks/eval_default.sh             # first: aligns the default model
    python benchmarks/history_blocks.py --adapter runs/align/sft/<hash> [--readout name] [--blocks 8]

The default prompt lists a user's last N train items (N: the adapter's SFT context, 20). This probes
the same readout on the *dev* cohort (the seeded users of ``spectra-rec evaluate --cohort dev``; the
test cohort is never read) with the window shifted back by 0, N, 2N, ... items, so block b shows the
N items before block b - 1, and prints the dev JS and top-3 exposure entropy of

- block 0 alone (the readout as probed), tau fitted on dev;
- a log-linear fit over blocks 0..B-1, log p = w_0 log p_0 + sum_b w_b (log p_b - m) (m the dev
  mean of log p_0; a user with no items left in block b gets no term), the w fitted on dev JS;
- a product of experts with weights g^b for g in ``--decays``, tau refitted on dev;
- the same blocks as a mixture, sum_b g^b p_b / sum_b g^b;
- the readout pooled with ``uhf``, which counts the whole window (``spectra-rec evaluate --priors
  'spectra-name*uhf'`` does the same with a table);
- the readout pooled with the model's answer to SFT's history question about the same prompt.

If the readout carried what older items say about a user, the fits would give the older blocks weight.
Not part of the test pass/fail.
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

import numpy as np


class ShiftedSplit:
    """A split whose train windows end ``offset`` items early (the held-out side is the split's own)."""

    def __init__(self, split, offset: int):
        self._split, self._offset = split, offset

    def __getattr__(self, name):
        return getattr(self._split, name)

    def train_items(self, u: int) -> np.ndarray:
        items = self._split.train_items(u)
        return items[: max(len(items) - self._offset, 0)]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dataset", default="ml-100k")
    ap.add_argument("--adapter", type=Path, required=True, help="align folder (runs/align/sft/<hash>)")
    ap.add_argument("--readout", default="name", choices=["logit", "name", "choice"])
    ap.add_argument("--blocks", type=int, default=8, help="windows probed per user, newest first")
    ap.add_argument("--decays", type=float, nargs="+", default=[0.3, 0.5, 0.7, 1.0])
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    from scipy.optimize import minimize

    from spectra_rec.align.io import load_aligned
    from spectra_rec.data import load_dataset, split_dataset
    from spectra_rec.evaluate import EvalConfig, cohort_users
    from spectra_rec.metrics.distribution import js_divergence
    from spectra_rec.metrics.exposure import exposure_entropy, topk_exposure
    from spectra_rec.priors.history import uhf
    from spectra_rec.priors.pool import fit_pool_weights, log_pool
    from spectra_rec.probe.run import probe_prior, sft_context_items
    from spectra_rec.probe.temperature import fit_tau, tempered

    ds = load_dataset(args.dataset)
    split = split_dataset(ds)
    dev = cohort_users(split, EvalConfig(cohort="dev"))
    q = split.ground_truth(users=dev)
    model, tokenizer, manifest = load_aligned(args.adapter, merge=True)
    n = sft_context_items(manifest) or 20
    logp, has = [], []
    for b in range(args.blocks):
        table = probe_prior(ds, ShiftedSplit(split, b * n), model, tokenizer, args.readout, users=dev, max_items=n,
                            adapter_manifest=manifest, progress=False)
        logp.append(np.log(np.clip(table.matrix(ds, dev), 1e-12, 1.0)))
        has.append(np.array([len(split.train_items(u)) > b * n for u in dev]))
    L, H = np.stack(logp), np.stack(has)[:, :, None]
    ref = L[0].mean(axis=0)

    def line(label, p):
        print(f"{label:<60}{js_divergence(p, q).mean():>8.4f}{exposure_entropy(topk_exposure(p, 3)):>8.3f}")

    def fitted(z):
        return tempered(z, fit_tau(z, q, args.readout)["tau"])

    print(f"{ds.name}: dev cohort {len(dev)} users; {args.readout} readout, blocks of {n} items; share of users "
          f"with items in each block: {', '.join(f'{h.mean():.2f}' for h in H[:, :, 0])}")
    print(f"{'combination':<60}{'JS':>8}{'ent@3':>8}")
    line("uhf", uhf(split)[dev])
    line("block 0 (tau fitted)", fitted(L[0]))
    for k in sorted({2, 3, 5, args.blocks} & set(range(2, args.blocks + 1))):
        feats = np.stack([L[0]] + [np.where(H[b], L[b] - ref, 0.0) for b in range(1, k)])

        def objective(w):
            z = np.tensordot(w, feats, 1)
            return float(js_divergence(tempered(z, 1.0), q).mean())

        w = minimize(objective, np.r_[1.0, np.zeros(k - 1)], method="Nelder-Mead",
                     options={"maxiter": 4000, "xatol": 1e-4, "fatol": 1e-7}).x
        line(f"fit over blocks 0..{k - 1}, w = {np.array2string(w, precision=2)}", tempered(np.tensordot(w, feats, 1), 1.0))
    for g in args.decays:
        z = L[0] + sum(g ** b * np.where(H[b], L[b] - ref, 0.0) for b in range(1, args.blocks))
        line(f"product of experts, weights {g:g}^b", fitted(z))
        wm = np.stack([g ** b * H[b, :, 0] for b in range(args.blocks)])
        mix = (wm[:, :, None] * np.exp(L)).sum(axis=0) / wm.sum(axis=0)[:, None]
        line(f"mixture, weights {g:g}^b", fitted(np.log(mix)))
    P = np.stack([np.exp(L[0]), uhf(split)[dev]])
    w = fit_pool_weights(P, q)
    line(f"block 0 * uhf, w = {np.array2string(w, precision=2)}", log_pool(P, w))
    # SFT's history question as a second readout of the same prompt (context_fidelity.py's readout)
    import sys

    sys.path.insert(0, str(Path(__file__).parent))
    from context_fidelity import HISTORY_READOUT, history_readout_class

    history_readout_class()
    hq = probe_prior(ds, split, model, tokenizer, HISTORY_READOUT, users=dev, max_items=n, adapter_manifest=manifest,
                     progress=False).matrix(ds, dev)
    line("history question alone (tau fitted)", fitted(np.log(np.clip(hq, 1e-12, 1.0))))
    P = np.stack([np.exp(L[0]), hq])
    w = fit_pool_weights(P, q)
    line(f"block 0 * history question, w = {np.array2string(w, precision=2)}", log_pool(P, w))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
