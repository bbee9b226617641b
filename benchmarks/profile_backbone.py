"""Where a RecBole backbone's training epoch spends its time, and what the knobs change.

    python benchmarks/profile_backbone.py                          # SASRec and GRU4Rec on ml-100k
    python benchmarks/profile_backbone.py --models SASRec --batches 40 --variants base anomaly no-dropout threads1

For each model and variant, the same seeded RecBole objects that training builds
(``fusion.backbones.prepare_recbole``) run ``--batches`` training steps, timed phase by phase
(data loading, forward + loss, backward, optimizer step), and the step time is scaled to one epoch.
A ``torch.profiler`` pass over the first variant lists the operators with the most self CPU time,
and the dropout share (``bernoulli_`` / ``dropout`` kernels) is printed on its own. Figures move
between CPU models: compare the variants of one run, not runs of different machines. Not a test.

Variants: ``base`` (the defaults: the YAML, dropout masks from ``rand < 1 - p``
(:mod:`fusion.dropout`), bfloat16 autocast where the CPU has native bf16), ``recbole`` (RecBole's
own loop: ``nn.Dropout``'s ``bernoulli_`` masks, float32), ``anomaly`` (``recbole`` with autograd
anomaly mode on, as RecBole's import leaves it: the state before this toolkit's changes),
``fp32`` (base without autocast), ``bernoulli`` (base with ``nn.Dropout``), ``no-dropout`` (every
dropout probability 0), ``threads1`` (one intra-op thread), ``batch2048`` (four times the batch),
``attn-dropout-0`` (no dropout on attention weights), ``compile`` (base with the model's forward
under ``torch.compile``; its compile time is printed, not counted in the step). Autocast's speed depends on the CPU's bf16
support.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

RECBOLE = {"dropout_kernel": "bernoulli", "amp": False}
VARIANTS = {  # name: (RecBole overrides, BackboneConfig fields)
    "base": ({}, {}),
    "recbole": ({}, RECBOLE),
    "anomaly": ({}, RECBOLE),
    "fp32": ({}, {"amp": False}),
    "bernoulli": ({}, {"dropout_kernel": "bernoulli"}),
    "no-dropout": ({"hidden_dropout_prob": 0.0, "attn_dropout_prob": 0.0, "dropout_prob": 0.0}, {}),
    "threads1": ({}, {}),
    "batch2048": ({"train_batch_size": 2048}, {}),
    "attn-dropout-0": ({"attn_dropout_prob": 0.0}, {}),
    "compile": ({}, {}),
}


def _phases(model, trainer, train_data, n_batches: int, amp: bool = False) -> dict:
    """Seconds per phase over ``n_batches`` steps of RecBole's own training step."""
    import torch

    model.train()
    times = {"data": [], "forward": [], "backward": [], "optimizer": []}
    it = iter(train_data)
    for _ in range(n_batches):
        t = time.perf_counter()
        try:
            inter = next(it)
        except StopIteration:
            it = iter(train_data)
            inter = next(it)
        t1 = time.perf_counter()
        trainer.optimizer.zero_grad()
        with torch.autocast(device_type="cpu", enabled=amp):  # what RecBole's trainer does with enable_amp
            loss = model.calculate_loss(inter)
        t2 = time.perf_counter()
        loss.backward()
        t3 = time.perf_counter()
        trainer.optimizer.step()
        t4 = time.perf_counter()
        for k, a, b in (("data", t, t1), ("forward", t1, t2), ("backward", t2, t3), ("optimizer", t3, t4)):
            times[k].append(b - a)
    return times


