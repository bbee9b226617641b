"""Blend a base ranker's scores with a category prior (docs/formulas.md, "Fusion").

fused(u, i) = (1 - w) * norm(base(u, i)) + w * norm(a(u, i)),  a(u, i) = sum_c p_u(c) m(i, c),
with the same per-user normalization over the candidate set for both terms. Every
normalization is strictly increasing within a row, so w = 0 keeps the base ranking exactly.
Candidate matrices use ``-1`` for padding; padded entries come out as -inf.

Fusion rules are registered by name in :data:`FUSION_RULES` (``linear`` is the blend above). A
rule is ``rule(base, aff, w, mask, normalization) -> fused`` over (n, C) matrices; its contract
(w = 0 keeps the base ranking, the candidate set is kept, padding is -inf) is the test mixin
:class:`spectra_rec.testing.fusion.FusionRuleTests`, which a new rule's tests subclass.
"""

from __future__ import annotations

from typing import Callable

import numpy as np
import scipy.sparse as sp

from spectra_rec.errors import ConfigError, PriorTableError


def _masked(x: np.ndarray, mask: np.ndarray, fill: float) -> np.ndarray:
    return np.where(mask, x, fill)


def norm_minmax(x: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """(x - min) / (max - min) per row; a constant row maps to 0."""
    lo = _masked(x, mask, np.inf).min(axis=1, keepdims=True)
    hi = _masked(x, mask, -np.inf).max(axis=1, keepdims=True)
    span = np.where(hi > lo, hi - lo, 1.0)
    return (x - lo) / span


def norm_zscore(x: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """(x - mean) / std per row over the candidates; a constant row maps to 0."""
    n = mask.sum(axis=1, keepdims=True).clip(min=1)
    mean = _masked(x, mask, 0.0).sum(axis=1, keepdims=True) / n
    var = (_masked(x - mean, mask, 0.0) ** 2).sum(axis=1, keepdims=True) / n
    std = np.sqrt(var)
    return (x - mean) / np.where(std > 0, std, 1.0)


def norm_softmax(x: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """exp(x - max) / sum exp(x - max) per row over the candidates."""
    hi = _masked(x, mask, -np.inf).max(axis=1, keepdims=True)
    e = np.where(mask, np.exp(np.clip(x - hi, -700.0, 0.0)), 0.0)
    return e / e.sum(axis=1, keepdims=True).clip(min=np.finfo(float).tiny)


def norm_rank(x: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Average rank / n per row (ties share their mean rank), in (0, 1]."""
    from scipy.stats import rankdata

    filled = _masked(x, mask, -np.inf)
    ranks = rankdata(filled, axis=1, method="average")
    n_pad = (~mask).sum(axis=1, keepdims=True)
    n = mask.sum(axis=1, keepdims=True).clip(min=1)
    return (ranks - n_pad) / n


NORMALIZATIONS: dict[str, Callable[[np.ndarray, np.ndarray], np.ndarray]] = {
    "minmax": norm_minmax,
    "zscore": norm_zscore,
    "softmax": norm_softmax,
    "rank": norm_rank,
}
"""Registered per-user normalizations (strictly increasing within a row)."""


def get_normalization(name: str):
    if name not in NORMALIZATIONS:
        raise ConfigError(f"unknown normalization {name!r}; options: {sorted(NORMALIZATIONS)}")
    return NORMALIZATIONS[name]


def check_w(w: float) -> float:
    w = float(w)
    if not (0.0 <= w <= 1.0) or np.isnan(w):
        raise ConfigError(f"fusion weight w must be in [0, 1], got {w}")
    return w


def affinity(prior: np.ndarray, membership, items: np.ndarray) -> np.ndarray:
    """a(u, i) = sum_c p_u(c) m(i, c) for each candidate item (padding -> 0).

    ``prior`` is (n, K), ``membership`` (n_items, K) dense or sparse, ``items`` (n, C).
    """
    M = membership.toarray() if sp.issparse(membership) else np.asarray(membership)
    safe = np.maximum(items, 0)
    out = np.einsum("nk,nck->nc", prior, M[safe])
    return np.where(items >= 0, out, 0.0)


def blend(base: np.ndarray, aff: np.ndarray, w: float, mask: np.ndarray, normalization: str = "minmax") -> np.ndarray:
    """The ``linear`` rule: (1 - w) * norm(base) + w * norm(aff) per row; padded entries -> -inf."""
    w = check_w(w)
    norm = get_normalization(normalization)
    if w == 0.0:
        fused = norm(base, mask)
    elif w == 1.0:
        fused = norm(aff, mask)
    else:
        fused = (1.0 - w) * norm(base, mask) + w * norm(aff, mask)
    return np.where(mask, fused, -np.inf)


FusionRule = Callable[[np.ndarray, np.ndarray, float, np.ndarray, str], np.ndarray]
"""``rule(base, aff, w, mask, normalization) -> fused``: (n, C) matrices, padding (``~mask``) -> -inf."""

FUSION_RULES: dict[str, FusionRule] = {}
"""Registered fusion rules by name."""


def register_fusion_rule(name: str, rule: FusionRule) -> FusionRule:
    """Add ``rule`` under ``name``; a name that is already taken is an error, not a silent replacement."""
    if name in FUSION_RULES:
        raise ConfigError(f"fusion rule {name!r} is already registered; registered: {sorted(FUSION_RULES)}")
    FUSION_RULES[name] = rule
    return rule


def get_fusion_rule(name: str) -> FusionRule:
    if name not in FUSION_RULES:
        raise ConfigError(f"unknown fusion rule {name!r}; options: {sorted(FUSION_RULES)}")
    return FUSION_RULES[name]


register_fusion_rule("linear", blend)


def fuse_scores(
    base_scores: np.ndarray,
    item_membership,
    prior,
    w: float,
    normalization: str = "minmax",
    items: np.ndarray | None = None,
    rule: str = "linear",
) -> np.ndarray:
    """Fuse an external ranker's scores with a category prior: the integration API.

    ``base_scores``: (users, C) scores of C candidate items per user (NaN marks a missing candidate).
    ``item_membership``: (C, K) membership of each candidate column (shared by all users), or
    (n_items, K) together with ``items`` (users, C) item indices per user.
    ``prior``: (users, K) array whose rows are distributions, or a :class:`PriorTable` aligned
    row by row with ``base_scores`` (its categories must be the membership's columns).
    ``rule``: a name in :data:`FUSION_RULES`.
    Returns the (users, C) fused scores; higher is better.
    """
    from spectra_rec.metrics.validate import as_distributions
    from spectra_rec.priors.table import PriorTable

    base = np.asarray(base_scores, dtype=np.float64)
    if base.ndim != 2:
        raise ConfigError(f"base_scores must be a (users, candidates) matrix, got shape {base.shape}")
    P = prior.probs if isinstance(prior, PriorTable) else np.asarray(prior, dtype=np.float64)
    if P.shape[0] != base.shape[0]:
        raise PriorTableError(f"prior has {P.shape[0]} rows but base_scores has {base.shape[0]} users")
    try:
        as_distributions(P, "prior")
    except ValueError as exc:
        raise PriorTableError(str(exc)) from None
    M = item_membership.toarray() if sp.issparse(item_membership) else np.asarray(item_membership, dtype=np.float64)
    if M.shape[1] != P.shape[1]:
        raise PriorTableError(f"prior has {P.shape[1]} categories but item_membership has {M.shape[1]} columns")
    if items is None:
        if M.shape[0] != base.shape[1]:
            raise ConfigError(
                f"item_membership has {M.shape[0]} rows but base_scores has {base.shape[1]} candidate columns"
            )
        items = np.broadcast_to(np.arange(base.shape[1]), base.shape)
    mask = np.isfinite(base) & (np.asarray(items) >= 0)
    aff = affinity(P, M, np.where(mask, items, -1))
    return get_fusion_rule(rule)(np.where(mask, base, 0.0), aff, w, mask, normalization)
