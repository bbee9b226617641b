"""Category NDCG@k with graded gains q_u(c) (docs/formulas.md; paper 4.1).

Categories are ranked by the predicted p_u. Ties in p_u are averaged (the expected DCG over
random tie-breaks, as scikit-learn's ``ndcg_score(ignore_ties=False)``), so a uniform prior
or a uniform-on-top-k DG list is not rewarded or punished by an arbitrary column order.
"""

from __future__ import annotations

import numpy as np

from spectra_rec.metrics.validate import as_pq, check_k

__all__ = ["category_dcg", "category_ndcg", "discounts"]


def discounts(n_positions: int, k: int) -> np.ndarray:
    """1 / log2(r + 1) for ranks r = 1..n_positions, zero beyond rank k."""
    r = np.arange(1, n_positions + 1, dtype=float)
    d = 1.0 / np.log2(r + 1.0)
    d[k:] = 0.0
    return d


def tie_groups(sorted_scores: np.ndarray) -> np.ndarray:
    """Per row of descending-sorted scores, a global id per run of equal values (ids unique across rows)."""
    n, K = sorted_scores.shape
    new = np.ones((n, K), dtype=bool)
    new[:, 1:] = sorted_scores[:, 1:] != sorted_scores[:, :-1]
    return np.cumsum(new.ravel()).reshape(n, K) - 1


def category_dcg(scores: np.ndarray, gains: np.ndarray, k: int) -> np.ndarray:
    """DCG@k = sum over tie groups g of mean(gain in g) * sum(discounts of g's ranks <= k), ranking by ``scores``."""
    n, K = scores.shape
    order = np.argsort(-scores, axis=1, kind="stable")
    s = np.take_along_axis(scores, order, axis=1)
    g = np.take_along_axis(gains, order, axis=1)
    groups = tie_groups(s)
    n_groups = int(groups[-1, -1]) + 1 if n else 0
    d = np.broadcast_to(discounts(K, k), (n, K))
    flat = groups.ravel()
    gain_sum = np.bincount(flat, weights=g.ravel(), minlength=n_groups)
    disc_sum = np.bincount(flat, weights=d.ravel(), minlength=n_groups)
    size = np.bincount(flat, minlength=n_groups)
    per_group = gain_sum / size * disc_sum
    row_of_group = np.repeat(np.arange(n), K)[np.r_[0, np.flatnonzero(np.diff(flat)) + 1]] if n else np.empty(0, int)
    return np.bincount(row_of_group, weights=per_group, minlength=n)


def category_ndcg(p, q, k: int) -> np.ndarray:
    """NDCG@k = DCG@k(rank by p, gain q) / DCG@k(rank by q, gain q), DCG = sum_{r<=k} q_(r) / log2(r + 1), ties in p averaged."""
    p, q = as_pq(p, q)
    k = check_k(k)
    dcg = category_dcg(p, q, k)
    ideal = -np.sort(-q, axis=1) @ discounts(q.shape[1], k)
    return dcg / ideal  # q sums to 1, so its top gain (and the ideal DCG) is > 0
