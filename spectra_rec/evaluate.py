"""Category-level evaluation of prior tables (paper 4.2-4.5, B, C, D, F).

Library: :func:`evaluate` compares any set of :class:`~spectra_rec.priors.PriorTable` on one
cohort of a :class:`~spectra_rec.data.Split`; :func:`evaluate_arrays` does the same on plain
matrices (synthetic tests, taxonomy coarsening). Both return an :class:`EvalResult` that keeps
per-user rows and unrounded summaries; :mod:`spectra_rec.report` renders it.

CLI: ``spectra-rec evaluate --dataset ml-100k --priors uhf markov dg=runs/probe/dg.parquet``.

Every mean comes with a percentile bootstrap CI from user resamples; all methods and metrics
share the same resamples (paired by construction). Comparisons are paired Wilcoxon tests on
per-user values, Holm-adjusted across method pairs (per metric), across categories (per-category
error) and across groups (quartiles, strata). Cohort-level metrics (exposure entropy, ECE) get
bootstrap CIs and paired bootstrap CIs of their difference to the baseline.
"""

from __future__ import annotations

import argparse
import itertools
import json
import logging
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Mapping

import numpy as np
import pandas as pd

from spectra_rec.data.cli import add_data_arguments, data_config
from spectra_rec.data.split import thirds_by_rank
from spectra_rec.errors import ConfigError, require_positive
from spectra_rec.metrics import calibration, distribution, exposure, fairness, ranking, theory
from spectra_rec.metrics.validate import as_distributions, warn_degenerate
from spectra_rec.metrics.stats import (
    bootstrap_ci,
    holm,
    paired_wilcoxon,
    percentile_interval,
    resample_weights,
)

log = logging.getLogger(__name__)

BUCKETS = ("head", "mid", "tail")
HELDOUT_TAG = " [uses held-out data]"
"""Appended to the label of every prior built from held-out data (the oracle)."""


# ---------------------------------------------------------------------------- configuration
@dataclass(frozen=True)
class EvalConfig:
    """What to compute and on which cohort (every field is written into the report's manifest)."""

    truth: str = "long"
    """Ground truth: ``long`` (whole held-out window) or ``short`` (its first ``short_n`` interactions)."""
    short_n: int = 5
    """Held-out interactions in the short-term truth."""
    k: tuple[int, ...] = (1, 3, 5, 10)
    """Cut-offs for category NDCG@k."""
    exposure_k: tuple[int, ...] = (3, 5)
    """Cut-offs for top-k exposure entropy."""
    n_bins: int = 10
    """Equal-width bins on [0, 1] for ECE and the reliability diagram."""
    n_boot: int = 1000
    """Bootstrap resamples of users for every CI."""
    alpha: float = 0.05
    """CI level is 1 - alpha; significance marks use Holm-adjusted p < alpha."""
    seed: int = 0
    """Seed of the bootstrap resamples."""
    baseline: str | None = None
    """Method every comparison is made against; default: ``dg`` if present, else ``popularity``, else the first."""
    cohort: str = "test"
    """``test`` (reported cohort), ``dev`` (tuning cohort) or ``all`` evaluable users."""
    dev_fraction: float = 0.2
    """Share of evaluable users in the dev cohort (seeded by ``cohort_seed``)."""
    cohort_seed: int = 0
    """Seed of the dev/test user split (the same split fusion uses)."""
    activity_strata: int = 5
    """User-activity strata by train-history length (value quantiles); 0 turns the sweep off."""
    fairness_groups: int = 4
    """Tail-preference groups (quartiles)."""
    theory_k: int | None = None
    """List length k of the Theorem 1 check; default: the baseline's typical support size if it is sparse, else 3."""
    merge_map: tuple[tuple[str, str], ...] = ()
    """Taxonomy coarsening (source -> target pairs), applied to prior and truth by summing columns."""

    def __post_init__(self):
        if self.truth not in ("long", "short"):
            raise ConfigError(f"EvalConfig.truth must be 'long' or 'short', got {self.truth!r}")
        if self.cohort not in ("test", "dev", "all"):
            raise ConfigError(f"EvalConfig.cohort must be 'test', 'dev' or 'all', got {self.cohort!r}")
        for name in ("k", "exposure_k"):
            vals = getattr(self, name)
            if not vals or any(isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 1 for v in vals):
                raise ConfigError(f"EvalConfig.{name} must be a non-empty list of integers >= 1, got {vals!r}")
            object.__setattr__(self, name, tuple(int(v) for v in vals))
        require_positive(self, "short_n", "n_bins", "n_boot", "fairness_groups")
        if self.activity_strata < 0:
            raise ConfigError(f"EvalConfig.activity_strata must be >= 0, got {self.activity_strata}")
        if not 0 < self.alpha < 1:
            raise ConfigError(f"EvalConfig.alpha must be in (0, 1), got {self.alpha}")
        if not 0 < self.dev_fraction < 1:
            raise ConfigError(f"EvalConfig.dev_fraction must be in (0, 1), got {self.dev_fraction}")
        if self.theory_k is not None and self.theory_k < 1:
            raise ConfigError(f"EvalConfig.theory_k must be >= 1, got {self.theory_k}")
        mm = self.merge_map.items() if isinstance(self.merge_map, Mapping) else self.merge_map
        object.__setattr__(self, "merge_map", tuple((str(a), str(b)) for a, b in mm))

    def to_dict(self) -> dict:
        d = asdict(self)
        d["merge_map"] = dict(self.merge_map)
        return d


