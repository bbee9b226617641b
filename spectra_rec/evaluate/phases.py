"""The phases of one evaluation, each a function of what it needs that returns its piece of the result.

Order in :func:`spectra_rec.evaluate.evaluate_arrays`: per-user metrics and cohort blocks, one
shared bootstrap pass, summaries, paired comparisons (Holm across pairs), cohort comparisons,
per-category bias (Holm across categories), reliability, fairness quartiles, Theorem 1, activity
strata, the per-user frame.
"""

from __future__ import annotations

import itertools
import logging
from dataclasses import dataclass
from functools import partial

import numpy as np
import pandas as pd

from spectra_rec.evaluate.config import BUCKETS
from spectra_rec.evaluate.metrics_table import MetricContext, cohort_metric_rows, user_metric_rows
from spectra_rec.metrics import calibration, fairness, theory
from spectra_rec.metrics.validate import warn_degenerate
from spectra_rec.metrics.stats import bootstrap_ci, holm, paired_wilcoxon, percentile_interval, resample_weights

log = logging.getLogger(__name__)


def _ci(mean: float, low: float, high: float) -> dict:
    return {"mean": float(mean), "low": float(low), "high": float(high)}


# ---------------------------------------------------------------------------- per-user and cohort values
@dataclass
class UserValues:
    """Per-user values of every expanded per-user metric row."""

    per_metric: dict[str, dict[str, np.ndarray]]
    """per_metric[metric][label] = (n,) values."""
    paired: list[str]
    """Metrics compared between methods."""
    reference: dict[str, np.ndarray]
    """Truth-side values of the rows marked ``reference``."""


def user_values(P: dict[str, np.ndarray], q: np.ndarray, rows, config, ctx: MetricContext) -> UserValues:
    """Every per-user metric row for every method (and for the truth where the row asks for it)."""
    expanded = user_metric_rows(rows, config)
    per_metric: dict[str, dict[str, np.ndarray]] = {lab: {} for lab, _, _ in expanded}
    for meth, p in P.items():
        for lab, fn, _ in expanded:
            per_metric[lab][meth] = np.asarray(fn(p, q, ctx), dtype=float)
    reference = {lab: np.asarray(fn(q, q, ctx), dtype=float) for lab, fn, row in expanded if row.reference}
    return UserValues(per_metric, [lab for lab, _, row in expanded if row.paired], reference)


def cohort_blocks(P: dict[str, np.ndarray], q: np.ndarray, rows, config, ctx: MetricContext) -> dict[tuple, tuple]:
    """{(metric, method or "truth"): (per-user block, reducer)} for every cohort row defined on this cohort."""
    out: dict[tuple, tuple] = {}
    for lab, block, row in cohort_metric_rows(rows, config):
        sides = ([("truth", q)] if row.reference else []) + list(P.items())
        for meth, p in sides:
            b = block(p, q, ctx)
            if b is not None:
                out[(lab, meth)] = (np.asarray(b, dtype=float), partial(row.reducer, ctx=ctx))
    return out


# ---------------------------------------------------------------------------- the shared bootstrap pass
@dataclass
class Bootstrap:
    """Point values and resampled values of every column and cohort statistic (same resamples for all)."""

    col_of: dict[tuple, int]
    point: np.ndarray
    boot_means: np.ndarray
    """(n_boot, columns) resampled means."""
    lows: np.ndarray
    highs: np.ndarray
    cohort_point: dict[tuple, float]
    boot_cohort: dict[tuple, np.ndarray]
    """(n_boot,) resampled cohort statistics."""

    def ci(self, key) -> dict:
        j = self.col_of[key]
        return _ci(self.point[j], self.lows[j], self.highs[j])

    def means(self, key) -> np.ndarray:
        return self.boot_means[:, self.col_of[key]]


def bootstrap(columns: dict[tuple, np.ndarray], blocks: dict[tuple, tuple], n: int, n_boot: int, seed: int,
              alpha: float) -> Bootstrap:
    """One weighted sum per resample block covers every mean (``columns``) and every cohort statistic (``blocks``)."""
    col_of = {key: j for j, key in enumerate(columns)}
    X = np.column_stack(list(columns.values()))
    parts = [X / n]
    spans, start = {}, X.shape[1]
    for key, (block, _) in blocks.items():
        parts.append(block)
        spans[key] = slice(start, start + block.shape[1])
        start += block.shape[1]
    L = np.hstack(parts)
    boot = np.concatenate([W @ L for W in resample_weights(n, n_boot, seed)])
    boot_means = boot[:, : X.shape[1]]
    boot_cohort = {key: red(boot[:, spans[key]]) for key, (_, red) in blocks.items()}
    cohort_point = {key: float(red(block.sum(axis=0)[None])[0]) for key, (block, red) in blocks.items()}
    lows, highs = percentile_interval(boot_means, alpha)
    return Bootstrap(col_of, X.mean(axis=0), boot_means, lows, highs, cohort_point, boot_cohort)


