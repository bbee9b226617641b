"""``spectra-rec data``: load, split and summarize a dataset."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from spectra_rec.data.stage import DataConfig, data_stage


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--dataset", default="ml-100k", help="built-in name or directory of atomic files")
    p.add_argument("--category-field", default="class")
    p.add_argument("--split-ratio", type=float, default=0.8)
    p.add_argument("--runs", type=Path, default=Path("runs"))
    p.add_argument("--fresh", action="store_true", help="recompute even if cached")


def run(args) -> int:
    cfg = DataConfig(dataset=args.dataset, category_field=args.category_field, split_ratio=args.split_ratio)
    ds, split, folder = data_stage(cfg, args.runs, args.fresh)
    summary = json.loads((folder / "summary.json").read_text())
    rows = [
        ("users", summary["users"]),
        ("items", summary["items"]),
        ("interactions", summary["interactions"]),
        ("K (categories)", summary["K"]),
        ("train / held-out interactions", f"{summary['train_interactions']} / {summary['heldout_interactions']}"),
        ("evaluable users", summary["eval_users"]),
        ("item slices head/mid/tail", "/".join(str(v) for v in summary["item_slices"].values())),
        ("target cases head/mid/tail", "/".join(str(v) for v in summary["target_slices"].values())),
        ("category buckets head/mid/tail", "/".join(str(v) for v in summary["category_buckets"]["sizes"].values())),
        ("artifacts", str(folder)),
    ]
    width = max(len(k) for k, _ in rows)
    print("\n".join(f"{k:<{width}}  {v}" for k, v in rows))
    return 0
