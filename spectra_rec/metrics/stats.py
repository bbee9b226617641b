"""Significance and uncertainty over per-user values (docs/formulas.md, "Statistics").

Paired two-sided Wilcoxon signed-rank, Holm-Bonferroni adjustment, and percentile
bootstrap confidence intervals from user-level resamples (paired for differences and
relative lifts). All inputs are per-user arrays; nothing here rounds.
"""

from __future__ import annotations

import warnings

import numpy as np

from spectra_rec.metrics.validate import (
    as_pair,
    as_vector,
    check_alpha,
    check_positive_int,
    warn_degenerate,
)

__all__ = [
    "bootstrap_ci",
    "bootstrap_stat_ci",
    "bootstrap_means",
    "holm",
    "paired_bootstrap_ci",
    "paired_wilcoxon",
    "percentile_interval",
    "resample_means",
    "resample_weights",
]

#: resamples drawn per block, so memory stays ~ block * n_users integers
_BLOCK_ELEMENTS = 4_000_000


def paired_wilcoxon(a, b) -> float:
    """Two-sided p of the Wilcoxon signed-rank test on d = b - a (zero differences dropped); 1.0 when all d are 0."""
    a, b = as_pair(a, b, "a", "b", allow_empty=True)
    d = b - a
    if d.size == 0:
        warn_degenerate("paired_wilcoxon: no paired values; p is NaN")
        return float("nan")
    if not np.any(d != 0):
        return 1.0
    from scipy.stats import wilcoxon

    return float(wilcoxon(d, zero_method="wilcox", alternative="two-sided").pvalue)


def holm(pvalues) -> np.ndarray:
    """Holm-Bonferroni: p_(i) -> max_{j<=i} min(1, (m - j + 1) p_(j)) over the m non-NaN p-values; NaN stays NaN."""
    p = np.asarray(pvalues, dtype=float)
    if p.ndim != 1:
        raise ValueError(f"pvalues: expected a 1-D array, got shape {p.shape}")
    ok = ~np.isnan(p)
    if np.isinf(p).any() or (p[ok] < 0).any() or (p[ok] > 1).any():
        raise ValueError(f"pvalues: expected values in [0, 1] (NaN allowed for untested), got {p[~ok | (p < 0) | (p > 1)][:5]}")
    out = np.full(p.shape, np.nan)
    vals = p[ok]
    m = vals.size
    if m == 0:
        return out
    order = np.argsort(vals, kind="stable")
    scaled = (m - np.arange(m)) * vals[order]
    adj_sorted = np.minimum(1.0, np.maximum.accumulate(scaled))
    adj = np.empty(m)
    adj[order] = adj_sorted
    out[ok] = adj
    return out


