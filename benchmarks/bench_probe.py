"""Per-user probing latency: DG vs likelihood probing without and with prefix reuse (paper D.4, R4 table).

    python benchmarks/bench_probe.py                      # ml-100k, 40 users, default CPU architecture
    python benchmarks/bench_probe.py --adapter runs/align/sft/<hash> --users 100
    python benchmarks/bench_probe.py --max-items 50       # longer histories

All methods run in one process on the same users, interleaved per user (rotating order) so
that load on a shared machine hits them alike; only model work is timed (prompts are
tokenized beforehand, identically for every method). Methods:

    dg                  one prompt (history + DG question): one prefill, then greedy decoding
    probe, no reuse     K yes/no prompts, each encoded in full (one right-padded batch of K)
    probe, no reuse 1x1 the same K prompts one at a time (--sequential)
    probe, reuse        history prefilled once; K suffixes on the copied KV cache in one batch
                        (the questions' common start is prefilled once as well)
    ..., no shared start  the same without moving the questions' common start into the prefix

Without ``--adapter`` the model is the alignment stage's default from-scratch architecture
(``ModelConfig()``) with random weights and a tokenizer trained on the dataset: latency
depends on the architecture, not the weights. A random model never stops decoding, so DG
decodes exactly the token length of a real k-category answer (the user's top-k train
categories + the stop token); with an adapter DG stops where the model stops.
Targets: reuse <= 2x DG per user; no reuse >= 5x reuse.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import numpy as np


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dataset", default="ml-100k")
    ap.add_argument("--users", type=int, default=40, help="seeded sample of evaluable users")
    ap.add_argument("--adapter", type=Path, help="an align folder; default: random default-architecture model")
    ap.add_argument("--max-items", type=int, default=10, help="history items per prompt (the SFT default is 10)")
    ap.add_argument("--k", type=int, default=3, help="DG list length")
    ap.add_argument("--threads", type=int, default=1, help="torch threads")
    ap.add_argument("--sequential", action="store_true", help="also time no-reuse probing one prompt at a time")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json", type=Path, help="write the figures here")
    args = ap.parse_args(argv)

    import torch

    torch.set_num_threads(args.threads)
    from spectra_rec.data import load_dataset, split_dataset
    from spectra_rec.probe.backends import Prompt
    from spectra_rec.probe.backends.hf import HFBackend
    from spectra_rec.probe.dg import DGReadout
    from spectra_rec.probe.prompts import PromptBuilder
    from spectra_rec.probe.readouts import LogitReadout
    from spectra_rec.text import templates as T

    t0 = time.perf_counter()
    ds = load_dataset(args.dataset)
    split = split_dataset(ds)
    if args.adapter is not None:
        from spectra_rec.align.io import load_aligned

        model, tok, _ = load_aligned(args.adapter, device="cpu", merge=True)
        model_desc = f"aligned {args.adapter}"
    else:
        from spectra_rec.align.model import ModelConfig, build_tiny_qwen3
        from spectra_rec.testing.tiny import tiny_tokenizer

        tok = tiny_tokenizer(ds, vocab_size=4096)
        model = build_tiny_qwen3(tok, ModelConfig(), seed=args.seed)
        model_desc = f"random ModelConfig() {ModelConfig()}"
    model.eval()
    n_params = sum(p.numel() for p in model.parameters())
    setup_s = time.perf_counter() - t0

    K = ds.K
    rng = np.random.default_rng(args.seed)
    users = np.sort(rng.choice(split.eval_users, size=min(args.users, len(split.eval_users)), replace=False))
    reuse = HFBackend(model, tok, batch_size=K)
    builder = PromptBuilder(ds, split, tok, reuse.max_length, args.max_items)
    probe = LogitReadout()
    probe.prepare(builder)
    dg = DGReadout(k=args.k)
    dg.prepare(builder)
    backends = {
        "probe, reuse": reuse,
        "probe, reuse, no shared start": HFBackend(model, tok, batch_size=K, share_suffix_start=False),
        "probe, no reuse": HFBackend(model, tok, batch_size=K, reuse_prefix=False),
    }
    if args.sequential:
        backends["probe, no reuse 1x1"] = HFBackend(model, tok, batch_size=1, reuse_prefix=False)
    dg_backend = HFBackend(model, tok, reuse_prefix=False)

    work = []
    for u in users:
        h = builder.history(int(u), probe.frame, probe.reserve)
        hd = builder.history(int(u), dg.frame, dg.reserve)
        if args.adapter is None:  # decode exactly the length of a real answer (top-k train categories + stop)
            top = np.argsort(-split.train_mass[u], kind="stable")[: args.k]
            n_new = len(tok(T.dg_answer([ds.categories[c] for c in top]), add_special_tokens=False)["input_ids"]) + 1
            stop = ()
        else:
            n_new, stop = dg.max_new_tokens, dg.stop_ids
        work.append((h, hd, n_new, stop))

    def run(method, item):
        h, hd, n_new, stop = item
        if method == "dg":
            return dg_backend.generate([Prompt(hd.ids)], n_new, stop_ids=stop, stop_strings=["\n"] if stop else ())
        be = backends[method]
        be.clear()  # no state carried from the previous user
        return probe.score(be, [h])

    methods = ["dg", *backends]
    for item in work[:2]:  # warm-up
        for m in methods:
            run(m, item)
    times = {m: [] for m in methods}
    decoded = []
    for i, item in enumerate(work):
        order = methods[i % len(methods):] + methods[: i % len(methods)]
        for m in order:
            t = time.perf_counter()
            out = run(m, item)
            times[m].append(time.perf_counter() - t)
            if m == "dg":
                decoded.append(len(out[0]))

    dg_mean = statistics.fmean(times["dg"])
    reuse_mean = statistics.fmean(times["probe, reuse"])
    rows = []
    for m in methods:
        mean = statistics.fmean(times[m])
        rows.append({
            "method": m,
            "median_ms": 1000 * statistics.median(times[m]),
            "mean_ms": 1000 * mean,
            "users_per_s": 1.0 / mean,
            "x_dg": mean / dg_mean,
            "x_reuse": mean / reuse_mean,
        })
    prefix_tokens = [len(h.ids) for h, *_ in work]
    info = {
        "dataset": ds.name,
        "K": K,
        "users": len(users),
        "max_items": args.max_items,
        "prefix_tokens_mean": float(np.mean(prefix_tokens)),
        "suffix_tokens": [int(min(map(len, probe.suffixes))), int(max(map(len, probe.suffixes)))],
        "dg_k": args.k,
        "dg_new_tokens_mean": float(np.mean(decoded)),
        "model": model_desc,
        "parameters": int(n_params),
        "threads": args.threads,
        "torch": torch.__version__,
        "setup_s": round(setup_s, 1),
    }
    print(f"# bench_probe: {ds.name}, K = {K}, {len(users)} users, history <= {args.max_items} items "
          f"({info['prefix_tokens_mean']:.0f} prefix tokens on average), DG k = {args.k} "
          f"({info['dg_new_tokens_mean']:.1f} decoded tokens), {n_params / 1e6:.2f}M parameters, "
          f"{args.threads} thread(s)")
    print(f"{'method':<31}{'median ms/user':>16}{'mean ms/user':>14}{'users/s':>10}{'x DG':>8}{'x reuse':>9}")
    for r in rows:
        print(f"{r['method']:<31}{r['median_ms']:>16.1f}{r['mean_ms']:>14.1f}{r['users_per_s']:>10.2f}"
              f"{r['x_dg']:>8.2f}{r['x_reuse']:>9.2f}")
    ok_dg = reuse_mean <= 2 * dg_mean
    ok_reuse = statistics.fmean(times["probe, no reuse"]) >= 5 * reuse_mean
    print(f"targets: reuse <= 2x DG: {'met' if ok_dg else 'MISSED'} ({reuse_mean / dg_mean:.2f}x); "
          f"no reuse >= 5x reuse: {'met' if ok_reuse else 'MISSED'} "
          f"({statistics.fmean(times['probe, no reuse']) / reuse_mean:.2f}x)")
    if args.json:
        args.json.write_text(json.dumps({"info": info, "rows": rows}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
