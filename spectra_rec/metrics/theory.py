"""Theorem 1 per-user check and the Lemma 1 floor for uniform-on-top-k DG (paper 3.3, Appendix F).

Theorem 1: with eps = max_c |p(c) - q(c)| and gap_k = q_(k) - q_(k+1), if gap_k > 2 eps and
DG's list S_DG differs from the true top-k T_k, then p's top-k equals T_k and
M_k(p) = q(T_k) > q(S_DG) = M_k(DG).

Lemma 1: a DG distribution supported on S has TV(p_DG, q) >= delta = q(C \\ S). Coarsening
to the event {S, C \\ S} cannot raise JS (data processing), so
JS(p_DG, q) >= JS((1, 0), (1 - delta, delta)) = h(delta / 2) - h(delta) / 2  (bits),
h the binary entropy; equality when q is proportional to p_DG on S (e.g. uniform on S).
"""

from __future__ import annotations

import numpy as np

from spectra_rec.metrics.validate import as_distributions, as_pq, check_k

__all__ = [
    "binary_entropy",
    "dg_js_floor",
    "outside_mass",
    "theorem1_check",
    "topk_mask",
    "uniform_on_topk",
]


def topk_mask(p, k: int) -> np.ndarray:
    """Boolean (n, K): the k largest entries of each row (ties broken by lower column index)."""
    p = np.asarray(p, dtype=float)
    k = min(check_k(k), p.shape[1])
    idx = np.argsort(-p, axis=1, kind="stable")[:, :k]
    out = np.zeros(p.shape, dtype=bool)
    np.put_along_axis(out, idx, True, axis=1)
    return out


def uniform_on_topk(p, k: int) -> np.ndarray:
    """p_DG(c) = 1/k on the top-k categories of p (ties by column index), 0 elsewhere: the DG readout shape."""
    p = as_distributions(p, "p")
    k = min(check_k(k), p.shape[1])
    return topk_mask(p, k) / k


def outside_mass(q, support) -> np.ndarray:
    """delta_u = sum_{c not in S_u} q_u(c): the true mass outside a list or support S_u."""
    q = as_distributions(q, "q")
    s = np.asarray(support, dtype=bool)
    if s.shape != q.shape:
        raise ValueError(f"support: expected shape {q.shape}, got {s.shape}")
    return (q * ~s).sum(axis=1)


def binary_entropy(x) -> np.ndarray:
    """h(x) = -x log2 x - (1 - x) log2 (1 - x), h(0) = h(1) = 0."""
    x = np.asarray(x, dtype=float)
    out = np.zeros_like(x)
    inner = (x > 0) & (x < 1)
    xi = x[inner]
    out[inner] = -xi * np.log2(xi) - (1 - xi) * np.log2(1 - xi)
    return out


def dg_js_floor(q, p_dg) -> np.ndarray:
    """Lemma 1 floor per user: JS(p_DG, q) >= h(delta/2) - h(delta)/2 with delta = q mass outside supp(p_DG)."""
    p_dg, q = as_pq(p_dg, q, "p_dg", "q")
    delta = outside_mass(q, p_dg > 0)
    return binary_entropy(delta / 2) - binary_entropy(delta) / 2


def theorem1_check(p, q, p_dg, k: int) -> dict[str, np.ndarray]:
    """Per user: eps, gap_k, DG miss (top-k(p_DG) != T_k), favourable = gap_k > 2 eps and miss, p recovers T_k, M_k(p), M_k(DG)."""
    p, q = as_pq(p, q)
    p_dg, _ = as_pq(p_dg, q, "p_dg", "q")
    k = check_k(k)
    K = q.shape[1]
    if k >= K:
        raise ValueError(f"k: Theorem 1 needs k < K = {K} (a gap q_(k) - q_(k+1)), got {k}")
    eps = np.abs(p - q).max(axis=1)
    qs = -np.sort(-q, axis=1)
    gap = qs[:, k - 1] - qs[:, k]
    true_top = topk_mask(q, k)
    p_top = topk_mask(p, k)
    dg_top = topk_mask(p_dg, k)
    dg_miss = (dg_top != true_top).any(axis=1)
    favourable = (gap > 2 * eps) & dg_miss
    return {
        "eps": eps,
        "gap": gap,
        "dg_miss": dg_miss,
        "favourable": favourable,
        "p_recovers": (p_top == true_top).all(axis=1),
        "mass_p": (q * p_top).sum(axis=1),
        "mass_dg": (q * dg_top).sum(axis=1),
    }