def resample_means(columns: list[np.ndarray], n_boot: int, seed: int) -> list[np.ndarray]:
    """Means of each column over ``n_boot`` user resamples (the same indices for every column)."""
    n = columns[0].size
    rng = np.random.default_rng(seed)
    out = [np.empty(n_boot) for _ in columns]
    block = max(1, _BLOCK_ELEMENTS // max(n, 1))
    for start in range(0, n_boot, block):
        stop = min(n_boot, start + block)
        idx = rng.integers(0, n, size=(stop - start, n))
        for col, dst in zip(columns, out):
            dst[start:stop] = col[idx].mean(axis=1)
    return out


def _percentile_interval(samples: np.ndarray, alpha: float) -> tuple[float, float]:
    low, high = np.quantile(samples, [alpha / 2, 1 - alpha / 2])
    return float(low), float(high)


def percentile_interval(samples, alpha: float = 0.05, axis: int = 0):
    """(alpha/2, 1 - alpha/2) quantiles of bootstrap samples along ``axis``, ignoring NaN; arrays when samples are 2-D."""
    alpha = check_alpha(alpha)
    s = np.asarray(samples, dtype=float)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN columns stay NaN
        low, high = np.nanquantile(s, [alpha / 2, 1 - alpha / 2], axis=axis)
    if np.ndim(low) == 0:
        return float(low), float(high)
    return low, high


def bootstrap_ci(values, n_boot: int = 1000, seed: int = 0, alpha: float = 0.05) -> tuple[float, float]:
    """Percentile (alpha/2, 1-alpha/2) interval of mean(values[idx]) over n_boot user resamples with replacement."""
    v = as_vector(values, "values", allow_empty=True)
    n_boot = check_positive_int(n_boot, "n_boot")
    alpha = check_alpha(alpha)
    if v.size == 0:
        warn_degenerate("bootstrap_ci: no values; interval is (NaN, NaN)")
        return float("nan"), float("nan")
    (means,) = resample_means([v], n_boot, seed)
    return _percentile_interval(means, alpha)


def paired_bootstrap_ci(
    a, b, n_boot: int = 1000, seed: int = 0, alpha: float = 0.05, stat: str = "diff"
) -> tuple[float, float]:
    """Percentile interval over paired user resamples of mean(b) - mean(a) (stat='diff') or mean(b)/mean(a) - 1 ('ratio')."""
    a, b = as_pair(a, b, "a", "b", allow_empty=True)
    n_boot = check_positive_int(n_boot, "n_boot")
    alpha = check_alpha(alpha)
    if stat not in ("diff", "ratio"):
        raise ValueError(f"stat: expected 'diff' or 'ratio', got {stat!r}")
    if a.size == 0:
        warn_degenerate("paired_bootstrap_ci: no paired values; interval is (NaN, NaN)")
        return float("nan"), float("nan")
    if stat == "diff":
        (means,) = resample_means([b - a], n_boot, seed)
        return _percentile_interval(means, alpha)
    mean_a, mean_b = resample_means([a, b], n_boot, seed)
    zero = mean_a == 0
    if zero.any():
        warn_degenerate(
            f"paired_bootstrap_ci: mean(a) is 0 in {int(zero.sum())} of {n_boot} resamples; "
            "those relative lifts are undefined and dropped"
        )
        if zero.all():
            return float("nan"), float("nan")
    lift = mean_b[~zero] / mean_a[~zero] - 1.0
    return _percentile_interval(lift, alpha)


def resample_weights(n: int, n_boot: int = 1000, seed: int = 0):
    """Yield blocks of bootstrap weights W (b, n): W[r, u] = times user u is drawn in resample r (same draws as bootstrap_ci)."""
    n = check_positive_int(n, "n")
    n_boot = check_positive_int(n_boot, "n_boot")
    rng = np.random.default_rng(seed)
    block = max(1, _BLOCK_ELEMENTS // n)
    for start in range(0, n_boot, block):
        b = min(n_boot, start + block) - start
        idx = rng.integers(0, n, size=(b, n))
        yield np.bincount((idx + np.arange(b)[:, None] * n).ravel(), minlength=b * n).reshape(b, n).astype(float)


def bootstrap_stat_ci(statistic, n: int, n_boot: int = 1000, seed: int = 0, alpha: float = 0.05) -> tuple[float, float]:
    """Percentile interval of a cohort statistic over user resamples; ``statistic(W)`` maps weights (b, n) to (b,) values."""
    alpha = check_alpha(alpha)
    if n == 0:
        warn_degenerate("bootstrap_stat_ci: no users; interval is (NaN, NaN)")
        return float("nan"), float("nan")
    vals = np.concatenate([np.asarray(statistic(w), dtype=float).reshape(-1) for w in resample_weights(n, n_boot, seed)])
    vals = vals[np.isfinite(vals)]
    if vals.size == 0:
        return float("nan"), float("nan")
    return _percentile_interval(vals, alpha)


def bootstrap_means(columns, n_boot: int = 1000, seed: int = 0) -> np.ndarray:
    """Column means over user resamples: (n_boot, n_columns) with row r = W_r @ X / n (the draws of resample_weights)."""
    X = np.asarray(columns, dtype=float)
    if X.ndim == 1:
        X = X[:, None]
    if X.ndim != 2 or X.shape[0] == 0:
        raise ValueError(f"columns: expected a non-empty (users x columns) array, got shape {X.shape}")
    if not np.isfinite(X).all():
        raise ValueError("columns: expected finite per-user values")
    n = X.shape[0]
    return np.concatenate([w @ X / n for w in resample_weights(n, n_boot, seed)])
