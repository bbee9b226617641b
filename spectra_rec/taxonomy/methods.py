"""Induction methods, registered by name: each turns item vectors into L2 groups of items.

A method is ``fn(ctx) -> Induced``; adding one is :func:`register_method` in this file (the CLI,
the stage and the contract tests in ``tests/test_taxonomy.py`` pick it up from :data:`METHODS`).
Every method reads item vectors from ``ctx`` (train-window co-occurrence factors or backbone
embeddings), groups the warm items (at least one train interaction) and leaves cold items to
:func:`finish`, which places them by their source categories and renumbers non-empty groups.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from functools import cached_property
from typing import Callable

import numpy as np

from spectra_rec.data.split import Split
from spectra_rec.errors import ConfigError

log = logging.getLogger(__name__)


@dataclass(frozen=True, eq=False)
class Induced:
    """L2 groups over the items, before naming."""

    groups: list[list[int]]
    """Per item (dataset index), its L2 group ids 0..K-1 (one for clusters, up to ``sae_topk`` for SAE intents)."""
    centroids: np.ndarray
    """(K, d) unit direction of each group in the vector space (L1 clustering reads it)."""
    typicality: np.ndarray
    """(n_items, K) how typical item i is of group c (cosine to the centroid, or the SAE activation); 0 off-group."""
    info: dict = field(default_factory=dict)
    """Diagnostics for the manifest (dead / duplicate features, empty clusters, cold items)."""

    @property
    def K(self) -> int:  # noqa: N802 - the paper's symbol
        return len(self.centroids)


@dataclass(eq=False)
class Context:
    """What a method may read: the split (train windows only), the configuration, lazily built vectors."""

    split: Split
    config: object
    embeddings: np.ndarray | None = None
    """Backbone item embeddings when the configuration asks for them (loaded by the stage)."""

    @cached_property
    def cooc(self) -> np.ndarray:
        from spectra_rec.taxonomy.factors import cooc_factors

        return cooc_factors(self.split, self.config.dim, self.config.seed)

    def vectors(self, kind: str) -> np.ndarray:
        """``cooc`` factors or ``embedding`` rows (unit-normalized)."""
        from spectra_rec.taxonomy.factors import unit_rows

        if kind == "cooc":
            return self.cooc
        if self.embeddings is None:
            raise ConfigError("this method needs item embeddings (--embeddings FILE or a cached backbone)")
        return unit_rows(self.embeddings)

    @cached_property
    def warm(self) -> np.ndarray:
        """Items with at least one train-window interaction."""
        return np.flatnonzero(self.split.item_train_counts > 0)


METHODS: dict[str, Callable[[Context], Induced]] = {}
"""Registered induction methods by name."""


def register_method(name: str):
    """Decorator registering an induction method under ``name`` (a duplicate name is an error)."""

    def deco(fn):
        if name in METHODS:
            raise ValueError(f"induction method {name!r} is already registered")
        METHODS[name] = fn
        return fn

    return deco


def _clusters(ctx: Context, X: np.ndarray) -> Induced:
    from spectra_rec.taxonomy.cluster import kmeans

    cfg = ctx.config
    warm = ctx.warm
    if cfg.k > len(warm):
        raise ConfigError(f"--k {cfg.k} is above the number of items seen in the train windows ({len(warm)})")
    assign, centroids = kmeans(X[warm], cfg.k, cfg.seed, cfg.niter, cfg.nredo)
    groups = [[] for _ in range(X.shape[0])]
    for i, g in zip(warm, assign):
        groups[int(i)] = [int(g)]
    typ = np.zeros((X.shape[0], cfg.k))
    typ[warm, assign] = np.einsum("nd,nd->n", X[warm], centroids[assign])
    return finish(ctx, groups, centroids, typ, {})


@register_method("cooc")
def cooc(ctx: Context) -> Induced:
    """Spherical k-means (Faiss) on the train-window co-occurrence factors."""
    return _clusters(ctx, ctx.vectors("cooc"))


@register_method("embedding")
def embedding(ctx: Context) -> Induced:
    """Spherical k-means (Faiss) on a backbone's item embeddings."""
    return _clusters(ctx, ctx.vectors("embedding"))