# ---------------------------------------------------------------------------- result
@dataclass
class EvalResult:
    """Per-user rows and unrounded summaries of one evaluation (keys are method labels)."""

    config: dict
    methods: list[dict]
    """One entry per method: name, label (oracle-like tables carry HELDOUT_TAG), uses_heldout, source."""
    baseline: str
    """Label of the baseline method."""
    categories: list[str]
    buckets: list[str]
    n_users: int
    per_user: pd.DataFrame
    """One row per (user, method): every per-user metric plus the user's truth-side columns."""
    summary: dict
    """summary[metric][label] = {mean, low, high}; metric labels come from parameters (``NDCG@10``, ``ECE/head``)."""
    reference: dict
    """Truth-side values of the same metrics (``mass/tail`` of q, ``Entropy@3`` of q's top-3 lists)."""
    comparisons: list[dict]
    """Per metric and method pair (a, b): mean b - a with paired CI, Wilcoxon p, Holm p across pairs."""
    cohort_comparisons: list[dict]
    """Cohort metrics (entropy, ECE) against the baseline: difference with a paired bootstrap CI."""
    bias: list[dict]
    """Per method and category: mean p, mean q, bias with CI; |error| Wilcoxon vs baseline with Holm across categories."""
    reliability: dict
    fairness: dict
    theory: dict
    strata: list[dict]
    variants: dict = field(default_factory=dict)
    """Nested results of robustness variants (taxonomy coarsening)."""
    timing: dict = field(default_factory=dict)

    def label(self, name: str) -> str:
        for m in self.methods:
            if name in (m["name"], m["label"]):
                return m["label"]
        raise KeyError(f"no method {name!r}; methods: {[m['label'] for m in self.methods]}")

    def to_dict(self) -> dict:
        """Everything except the per-user rows, JSON-ready (NaN stays NaN; the writer maps it to null)."""
        out = {
            k: getattr(self, k)
            for k in ("config", "methods", "baseline", "categories", "buckets", "n_users", "summary", "reference",
                      "comparisons", "cohort_comparisons", "bias", "reliability", "fairness", "theory", "strata")
        }  # timing goes to timing.json: results.json is byte-identical for the same inputs and seed
        out["variants"] = {k: v.to_dict() for k, v in self.variants.items()}
        return out


# ---------------------------------------------------------------------------- helpers
def method_label(name: str, uses_heldout: bool) -> str:
    """The label every output uses for a method; held-out diagnostics say so."""
    return name + HELDOUT_TAG if uses_heldout else name


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


def _ci(mean: float, low: float, high: float) -> dict:
    return {"mean": float(mean), "low": float(low), "high": float(high)}


def _theory_k(p_base: np.ndarray, configured: int | None, K: int) -> int:
    if configured is not None:
        return configured
    support = (p_base > 0).sum(axis=1)
    if np.median(support) < K:
        return int(np.median(support))
    return min(3, K - 1)


