"""``spectra-rec convert``: turn raw public dataset files into RecBole atomic files."""

from __future__ import annotations

import argparse
from pathlib import Path

from spectra_rec.data.convert import FORMATS, ConvertConfig, convert


def add_arguments(p: argparse.ArgumentParser) -> None:
    c = ConvertConfig()
    p.add_argument("--format", required=True, choices=list(FORMATS),
                   help="ml-1m: ratings.dat + movies.dat; ml-20m (also 25m/latest): ratings.csv + movies.csv; "
                        "yelp: yelp_academic_dataset_{review,business}.json; amazon: reviews.json + meta.json")
    p.add_argument("--input", required=True, type=Path, metavar="DIR", help="folder holding the raw files")
    p.add_argument("--out", required=True, type=Path, metavar="DIR",
                   help="folder to write <name>.inter and <name>.item into (must be empty or absent)")
    p.add_argument("--name", default=None, help="dataset name (default: the format name)")
    p.add_argument("--min-rating", type=float, default=c.min_rating, help="keep interactions rated at least this")
    p.add_argument("--min-user", type=int, default=c.min_user, help="k-core: minimum interactions per user")
    p.add_argument("--min-item", type=int, default=c.min_item, help="k-core: minimum interactions per item")
    p.add_argument("--max-users", type=int, default=c.max_users, help="seeded sample of at most this many users")
    p.add_argument("--seed", type=int, default=c.seed, help="seed of the user sample")
    p.add_argument("--amazon-level", type=int, default=c.amazon_level,
                   help="Amazon category path depth used as the category (0 is the store name)")
    p.add_argument("--overwrite", action="store_true", help="replace --out (the whole folder) if it is not empty")


def run(args) -> int:
    config = ConvertConfig(min_rating=args.min_rating, min_user=args.min_user, min_item=args.min_item,
                           max_users=args.max_users, seed=args.seed, amazon_level=args.amazon_level)
    s = convert(args.format, args.input, args.out, config, name=args.name, overwrite=args.overwrite)
    rows = [
        ("dataset", s["dataset"]),
        ("users", s["users"]),
        ("items", s["items"]),
        ("interactions", s["interactions"]),
        ("K (categories)", s["K"]),
        ("items without category", s["items_without_category"]),
        ("dropped rating/metadata/k-core/sample",
         "/".join(str(s[f"dropped_{k}"]) for k in ("min_rating", "no_metadata", "k_core", "max_users"))),
        ("atomic files", str(args.out)),
    ]
    width = max(len(k) for k, _ in rows)
    print("\n".join(f"{k:<{width}}  {v}" for k, v in rows))
    return 0
