"""``spectra-rec probe``: read per-user category distributions out of the aligned LM into a prior table.

    spectra-rec probe --dataset ml-100k                      # aligns first if needed; cached under runs/probe
    spectra-rec probe --readout hier --branches top:3 --adapter runs/align/sft/<hash> --out hier.parquet
    spectra-rec probe --shard 0/4 --out p.parquet ...        # four processes; the last one to finish merges
    spectra-rec probe --merge --out p.parquet
"""

from __future__ import annotations

import argparse
import logging

from spectra_rec.errors import ConfigError
from spectra_rec.probe.cli_common import add_common, backend_options, ray_config, run_probe, set_threads
from spectra_rec.probe.readouts import AUTO_TAU_READOUTS, L2_PROMPTS, PROBE_READOUTS, readout_class
from spectra_rec.probe.temperature import parse_tau
from spectra_rec.text.templates import Verbalizers

log = logging.getLogger(__name__)


def add_arguments(p: argparse.ArgumentParser) -> None:
    add_common(p, "a local Hugging Face causal LM directory to probe instead of an adapter (not aligned)")
    p.add_argument("--readout", default="logit", choices=list(PROBE_READOUTS))
    p.add_argument("--tau", type=parse_tau, default=1.0,
                   help="softmax temperature (L1 temperature for hier), or 'auto': fitted per readout on the dev "
                        "cohort (minimum mean dev JS; logit, name, choice), recorded in the table's metadata")
    p.add_argument("--tau-l2", type=float, help="hier: temperature of p(c2 | c1) (default --tau)")
    p.add_argument("--verbalizers", default="Yes,yes/No,no", help="affirmative/negative answer words")
    p.add_argument("--branches", default="all", help="hier: all | top:b | tail:b")
    p.add_argument("--l2-prompt", default=L2_PROMPTS[0], choices=list(L2_PROMPTS),
                   help="hier: ask about an L2 category given its L1 parent (what SFT teaches) or on its own")
    p.add_argument("--unexpanded", default="uniform", choices=["uniform", "zero"],
                   help="hier: mass of branches not expanded (spread over children, or dropped)")
    p.add_argument("--anchor", help="choice with K > 26: the anchor category of every block (default: the first)")


def parse_verbalizers(text: str) -> Verbalizers:
    aff, sep, neg = str(text).partition("/")
    a = tuple(w for w in aff.split(",") if w)
    n = tuple(w for w in neg.split(",") if w)
    if not sep or not a or not n:
        raise ConfigError(f"--verbalizers must look like Yes,yes/No,no, got {text!r}")
    return Verbalizers(a, n)


def readout_options(args) -> dict:
    """The chosen readout's options from the flags named like its config's fields."""
    flags = vars(args) | {"verbalizers": parse_verbalizers(args.verbalizers)}
    return readout_class(args.readout).cli_options(flags)


def run(args) -> int:
    auto = args.tau == "auto"
    if auto:
        if args.readout not in AUTO_TAU_READOUTS:
            raise ConfigError(f"--tau auto supports --readout {'/'.join(AUTO_TAU_READOUTS)}, not {args.readout!r}")
        if args.merge or args.shard != "0/1":
            raise ConfigError("--tau auto needs the whole cohort in one run (no --shard / --merge)")
        args.tau = 1.0  # probe the raw scores once; the temperature is fitted afterwards
    rc = _run(args)
    if auto:
        from pathlib import Path

        from spectra_rec.probe.cli_common import load_data
        from spectra_rec.probe.temperature import auto_tau_table

        _, split = load_data(args)
        src = Path(args.out) if args.out is not None else Path(_run.last_source)
        dst = src if args.out is not None else src.with_name(src.stem + ".tau-auto" + src.suffix)
        table = auto_tau_table(src, split, args.readout, dst)
        fit = table.meta["tau_fit"]
        log.info("tau auto (%s): %.4g on %d dev users; dev JS %.4f (tau 1: %.4f)", args.readout, fit["tau"],
                 fit["dev_users"], fit["dev_js"], fit["dev_js_tau1"])
        print(f"tau {fit['tau']:.4g} (dev JS {fit['dev_js']:.4f}; tau 1: {fit['dev_js_tau1']:.4f}) -> {dst}")
    return rc


def _run(args) -> int:
    options = readout_options(args)
    set_threads(args)
    if args.out is None and args.model is None and args.shard == "0/1" and not args.merge:
        # The default path: the cached SPECTRA prior (aligning first when no adapter is cached).
        from spectra_rec.data.cli import data_config
        from spectra_rec.probe.run import spectra_prior

        table = spectra_prior(
            data_config(args), runs=args.runs, readout=args.readout, readout_options=options,
            adapter=args.adapter, max_users=args.max_users, max_items=args.max_items, backend=args.backend,
            backend_options=backend_options(args), device=args.device,
            fresh=args.fresh, progress=not args.no_progress, ray_config=ray_config(args),
        )
        _run.last_source = table.source
        print(table.source)
        return 0
    return run_probe(args, args.readout, options, "{dataset}-{readout}-{model}.parquet")
