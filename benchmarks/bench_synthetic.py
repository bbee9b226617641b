"""Generation and write time and memory of the synthetic dataset generator (prints measured figures).

    python benchmarks/bench_synthetic.py                                  # 10k and 100k users
    python benchmarks/bench_synthetic.py --users 1000000 --items 100000   # adds the 1M x 100k scale point
    python benchmarks/bench_synthetic.py --load                           # also time load_dataset + split

Sizes run from 10k users up to ``--users`` (ladder 10k, 100k, 1M, ...), items scaled in
proportion to ``--items``. Each size runs in a fresh subprocess so its peak resident memory
is its own. Files go to a temporary directory that is removed afterwards. Never part of the
test pass/fail.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def _peak_rss_mb() -> float:
    # ru_maxrss is KiB on Linux, bytes on macOS
    scale = 1 if sys.platform == "darwin" else 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * scale / 2**20


def one_size(users: int, items: int, seed: int, load: bool) -> dict:
    """Generate, write (and optionally load + split) one size in this process."""
    from spectra_rec.data.synthetic import SyntheticConfig, generate, write_atomic

    cfg = SyntheticConfig(n_users=users, n_items=items, seed=seed)
    rss0 = _peak_rss_mb()
    t0 = time.perf_counter()
    data = generate(cfg)
    t_gen = time.perf_counter() - t0
    rss_gen = _peak_rss_mb()
    arrays_mb = sum(
        a.nbytes
        for a in (data.preferences, data.item_primary, data.item_secondary, data.inter_user, data.inter_item, data.inter_time)
    ) / 2**20
    out = {
        "users": users,
        "items": items,
        "K": cfg.K,
        "interactions": int(len(data.inter_user)),
        "generate_s": round(t_gen, 2),
        "arrays_mb": round(arrays_mb, 1),
        "baseline_rss_mb": round(rss0, 1),
        "peak_rss_after_generate_mb": round(rss_gen, 1),
    }
    with tempfile.TemporaryDirectory(prefix="bench-synthetic-") as tmp:
        t0 = time.perf_counter()
        root = write_atomic(data, Path(tmp) / "synthetic")
        out["write_s"] = round(time.perf_counter() - t0, 2)
        out["files_mb"] = round(sum(p.stat().st_size for p in root.iterdir()) / 2**20, 1)
        out["interactions_per_s"] = int(out["interactions"] / (t_gen + out["write_s"]))
        out["peak_rss_after_write_mb"] = round(_peak_rss_mb(), 1)
        if load:
            del data
            from spectra_rec.data import load_dataset, split_dataset

            t0 = time.perf_counter()
            ds = load_dataset(root)
            out["load_s"] = round(time.perf_counter() - t0, 2)
            t0 = time.perf_counter()
            split_dataset(ds)
            out["split_s"] = round(time.perf_counter() - t0, 2)
            out["peak_rss_after_load_mb"] = round(_peak_rss_mb(), 1)
    return out


def ladder(max_users: int, max_items: int) -> list[tuple[int, int]]:
    sizes = [u for u in (10_000, 100_000, 1_000_000, 10_000_000) if u < max_users] + [max_users]
    return [(u, max(12, round(max_items * u / max_users))) for u in sizes]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--users", type=int, default=100_000, help="largest size (default 100000)")
    ap.add_argument("--items", type=int, default=20_000, help="catalogue at the largest size (default 20000)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--load", action="store_true", help="also time load_dataset + split_dataset on the files")
    ap.add_argument("--one", action="store_true", help=argparse.SUPPRESS)  # internal: a single size
    args = ap.parse_args()

    if args.one:
        print(json.dumps(one_size(args.users, args.items, args.seed, args.load)))
        return 0

    rows = []
    for users, items in ladder(args.users, args.items):
        cmd = [sys.executable, __file__, "--one", "--users", str(users), "--items", str(items), "--seed", str(args.seed)]
        if args.load:
            cmd.append("--load")
        proc = subprocess.run(cmd, capture_output=True, text=True, env=os.environ)
        if proc.returncode != 0:
            print(proc.stderr, file=sys.stderr)
            return proc.returncode
        rows.append(json.loads(proc.stdout.strip().splitlines()[-1]))
        r = rows[-1]
        extra = ""
        if args.load:
            extra = f"  load {r['load_s']:6.2f}s  split {r['split_s']:5.2f}s  peak(load) {r['peak_rss_after_load_mb']:7.0f} MB"
        print(
            f"{r['users']:>9,} users x {r['items']:>7,} items  {r['interactions']:>11,} inter  "
            f"generate {r['generate_s']:6.2f}s  write {r['write_s']:6.2f}s  ({r['interactions_per_s']:,}/s)  "
            f"arrays {r['arrays_mb']:7.1f} MB  peak(gen) {r['peak_rss_after_generate_mb']:7.0f} MB  "
            f"peak(write) {r['peak_rss_after_write_mb']:7.0f} MB  files {r['files_mb']:7.1f} MB{extra}",
            flush=True,
        )
    print(json.dumps({"cpus": os.cpu_count(), "python": sys.version.split()[0], "sizes": rows}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
