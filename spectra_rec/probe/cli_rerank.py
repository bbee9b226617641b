"""``spectra-rec rerank``: the Qwen3-Reranker-format pointwise baseline from a model NOT aligned on the data.

    spectra-rec rerank --dataset ml-100k --model /models/Qwen3-Reranker-0.6B --out rerank.parquet
    spectra-rec rerank --dataset ml-100k --adapter runs/align/cpt/<hash>     # the CPT-only stage
    spectra-rec rerank --dataset ml-100k --random --out r.parquet           # random-weight tiny model (smoke)

An SFT adapter (aligned on the data) is refused.
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from spectra_rec.errors import ConfigError
from spectra_rec.probe.cli_common import add_common, load_data, parse_shard, set_threads

log = logging.getLogger(__name__)


def add_arguments(p: argparse.ArgumentParser) -> None:
    add_common(p, "a local Hugging Face causal LM directory, e.g. Qwen3-Reranker-0.6B")
    p.add_argument("--random", action="store_true", help="a random-weight tiny Qwen3 built on the dataset's text")
    p.add_argument("--seed", type=int, default=0, help="--random: weights and tokenizer seed")
    p.add_argument("--normalize", default="sum", choices=["sum", "softmax"],
                   help="sum: p = r / sum r of the relevance r = p(yes); softmax: softmax(log-odds / tau)")
    p.add_argument("--tau", type=float, default=1.0)


def check_not_aligned(adapter, manifest: dict) -> None:
    """Refuse an adapter fine-tuned on the data: the reranker baseline must not be aligned."""
    if adapter is not None and manifest.get("kind") == "sft":
        raise ConfigError(
            f"--adapter {str(adapter)!r} is an SFT adapter aligned on the data; the reranker baseline needs a model "
            "that was not (a base model via --model, the CPT-only stage runs/align/cpt/<hash>, or --random)"
        )


def run(args) -> int:
    options = {"normalize": args.normalize, "tau": args.tau}
    if not args.random:
        from spectra_rec.probe.cli_common import run_probe

        return run_probe(args, "rerank", options, "{dataset}-rerank-{model}.parquet", allow_align=False,
                         check=check_not_aligned)
    if args.adapter is not None or args.model is not None:
        raise ConfigError("--random builds its own model: drop --adapter/--model")
    if args.backend != "hf":
        raise ConfigError("--random runs on the hf backend only")
    from spectra_rec.probe.run import merge_shards, probe_prior
    from spectra_rec.testing.tiny import tiny_model_and_tokenizer

    shard = parse_shard(args.shard)
    set_threads(args)
    if args.merge:
        print(merge_shards(args.out).source)
        return 0
    ds, split = load_data(args)
    model, tokenizer = tiny_model_and_tokenizer(ds, seed=args.seed)
    out = args.out or args.runs / "probe" / f"{ds.name}-rerank-random{args.seed}.parquet"
    probe_prior(
        ds, split, model, tokenizer, "rerank", readout_options=options, max_users=args.max_users,
        backend_options={"batch_size": args.batch_size}, max_items=args.max_items, shard=shard, out=out,
        chunk_users=args.chunk_users, model_name=f"random tiny qwen3 (seed {args.seed})", fresh=args.fresh,
        progress=not args.no_progress,
    )
    if Path(out).exists():
        print(out)
    return 0
