"""Does an aligned model read the history it is shown? Its answers against the exact category mix of the prompt.

    RUNS=runs bash benchmarks/eval_default.sh                 # first: aligns the default model
    python benchmarks/context_fidelity.py --adapter runs/align/sft/<hash> [--adapter ...]

SFT's history question ("which category has the user watched most?") is trained towards the
category mix of the items the prompt lists, an exact target with no sampling noise. This probes it
the way the name readout is probed (the likelihood of each category name after the question) on
the *dev* cohort (the seeded users of ``spectra-rec evaluate --cohort dev``; the test cohort is
never read), next to the name readout, and prints for each adapter:

- JS to ``uhf@N``, the category mix of the N listed items (N: the adapter's SFT context);
- JS to the long-term held-out truth and top-3 exposure entropy;
- the mean over categories of p's std across users, with ``uhf@N``'s alongside.

A model that counts the categories of its prompt puts the history question near JS 0 to ``uhf@N``
with ``uhf@N``'s spread; one that answers every user alike sits at popularity's distance.
Not part of the test pass/fail.
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

HISTORY_READOUT = "history-question"


def history_readout_class():
    """The name readout asked SFT's history question instead of the next-category question (registered once)."""
    from spectra_rec.probe.readouts import READOUTS, NameReadout, register_readout
    from spectra_rec.text import templates

    if HISTORY_READOUT not in READOUTS:
        @register_readout(HISTORY_READOUT)
        class HistoryQuestionReadout(NameReadout):
            """s(c) = sum of log-probs of the tokens of " c" after ``history_question()``."""

            spectra = False  # a diagnostic of the aligned model, not a prior

            def frame(self, history_text: str) -> str:
                return history_text + templates.history_question()

    return READOUTS[HISTORY_READOUT]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dataset", default="ml-100k")
    ap.add_argument("--adapter", type=Path, nargs="+", required=True, help="align folders (runs/align/sft/<hash>)")
    ap.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    import torch

    from spectra_rec.align.io import load_aligned
    from spectra_rec.data import load_dataset, split_dataset
    from spectra_rec.evaluate import EvalConfig, cohort_users
    from spectra_rec.metrics.distribution import js_divergence
    from spectra_rec.metrics.exposure import exposure_entropy, topk_exposure
    from spectra_rec.priors.history import popularity, uhf
    from spectra_rec.probe.run import probe_prior, sft_context_items

    if args.threads:
        torch.set_num_threads(args.threads)
    ds = load_dataset(args.dataset)
    split = split_dataset(ds)
    dev = cohort_users(split, EvalConfig(cohort="dev"))
    q = split.ground_truth(users=dev)
    history_readout_class()
    print(f"{ds.name}: dev cohort {len(dev)} users")
    print(f"{'adapter':<14}{'question':<18}{'JS to uhf@N':>12}{'JS':>8}{'ent@3':>8}{'std':>8}{'uhf@N std':>11}")
    for adapter in args.adapter:
        model, tokenizer, manifest = load_aligned(adapter)
        n = sft_context_items(manifest)
        shown = uhf(split, n)[dev]
        rows = {"popularity": popularity(split)[dev]}
        for readout in (HISTORY_READOUT, "name"):
            table = probe_prior(ds, split, model, tokenizer, readout, users=dev, max_items=n, progress=False,
                                adapter_manifest=manifest)
            rows[readout] = table.matrix(ds, dev)
        for label, p in rows.items():
            print(f"{adapter.name:<14}{label:<18}{js_divergence(p, shown).mean():>12.4f}{js_divergence(p, q).mean():>8.4f}"
                  f"{exposure_entropy(topk_exposure(p, 3)):>8.3f}{p.std(0).mean():>8.4f}{shown.std(0).mean():>11.4f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