@register_method("sae")
def sae(ctx: Context) -> Induced:
    """TopK SAE intents: each warm item's active features (at most ``sae_topk``) are its categories."""
    from spectra_rec.taxonomy.sae import train_topk_sae

    cfg = ctx.config
    X = ctx.vectors(cfg.sae_input)
    warm = ctx.warm
    res = train_topk_sae(X[warm], cfg.k, cfg.sae_topk, cfg.sae_epochs, cfg.sae_lr, cfg.sae_batch, cfg.seed,
                         cfg.duplicate_cosine)
    groups = [[] for _ in range(X.shape[0])]
    typ = np.zeros((X.shape[0], cfg.k))
    for r, i in enumerate(warm):
        active = np.flatnonzero(res.codes[r] > 0)
        groups[int(i)] = [int(g) for g in active[np.argsort(-res.codes[r, active], kind="stable")]]
        typ[i, active] = res.codes[r, active]
    info = {
        "sae": {
            "features": cfg.k,
            "topk": cfg.sae_topk,
            "input": cfg.sae_input,
            "dead_features": [int(f) for f in res.dead],
            "n_dead": int(len(res.dead)),
            "duplicates": [{"features": [a, b], "decoder_cosine": round(c, 4)} for a, b, c in res.duplicates],
            "n_duplicates": len(res.duplicates),
            "reconstruction_mse": res.mse,
            "explained_variance": res.explained,
            "items_without_active_feature": int(sum(1 for i in warm if not groups[int(i)])),
        }
    }
    log.info("sae: %d of %d features dead, %d duplicate pair(s) (decoder cosine >= %.2f), explained variance %.3f",
             len(res.dead), cfg.k, len(res.duplicates), cfg.duplicate_cosine, res.explained)
    if len(res.dead) > cfg.k / 2:
        log.warning("sae: %d of %d features are dead (more than half); the vocabulary keeps the %d live ones "
                    "(try a smaller --k or a larger --sae-topk)", len(res.dead), cfg.k, cfg.k - len(res.dead))
    # a warm item whose code is all zero (every pre-activation <= 0) gets the live feature nearest to it
    live = np.setdiff1d(np.arange(cfg.k), res.dead)
    nearest = live[np.argmax(X[warm] @ res.decoder[live].T, axis=1)]
    for r, i in enumerate(warm):
        if not groups[int(i)]:
            groups[int(i)] = [int(nearest[r])]
    # a live feature's direction in item space: the activation-weighted mean of its items
    C = res.codes.T @ X[warm]
    return finish(ctx, groups, C, typ, info)


def finish(ctx: Context, groups: list[list[int]], directions: np.ndarray, typ: np.ndarray, info: dict) -> Induced:
    """Place cold items by their source categories, drop empty groups, renumber 0..K-1, normalize directions."""
    from spectra_rec.taxonomy.cluster import place_cold_items
    from spectra_rec.taxonomy.factors import unit_rows

    split = ctx.split
    counts = split.item_train_counts.astype(np.float64)
    cold = np.flatnonzero(counts == 0)
    profile = np.asarray(split.dataset.membership.todense())
    groups = place_cold_items(groups, cold, profile, counts)
    used = sorted({g for gs in groups for g in gs})
    empty = sorted(set(range(len(directions))) - set(used))
    remap = {g: j for j, g in enumerate(used)}
    groups = [[remap[g] for g in gs] for gs in groups]
    info = info | {"requested_k": int(len(directions)), "k": len(used), "empty_groups": len(empty),
                   "cold_items": int(len(cold))}
    if empty:
        log.info("%d of %d groups hold no item and are dropped", len(empty), len(directions))
    return Induced(groups, unit_rows(np.asarray(directions)[used]), typ[:, used], info)
