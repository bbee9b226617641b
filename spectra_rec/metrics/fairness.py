"""Cross-user fairness by tail preference (docs/formulas.md; paper 4.3 and B.3).

Tail preference of u = q_u mass on tail-bucket categories. Quartiles by value:
Q1 = (-inf, e1], Q2 = (e1, e2], Q3 = (e2, e3], Q4 = (e3, inf) with e_i the cohort's i/4
quantiles, so users with equal tail preference share a quartile (a quartile can be empty
when many users tie; it then reports NaN with a warning).
"""

from __future__ import annotations

import numpy as np

from spectra_rec.metrics.validate import as_distributions, as_pair, as_vector, warn_degenerate
from spectra_rec.metrics.stats import resample_means, bootstrap_ci, holm, paired_wilcoxon, percentile_interval

__all__ = ["preference_groups", "quartile_reduction", "ratio_interval", "tail_preference"]

TAIL = 2


def tail_preference(q, buckets) -> np.ndarray:
    """t_u = sum_{c in tail bucket} q_u(c) per user."""
    q = as_distributions(q, "q")
    b = np.asarray(buckets)
    if b.shape != (q.shape[1],):
        raise ValueError(f"buckets: expected one bucket per category ({q.shape[1]}), got shape {b.shape}")
    return q[:, b == TAIL].sum(axis=1)


def preference_groups(values, n_groups: int = 4) -> np.ndarray:
    """Group g in 0..n_groups-1 of each user: g = #{quantile edges e_i (i = 1..n_groups-1) with e_i < value}."""
    v = as_vector(values, "values")
    if n_groups < 1:
        raise ValueError(f"n_groups: expected >= 1, got {n_groups}")
    edges = np.quantile(v, np.arange(1, n_groups) / n_groups)
    return np.searchsorted(edges, v, side="left")


def quartile_reduction(
    js_method,
    js_base,
    groups,
    n_groups: int = 4,
    n_boot: int = 1000,
    seed: int = 0,
    alpha: float = 0.05,
) -> dict:
    """Per group: mean reduction r_u = JS_base,u - JS_method,u with bootstrap CI, paired Wilcoxon p (Holm across groups), and Q_last/Q1 ratio with CI."""
    a, b = as_pair(js_base, js_method, "js_base", "js_method")
    g = np.asarray(groups)
    if g.shape != a.shape:
        raise ValueError(f"groups: expected one group per user ({a.size}), got shape {g.shape}")
    rows = []
    for i in range(n_groups):
        sel = g == i
        n = int(sel.sum())
        if n == 0:
            warn_degenerate(f"quartile_reduction: group Q{i + 1} has no users; its values are NaN")
            rows.append({"group": f"Q{i + 1}", "n": 0} | dict.fromkeys(
                ["js_base", "js_method", "reduction", "low", "high", "relative", "p"], float("nan")))
            continue
        red = a[sel] - b[sel]
        low, high = bootstrap_ci(red, n_boot=n_boot, seed=seed, alpha=alpha)
        base_mean = float(a[sel].mean())
        rows.append(
            {
                "group": f"Q{i + 1}",
                "n": n,
                "js_base": base_mean,
                "js_method": float(b[sel].mean()),
                "reduction": float(red.mean()),
                "low": low,
                "high": high,
                "relative": float(red.mean() / base_mean) if base_mean > 0 else float("nan"),
                "p": paired_wilcoxon(a[sel], b[sel]),
            }
        )
    p_holm = holm([r["p"] for r in rows])
    for r, ph in zip(rows, p_holm):
        r["p_holm"] = float(ph)
    first, last = rows[0], rows[-1]
    ratio, ratio_ci = float("nan"), (float("nan"), float("nan"))
    if first["n"] and last["n"]:
        if first["reduction"] != 0:
            ratio = last["reduction"] / first["reduction"]
        else:
            warn_degenerate("quartile_reduction: Q1 reduction is 0; the Q4/Q1 ratio is NaN")
        ratio_ci = ratio_interval(a - b, g, n_groups - 1, 0, n_boot=n_boot, seed=seed, alpha=alpha)
    return {"groups": rows, "ratio_last_first": ratio, "ratio_low": ratio_ci[0], "ratio_high": ratio_ci[1]}


def ratio_interval(values, groups, top: int, bottom: int, n_boot: int = 1000, seed: int = 0, alpha: float = 0.05):
    """Percentile interval of mean(values[g = top]*) / mean(values[g = bottom]*) over resamples drawn within each group."""
    v = as_vector(values, "values")
    g = np.asarray(groups)
    # Resampling within each quartile keeps the group sizes fixed: membership comes from the
    # truth, not from the method, so the interval is about the reductions alone.
    (num,) = resample_means([v[g == top]], n_boot, seed)
    (den,) = resample_means([v[g == bottom]], n_boot, seed + 1)
    ok = den != 0
    if not ok.all():
        warn_degenerate(f"ratio_interval: the Q{bottom + 1} mean is 0 in {int((~ok).sum())} of {n_boot} resamples; "
                        "those ratios are dropped")
    if not ok.any():
        return float("nan"), float("nan")
    return percentile_interval(num[ok] / den[ok], alpha)
