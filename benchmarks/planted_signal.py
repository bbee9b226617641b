"""Planted-signal check at full size: align on the planted synthetic dataset, probe every user, print per-user figures.

    python benchmarks/planted_signal.py                        # the planted alignment config (spectra_rec.testing.planted)
    python benchmarks/planted_signal.py --defaults             # the ml-100k default AlignConfig instead
    python benchmarks/planted_signal.py --set sft.readout_loss=[] sft_mode=lora   # overrides (JSON values)

Prints, per method (each readout, uhf, popularity, truth): mean per-user JS to the held-out truth,
mean per-user Pearson correlation with it, mean per-category std of p across users, and the
align and probe wall / CPU seconds. Not part of the test pass/fail.
"""

from __future__ import annotations

import argparse
import json
import logging
import resource
import tempfile
import time
from dataclasses import replace
from pathlib import Path


def _cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def _override(cfg, key: str, value):
    head, _, rest = key.partition(".")
    if rest:
        return replace(cfg, **{head: _override(getattr(cfg, head), rest, value)})
    return replace(cfg, **{head: value})


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--defaults", action="store_true", help="align with AlignConfig() (the ml-100k default)")
    ap.add_argument("--set", nargs="*", default=[], metavar="KEY=JSON", help="AlignConfig overrides, e.g. sft_train.epochs=3")
    ap.add_argument("--runs", type=Path, default=None, help="run directory (default: a temporary one)")
    ap.add_argument("--words", action="store_true", help="one-word category names (PLANTED_WORDS) instead of G<a>-s<b>")
    ap.add_argument("--max-items", type=int, default=None, help="probe history cap (default: the SFT context)")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    from spectra_rec.align import pipeline
    from spectra_rec.align.config import AlignConfig
    from spectra_rec.testing.planted import PLANTED, PLANTED_WORDS, planted_align_config, planted_dataset, probe_and_score

    cfg = AlignConfig() if args.defaults else planted_align_config()
    for kv in args.set:
        k, _, v = kv.partition("=")
        val = json.loads(v)
        if isinstance(val, list):
            val = tuple(val)
        cfg = _override(cfg, k, val)
    with tempfile.TemporaryDirectory(prefix="planted-") as tmp:
        runs = args.runs or Path(tmp) / "runs"
        data = planted_dataset(Path(tmp), PLANTED_WORDS if args.words else PLANTED)
        t0, c0 = time.perf_counter(), _cpu()
        model_dir = pipeline.align(data, cfg, runs=runs)
        t1, c1 = time.perf_counter(), _cpu()
        max_items = args.max_items if args.max_items is not None else cfg.sft.context_items
        scores = probe_and_score(data, model_dir, max_items=max_items)
        t2, c2 = time.perf_counter(), _cpu()
    print(f"align {t1 - t0:.0f} s wall / {c1 - c0:.0f} s CPU; probe (3 readouts, {len(data[1].eval_users)} users) "
          f"{t2 - t1:.0f} s wall / {c2 - c1:.0f} s CPU; probe max_items {max_items}")
    print(f"{'method':<12}{'JS':>8}{'corr':>8}{'std':>8}")
    for m, s in scores.items():
        print(f"{m:<12}{s['js']:>8.3f}{s['corr']:>8.3f}{s['std']:>8.4f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
