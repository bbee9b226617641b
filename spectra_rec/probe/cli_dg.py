"""``spectra-rec dg``: the direct-generation baseline (uniform on the greedy-decoded top-k) as a prior table.

    spectra-rec dg --dataset ml-100k --adapter runs/align/sft/<hash> --k 3 --out dg.parquet

Parse counts (invalid, unknown, duplicate, extra, short, truncated, fallback) are saved per
user in ``dg.scores.parquet`` and totalled in ``dg.probe.json``.
"""

from __future__ import annotations

import argparse

from spectra_rec.probe.cli_common import add_common, run_probe


def add_arguments(p: argparse.ArgumentParser) -> None:
    add_common(p, "a local Hugging Face causal LM directory instead of an adapter")
    p.add_argument("--k", type=int, help="list length (default: the adapter's SFT DG length, else 3)")
    p.add_argument("--max-new-tokens", type=int, help="decode budget (default: k x longest name + separators)")


def run(args) -> int:
    options = {"k": args.k, "max_new_tokens": args.max_new_tokens}
    return run_probe(args, "dg", options, "{dataset}-dg-{model}.parquet", fallbacks={"k": 3})
