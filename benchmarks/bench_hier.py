"""Hierarchical probing at K = 200: all ml-100k users, time and per-user cost, flat against hier.

    python benchmarks/taxonomy_experiment.py --only-vocab   # builds runs/vocab/cooc200-hier (K = 200, 20 L1 groups)
    python benchmarks/bench_hier.py                          # hier top:2 over all 943 users, flat on a sample
    python benchmarks/bench_hier.py --vocab DIR --branches top:3 --threads 2 --flat-users 943

The model is the alignment stage's default from-scratch architecture (``ModelConfig()``) with
random weights and a tokenizer trained on the vocabulary's dataset: the cost of a probe depends on
the architecture and on the number of questions, not on the weights (an aligned folder of the same
architecture costs the same). Both readouts go through ``probe_prior`` (prefix KV cache reused for
every question, 16 users per chunk), the code path ``spectra-rec probe`` runs. The figures are wall
seconds and CPU seconds (user + system of this process); wall time on a shared machine is no guide,
CPU seconds are. Target: hier over all 943 users within 5 minutes on 2 cores.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def cpu_seconds() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def timed_probe(ds, split, model, tok, readout, options, users, max_items):
    from spectra_rec.probe.run import probe_prior

    w0, c0 = time.perf_counter(), cpu_seconds()
    table = probe_prior(ds, split, model, tok, readout, readout_options=options, users=users,
                        backend_options={"batch_size": 64}, max_items=max_items, progress=False)
    wall, cpu = time.perf_counter() - w0, cpu_seconds() - c0
    return table, wall, cpu


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--vocab", type=Path, default=Path("runs/vocab/cooc200-hier"), help="an induced two-level dataset folder")
    ap.add_argument("--field", default="taxon")
    ap.add_argument("--branches", default="top:2")
    ap.add_argument("--flat-users", type=int, default=100, help="users probed flat (all K questions each)")
    ap.add_argument("--max-items", type=int, help="history items per prompt (default: the SFT context, 20)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--json", type=Path, help="write the figures here")
    args = ap.parse_args(argv)

    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    import torch

    torch.set_num_threads(args.threads)
    from spectra_rec.align.model import ModelConfig, build_tiny_qwen3
    from spectra_rec.data import load_dataset, split_dataset
    from spectra_rec.testing.tiny import tiny_tokenizer
    from spectra_rec.text.corpus import SFTConfig

    ds = load_dataset(args.vocab, category_field=args.field)
    if ds.taxonomy is None:
        print(f"{args.vocab}: no taxonomy file; build it with --l1 (e.g. spectra-rec taxonomy --k 200 --l1 20)")
        return 2
    split = split_dataset(ds)
    max_items = args.max_items or SFTConfig().context_items
    tok = tiny_tokenizer(ds, vocab_size=4096)
    model = build_tiny_qwen3(tok, ModelConfig(), seed=0).eval()
    users = split.eval_users
    rng = np.random.default_rng(0)
    flat_users = np.sort(rng.choice(users, size=min(args.flat_users, len(users)), replace=False))

    sizes = [len(v) for v in ds.taxonomy.values()]
    print(f"{args.vocab}: K = {ds.K} in {len(sizes)} L1 groups (children {min(sizes)}-{max(sizes)}, "
          f"mean {np.mean(sizes):.1f}); {len(users)} users; {args.threads} torch threads; history {max_items} items")
    timed_probe(ds, split, model, tok, "logit", {}, flat_users[:4], max_items)  # warm-up
    hier, h_wall, h_cpu = timed_probe(ds, split, model, tok, "hier", {"branches": args.branches}, users, max_items)
    flat, f_wall, f_cpu = timed_probe(ds, split, model, tok, "logit", {}, flat_users, max_items)
    b = int(args.branches.split(":")[1]) if ":" in args.branches else len(sizes)
    top_sizes = sorted(sizes, reverse=True)
    rows = [
        {"readout": f"hier {args.branches}", "users": len(users),
         "questions_per_user": f"{len(sizes)} + <= {sum(top_sizes[:b])}",
         "wall_s": h_wall, "cpu_s": h_cpu, "wall_ms_per_user": 1000 * h_wall / len(users),
         "cpu_ms_per_user": 1000 * h_cpu / len(users)},
        {"readout": "logit (flat)", "users": len(flat_users), "questions_per_user": str(ds.K),
         "wall_s": f_wall, "cpu_s": f_cpu, "wall_ms_per_user": 1000 * f_wall / len(flat_users),
         "cpu_ms_per_user": 1000 * f_cpu / len(flat_users)},
    ]
    print(f"\n{'readout':<14} {'users':>5} {'questions/user':>16} {'wall s':>8} {'CPU s':>8} "
          f"{'wall ms/user':>13} {'CPU ms/user':>12}")
    for r in rows:
        print(f"{r['readout']:<14} {r['users']:>5} {r['questions_per_user']:>16} {r['wall_s']:>8.1f} {r['cpu_s']:>8.1f} "
              f"{r['wall_ms_per_user']:>13.1f} {r['cpu_ms_per_user']:>12.1f}")
    ratio = rows[1]["cpu_ms_per_user"] / rows[0]["cpu_ms_per_user"]
    flat_all = rows[1]["wall_ms_per_user"] * len(users) / 1000
    print(f"\nflat / hier CPU per user: {ratio:.1f}x; flat over all {len(users)} users would take ~{flat_all:.0f} s wall")
    print(f"hier over all {len(users)} users: {h_wall:.0f} s wall ({'within' if h_wall <= 300 else 'OVER'} the 5-minute target)")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({"vocab": str(args.vocab), "K": ds.K, "L1": len(sizes), "threads": args.threads,
                                         "max_items": max_items, "rows": rows}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
