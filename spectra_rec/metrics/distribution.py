"""Divergences between predicted and true category distributions, per user (docs/formulas.md).

Rows are users, columns categories; every function returns one value per row.
Logarithms are base 2 unless ``base`` says otherwise, so 0 <= JS <= 1.
"""

from __future__ import annotations

import numpy as np

from spectra_rec.metrics.validate import as_distributions, as_pq

__all__ = ["entropy", "js_divergence", "kl_divergence", "max_abs_error", "total_variation"]


def _xlogy_ratio(x: np.ndarray, y: np.ndarray, base: float) -> np.ndarray:
    """Elementwise x * log(x / y) with 0 log 0 = 0 and x log(x/0) = inf for x > 0."""
    out = np.zeros_like(x)
    pos = x > 0
    with np.errstate(divide="ignore"):
        out[pos] = x[pos] * (np.log(x[pos]) - np.log(y[pos]))
    return out / np.log(base)


def kl_divergence(p, q, base: float = 2.0) -> np.ndarray:
    """KL(p || q) = sum_c p(c) log(p(c) / q(c)) per user; inf where q(c) = 0 < p(c)."""
    p, q = as_pq(p, q)
    return _xlogy_ratio(p, q, base).sum(axis=1)


def js_divergence(p, q) -> np.ndarray:
    """JS(p, q) = 1/2 KL(p || m) + 1/2 KL(q || m), m = (p + q) / 2, log base 2 (in [0, 1]) per user."""
    p, q = as_pq(p, q)
    m = 0.5 * (p + q)
    js = 0.5 * _xlogy_ratio(p, m, 2.0).sum(axis=1) + 0.5 * _xlogy_ratio(q, m, 2.0).sum(axis=1)
    return np.clip(js, 0.0, 1.0)


def total_variation(p, q) -> np.ndarray:
    """TV(p, q) = 1/2 sum_c |p(c) - q(c)| per user."""
    p, q = as_pq(p, q)
    return 0.5 * np.abs(p - q).sum(axis=1)


def max_abs_error(p, q) -> np.ndarray:
    """eps = max_c |p(c) - q(c)| per user (Theorem 1, condition (i))."""
    p, q = as_pq(p, q)
    return np.abs(p - q).max(axis=1)


def entropy(p, base: float = 2.0) -> np.ndarray:
    """H(p) = -sum_c p(c) log p(c) per row (0 log 0 = 0), in bits by default."""
    p = as_distributions(p, "p")
    out = np.zeros_like(p)
    pos = p > 0
    out[pos] = -p[pos] * np.log(p[pos])
    return out.sum(axis=1) / np.log(base)
