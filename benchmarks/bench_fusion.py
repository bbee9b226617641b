"""Cold and warm wall time of the main job, and each backbone's epoch time and own NDCG@10.

    python benchmarks/bench_fusion.py                      # SASRec and GRU4Rec on ml-100k
    python benchmarks/bench_fusion.py --models GRU4Rec --prior markov
    python benchmarks/bench_fusion.py --variants default recbole  # the ratio against RecBole's own training loop

Runs the real command (`python run_fusion.py --model M`) in a subprocess against a fresh
cache folder (cold), then again (warm), and prints the measured figures. Variants: ``default``
(the shipped settings) and ``recbole`` (``--dropout-kernel bernoulli --amp off``: RecBole's
``nn.Dropout`` in float32, the training loop before this toolkit's speed changes), each with its
own cold cache; with both, the cold-time ratios follow. Not a test.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
VARIANTS = {"default": [], "recbole": ["--dropout-kernel", "bernoulli", "--amp", "off"]}


def timed(cmd: list[str]) -> tuple[float, float, float]:
    """Wall seconds, CPU seconds (user + system) and peak RSS in GB of the child process.

    CPU seconds barely move when other work shares the machine; wall seconds do."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t = time.perf_counter()
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
    wall = time.perf_counter() - t
    if proc.returncode != 0:
        sys.stderr.write(proc.stdout[-3000:] + proc.stderr[-3000:])
        raise SystemExit(f"failed: {' '.join(cmd)}")
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return wall, cpu, after.ru_maxrss / 1e6


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--models", nargs="+", default=["SASRec", "GRU4Rec"])
    p.add_argument("--dataset", default="ml-100k")
    p.add_argument("--prior", default="uhf")
    p.add_argument("--variants", nargs="+", default=["default"], choices=list(VARIANTS))
    p.add_argument("--runs", type=Path, help="cache folder (default: a fresh temporary one)")
    args = p.parse_args()
    root = args.runs or Path(tempfile.mkdtemp(prefix="bench-fusion-"))
    rows = []
    for model, variant in itertools.product(args.models, args.variants):
        runs = root / variant
        out = runs / f"out-{model}"
        cmd = [sys.executable, "run_fusion.py", "--model", model, "--dataset", args.dataset, "--prior", args.prior,
               "--runs", str(runs), "--out", str(out), *VARIANTS[variant]]
        cold, cold_cpu, rss = timed(cmd)
        warm, _, _ = timed(cmd)
        res = json.loads((out / "results.json").read_text())
        rb = res["backbone"]["recbole"]
        c = res["candidates"]["neg99"]
        rows.append({
            "model": model, "variant": variant, "amp": rb.get("amp"), "cold_s": cold, "cold_cpu_s": cold_cpu, "warm_s": warm,
            "peak_rss_gb (largest child so far)": f"{rss:.2f}", "epochs": rb["epochs_run"],
            "best_epoch": rb.get("best_epoch"), "stopped_early": rb.get("stopped_early"),
            "s_per_epoch": json.loads((out / "timing.json").read_text())["backbone"]["seconds_per_epoch"], "recbole_valid_ndcg@10": rb["valid"]["ndcg@10"],
            "recbole_test_ndcg@10": rb["test"]["ndcg@10"],
            "w": c["w"], "norm": c["normalization"],
            **{f"neg99 {s} base/fused": f"{c['base'][s]['NDCG@10']:.4f}/{c['fused'][s]['NDCG@10']:.4f}"
               for s in ("overall", "head", "mid", "tail")},
            "mid lift": f"{c['lift']['mid']['NDCG@10']:+.1%} (p={c['lift']['mid']['p_value']:.2g})",
        })
    print(f"dataset {args.dataset}, prior {args.prior}, cache {root}, {os.cpu_count()} CPUs, "
          f"load average {os.getloadavg()[0]:.1f} at the end")
    for r in rows:
        print("\n".join(f"  {k:<28} {v:.1f}" if isinstance(v, float) and k.endswith("_s") else f"  {k:<28} {v}"
                        for k, v in r.items()))
        print()
    by = {(r["model"], r["variant"]): r for r in rows}
    for model in args.models:
        if (model, "default") in by and (model, "recbole") in by:
            d, b = by[model, "default"], by[model, "recbole"]
            print(f"{model}: cold wall default / recbole {d['cold_s'] / b['cold_s']:.2f}, "
                  f"cold CPU {d['cold_cpu_s'] / b['cold_cpu_s']:.2f}")


if __name__ == "__main__":
    main()
