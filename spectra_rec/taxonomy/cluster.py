"""Faiss k-means over item vectors, and the placement of items the train windows never saw."""

from __future__ import annotations

import logging

import numpy as np

log = logging.getLogger(__name__)


def kmeans(X: np.ndarray, k: int, seed: int = 0, niter: int = 50, nredo: int = 3) -> tuple[np.ndarray, np.ndarray]:
    """Spherical k-means (Faiss): (assignment of each row, (k, d) unit centroids); rows should be unit vectors."""
    import faiss

    X = np.ascontiguousarray(X, dtype=np.float32)
    n, d = X.shape
    if not 1 <= k <= n:
        raise ValueError(f"k-means: k must be in [1, {n}], got {k}")
    # min_points_per_centroid=1: small catalogues are legitimate here (Faiss would only warn)
    km = faiss.Kmeans(d, k, niter=niter, nredo=nredo, seed=int(seed), spherical=True, verbose=False,
                      min_points_per_centroid=1, max_points_per_centroid=max(256, n))
    km.train(X)
    _, assign = km.index.search(X, 1)
    return assign.ravel().astype(np.int64), np.asarray(km.centroids, dtype=np.float64)


def place_cold_items(groups: list[list[int]], cold: np.ndarray, profile: np.ndarray, warm_weight: np.ndarray) -> list[list[int]]:
    """Give each cold item (never in a train window) the group whose members' ``profile`` is closest (cosine).

    ``profile`` is a per-item side vector (the source categories' membership rows), ``warm_weight``
    the train count of each item; a group's profile is the count-weighted mean of its warm members.
    Cold items join one group each; groups are left unchanged for warm items.
    """
    n_groups = 1 + max((g for gs in groups for g in gs), default=-1)
    if not len(cold) or n_groups == 0:
        return groups
    G = np.zeros((n_groups, profile.shape[1]))
    for i, gs in enumerate(groups):
        if gs and warm_weight[i] > 0:
            for g in gs:
                G[g] += warm_weight[i] * profile[i] / len(gs)
    Gn = G / np.maximum(np.linalg.norm(G, axis=1, keepdims=True), 1e-12)
    P = profile[cold]
    Pn = P / np.maximum(np.linalg.norm(P, axis=1, keepdims=True), 1e-12)
    sizes = np.array([sum(g in gs for gs in groups) for g in range(n_groups)], dtype=np.float64)
    # ties (an item without side categories): the largest group, then the lowest index
    score = Pn @ Gn.T + 1e-9 * sizes / max(sizes.max(), 1.0)
    best = np.argmax(score, axis=1)
    out = [list(gs) for gs in groups]
    for i, g in zip(cold, best):
        out[int(i)] = [int(g)]
    return out
