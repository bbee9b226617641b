"""``spectra-rec data``: load, split and summarize a dataset."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from spectra_rec.data.stage import DataConfig, data_stage


def add_data_arguments(p: argparse.ArgumentParser) -> None:
    """The dataset flags every subcommand shares (one DataConfig, so every stage splits alike)."""
    d = DataConfig()
    p.add_argument("--dataset", default=d.dataset, help="built-in dataset name or a directory of RecBole atomic files")
    p.add_argument("--category-field", default=d.category_field, help="item field (token_seq) holding the categories")
    p.add_argument("--split-ratio", type=float, default=d.split_ratio, help="train-window share of each user's interactions")
    p.add_argument("--taxonomy", default=d.taxonomy, metavar="JSON",
                   help="L1 -> [L2, ...] file over the categories (default: <name>.taxonomy.json in the dataset folder)")


def data_config(args) -> DataConfig:
    """The DataConfig of parsed ``add_data_arguments`` flags."""
    return DataConfig(dataset=str(args.dataset), category_field=args.category_field, split_ratio=args.split_ratio,
                      taxonomy=None if args.taxonomy is None else str(args.taxonomy))


def add_arguments(p: argparse.ArgumentParser) -> None:
    add_data_arguments(p)
    p.add_argument("--runs", type=Path, default=Path("runs"))
    p.add_argument("--fresh", action="store_true", help="recompute even if cached")


def run(args) -> int:
    ds, split, folder = data_stage(data_config(args), args.runs, args.fresh)
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