def _top_ops(model, trainer, train_data, n_batches: int, top: int = 12, amp: bool = False) -> tuple[list, float]:
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU]) as prof:
        _phases(model, trainer, train_data, n_batches, amp=amp)
    events = prof.key_averages()
    total = sum(e.self_cpu_time_total for e in events)
    dropout = sum(e.self_cpu_time_total for e in events if any(k in e.key for k in ("bernoulli", "dropout", "uniform_")))
    rows = sorted(events, key=lambda e: -e.self_cpu_time_total)[:top]
    return [(e.key, e.self_cpu_time_total / total, e.count) for e in rows], dropout / total


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--models", nargs="+", default=["SASRec", "GRU4Rec"])
    p.add_argument("--dataset", default="ml-100k")
    p.add_argument("--batches", type=int, default=30, help="timed training steps per variant")
    p.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    args = p.parse_args()
    from spectra_rec.cli import quiet_openmp

    quiet_openmp()  # before torch starts its OpenMP pool
    import torch

    from fusion.backbones import BackboneConfig, prepare_recbole, resolved_yaml
    from fusion.recbole_compat import import_recbole, quiet_recbole
    from spectra_rec.data.export import export_recbole_benchmark, recbole_dataset_name
    from spectra_rec.data.stage import DataConfig, data_stage

    import_recbole()
    threads = torch.get_num_threads()
    tmp = Path(tempfile.mkdtemp(prefix="profile-backbone-"))
    ds, split, _ = data_stage(DataConfig(dataset=args.dataset), tmp / "runs")
    print(f"dataset {ds.name}: {ds.n_users} users, {ds.n_items} items; torch {torch.__version__}, "
          f"{threads} threads; {args.batches} steps per variant")
    from recbole.utils import get_trainer

    for model_name in args.models:
        resolved = resolved_yaml(model_name, ds.name)
        rb = recbole_dataset_name(ds.name)
        data_path = tmp / model_name / "recbole"
        export_recbole_benchmark(split, data_path / rb, rb, int(resolved["MAX_ITEM_LIST_LENGTH"]))
        print(f"\n{model_name}")
        built = {}
        for variant in args.variants:
            overrides, fields = VARIANTS[variant]
            overrides = {k: v for k, v in overrides.items() if k in resolved or k == "train_batch_size"}
            with quiet_recbole():
                rconfig, _, (train_data, _, _), model = prepare_recbole(
                    split, data_path, BackboneConfig(model_name, overrides=overrides, **fields), tmp / model_name
                )
                trainer = get_trainer(rconfig["MODEL_TYPE"], model_name)(rconfig, model)
                if variant == "compile":
                    model.forward = torch.compile(model.forward, dynamic=False)
                    t = time.perf_counter()
                    _phases(model, trainer, train_data, 2, amp=bool(rconfig["enable_amp"]))
                    print(f"  compile: first two steps took {time.perf_counter() - t:.1f} s")
                built[variant] = (model, trainer, train_data, bool(rconfig["enable_amp"]))
        # variants take turns, a few steps at a time, so that a busy machine slows them all alike
        times = {v: {"data": [], "forward": [], "backward": [], "optimizer": []} for v in args.variants}
        rounds = max(1, args.batches // 5)
        for r in range(rounds + 1):
            for variant, (model, trainer, train_data, amp) in built.items():
                torch.set_num_threads(1 if variant == "threads1" else threads)
                with quiet_recbole(), torch.autograd.set_detect_anomaly(variant == "anomaly"):
                    got = _phases(model, trainer, train_data, 5, amp=amp)
                if r:  # round 0 warms up the allocator and first-call dispatch
                    for k, v in got.items():
                        times[variant][k].extend(v)
        torch.set_num_threads(threads)
        print(f"  {'variant':<14} {'amp':>4} {'batches/epoch':>13} {'ms/step':>8} {'s/epoch':>8}  "
              "data / forward / backward / optimizer")
        for variant, (model, trainer, train_data, amp) in built.items():
            t = times[variant]
            step = [sum(x) for x in zip(*t.values())]
            med = statistics.median(step)
            shares = " / ".join(f"{sum(t[k]) / sum(step):.0%}" for k in t)
            print(f"  {variant:<14} {'on' if amp else 'off':>4} {len(train_data):>13} {med * 1e3:>8.1f} "
                  f"{med * len(train_data):>8.1f}  {shares}")
        model, trainer, train_data, amp = built[args.variants[0]]
        with quiet_recbole():
            ops, drop = _top_ops(model, trainer, train_data, 10, amp=amp)
        print(f"  operators with the most self CPU time ({args.variants[0]}; dropout kernels {drop:.0%} of all):")
        for key, share, count in ops:
            print(f"    {share:6.1%}  {count:>6}  {key}")


if __name__ == "__main__":
    main()