def summaries(uv: UserValues, boot: Bootstrap, labels: list[str], alpha: float) -> tuple[dict, dict]:
    """(summary[metric][method], reference[metric]) = {mean, low, high}."""
    summary = {metric: {lab: boot.ci((metric, lab)) for lab in labels} for metric in uv.per_metric}
    reference = {metric: boot.ci(("truth", metric)) for metric in uv.reference}
    for (metric, lab), val in boot.cohort_point.items():
        lo, hi = percentile_interval(boot.boot_cohort[(metric, lab)], alpha)
        if lab == "truth":
            reference[metric] = _ci(val, lo, hi)
        else:
            summary.setdefault(metric, {})[lab] = _ci(val, lo, hi)
    return summary, reference


# ---------------------------------------------------------------------------- comparisons
def paired_comparisons(uv: UserValues, boot: Bootstrap, labels: list[str], base: str, alpha: float) -> list[dict]:
    """Per paired metric and method pair (a, b), the baseline as a: mean b - a with paired CI, Wilcoxon p, Holm p."""
    comparisons = []
    for metric in uv.paired:
        rows = []
        for a, b in itertools.combinations(labels, 2):
            if b == base:  # orient every pair with the baseline as a
                a, b = b, a
            va, vb = uv.per_metric[metric][a], uv.per_metric[metric][b]
            ba, bb = boot.means((metric, a)), boot.means((metric, b))
            lo, hi = percentile_interval(bb - ba, alpha)
            ma = float(va.mean())
            rel = bb / ba - 1 if ma > 0 else None
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
    return comparisons


def cohort_comparisons(boot: Bootstrap, labels: list[str], base: str, alpha: float) -> list[dict]:
    """Cohort metrics against the baseline: difference with a paired bootstrap CI."""
    out = []
    for metric in sorted({m for m, _ in boot.boot_cohort}):
        for lab in labels:
            if lab == base or (metric, lab) not in boot.boot_cohort:
                continue
            d = boot.boot_cohort[(metric, lab)] - boot.boot_cohort[(metric, base)]
            lo, hi = percentile_interval(d, alpha)
            out.append({
                "metric": metric, "a": base, "b": lab,
                "diff": float(boot.cohort_point[(metric, lab)] - boot.cohort_point[(metric, base)]), "low": lo,
                "high": hi,
            })
    return out


# ---------------------------------------------------------------------------- per-category bias
def bias_columns(P: dict[str, np.ndarray], q: np.ndarray) -> dict[str, np.ndarray]:
    """Per method, the (n, K) per-user bias p - q (its column means are the per-category bias)."""
    return {lab: calibration.category_bias(p, q) for lab, p in P.items()}


def category_bias(P: dict[str, np.ndarray], q: np.ndarray, bias_cols: dict[str, np.ndarray], boot: Bootstrap,
                  base: str, categories: list[str], buckets: np.ndarray, alpha: float) -> list[dict]:
    """Per method and category: mean p, mean q, bias with CI; |error| Wilcoxon vs baseline, Holm across categories."""
    rows = []
    K = q.shape[1]
    err_base = np.abs(bias_cols[base])
    for lab in P:
        err = np.abs(bias_cols[lab])
        ps = [paired_wilcoxon(err_base[:, c], err[:, c]) if lab != base else float("nan") for c in range(K)]
        ph = holm(ps)
        for c in range(K):
            ci = boot.ci(("bias", lab, c))
            rows.append({
                "method": lab, "category": categories[c], "bucket": BUCKETS[int(buckets[c])],
                "pred": float(P[lab][:, c].mean()), "true": float(q[:, c].mean()),
                "bias": ci["mean"], "low": ci["low"], "high": ci["high"],
                "abs_err": float(err[:, c].mean()), "abs_err_base": float(err_base[:, c].mean()),
                "p": float(ps[c]), "p_holm": float(ph[c]),
                "win": bool(lab != base and err[:, c].mean() < err_base[:, c].mean() and ph[c] < alpha),
            })
    return rows


def reliability(P: dict[str, np.ndarray], q: np.ndarray, n_bins: int) -> dict:
    """Per method, the reliability diagram of the aggregate and the top-1 ECE bins."""
    return {lab: {name: {k: v.tolist() for k, v in calibration.reliability(bins).items()}
                  for name, bins in (("ECE", calibration.ece_bins(p, q, n_bins)),
                                     ("ECE/top1", calibration.top1_bins(p, q, n_bins)))}
            for lab, p in P.items()}


# ---------------------------------------------------------------------------- fairness, theory, strata
def fairness_quartiles(q: np.ndarray, buckets: np.ndarray, js: dict[str, np.ndarray], base: str,
                       config) -> tuple[dict, np.ndarray, np.ndarray]:
    """(fairness section, per-user tail preference, per-user group) of the JS reduction versus the baseline."""
    groups_n, n_boot, seed, alpha = config.fairness_groups, config.n_boot, config.seed, config.alpha
    tail_pref = fairness.tail_preference(q, buckets)
    groups = fairness.preference_groups(tail_pref, groups_n)
    fair = {"baseline": base, "group_sizes": np.bincount(groups, minlength=groups_n).tolist(),
            "group_tail_preference": [float(tail_pref[groups == g].mean()) if (groups == g).any() else float("nan")
                                      for g in range(groups_n)],
            "methods": {}}
    for lab in js:
        if lab != base:
            fair["methods"][lab] = fairness.quartile_reduction(js[lab], js[base], groups, groups_n, n_boot, seed, alpha)
    return fair, tail_pref, groups


