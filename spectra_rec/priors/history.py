"""History priors (paper Appendix E diagnostics): built from each user's train window only.

Registered by name; :func:`history_prior` builds one as a :class:`PriorTable` for every
user with a train window. ``oracle`` reads the held-out window and is available only by
its explicit name; its table is marked ``uses_heldout`` so every report labels it.

A context-window variant ``NAME@N`` (``uhf@10``) builds a per-user count prior from each
user's last N train items only, the history-prior side of the paper's context-window sweep
(the SPECTRA side is ``spectra-rec probe --max-items N``).

``uhf-decay`` is the strongest history baseline: recency weights decay^(age in items), mixed
with popularity by a shrinkage weight (both chosen on the dev cohort).
"""

from __future__ import annotations

from typing import Callable

import numpy as np
import scipy.sparse as sp

from spectra_rec.data.split import Split, normalize_rows
from spectra_rec.errors import ConfigError
from spectra_rec.priors.table import PriorTable


def _mass(split: Split, window: int | None) -> np.ndarray:
    return split.train_mass if window is None else split.recent_train_mass(window)


def uhf(split: Split, window: int | None = None) -> np.ndarray:
    """UHF: p_u(c) = sum over train items (the last ``window`` when given) of m(i, c), normalized."""
    return normalize_rows(_mass(split, window))


def uhf_laplace(split: Split, alpha: float = 1.0, window: int | None = None) -> np.ndarray:
    """Laplace UHF: p_u(c) = (n_u(c) + alpha) / (n_u + K * alpha), counts over the last ``window`` train items when given."""
    mass = _mass(split, window)
    return (mass + alpha) / (mass.sum(axis=1, keepdims=True) + mass.shape[1] * alpha)


def markov(split: Split, alpha: float = 1.0) -> np.ndarray:
    """First-order Markov: p_u = m(last train item) @ T, T[c, c'] ~ sum over consecutive train pairs m(i,c) m(j,c') + alpha."""
    ds = split.dataset
    M = ds.membership
    rows = split.is_train.copy()
    nxt = np.flatnonzero(rows[1:] & rows[:-1] & (split.user[1:] == split.user[:-1]))
    T = np.asarray((M[split.item[nxt]].T @ M[split.item[nxt + 1]]).todense()) + alpha
    T /= T.sum(axis=1, keepdims=True)
    out = np.full((ds.n_users, ds.K), 1.0 / ds.K)
    has = split.n_train > 0
    last = split.item[split.ptr[:-1][has] + split.n_train[has] - 1]
    start = np.asarray(M[last].todense())
    # an uncategorized last item has an all-zero membership row: fall back to uniform
    start = normalize_rows(start)
    out[has] = start @ T
    return out


def popularity(split: Split) -> np.ndarray:
    """Global popularity: every user gets the train-window category mass of all users, normalized."""
    pop = split.category_train_mass / split.category_train_mass.sum()
    return np.tile(pop, (split.dataset.n_users, 1))


def uniform(split: Split) -> np.ndarray:
    """Uniform: p_u(c) = 1 / K."""
    K = split.dataset.K
    return np.full((split.dataset.n_users, K), 1.0 / K)


UHF_DECAY = 0.97
"""Default recency decay of ``uhf-decay``: chosen on the ml-100k dev cohort by ``benchmarks/tune_uhf_decay.py``."""
UHF_DECAY_SHRINK = 0.4
"""Default popularity share of ``uhf-decay`` (same script, same dev cohort)."""


def uhf_decay(split: Split, decay: float = UHF_DECAY, shrink: float = UHF_DECAY_SHRINK) -> np.ndarray:
    """Recency-weighted UHF shrunk to popularity: p_u = (1 - shrink) * norm(sum_i decay^age(i) m(i, ·)) + shrink * pop.

    age(i) = 0 for the user's last train item, 1 for the one before, ... (in items, not time).
    """
    if not 0.0 < decay <= 1.0:
        raise ConfigError(f"uhf-decay: decay must be in (0, 1], got {decay}")
    if not 0.0 <= shrink <= 1.0:
        raise ConfigError(f"uhf-decay: shrink must be in [0, 1], got {shrink}")
    ds = split.dataset
    rows = np.flatnonzero(split.is_train)
    age = split.n_train[split.user[rows]] - 1 - split.position()[rows]
    weights = sp.csr_matrix((decay ** age.astype(np.float64), (split.user[rows], split.item[rows])),
                            shape=(ds.n_users, ds.n_items))
    mass = np.asarray((weights @ ds.membership).todense())
    pop = split.category_train_mass / split.category_train_mass.sum()
    has = mass.sum(axis=1) > 0
    out = np.tile(pop, (ds.n_users, 1))
    out[has] = (1 - shrink) * normalize_rows(mass[has]) + shrink * pop
    return out


def oracle(split: Split) -> np.ndarray:
    """Oracle (diagnostic, uses held-out data): p_u = q_u, the long-term ground truth."""
    out = uniform(split)
    out[split.eval_users] = split.ground_truth()
    return out


HISTORY_PRIORS: dict[str, Callable[[Split], np.ndarray]] = {
    "uhf": uhf,
    "uhf-laplace": uhf_laplace,
    "uhf-decay": uhf_decay,
    "markov": markov,
    "popularity": popularity,
    "uniform": uniform,
    "oracle": oracle,
}
"""Registered history priors; ``oracle`` reads held-out data and is labelled as such."""

WINDOWED = ("uhf", "uhf-laplace")
"""History priors that take a context window (``uhf@10``): the per-user count priors."""


def parse_history_spec(spec: str) -> tuple[str, int | None]:
    """``"uhf"`` -> ("uhf", None); ``"uhf@10"`` -> ("uhf", 10); ConfigError for anything else."""
    name, at, window = spec.partition("@")
    if name not in HISTORY_PRIORS:
        raise ConfigError(f"unknown prior {spec!r}; history priors: {sorted(HISTORY_PRIORS)} "
                          f"(and {'/'.join(WINDOWED)}@N for the last N train items)")
    if not at:
        return name, None
    if name not in WINDOWED:
        raise ConfigError(f"prior {spec!r}: only {list(WINDOWED)} take a context window @N")
    if not window.isdigit() or int(window) < 1:
        raise ConfigError(f"prior {spec!r}: the context window after '@' must be an integer >= 1")
    return name, int(window)


def is_history_spec(spec: str) -> bool:
    """Whether ``spec`` is meant as a history prior (``NAME`` or ``NAME@...``); parse_history_spec validates it."""
    return spec.partition("@")[0] in HISTORY_PRIORS


def history_prior(split: Split, method: str) -> PriorTable:
    """Build the named history prior (``uhf``, ``uhf@10``, ...) for every user with a train window."""
    name, window = parse_history_spec(method)
    fn = HISTORY_PRIORS[name]
    probs = fn(split) if window is None else fn(split, window=window)
    users = np.flatnonzero(split.n_train > 0)
    ds = split.dataset
    meta = {
        "method": method,
        "model": None,
        "dataset": ds.name,
        "taxonomy": "flat" if ds.taxonomy is None else "L2",
        "template_version": None,
        "split_ratio": split.ratio,
        "uses_heldout": name == "oracle",
        "context_window": window,
    }
    return PriorTable(ds.user_ids[users], ds.categories, probs[users], meta, source=f"prior {method!r}")