# ---------------------------------------------------------------------------- core
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
) -> EvalResult:
    """Evaluate named (users x categories) prior matrices against ``truth`` rows of the same users."""
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
    b_idx = _resolve_baseline(labels, names, config.baseline)
    base = labels[b_idx]
    user_ids = np.asarray(user_ids if user_ids is not None else np.arange(n)).astype(str)
    n_train = None if n_train is None else np.asarray(n_train)
    if n_train is not None and n_train.shape != (n,):
        raise ValueError(f"n_train: expected one history length per user ({n}), got shape {n_train.shape}")
    alpha, n_boot, seed = config.alpha, config.n_boot, config.seed

    # ---- per-user metrics ------------------------------------------------------------
    per_metric: dict[str, dict[str, np.ndarray]] = {}

    def put(metric, lab, values):
        per_metric.setdefault(metric, {})[lab] = np.asarray(values, dtype=float)

    true_mass = calibration.bucket_mass(q, buckets)
    for lab, p in P.items():
        put("JS", lab, distribution.js_divergence(p, q))
        put("TV", lab, distribution.total_variation(p, q))
        for k in config.k:
            put(f"NDCG@{k}", lab, ranking.category_ndcg(p, q, k))
        mass = calibration.bucket_mass(p, buckets)
        for j, bname in enumerate(BUCKETS):
            put(f"mass/{bname}", lab, mass[:, j])
        put("eps", lab, distribution.max_abs_error(p, q))
    paired_metrics = ["JS", "TV"] + [f"NDCG@{k}" for k in config.k]
    mean_metrics = list(per_metric)

    # ---- columns for one shared bootstrap pass ---------------------------------------
    cols: list[np.ndarray] = []
    col_of: dict[tuple, int] = {}

    def add_col(key, values):
        col_of[key] = len(cols)
        cols.append(np.asarray(values, dtype=float))

    for metric in mean_metrics:
        for lab in labels:
            add_col((metric, lab), per_metric[metric][lab])
    for j, bname in enumerate(BUCKETS):
        add_col(("truth", f"mass/{bname}"), true_mass[:, j])
    bias_cols = {lab: calibration.category_bias(P[lab], q) for lab in labels}
    for lab in labels:
        for c in range(K):
            add_col(("bias", lab, c), bias_cols[lab][:, c])

    # cohort-level statistics: a linear per-user block (summed with bootstrap weights) and a reducer
    cohort_blocks: dict[tuple, tuple[np.ndarray, callable]] = {}
    for k in config.exposure_k:
        for lab, p in [("truth", q)] + [(lab, P[lab]) for lab in labels]:
            cohort_blocks[(f"Entropy@{k}", lab)] = (exposure.topk_exposure(p, k), exposure.counts_entropy)
    nb = config.n_bins

    def ece_reducer(S):
        return calibration.ece_from_sums(S[:, :nb], S[:, nb : 2 * nb], S[:, 2 * nb :])

    bins = {}
    for lab in labels:
        bins[("ECE", lab)] = calibration.ece_bins(P[lab], q, nb)
        for j, bname in enumerate(BUCKETS):
            if (buckets == j).any():
                bins[(f"ECE/{bname}", lab)] = calibration.ece_bins(P[lab], q, nb, mask=buckets == j)
        bins[("ECE/top1", lab)] = calibration.top1_bins(P[lab], q, nb)
    for key, bs in bins.items():
        cohort_blocks[key] = (np.hstack([bs.count, bs.pred, bs.true]), ece_reducer)

    # one weighted sum per resample block covers every mean and every cohort statistic
    X = np.column_stack(cols)
    blocks = [X / n]
    spans, start = {}, X.shape[1]
    for key, (block, _) in cohort_blocks.items():
        blocks.append(block)
        spans[key] = slice(start, start + block.shape[1])
        start += block.shape[1]
    L = np.hstack(blocks)
    boot = np.concatenate([W @ L for W in resample_weights(n, n_boot, seed)])
    boot_means = boot[:, : X.shape[1]]
    boot_cohort = {key: red(boot[:, spans[key]]) for key, (_, red) in cohort_blocks.items()}
    point = X.mean(axis=0)
    lows, highs = percentile_interval(boot_means, alpha)

    def col_ci(key):
        j = col_of[key]
        return _ci(point[j], lows[j], highs[j])

    summary: dict = {}
    for metric in mean_metrics:
        summary[metric] = {lab: col_ci((metric, lab)) for lab in labels}
    reference: dict = {f"mass/{b}": col_ci(("truth", f"mass/{b}")) for b in BUCKETS}
    cohort_point = {}
    for key, (block, red) in cohort_blocks.items():
        metric, lab = key
        val = float(red(block.sum(axis=0)[None])[0])
        cohort_point[key] = val
        lo, hi = percentile_interval(boot_cohort[key], alpha)
        if lab == "truth":
            reference[metric] = _ci(val, lo, hi)
        else:
            summary.setdefault(metric, {})[lab] = _ci(val, lo, hi)

    # ---- pairwise comparisons (per-user metrics) -------------------------------------
    comparisons = []
    for metric in paired_metrics:
        rows = []
        for a, b in itertools.combinations(labels, 2):
            if b == base:  # orient every pair with the baseline as a
                a, b = b, a
            va, vb = per_metric[metric][a], per_metric[metric][b]
            d = boot_means[:, col_of[(metric, b)]] - boot_means[:, col_of[(metric, a)]]
            lo, hi = percentile_interval(d, alpha)
            ma = float(va.mean())
            rel = boot_means[:, col_of[(metric, b)]] / boot_means[:, col_of[(metric, a)]] - 1 if ma > 0 else None
            rlo, rhi = percentile_interval(rel, alpha) if rel is not None else (float("nan"), float("nan"))
            rows.append({
                "metric": metric, "a": a, "b": b, "mean_a": ma, "mean_b": float(vb.mean()),
                "diff": float((vb - va).mean()), "low": lo, "high": hi,
                "relative": float(vb.mean() / ma - 1) if ma > 0 else float("nan"), "rel_low": rlo, "rel_high": rhi,
                "p": paired_wilcoxon(va, vb), "vs_baseline": a == base,
            })
        for r, ph in zip(rows, holm([r["p"] for r in rows])):
            r["p_holm"] = float(ph)
        comparisons.extend(rows)

    cohort_comparisons = []
    for metric in sorted({m for m, _ in cohort_blocks}):
        for lab in labels:
            if lab == base or (metric, lab) not in boot_cohort:
                continue
            d = boot_cohort[(metric, lab)] - boot_cohort[(metric, base)]
            lo, hi = percentile_interval(d, alpha)
            cohort_comparisons.append({
                "metric": metric, "a": base, "b": lab,
                "diff": float(cohort_point[(metric, lab)] - cohort_point[(metric, base)]), "low": lo, "high": hi,
            })

    # ---- per-category bias -----------------------------------------------------------
    bias_rows = []
    err_base = np.abs(bias_cols[base])
    for lab in labels:
        err = np.abs(bias_cols[lab])
        ps = [paired_wilcoxon(err_base[:, c], err[:, c]) if lab != base else float("nan") for c in range(K)]
        ph = holm(ps)
        for c in range(K):
            ci = col_ci(("bias", lab, c))
            bias_rows.append({
                "method": lab, "category": categories[c], "bucket": BUCKETS[int(buckets[c])],
                "pred": float(P[lab][:, c].mean()), "true": float(q[:, c].mean()),
                "bias": ci["mean"], "low": ci["low"], "high": ci["high"],
                "abs_err": float(err[:, c].mean()), "abs_err_base": float(err_base[:, c].mean()),
                "p": float(ps[c]), "p_holm": float(ph[c]),
                "win": bool(lab != base and err[:, c].mean() < err_base[:, c].mean() and ph[c] < alpha),
            })

    reliab = {lab: {key[0]: {k: v.tolist() for k, v in calibration.reliability(bs).items()}
                    for key, bs in bins.items() if key[1] == lab and key[0] in ("ECE", "ECE/top1")}
              for lab in labels}

    # ---- fairness quartiles ----------------------------------------------------------
    tail_pref = fairness.tail_preference(q, buckets)
    groups = fairness.preference_groups(tail_pref, config.fairness_groups)
    fair = {"baseline": base, "group_sizes": np.bincount(groups, minlength=config.fairness_groups).tolist(),
            "group_tail_preference": [float(tail_pref[groups == g].mean()) if (groups == g).any() else float("nan")
                                      for g in range(config.fairness_groups)],
            "methods": {}}
    for lab in labels:
        if lab != base:
            fair["methods"][lab] = fairness.quartile_reduction(
                per_metric["JS"][lab], per_metric["JS"][base], groups, config.fairness_groups, n_boot, seed, alpha)

    # ---- Theorem 1 and the Lemma 1 floor ---------------------------------------------
    p_base = P[base]
    tk = _theory_k(p_base, config.theory_k, K)
    th = {"baseline": base, "k": tk, "methods": {}}
    per_user_theory = {}
    if tk < K:
        delta = theory.outside_mass(q, p_base > 0)
        floor = theory.dg_js_floor(q, p_base)
        sparse = bool((p_base == 0).any())
        th["baseline_floor"] = {
            "sparse": sparse,
            "outside_mass": _ci(delta.mean(), *bootstrap_ci(delta, n_boot, seed, alpha)),
            "js_floor": _ci(floor.mean(), *bootstrap_ci(floor, n_boot, seed, alpha)),
            "share_js_at_or_above_floor": float((per_metric["JS"][base] >= floor - 1e-12).mean()),
        }
        for lab in labels:
            if lab == base:
                continue
            r = theory.theorem1_check(P[lab], q, p_base, tk)
            per_user_theory[lab] = r
            fav = r["favourable"]
            nf = int(fav.sum())
            th["methods"][lab] = {
                "favourable_fraction": _ci(fav.mean(), *bootstrap_ci(fav.astype(float), n_boot, seed, alpha)),
                "n_favourable": nf,
                "dg_miss_fraction": float(r["dg_miss"].mean()),
                "gap_exceeds_2eps_fraction": float((r["gap"] > 2 * r["eps"]).mean()),
                "eps_mean": float(r["eps"].mean()),
                "p_recovers_true_topk_on_favourable": float(r["p_recovers"][fav].mean()) if nf else float("nan"),
                "mass_p_on_favourable": float(r["mass_p"][fav].mean()) if nf else float("nan"),
                "mass_dg_on_favourable": float(r["mass_dg"][fav].mean()) if nf else float("nan"),
                "p_recovers_true_topk_overall": float(r["p_recovers"].mean()),
            }
            if nf == 0:  # a legitimate outcome (fraction 0); only the conditional means are undefined
                log.info("theorem1 check: no favourable users for %r against %r at k=%d", lab, base, tk)
    else:
        th["skipped"] = f"k={tk} needs k < K={K}"

    # ---- user-activity strata --------------------------------------------------------
    strata_rows = []
    strata = None
    if n_train is not None and config.activity_strata > 0:
        strata = fairness.preference_groups(n_train.astype(float), config.activity_strata)
        for s in range(config.activity_strata):
            sel = strata == s
            ns = int(sel.sum())
            lo_n = int(n_train[sel].min()) if ns else None
            hi_n = int(n_train[sel].max()) if ns else None
            rows = []
            for lab in labels:
                row = {"stratum": f"A{s + 1}", "n": ns, "history_min": lo_n, "history_max": hi_n, "method": lab}
                if ns == 0:
                    warn_degenerate(f"activity stratum A{s + 1} has no users; its values are NaN")
                    row |= dict.fromkeys(["JS", "JS_low", "JS_high", "NDCG", "reduction", "red_low", "red_high", "p"],
                                         float("nan"))
                else:
                    js = per_metric["JS"][lab][sel]
                    js_b = per_metric["JS"][base][sel]
                    nd_key = f"NDCG@{max(config.k)}"
                    row |= {"JS": float(js.mean()), **dict(zip(("JS_low", "JS_high"), bootstrap_ci(js, n_boot, seed, alpha))),
                            "NDCG_metric": nd_key, "NDCG": float(per_metric[nd_key][lab][sel].mean()),
                            "reduction": float((js_b - js).mean()),
                            **dict(zip(("red_low", "red_high"), bootstrap_ci(js_b - js, n_boot, seed, alpha))),
                            "p": paired_wilcoxon(js_b, js) if lab != base else float("nan")}
                rows.append(row)
            strata_rows.extend(rows)
        for lab in labels:
            if lab == base:
                continue
            mine = [r for r in strata_rows if r["method"] == lab]
            for r, ph in zip(mine, holm([r["p"] for r in mine])):
                r["p_holm"] = float(ph)

    # ---- per-user frame --------------------------------------------------------------
    frames = []
    for lab in labels:
        df = pd.DataFrame({"user_id": user_ids, "method": lab})
        for metric in mean_metrics:
            df[metric] = per_metric[metric][lab]
        if lab in per_user_theory:
            r = per_user_theory[lab]
            for key in ("gap", "dg_miss", "favourable", "p_recovers", "mass_p", "mass_dg"):
                df[f"thm1/{key}"] = r[key]
        for j, bname in enumerate(BUCKETS):
            df[f"truth_mass/{bname}"] = true_mass[:, j]
        df["tail_preference"] = tail_pref
        df["tail_quartile"] = [f"Q{g + 1}" for g in groups]
        if n_train is not None:
            df["n_train"] = n_train
        if strata is not None:
            df["activity_stratum"] = [f"A{s + 1}" for s in strata]
        frames.append(df)
    per_user = pd.concat(frames, ignore_index=True)

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


