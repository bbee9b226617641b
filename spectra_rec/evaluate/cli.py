"""``spectra-rec evaluate``: category-level metrics and report for prior tables.

    spectra-rec evaluate --dataset ml-100k --priors uhf markov dg=runs/probe/dg.parquet
    spectra-rec evaluate --dataset ml-100k --priors spectra uhf-decay popularity   # probes first if needed (cached)
"""

from __future__ import annotations

import argparse
import json
import logging
import time
from pathlib import Path

from spectra_rec.data.cli import add_data_arguments, data_config
from spectra_rec.errors import ConfigError
from spectra_rec.evaluate.config import EvalConfig
from spectra_rec.evaluate.run import evaluate, load_priors
from spectra_rec.priors.registry import SPECTRA_PRIORS, SpectraOptions, uses_spectra


def add_arguments(p: argparse.ArgumentParser) -> None:
    d = EvalConfig()
    add_data_arguments(p)
    p.add_argument("--priors", nargs="+", default=["uhf", "uhf-laplace", "markov", "popularity", "uniform"],
                   metavar="PRIOR",
                   help="history prior names (uhf, uhf-laplace, uhf-decay, markov, popularity, uniform, oracle; uhf@N and "
                        "uhf-laplace@N count the last N train items: the context-window sweep), SPECTRA readouts "
                        f"({', '.join(SPECTRA_PRIORS)}: aligned and probed on first use, cached under --runs), prior "
                        "table files (.parquet/.csv), log-linear pools of these (A*B, weights fitted on the dev cohort; "
                        "a part 'exposure' divides by popularity until the dev top-3 exposure entropy reaches uhf's), "
                        "or NAME=SPEC to label one (e.g. dg=runs/probe/dg.parquet)")
    p.add_argument("--baseline", default=None, help="method compared against (default: dg, else popularity, else first)")
    p.add_argument("--truth", choices=["long", "short"], default=d.truth)
    p.add_argument("--short-n", type=int, default=d.short_n, help="held-out interactions in the short-term truth")
    p.add_argument("--k", type=int, nargs="+", default=list(d.k), help="NDCG cut-offs")
    p.add_argument("--exposure-k", type=int, nargs="+", default=list(d.exposure_k), help="exposure-entropy cut-offs")
    p.add_argument("--n-bins", type=int, default=d.n_bins, help="ECE bins")
    p.add_argument("--n-boot", type=int, default=d.n_boot, help="bootstrap resamples")
    p.add_argument("--seed", type=int, default=d.seed, help="bootstrap seed")
    p.add_argument("--cohort", choices=["test", "dev", "all"], default=d.cohort)
    p.add_argument("--dev-fraction", type=float, default=d.dev_fraction)
    p.add_argument("--cohort-seed", type=int, default=d.cohort_seed)
    p.add_argument("--activity-strata", type=int, default=d.activity_strata, help="history-length strata (0: off)")
    p.add_argument("--theory-k", type=int, default=None, help="list length of the Theorem 1 check")
    p.add_argument("--merge-map", type=Path, default=None,
                   help='JSON {"Adventure": "Action", ...}: also evaluate the coarsened taxonomy')
    p.add_argument("--out", type=Path, default=None, help="report folder (default runs/evaluate/<dataset>-<truth>-<hash>)")
    p.add_argument("--runs", type=Path, default=Path("runs"))
    p.add_argument("--no-figures", action="store_true", help="skip the PNG figures")
    spectra = p.add_argument_group("SPECTRA priors (--priors spectra, spectra-name, spectra-choice, spectra-hier)")
    spectra.add_argument("--backend", default="hf", choices=["hf", "vllm"], help="the probing backend")
    spectra.add_argument("--adapter", type=Path,
                         help="an align folder to probe (default: align the default model, cached)")
    spectra.add_argument("--tau", type=float, help="softmax temperature of the readout (default: the readout's, 1)")
    spectra.add_argument("--fresh", action="store_true", help="recompute the probe stage (a cached adapter is reused)")


