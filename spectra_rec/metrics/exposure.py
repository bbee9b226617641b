"""Top-k exposure (docs/formulas.md; paper 4.3): which categories users' top-k lists show.

``topk_exposure`` gives each user's share of a top-k slot per category (ties at the cut
are shared equally, the expectation over random tie-breaks); the cohort's exposure
distribution is the column sum, and its Shannon entropy measures how diverse it is.
"""

from __future__ import annotations

import numpy as np

from spectra_rec.metrics.validate import as_distributions, check_k
from spectra_rec.metrics.ranking import tie_groups

__all__ = ["counts_entropy", "exposure_entropy", "topk_exposure"]


def topk_exposure(p, k: int) -> np.ndarray:
    """e_u(c) = expected number of top-k slots c takes in u's list ranked by p (ties shared); rows sum to min(k, K)."""
    p = as_distributions(p, "p")
    k = check_k(k)
    n, K = p.shape
    order = np.argsort(-p, axis=1, kind="stable")
    s = np.take_along_axis(p, order, axis=1)
    groups = tie_groups(s)
    slot = np.broadcast_to((np.arange(K) < k).astype(float), (n, K))
    flat = groups.ravel()
    share = np.bincount(flat, weights=slot.ravel()) / np.bincount(flat)
    out = np.empty((n, K))
    np.put_along_axis(out, order, share[groups], axis=1)
    return out


def exposure_entropy(exposure, weights=None, base: float = 2.0):
    """H(E) with E(c) = sum_u w_u e_u(c) / sum_{u,c} w_u e_u(c): entropy of the cohort's top-k exposure (bits).

    ``weights`` (n_users,) or (n_resamples, n_users) weighs users (bootstrap counts);
    the result is a float, or one value per weight row.
    """
    e = np.asarray(exposure, dtype=float)
    if e.ndim != 2 or not np.isfinite(e).all() or (e < 0).any():
        raise ValueError(f"exposure: expected a finite non-negative (users x categories) array, got shape {e.shape}")
    if weights is None:
        counts = e.sum(axis=0)[None, :]
    else:
        w = np.asarray(weights, dtype=float)
        if w.shape[-1] != e.shape[0]:
            raise ValueError(f"weights: expected last axis of length {e.shape[0]} (users), got shape {w.shape}")
        counts = np.atleast_2d(w) @ e
    h = counts_entropy(counts, base)
    return float(h[0]) if weights is None or np.ndim(weights) == 1 else h


def counts_entropy(counts, base: float = 2.0) -> np.ndarray:
    """H of each row of category counts normalized to shares (NaN for an all-zero row)."""
    counts = np.atleast_2d(np.asarray(counts, dtype=float))
    total = counts.sum(axis=1, keepdims=True)
    with np.errstate(invalid="ignore", divide="ignore"):
        share = counts / total
        h = -np.where(share > 0, share * np.log(share), 0.0).sum(axis=1) / np.log(base)
    h[total[:, 0] == 0] = np.nan
    return h