def evaluate(split, priors: Mapping[str, object], config: EvalConfig = EvalConfig()) -> EvalResult:
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
    common = dict(user_ids=ds.user_ids[users], n_train=split.n_train[users], uses_heldout=heldout, sources=sources)
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


# ---------------------------------------------------------------------------- CLI
def add_arguments(p: argparse.ArgumentParser) -> None:
    d = EvalConfig()
    add_data_arguments(p)
    p.add_argument("--priors", nargs="+", default=["uhf", "uhf-laplace", "markov", "popularity", "uniform"],
                   metavar="PRIOR",
                   help="history prior names (uhf, uhf-laplace, uhf-decay, markov, popularity, uniform, oracle; uhf@N and "
                        "uhf-laplace@N count the last N train items: the context-window sweep), prior table "
                        "files (.parquet/.csv), or NAME=FILE to label a table (e.g. dg=runs/probe/dg.parquet)")
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


def _check_cli_ints(args) -> None:
    for name in ("k", "exposure_k"):
        bad = [v for v in getattr(args, name) if v < 1]
        if bad:
            raise ConfigError(f"--{name.replace('_', '-')}: expected integers >= 1, got {bad}")


def load_priors(split, specs) -> dict:
    """Resolve CLI prior specs: history names, table files, or NAME=FILE; returns {name: PriorTable}."""
    from spectra_rec.priors import HISTORY_PRIORS, PriorTable, history_prior
    from spectra_rec.priors.history import is_history_spec

    out: dict = {}
    for spec in specs:
        name, _, path = spec.partition("=") if "=" in spec else (None, "", spec)
        if name is None and is_history_spec(spec):
            table, name = history_prior(split, spec), spec
        elif name is not None or Path(path).suffix in (".parquet", ".csv") or Path(path).exists():
            table = PriorTable.load(path, categories=split.dataset.categories)  # missing columns named first
            if name is None:
                name = table.method if table.method != "unknown" else Path(path).stem
                if name in out:
                    name = Path(path).stem
        else:
            raise ConfigError(
                f"--priors: {spec!r} is neither a history prior ({sorted(HISTORY_PRIORS)}, or uhf@N for the last N "
                "train items) nor a .parquet/.csv table"
            )
        if name in out:
            raise ConfigError(f"--priors: two priors named {name!r}; label one with NAME=FILE")
        out[name] = table
    return out


def run(args) -> int:
    from spectra_rec import artifacts
    from spectra_rec.data.stage import data_stage
    from spectra_rec.report import headline_table, write_report

    t0 = time.perf_counter()
    logging.captureWarnings(True)  # entry point: DataWarnings (empty quartiles, ...) go to the log
    _check_cli_ints(args)
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
    ds, split, data_dir = data_stage(data_config(args), args.runs)
    t_data = time.perf_counter()
    priors = load_priors(split, args.priors)
    t_priors = time.perf_counter()
    result = evaluate(split, priors, config)
    t_eval = time.perf_counter()
    inputs = {name: (artifacts.file_digest(Path(t.source)) if Path(str(t.source)).exists() else t.source)
              for name, t in priors.items()}
    out = args.out or args.runs / "evaluate" / f"{ds.name}-{config.truth}-{artifacts.config_hash(config.to_dict() | {'priors': inputs})}"
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
