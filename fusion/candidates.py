"""Candidate sets per test case (target = the user's first held-out item).

- ``neg99`` / ``neg999``: the target plus 99 / 999 seeded negatives drawn uniformly from
  items the user never interacted with (train or held-out: true negatives, as in the paper
  and RecBole's sampled evaluation). A user who has interacted with almost the whole
  catalogue gets all remaining items; ``short_sets`` counts such cases.
- ``retrieval``: Faiss top-N over item embeddings queried with the backbone's user
  representation, train-window items removed. The target is in the set only when retrieved
  (``recall@N``); a missed target scores 0 for base and fused alike.

A candidate set is an (n_cases, C) int array of item indices with ``-1`` padding; column 0
is not special (the target's position is found by value).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np

from spectra_rec.data.split import Split
from spectra_rec.errors import ConfigError, DataError

log = logging.getLogger(__name__)

CANDIDATE_SETS = ("neg99", "neg999", "retrieval")
FAISS_INDEXES = ("flat", "hnsw", "ivf")


@dataclass(frozen=True, eq=False)
class Candidates:
    name: str
    users: np.ndarray
    """(n,) dataset user index of each case."""
    targets: np.ndarray
    """(n,) target item index."""
    items: np.ndarray
    """(n, C) candidate item indices, -1 = padding."""
    info: dict

    @property
    def mask(self) -> np.ndarray:
        return self.items >= 0

    @property
    def target_found(self) -> np.ndarray:
        return (self.items == self.targets[:, None]).any(axis=1)


def sampled_negatives(split: Split, users: np.ndarray, n_neg: int, seed: int, name: str | None = None) -> Candidates:
    """Target + ``n_neg`` uniform negatives the user never interacted with (seeded per run)."""
    if n_neg < 1:
        raise ConfigError(f"number of negatives must be >= 1, got {n_neg}")
    n_items = split.dataset.n_items
    rng = np.random.default_rng(seed)
    targets = split.targets[users]
    items = np.full((len(users), n_neg + 1), -1, dtype=np.int64)
    items[:, 0] = targets
    short = 0
    for r, u in enumerate(users):
        seen = np.zeros(n_items, dtype=bool)
        seen[split.item[split.ptr[u] : split.ptr[u + 1]]] = True
        pool = np.flatnonzero(~seen)
        if len(pool) <= n_neg:
            negs = pool
            short += 1
        else:
            negs = rng.choice(pool, size=n_neg, replace=False)
        items[r, 1 : 1 + len(negs)] = negs
    if short:
        log.warning("%s: %d case(s) have fewer than %d negatives available (all taken)", name, short, n_neg)
    return Candidates(name or f"neg{n_neg}", users, targets, items, {"negatives": n_neg, "short_sets": short})


def build_index(item_emb: np.ndarray, kind: str = "flat", hnsw_m: int = 32, ivf_lists: int | None = None):
    """A Faiss inner-product index over item embeddings: exact ``flat``, or approximate ``hnsw`` / ``ivf``."""
    import faiss

    if kind not in FAISS_INDEXES:
        raise ConfigError(f"unknown Faiss index {kind!r}; options: {list(FAISS_INDEXES)}")
    x = np.ascontiguousarray(item_emb, dtype=np.float32)
    d = x.shape[1]
    if kind == "flat":
        index = faiss.IndexFlatIP(d)  # the only exact maximum-inner-product search
    elif kind == "hnsw":
        index = faiss.IndexHNSWFlat(d, hnsw_m, faiss.METRIC_INNER_PRODUCT)
    else:
        nlist = ivf_lists or max(1, int(np.sqrt(len(x))))
        quantizer = faiss.IndexFlatIP(d)
        index = faiss.IndexIVFFlat(quantizer, d, nlist, faiss.METRIC_INNER_PRODUCT)
        index.train(x)
    index.add(x)
    return index


def search(index, queries: np.ndarray, k: int, ef_search: int = 256, nprobe: int | None = None):
    """Top-k item indices and scores; HNSW/IVF search parameters are set here."""
    import faiss

    if hasattr(index, "hnsw"):
        index.hnsw.efSearch = max(ef_search, k)
    if isinstance(index, faiss.IndexIVF):
        index.nprobe = nprobe or index.nlist
    scores, ids = index.search(np.ascontiguousarray(queries, dtype=np.float32), k)
    return ids, scores


def retrieval_candidates(
    split: Split,
    users: np.ndarray,
    user_repr: np.ndarray,
    item_emb: np.ndarray,
    top_n: int = 200,
    index_kind: str = "flat",
    ef_search: int = 256,
    nprobe: int | None = None,
) -> Candidates:
    """Faiss top-N per user with the user's train-window items removed; reports recall@N of the target."""
    if top_n < 1:
        raise ConfigError(f"retrieval top-N must be >= 1, got {top_n}")
    n_items = split.dataset.n_items
    # Faiss asserts (a traceback) on a width mismatch; the shapes come from a backbone's exported arrays
    if item_emb.ndim != 2 or item_emb.shape[0] != n_items:
        raise DataError(f"retrieval: item embeddings must be ({n_items} items, H), got {item_emb.shape}")
    if user_repr.ndim != 2 or user_repr.shape[1] != item_emb.shape[1]:
        raise DataError(f"retrieval: user representations {user_repr.shape} and item embeddings {item_emb.shape} "
                        "must have the same width")
    index = build_index(item_emb, index_kind)
    max_hist = int(split.n_train[users].max()) if len(users) else 0
    k = min(n_items, top_n + max_hist)
    ids, _ = search(index, user_repr[users], k, ef_search, nprobe)
    items = np.full((len(users), top_n), -1, dtype=np.int64)
    for r, u in enumerate(users):
        hist = split.train_items(u)
        row = ids[r][ids[r] >= 0]
        row = row[~np.isin(row, hist)][:top_n]
        items[r, : len(row)] = row
    targets = split.targets[users]
    cands = Candidates("retrieval", users, targets, items, {"top_n": top_n, "index": index_kind})
    recall = float(cands.target_found.mean()) if len(users) else float("nan")
    cands.info[f"recall@{top_n}"] = recall
    log.info("retrieval (%s, top %d): target recall %.3f", index_kind, top_n, recall)
    return cands


def index_recall(item_emb: np.ndarray, queries: np.ndarray, k: int, kind: str, **search_args) -> float:
    """Recall@k of an approximate index against exact IndexFlatIP on the same queries."""
    exact, _ = search(build_index(item_emb, "flat"), queries, k)
    approx, _ = search(build_index(item_emb, kind), queries, k, **search_args)
    hits = [len(np.intersect1d(a[a >= 0], e)) for a, e in zip(approx, exact)]
    return float(np.sum(hits) / exact.size)