def _check_cli_ints(args) -> None:
    for name in ("k", "exposure_k"):
        bad = [v for v in getattr(args, name) if v < 1]
        if bad:
            raise ConfigError(f"--{name.replace('_', '-')}: expected integers >= 1, got {bad}")


def spectra_options(args) -> SpectraOptions:
    """The SPECTRA flags as options; a flag given without any SPECTRA prior is refused, naming it."""
    probing = any(uses_spectra(spec.partition("=")[2 if "=" in spec else 0]) for spec in args.priors)
    given = {"--backend": args.backend != "hf", "--adapter": args.adapter is not None, "--tau": args.tau is not None,
             "--fresh": args.fresh}
    for flag, on in given.items():
        if on and not probing:
            raise ConfigError(f"{flag} applies to --priors {'|'.join(SPECTRA_PRIORS)} (alone or in a pool), "
                              f"got --priors {' '.join(args.priors)}")
    if args.tau is not None and not args.tau > 0:
        raise ConfigError(f"--tau: expected a temperature > 0, got {args.tau}")
    return SpectraOptions(runs=args.runs, fresh=args.fresh, backend=args.backend, adapter=args.adapter, tau=args.tau)


def run(args) -> int:
    from spectra_rec import artifacts
    from spectra_rec.data.stage import data_identity, data_stage
    from spectra_rec.report import headline_table, write_report

    t0 = time.perf_counter()
    logging.captureWarnings(True)  # entry point: DataWarnings (empty quartiles, ...) go to the log
    _check_cli_ints(args)
    spectra = spectra_options(args)
    merge_map = ()
    if args.merge_map is not None:
        try:
            merge_map = tuple(json.loads(Path(args.merge_map).read_text()).items())
        except (OSError, json.JSONDecodeError, AttributeError) as exc:
            raise ConfigError(f"--merge-map: expected a JSON object of category -> category, {exc}") from exc
    config = EvalConfig(
        truth=args.truth, short_n=args.short_n, k=tuple(args.k), exposure_k=tuple(args.exposure_k),
        n_bins=args.n_bins, n_boot=args.n_boot, seed=args.seed, baseline=args.baseline, cohort=args.cohort,
        dev_fraction=args.dev_fraction, cohort_seed=args.cohort_seed, activity_strata=args.activity_strata,
        theory_k=args.theory_k, merge_map=merge_map,
    )
    dconf = data_config(args)
    ds, split, data_dir = data_stage(dconf, args.runs)
    t_data = time.perf_counter()
    priors = load_priors(split, args.priors, data_config=dconf, spectra=spectra,
                         cohorts=(args.dev_fraction, args.cohort_seed))
    t_priors = time.perf_counter()
    result = evaluate(split, priors, config)
    t_eval = time.perf_counter()
    inputs = {name: (artifacts.file_digest(Path(t.source)) if Path(str(t.source)).exists() else t.source)
              for name, t in priors.items()}
    # the data's identity is part of the folder name: another split ratio or taxonomy gets its own report
    key = config.to_dict() | {"priors": inputs, "data": data_identity(ds, split)}
    out = args.out or args.runs / "evaluate" / f"{ds.name}-{config.truth}-{artifacts.config_hash(key)}"
    manifest = {
        "stage": "evaluate", "config": config.to_dict(), "dataset": ds.name, "data_stage": str(data_dir),
        "priors": inputs, "seed": config.seed, "versions": artifacts.versions(),
    }
    with artifacts.publishing(out) as tmp:  # the report folder appears complete or not at all
        written = write_report(result, tmp, manifest=manifest, figures=not args.no_figures)
        t_report = time.perf_counter()
        result.timing |= {"data_s": t_data - t0, "priors_s": t_priors - t_data, "evaluate_s": t_eval - t_priors,
                          "report_s": t_report - t_eval, "total_s": t_report - t0}
        artifacts.write_json(tmp / "timing.json", result.timing)
    paths = {name: Path(out) / Path(p).name for name, p in written.items()}
    print(headline_table(result))
    print(f"\nreport: {paths['report.md']}  ({result.timing['total_s']:.1f} s)")
    return 0
