"""Probing throughput under Ray Data: single process vs a Ray actor pool of 1 and 2 workers (users/s).

    python benchmarks/bench_ray.py                       # ml-100k, 160 users, logit readout
    python benchmarks/bench_ray.py --adapter runs/align/sft/<hash> --users 400 --workers 1 2 4

Without ``--adapter`` the model is the alignment stage's default architecture (``ModelConfig()``)
with random weights and a tokenizer trained on the dataset, saved to a model folder (latency
depends on the architecture, not the weights). Every run probes the same users into a fresh
output; the wall time of each run includes what a user waits for: for Ray, starting the local
cluster and the actors (each loads the model), which the "overhead" column isolates as
``ray(1 worker) - single process`` (same work, one process either way). Each worker gets one CPU
and one torch thread; the single-process run uses one thread too, so 1 worker vs single process
measures Ray's cost, and 2 workers vs 1 the scaling. On a 2-core machine shared with other jobs
the figures are noisy: quote ratios from one run.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dataset", default="ml-100k")
    ap.add_argument("--adapter", type=Path, help="an align folder (default: random ModelConfig() weights)")
    ap.add_argument("--users", type=int, default=160)
    ap.add_argument("--readout", default="logit")
    ap.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--chunk-users", type=int, default=16)
    args = ap.parse_args(argv)
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    import torch

    from spectra_rec.data import load_dataset, split_dataset
    from spectra_rec.probe import probe_prior
    from spectra_rec.probe.distributed import ModelSpec, RayConfig, probe_prior_ray

    ds = load_dataset(args.dataset)
    split = split_dataset(ds)
    tmp = Path(tempfile.mkdtemp(prefix="bench-ray-"))
    if args.adapter is not None:
        from spectra_rec.align.io import load_aligned

        model, tok, _ = load_aligned(args.adapter, device="cpu", merge=True)
        spec = ModelSpec(str(args.adapter.resolve()), "align", device="cpu", threads=1)
        desc = f"aligned {args.adapter}"
    else:
        from spectra_rec.align.model import ModelConfig, build_tiny_qwen3
        from spectra_rec.testing.tiny import tiny_tokenizer

        tok = tiny_tokenizer(ds, vocab_size=4096)
        model = build_tiny_qwen3(tok, ModelConfig(), seed=0).eval()
        model.save_pretrained(tmp / "model")
        tok.save_pretrained(tmp / "model")
        spec = ModelSpec(str(tmp / "model"), "model", device="cpu", dtype="fp32", threads=1)
        desc = f"random ModelConfig() ({sum(p.numel() for p in model.parameters()) / 1e6:.2f}M parameters)"
    os.environ.setdefault("PYTHONPATH", str(Path(__file__).resolve().parents[1]))
    print(f"{ds.name}: {args.users} users, readout {args.readout}, K={ds.K}, model {desc}")
    rows = []
    torch.set_num_threads(1)
    t0 = time.perf_counter()
    local = probe_prior(ds, split, model, tok, args.readout, max_users=args.users, chunk_users=args.chunk_users,
                        out=tmp / "local.parquet", progress=False)
    rows.append(("single process (1 thread)", time.perf_counter() - t0))
    for n in args.workers:
        t0 = time.perf_counter()
        table = probe_prior_ray(ds, split, spec, args.readout, out=tmp / f"ray{n}.parquet", max_users=args.users,
                                chunk_users=args.chunk_users, ray_config=RayConfig(workers=n), progress=False)
        rows.append((f"ray, {n} worker{'s' if n > 1 else ''}", time.perf_counter() - t0))
        assert np.array_equal(table.probs, local.probs), "ray and single-process tables differ"
    base = rows[0][1]
    print("\n| run | seconds | users/s | vs single process |\n| --- | ---: | ---: | ---: |")
    for name, s in rows:
        print(f"| {name} | {s:.1f} | {args.users / s:.2f} | {base / s:.2f}x |")
    by = dict(rows)
    if "ray, 1 worker" in by:
        print(f"\nRay overhead (1 worker - single process, cluster + actor start included): {by['ray, 1 worker'] - base:.1f}s")
    if "ray, 1 worker" in by and "ray, 2 workers" in by:
        print(f"2 workers vs 1: {by['ray, 1 worker'] / by['ray, 2 workers']:.2f}x")
    print("tables: identical to the single-process run (checked)")
    from spectra_rec.probe.prompts import PromptBuilder
    from spectra_rec.probe.readouts import make_readout

    ro = make_readout(args.readout)
    ro.prepare(PromptBuilder(ds, split, tok, 1 << 30))
    suffixes = [len(x) for x in getattr(ro, "suffixes", [])]
    print(f"prompt lengths: history prefix {local.meta['mean_prefix_tokens']:.0f} tokens on average"
          + (f", {len(suffixes)} suffixes of {np.mean(suffixes):.1f} tokens" if suffixes else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
