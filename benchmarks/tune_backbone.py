"""Backbone settings against convergence: epochs, time and valid / test NDCG@10 per variant.

    python benchmarks/tune_backbone.py --model SASRec                       # every SASRec variant
    python benchmarks/tune_backbone.py --model GRU4Rec --variants yaml no-dropout --max-epochs 40

Each variant trains the real backbone stage (RecBole, early stopping on the valid file) on
ml-100k from scratch into its own cache folder and prints one row. Choose on the ``valid``
column (the last train item of every user, which fusion never reports on); the ``test`` column
(first held-out item) is printed for the record only. Not a test.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

KERNELS = {
    "bernoulli-fp32": {"dropout_kernel": "bernoulli", "amp": False},  # RecBole's own training loop
    "uniform-fp32": {"dropout_kernel": "uniform", "amp": False},
    "uniform-amp": {"dropout_kernel": "uniform", "amp": True},
    "bernoulli-amp": {"dropout_kernel": "bernoulli", "amp": True},
}
"""Variants of how the shipped YAML is trained (BackboneConfig fields, not RecBole keys)."""

VARIANTS = {
    "SASRec": {
        "yaml": {},
        "no-dropout": {"hidden_dropout_prob": 0.0, "attn_dropout_prob": 0.0},
        "attn-dropout-0": {"attn_dropout_prob": 0.0},
        "hidden-0.1-attn-0": {"hidden_dropout_prob": 0.1, "attn_dropout_prob": 0.0},
        "no-dropout-b1024-lr.004": {"hidden_dropout_prob": 0.0, "attn_dropout_prob": 0.0,
                                    "train_batch_size": 1024, "learning_rate": 0.004},
        "lr.004": {"learning_rate": 0.004},
        "len20": {"MAX_ITEM_LIST_LENGTH": 20},
        "len20-lr.004": {"MAX_ITEM_LIST_LENGTH": 20, "learning_rate": 0.004},
    },
    "GRU4Rec": {
        "yaml": {},
        "no-dropout": {"dropout_prob": 0.0},
        "b1024-lr.004": {"train_batch_size": 1024, "learning_rate": 0.004},
    },
}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="SASRec", choices=list(VARIANTS))
    p.add_argument("--variants", nargs="+", help="default: all of the model's; also "
                   f"{', '.join(KERNELS)} (the YAML trained with that dropout kernel and precision)")
    p.add_argument("--dataset", default="ml-100k")
    p.add_argument("--max-epochs", type=int, default=40)
    p.add_argument("--patience", type=int, help="default: the YAML's stopping_step")
    p.add_argument("--runs", type=Path, help="cache folder (default: a fresh temporary one)")
    args = p.parse_args()

    from fusion.backbones import BackboneConfig, backbone_stage
    from spectra_rec.cli import quiet_openmp, setup_logging
    from spectra_rec.data.stage import DataConfig, data_stage

    quiet_openmp()
    setup_logging(False)
    runs = args.runs or Path(tempfile.mkdtemp(prefix="tune-backbone-"))
    _, split, data_folder = data_stage(DataConfig(dataset=args.dataset), runs)
    unknown = [v for v in args.variants or [] if v not in VARIANTS[args.model] and v not in KERNELS]
    if unknown:
        p.error(f"unknown --variants {unknown} for {args.model}; known: {sorted(VARIANTS[args.model]) + sorted(KERNELS)}")
    rows = []
    for name in args.variants or list(VARIANTS[args.model]):
        fields = KERNELS.get(name, {})
        cfg = BackboneConfig(args.model, epochs=args.max_epochs, patience=args.patience,
                             overrides=VARIANTS[args.model].get(name, {}), **fields)
        t = time.perf_counter()
        b = backbone_stage(split, data_folder, cfg, runs)
        wall = time.perf_counter() - t
        m = json.loads((b.folder / "recbole_metrics.json").read_text())
        rows.append((name, m["epochs_run"], m["best_epoch"], m["seconds_per_epoch"], wall,
                     m["valid"]["ndcg@10"], m["test"]["ndcg@10"], m["valid_curve"]))
        print(f"{name}: {rows[-1][1:7]}", flush=True)
    print(f"\n{args.model} on {args.dataset} (at most {args.max_epochs} epochs, early stopping on valid NDCG@10)")
    print(f"{'variant':<26} {'epochs':>6} {'best':>5} {'s/epoch':>8} {'stage s':>8} {'valid':>7} {'test':>7}")
    for name, ep, best, spe, wall, v, te, _ in rows:
        print(f"{name:<26} {ep:>6} {best:>5} {spe:>8.1f} {wall:>8.0f} {v:>7.4f} {te:>7.4f}")
    print("\nvalid NDCG@10 by epoch:")
    for name, *_, curve in rows:
        print(f"  {name:<26} " + " ".join(f"{x:.3f}" for x in curve))
    print("\nsmaller patience replayed on each curve (RecBole's rule: stop after patience + 1 epochs below the best):")
    for name, *_, curve in rows:
        cells = []
        for patience in range(0, (args.patience if args.patience is not None else 3) + 1):
            stop, best = replay_patience(curve, patience)
            cells.append(f"p={patience}: stop {stop}, best {curve[best - 1]:.4f} @ {best}")
        print(f"  {name:<26} " + "; ".join(cells))


def replay_patience(curve: list[float], patience: int) -> tuple[int, int]:
    """(epochs run, best epoch) had RecBole stopped with ``patience`` on this valid curve."""
    best, bad = 0, 0
    for i, v in enumerate(curve):
        if i == 0 or v >= curve[best]:
            best, bad = i, 0
        else:
            bad += 1
            if bad > patience:
                return i + 1, best + 1
    return len(curve), best + 1


if __name__ == "__main__":
    main()
