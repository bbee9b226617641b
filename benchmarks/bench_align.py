"""Measure the default alignment (tiny Qwen3 from scratch: CPT + SFT) on a dataset.

    python benchmarks/bench_align.py                      # ml-100k, default AlignConfig, fresh temp run dir
    python benchmarks/bench_align.py --max-users 200      # a quicker look

Prints wall and CPU time (user + sys of this process: on a shared machine wall time is inflated by
other jobs, CPU time much less so), training tokens/s and losses of CPT and SFT, the held-out-window category-name
loss (evaluation only) of the CPT-only and the SFT model, and peak memory (ru_maxrss). The load
average is printed too: on a shared machine throughput scales with the free cores.
"""

from __future__ import annotations

import argparse
import logging
import os
import resource
import tempfile
import time
from pathlib import Path


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--dataset", default="ml-100k")
    p.add_argument("--max-users", type=int, default=None)
    p.add_argument("--runs", type=Path, default=None, help="run directory (default: a fresh temporary one)")
    p.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's choice)")
    p.add_argument("--no-heldout", action="store_true", help="skip the held-out-window loss evaluation")
    args = p.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s", datefmt="%H:%M:%S")

    from spectra_rec.cli import quiet_openmp

    policy = quiet_openmp(spin_when_idle=True)  # as spectra-rec align does, before torch is imported
    import torch

    from spectra_rec.align.config import AlignConfig
    from spectra_rec.align.io import load_aligned, load_stage_model, read_align_manifest
    from spectra_rec.align.pipeline import align, make_fit, prompt_budget
    from spectra_rec.align.train import answer_nll, encode_examples, mean_answer_loss
    from spectra_rec.data import load_dataset, split_dataset
    from spectra_rec.text import corpus as C

    if args.threads:
        torch.set_num_threads(args.threads)
    load0 = os.getloadavg()
    ds = load_dataset(args.dataset)
    split = split_dataset(ds)
    cfg = AlignConfig(max_users=args.max_users)
    tmp = None
    runs = args.runs
    if runs is None:
        tmp = tempfile.TemporaryDirectory(prefix="bench-align-")
        runs = Path(tmp.name)
    t0 = time.perf_counter()
    r0 = resource.getrusage(resource.RUSAGE_SELF)
    sft_dir = align((ds, split), cfg, runs=runs, fresh=True)
    wall = time.perf_counter() - t0
    r1 = resource.getrusage(resource.RUSAGE_SELF)
    cpu = (r1.ru_utime + r1.ru_stime) - (r0.ru_utime + r0.ru_stime)
    load1 = os.getloadavg()
    sft = read_align_manifest(sft_dir)
    cpt_dir = runs / "align" / "cpt" / sft["cpt"]["hash"]
    cpt = read_align_manifest(cpt_dir)

    rows = []
    for name, m in (("CPT", cpt), ("SFT", sft)):
        tr = m["training"]
        rows.append((name, m["seconds"], tr["seconds"], tr["steps"], tr["tokens_seen"], tr["tokens_per_second"],
                     tr["train_loss_first"], tr["train_loss_last10_mean"], tr["eval_loss_before"].get("val"),
                     tr["eval_loss_after"].get("val")))
    print()
    print(f"dataset {ds.name}: {sft['users']['train']} training users, {sft['users']['val']} validation users; "
          f"torch threads {torch.get_num_threads()}, cpus {os.cpu_count()}")
    print(f"load average at start {load0[0]:.2f}, at end {load1[0]:.2f} (1-min); OMP_WAIT_POLICY {policy}")
    print(f"{'phase':5} {'stage s':>8} {'train s':>8} {'steps':>6} {'tokens':>9} {'tok/s':>8} {'loss0':>7} "
          f"{'loss end':>8} {'val0':>7} {'val end':>7}")
    for r in rows:
        print(f"{r[0]:5} {r[1]:8.1f} {r[2]:8.1f} {r[3]:6d} {r[4]:9d} {r[5]:8.0f} {r[6]:7.3f} {r[7]:8.3f} "
              f"{r[8]:7.3f} {r[9]:7.3f}")
    print(f"wall time CPT + SFT (incl. data, tokenizer, evaluation, saving): {wall:.1f}s; CPU time {cpu:.1f}s")
    print(f"SFT validation loss per format after training: {sft['training']['eval_loss_after']}")

    if not args.no_heldout:
        model, tok, _ = load_aligned(sft_dir, merge=True)
        cpt_model, _, _ = load_stage_model(cpt_dir)
        fit = make_fit(tok, prompt_budget(tok, ds, cfg))
        ex = C.heldout_examples(ds, split, config=cfg.sft, formats=("name",), per_user=1, seed=0, fit=fit)
        enc = encode_examples(tok, ex, cfg.max_length)
        print(f"held-out-window category-name loss per token (evaluation only, {len(ex)} users): "
              f"CPT-only {mean_answer_loss(cpt_model, tok, enc):.3f}, CPT+SFT {mean_answer_loss(model, tok, enc):.3f}")
        # Per answer (name tokens + eos for the model) against history-free and history priors.
        import numpy as np

        target = np.array([ds.categories.index(e.completion[1:]) for e in ex])
        users = np.array([e.user for e in ex])
        pop = split.category_train_mass / split.category_train_mass.sum()
        uhf = split.train_mass[users] + 1.0
        uhf /= uhf.sum(axis=1, keepdims=True)
        sft_nll, _ = answer_nll(model, tok, enc)
        cpt_nll, _ = answer_nll(cpt_model, tok, enc)
        print(f"held-out-window category-name NLL per answer: CPT-only {cpt_nll.mean():.3f}, CPT+SFT {sft_nll.mean():.3f}, "
              f"popularity prior {-np.log(pop[target]).mean():.3f}, "
              f"Laplace UHF of the train window {-np.log(uhf[np.arange(len(ex)), target]).mean():.3f}")
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"peak memory (ru_maxrss): {peak:.0f} MiB")
    if tmp is not None:
        tmp.cleanup()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
