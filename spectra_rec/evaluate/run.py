"""Category-level evaluation of prior tables (paper 4.2-4.5, B, C, D, F).

:func:`evaluate` compares any set of :class:`~spectra_rec.priors.PriorTable` on one cohort of a
:class:`~spectra_rec.data.Split`; :func:`evaluate_arrays` does the same on plain matrices
(synthetic tests, taxonomy coarsening). Both return an :class:`EvalResult` that keeps per-user
rows and unrounded summaries; :mod:`spectra_rec.report` renders it.

Every mean comes with a percentile bootstrap CI from user resamples; all methods and metrics
share the same resamples (paired by construction). Comparisons are paired Wilcoxon tests on
per-user values, Holm-adjusted across method pairs (per metric), across categories (per-category
error) and across groups (quartiles, strata). Cohort-level metrics (exposure entropy, ECE) get
bootstrap CIs and paired bootstrap CIs of their difference to the baseline.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Mapping

import numpy as np

from spectra_rec.data.split import thirds_by_rank
from spectra_rec.errors import ConfigError
from spectra_rec.evaluate import phases
from spectra_rec.evaluate.config import BUCKETS, EvalConfig, EvalResult, method_label
from spectra_rec.evaluate.metrics_table import COHORT_METRICS, USER_METRICS, MetricContext
from spectra_rec.metrics import calibration
from spectra_rec.metrics.validate import as_distributions
from spectra_rec.priors.registry import SpectraOptions, is_table_spec, resolve_prior


def coarsen(categories, merge_map) -> tuple[list[str], np.ndarray]:
    """Coarser vocabulary and the (K, K') 0/1 matrix that sums merged columns; targets keep their position."""
    cats = list(categories)
    mm = dict(merge_map.items() if isinstance(merge_map, Mapping) else merge_map)
    unknown = sorted({c for pair in mm.items() for c in pair if c not in cats})
    if unknown:
        raise ConfigError(f"merge map: unknown categories {unknown}; known: {cats}")
    chained = sorted(t for t in mm.values() if t in mm)
    if chained:
        raise ConfigError(f"merge map: targets {chained} are themselves merged away; map each source to its final target")
    if any(a == b for a, b in mm.items()):
        raise ConfigError(f"merge map: a category maps to itself: {[a for a, b in mm.items() if a == b]}")
    kept = [c for c in cats if c not in mm]
    col = {c: j for j, c in enumerate(kept)}
    M = np.zeros((len(cats), len(kept)))
    for i, c in enumerate(cats):
        M[i, col[mm.get(c, c)]] = 1.0
    return kept, M


def _resolve_baseline(labels: list[str], names: list[str], baseline: str | None) -> int:
    """The configured baseline; by default dg, else popularity, else the first method not built from held-out data."""
    if baseline is not None:
        for i, (lab, nm) in enumerate(zip(labels, names)):
            if baseline in (lab, nm):
                return i
        raise ConfigError(f"baseline {baseline!r} is not among the evaluated methods {names}")
    for pref in ("dg", "popularity"):
        if pref in names:
            return names.index(pref)
    return next((i for i, (lab, nm) in enumerate(zip(labels, names)) if lab == nm), 0)


def evaluate_arrays(
    probs: Mapping[str, np.ndarray],
    truth: np.ndarray,
    buckets: np.ndarray,
    categories,
    config: EvalConfig = EvalConfig(),
    user_ids=None,
    n_train=None,
    uses_heldout: Mapping[str, bool] | None = None,
    sources: Mapping[str, str] | None = None,
    user_metrics=USER_METRICS,
    cohort_metrics=COHORT_METRICS,
) -> EvalResult:
    """Evaluate named (users x categories) prior matrices against ``truth`` rows of the same users.

    ``user_metrics`` / ``cohort_metrics``: the metric tables (:mod:`spectra_rec.evaluate.metrics_table`).
    """
    t0 = time.perf_counter()
    if not probs:
        raise ConfigError("probs: expected at least one prior to evaluate, got none")
    q = as_distributions(truth, "truth")
    n, K = q.shape
    categories = [str(c) for c in categories]
    if len(categories) != K:
        raise ValueError(f"categories: expected {K} names (truth columns), got {len(categories)}")
    buckets = np.asarray(buckets)
    if buckets.shape != (K,):
        raise ValueError(f"buckets: expected one bucket per category ({K}), got shape {buckets.shape}")
    uses_heldout = dict(uses_heldout or {})
    sources = dict(sources or {})
    names = list(probs)
    labels = [method_label(nm, uses_heldout.get(nm, False)) for nm in names]
    P = {}
    for nm, lab in zip(names, labels):
        p = as_distributions(probs[nm], f"probs[{nm!r}]")
        if p.shape != q.shape:
            raise ValueError(f"probs[{nm!r}]: expected shape {q.shape} (truth), got {p.shape}")
        P[lab] = p
    base = labels[_resolve_baseline(labels, names, config.baseline)]
    user_ids = np.asarray(user_ids if user_ids is not None else np.arange(n)).astype(str)
    n_train = None if n_train is None else np.asarray(n_train)
    if n_train is not None and n_train.shape != (n,):
        raise ValueError(f"n_train: expected one history length per user ({n}), got shape {n_train.shape}")
    ctx = MetricContext(buckets=buckets, n_bins=config.n_bins)

    uv = phases.user_values(P, q, user_metrics, config, ctx)
    bias_cols = phases.bias_columns(P, q)
    columns = {(metric, lab): by[lab] for metric, by in uv.per_metric.items() for lab in labels}
    columns |= {("truth", metric): v for metric, v in uv.reference.items()}
    columns |= {("bias", lab, c): bias_cols[lab][:, c] for lab in labels for c in range(K)}
    blocks = phases.cohort_blocks(P, q, cohort_metrics, config, ctx)
    boot = phases.bootstrap(columns, blocks, n, config.n_boot, config.seed, config.alpha)

    summary, reference = phases.summaries(uv, boot, labels, config.alpha)
    comparisons = phases.paired_comparisons(uv, boot, labels, base, config.alpha)
    cohort_comparisons = phases.cohort_comparisons(boot, labels, base, config.alpha)
    bias_rows = phases.category_bias(P, q, bias_cols, boot, base, categories, buckets, config.alpha)
    reliab = phases.reliability(P, q, config.n_bins)
    fair, tail_pref, groups = phases.fairness_quartiles(q, buckets, uv.per_metric["JS"], base, config)
    th, per_user_theory = phases.theorem1(P, q, base, uv.per_metric["JS"][base], config)
    strata_rows, strata = phases.activity_strata(n_train, uv.per_metric, labels, base, config)
    per_user = phases.per_user_frame(labels, user_ids, uv.per_metric, per_user_theory,
                                     calibration.bucket_mass(q, buckets), tail_pref, groups, n_train, strata)

    methods = [
        {"name": nm, "label": lab, "uses_heldout": bool(uses_heldout.get(nm, False)), "source": sources.get(nm, nm)}
        for nm, lab in zip(names, labels)
    ]
    return EvalResult(
        config=config.to_dict(), methods=methods, baseline=base, categories=categories,
        buckets=[BUCKETS[int(b)] for b in buckets], n_users=n, per_user=per_user, summary=summary,
        reference=reference, comparisons=comparisons, cohort_comparisons=cohort_comparisons, bias=bias_rows,
        reliability=reliab, fairness=fair, theory=th, strata=strata_rows,
        timing={"seconds": time.perf_counter() - t0},
    )


def cohort_users(split, config: EvalConfig) -> np.ndarray:
    """User indices of the configured cohort (dev/test: the seeded split fusion uses too)."""
    if config.cohort == "all":
        return split.eval_users
    dev, test = split.cohorts(config.dev_fraction, config.cohort_seed)
    return test if config.cohort == "test" else dev


def evaluate(split, priors: Mapping[str, object], config: EvalConfig = EvalConfig(), user_metrics=USER_METRICS,
             cohort_metrics=COHORT_METRICS) -> EvalResult:
    """Compare named prior tables on the configured cohort of ``split`` (plus the coarsened taxonomy if configured)."""
    t0 = time.perf_counter()
    ds = split.dataset
    users = cohort_users(split, config)
    if len(users) == 0:
        raise ConfigError(f"cohort {config.cohort!r} of dataset {ds.name!r} has no users with a held-out window")
    truth = split.ground_truth(n=config.short_n if config.truth == "short" else None, users=users)
    probs = {name: table.matrix(ds, users) for name, table in priors.items()}
    heldout = {name: bool(getattr(table, "uses_heldout", False)) for name, table in priors.items()}
    sources = {name: getattr(table, "source", name) for name, table in priors.items()}
    common = dict(user_ids=ds.user_ids[users], n_train=split.n_train[users], uses_heldout=heldout, sources=sources,
                  user_metrics=user_metrics, cohort_metrics=cohort_metrics)
    result = evaluate_arrays(probs, truth, split.category_bucket, ds.categories, config, **common)
    if config.merge_map:
        kept, M = coarsen(ds.categories, config.merge_map)
        coarse_buckets = thirds_by_rank(split.category_train_mass @ M)
        variant = evaluate_arrays({nm: p @ M for nm, p in probs.items()}, truth @ M, coarse_buckets, kept,
                                  config, **common)
        variant.config["variant"] = f"taxonomy coarsened {ds.K} -> {len(kept)}"
        result.variants[f"coarse-K{len(kept)}"] = variant
    result.config |= {"dataset": ds.name, "n_categories": ds.K, "split_ratio": split.ratio}
    result.timing = {"seconds": time.perf_counter() - t0}
    return result


def load_priors(split, specs, data_config=None, spectra=None, cohorts: tuple[float, int] = (0.2, 0)) -> dict:
    """Resolve ``--priors`` specs (any prior spec, or NAME=SPEC to label one); returns {name: PriorTable}.

    ``data_config`` and ``spectra`` (a :class:`~spectra_rec.priors.registry.SpectraOptions`) apply to
    SPECTRA priors only; ``cohorts`` (dev fraction, seed) is the dev cohort a pool fits its weights on.
    """
    spectra = spectra or SpectraOptions()
    out: dict = {}
    for spec in specs:
        label, sep, path = spec.partition("=")
        table = resolve_prior(path if sep else spec, split, flag="--priors", data_config=data_config, spectra=spectra,
                              cohorts=cohorts)
        if sep:
            name = label
        elif is_table_spec(spec):
            name = table.method if table.method != "unknown" else Path(spec).stem
            if name in out:
                name = Path(spec).stem
        else:
            name = spec
        if name in out:
            raise ConfigError(f"--priors: two priors named {name!r}; label one with NAME=FILE")
        out[name] = table
    return out
