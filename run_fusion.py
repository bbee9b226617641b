"""Main job: fuse a category prior into a RecBole backbone and report where it lifts.

    python run_fusion.py --model SASRec                 # ml-100k, default prior, everything cached under runs/
    python run_fusion.py --model GRU4Rec --prior markov
    python run_fusion.py --model SASRec --prior my_priors.parquet --w 0.3
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from pathlib import Path

from spectra_rec.errors import ConfigError, DataError, PriorTableError

log = logging.getLogger("run_fusion")


def parse_args(argv=None) -> argparse.Namespace:
    from fusion.blend import FUSION_RULES
    from fusion.candidates import CANDIDATE_SETS, FAISS_INDEXES
    from fusion.evaluate import SELECTION_RULES
    from fusion.pipeline import DEFAULT_PRIOR
    from spectra_rec.data.cli import add_data_arguments

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="SASRec", help="RecBole sequential model (SASRec, GRU4Rec, ...)")
    add_data_arguments(p)
    p.add_argument("--prior", default=DEFAULT_PRIOR,
                   help=f"default {DEFAULT_PRIOR} (the name readout pooled with uhf at uhf's dev exposure "
                        "entropy; aligns and probes on the first run); uhf, uhf-laplace, uhf-decay (recency-weighted, shrunk to popularity), markov, popularity, uniform, oracle (diagnostic, reads held-out data), "
                        "uhf@N (last N train items), "
                        "spectra (yes/no logit probe), spectra-name, spectra-choice, spectra-hier, a .parquet/.csv prior table, "
                        "or a log-linear pool of these, e.g. 'spectra-name*uhf' (weights fitted on the dev cohort; "
                        "a pool part 'exposure' divides by popularity until the dev top-3 exposure entropy reaches uhf's)")
    p.add_argument("--w", type=float,
                   help="fixed prior weight in [0, 1] for every candidate set, with the first --normalization "
                        "(no dev sweep runs)")
    p.add_argument("--w-grid", type=float, nargs="+", help="weights swept on the dev cohort (must include 0 and 1)")
    p.add_argument("--epochs", type=int, help="backbone epochs (upper bound; early stopping on valid NDCG@10)")
    p.add_argument("--patience", type=int,
                   help="backbone early stopping: epochs without a better valid NDCG@10 before it stops (YAML: stopping_step)")
    p.add_argument("--detect-anomaly", action="store_true",
                   help="debugging: train the backbone under torch autograd anomaly detection (about 2x slower)")
    p.add_argument("--dropout-kernel", default="uniform", choices=["uniform", "bernoulli"],
                   help="backbone dropout masks: uniform (rand < 1-p, the same distribution without torch's slow "
                        "CPU bernoulli_) or bernoulli (RecBole's nn.Dropout)")
    p.add_argument("--amp", default="auto", choices=["auto", "on", "off"],
                   help="backbone bfloat16 autocast (RecBole's enable_amp); auto: on where the CPU has native bf16 "
                        "(AVX512-BF16 or AMX)")
    p.add_argument("--backbone-threads", type=int,
                   help="intra-op threads while the backbone trains (default: 1 for GRU4Rec, whose tiny recurrent "
                        "kernels run faster on one; torch's default otherwise); speed only, not in the cache key")
    p.add_argument("--max-users", type=int, help="seeded subsample of evaluated users, for quick runs")
    p.add_argument("--candidates", nargs="+", default=list(CANDIDATE_SETS), choices=CANDIDATE_SETS)
    p.add_argument("--top-n", type=int, default=200, help="retrieval depth")
    p.add_argument("--index", default="flat", choices=FAISS_INDEXES, help="Faiss index for retrieval")
    p.add_argument("--selection", default=SELECTION_RULES[0], choices=SELECTION_RULES,
                   help="1se: the smallest w within one paired standard error of the best dev NDCG; max: the best")
    p.add_argument("--select-on", default="each",
                   help="each: every candidate set picks its own (normalization, w) on the dev cohort; "
                        "a candidate set name: its dev choice is applied to all sets")
    p.add_argument("--rule", default="linear", choices=sorted(FUSION_RULES),
                   help="fusion rule; linear: (1-w)*norm(base) + w*norm(prior affinity)")
    p.add_argument("--normalization", nargs="+", default=["minmax", "zscore", "softmax", "rank"],
                   help="per-user normalizations tried on the dev cohort")
    p.add_argument("--n-boot", type=int, default=1000)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    p.add_argument("--runs", type=Path, default=Path("runs"), help="cache root")
    p.add_argument("--out", type=Path, help="output folder (default runs/fusion/<dataset>-<model>-<prior>)")
    p.add_argument("--fresh", action="store_true", help="recompute cached stages")
    p.add_argument("--backend", default="hf", choices=["hf", "vllm"], help="--prior spectra*: the probing backend")
    p.add_argument("--engine", default="local", choices=["local", "ray"],
                   help="--prior spectra*: probe in this process or on a Ray Data actor pool (same table)")
    p.add_argument("--workers", type=int, default=2, help="--engine ray: actors in the pool")
    p.add_argument("--address", help="--engine ray: auto or HOST:PORT of a running cluster (default: a local one)")
    p.add_argument("--gpus-per-worker", type=float, default=0.0, help="--engine ray: GPUs per actor")
    p.add_argument("--no-ceiling", action="store_true",
                   help="skip the oracle ceiling (the held-out window as the prior, same selection) reported beside the prior")
    p.add_argument("-v", "--verbose", action="store_true")
    return p.parse_args(argv)


def probe_engine(args):
    """(backend, engine, RayConfig or None) for a SPECTRA prior; flag errors name the flag."""
    from fusion.pipeline import SPECTRA_PRIORS
    from spectra_rec.priors.registry import uses_spectra

    probing = uses_spectra(args.prior)
    for flag, given in (("--backend", args.backend != "hf"), ("--engine", args.engine != "local")):
        if given and not probing:
            raise ConfigError(f"{flag} applies to --prior {'|'.join(SPECTRA_PRIORS)} (alone or in a pool), "
                              f"got --prior {args.prior}")
    if args.engine != "ray":
        if args.address is not None or args.gpus_per_worker:
            raise ConfigError("--address and --gpus-per-worker need --engine ray")
        return args.backend, "local", None
    from spectra_rec.probe.distributed import RayConfig, preflight

    cfg = RayConfig(workers=args.workers, address=args.address, gpus_per_worker=args.gpus_per_worker)
    preflight(cfg)
    return args.backend, "ray", cfg


def main(argv=None) -> int:
    from spectra_rec.cli import quiet_openmp, setup_logging

    quiet_openmp()
    args = parse_args(argv)
    setup_logging(args.verbose)
    t0 = time.perf_counter()
    try:
        from fusion.pipeline import FusionConfig, run_fusion
        from fusion.report import choice_text, console_table, write_report

        backend, engine, ray_config = probe_engine(args)
        config = FusionConfig(
            model=args.model, dataset=str(args.dataset), category_field=args.category_field,
            split_ratio=args.split_ratio, taxonomy=args.taxonomy, prior=args.prior, w=args.w, epochs=args.epochs,
            patience=args.patience, detect_anomaly=args.detect_anomaly, dropout_kernel=args.dropout_kernel,
            amp={"auto": None, "on": True, "off": False}[args.amp], backbone_threads=args.backbone_threads,
            **({"w_grid": tuple(args.w_grid)} if args.w_grid else {}),
            max_users=args.max_users, candidate_sets=tuple(args.candidates),
            select_on=args.select_on, selection=args.selection, rule=args.rule,
            top_n=args.top_n, index=args.index, normalizations=tuple(args.normalization), n_boot=args.n_boot,
            seed=args.seed, device=args.device, runs=args.runs, out=args.out, fresh=args.fresh,
            probe_backend=backend, probe_engine=engine, probe_ray=ray_config, ceiling=not args.no_ceiling,
        )
        run = run_fusion(config)
        out = config.output_dir(run.data.name)
        run.timing["total_before_report"] = time.perf_counter() - t0
        results = write_report(run, out)
    except (ConfigError, DataError, PriorTableError) as exc:
        log.error("%s", exc)
        return 2
    print()
    print(f"{results['model']} + {results['prior']} prior on {results['dataset']}: "
          f"{choice_text(results)}, test cohort {results['cohorts']['test']} users")
    print(console_table(results, config.k))
    files = ", ".join(f for f in ("results.json", "results.md", "per_user.csv", "sweep.png", "slices.png")
                      if (out / f).exists())
    print(f"\nresults: {out}/{files} ({time.perf_counter() - t0:.1f}s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