def theory_k(p_base: np.ndarray, configured: int | None, K: int) -> int:
    """The Theorem 1 list length: configured, else the baseline's median support if sparse, else min(3, K - 1)."""
    if configured is not None:
        return configured
    support = (p_base > 0).sum(axis=1)
    if np.median(support) < K:
        return int(np.median(support))
    return min(3, K - 1)


def theorem1(P: dict[str, np.ndarray], q: np.ndarray, base: str, js_base: np.ndarray, config) -> tuple[dict, dict]:
    """(theory section, per-user Theorem 1 arrays per method): Lemma 1 floor of the baseline, Theorem 1 per method."""
    n_boot, seed, alpha = config.n_boot, config.seed, config.alpha
    K = q.shape[1]
    p_base = P[base]
    tk = theory_k(p_base, config.theory_k, K)
    th = {"baseline": base, "k": tk, "methods": {}}
    per_user = {}
    if tk >= K:
        th["skipped"] = f"k={tk} needs k < K={K}"
        return th, per_user
    delta = theory.outside_mass(q, p_base > 0)
    floor = theory.dg_js_floor(q, p_base)
    th["baseline_floor"] = {
        "sparse": bool((p_base == 0).any()),
        "outside_mass": _ci(delta.mean(), *bootstrap_ci(delta, n_boot, seed, alpha)),
        "js_floor": _ci(floor.mean(), *bootstrap_ci(floor, n_boot, seed, alpha)),
        "share_js_at_or_above_floor": float((js_base >= floor - 1e-12).mean()),
    }
    for lab, p in P.items():
        if lab == base:
            continue
        r = theory.theorem1_check(p, q, p_base, tk)
        per_user[lab] = r
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
    return th, per_user


def activity_strata(n_train: np.ndarray | None, per_metric: dict, labels: list[str], base: str,
                    config) -> tuple[list[dict], np.ndarray | None]:
    """(rows, per-user stratum or None): JS, NDCG and JS reduction per history-length stratum, Holm across strata."""
    if n_train is None or config.activity_strata <= 0:
        return [], None
    n_boot, seed, alpha = config.n_boot, config.seed, config.alpha
    nd_key = f"NDCG@{max(config.k)}"
    strata = fairness.preference_groups(n_train.astype(float), config.activity_strata)
    rows = []
    for s in range(config.activity_strata):
        sel = strata == s
        ns = int(sel.sum())
        lo_n = int(n_train[sel].min()) if ns else None
        hi_n = int(n_train[sel].max()) if ns else None
        for lab in labels:
            row = {"stratum": f"A{s + 1}", "n": ns, "history_min": lo_n, "history_max": hi_n, "method": lab}
            if ns == 0:
                warn_degenerate(f"activity stratum A{s + 1} has no users; its values are NaN")
                row |= dict.fromkeys(["JS", "JS_low", "JS_high", "NDCG", "reduction", "red_low", "red_high", "p"],
                                     float("nan"))
            else:
                js = per_metric["JS"][lab][sel]
                js_b = per_metric["JS"][base][sel]
                row |= {"JS": float(js.mean()), **dict(zip(("JS_low", "JS_high"), bootstrap_ci(js, n_boot, seed, alpha))),
                        "NDCG_metric": nd_key, "NDCG": float(per_metric[nd_key][lab][sel].mean()),
                        "reduction": float((js_b - js).mean()),
                        **dict(zip(("red_low", "red_high"), bootstrap_ci(js_b - js, n_boot, seed, alpha))),
                        "p": paired_wilcoxon(js_b, js) if lab != base else float("nan")}
            rows.append(row)
    for lab in labels:
        if lab == base:
            continue
        mine = [r for r in rows if r["method"] == lab]
        for r, ph in zip(mine, holm([r["p"] for r in mine])):
            r["p_holm"] = float(ph)
    return rows, strata


# ---------------------------------------------------------------------------- per-user frame
def per_user_frame(labels: list[str], user_ids: np.ndarray, per_metric: dict, per_user_theory: dict,
                   true_mass: np.ndarray, tail_pref: np.ndarray, groups: np.ndarray, n_train: np.ndarray | None,
                   strata: np.ndarray | None) -> pd.DataFrame:
    """One row per (user, method): every per-user metric plus the user's truth-side columns."""
    frames = []
    for lab in labels:
        df = pd.DataFrame({"user_id": user_ids, "method": lab})
        for metric, by in per_metric.items():
            df[metric] = by[lab]
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
    return pd.concat(frames, ignore_index=True)
