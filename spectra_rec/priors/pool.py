"""Log-linear pooling of prior tables: ``A*B`` pools a SPECTRA readout with a history prior, weights fitted on dev.

p_u(c) ∝ prod_i (p_i,u(c) + floor) ** w_i. The weights minimise the mean per-user JS to the
long-term held-out truth over the *dev* cohort (the seeded users ``spectra-rec evaluate --cohort
dev`` reports on; the reported cohort is never read) and absorb each component's temperature, so
the components need no ``--tau auto`` of their own. A readout that sees the item texts and the
last items of a user and a history prior that counts the whole train window carry different
evidence; a product of the two keeps what each knows (a mixture would average it away).
The weights, the dev cohort and each component's dev JS go into the table's metadata (``pool``).

The pool-only part ``exposure`` (``spectra-name*uhf*exposure``) adds popularity with a fixed negative
weight, p ∝ prod_i (p_i + floor)^w_i * (pop + floor)^-c: c is the smallest of ``CONTRASTS`` at which
the pool, its weights refitted on dev JS at that c, ranks the categories of the dev users' top 3 at
least as diversely as UHF does (top-3 exposure entropy). The JS-best pool puts the head categories in
most users' top 3; this one buys UHF's spread of exposure with as little dev JS as the grid allows.
"""

from __future__ import annotations

import logging

import numpy as np

from spectra_rec.errors import ConfigError
from spectra_rec.priors.table import PriorTable

logger = logging.getLogger(__name__)

POOL_SEPARATOR = "*"
"""``spectra-name*uhf-decay``: the prior spec of a pool of the specs on either side."""

FLOOR = 1e-4
"""Added to every component before the log, so that a category a history never showed is not vetoed."""


EXPOSURE_PART = "exposure"
"""The pool-only part that divides by popularity until the pool's dev exposure matches the reference's."""

EXPOSURE_REFERENCE = "uhf"
"""The history prior whose dev top-3 exposure entropy the ``exposure`` part reaches."""

EXPOSURE_K = 3
"""The list length of that exposure entropy."""

CONTRASTS = np.round(np.arange(0.0, 3.0 + 1e-9, 0.05), 2)
"""The contrasts c tried, smallest first; the first that reaches the reference is kept."""

PROVENANCE = ("method", "model", "adapter_manifest_hash", "template_version", "tau", "backend", "max_items")
"""Metadata of each component kept in the pool's own (``pool.provenance``)."""


def is_pool_spec(spec: str) -> bool:
    return POOL_SEPARATOR in spec


def pool_parts(spec: str, flag: str = "--prior") -> list[str]:
    """The component specs of ``A*B[*C...]``; a clear error for an empty or single part."""
    parts = [p.strip() for p in spec.split(POOL_SEPARATOR)]
    if len(parts) < 2 or not all(parts):
        raise ConfigError(f"{flag} {spec!r}: a pool needs two or more prior specs joined by {POOL_SEPARATOR!r}, "
                          "e.g. spectra-name*uhf-decay")
    return parts


def log_pool(probs, weights, floor: float = FLOOR, offset=None) -> np.ndarray:
    """p(c) = exp(o(c)) prod_i (p_i(c) + floor)^w_i / sum_c' of the same, per row (o = ``offset``, default 0)."""
    z = np.tensordot(np.asarray(weights, dtype=np.float64), np.log(np.asarray(probs, dtype=np.float64) + floor), 1)
    if offset is not None:
        z = z + offset
    z = z - z.max(axis=-1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=-1, keepdims=True)


def fit_pool_weights(probs, q, floor: float = FLOOR, offset=None, starts=None) -> np.ndarray:
    """The weights minimising mean JS(log_pool(probs, w, offset=offset), q) over the rows given (the dev cohort)."""
    from scipy.optimize import minimize

    from spectra_rec.metrics.distribution import js_divergence

    probs = np.asarray(probs, dtype=np.float64)
    n = len(probs)

    def objective(w):
        return float(js_divergence(log_pool(probs, w, floor, offset), q).mean())

    # start from each component alone and from the even split; keep the best of the local fits
    if starts is None:
        starts = [np.eye(n)[i] for i in range(n)] + [np.full(n, 1.0 / n)]
    fits = [minimize(objective, s, method="Nelder-Mead", options={"xatol": 1e-4, "fatol": 1e-7, "maxiter": 2000})
            for s in starts]
    return np.asarray(min(fits, key=lambda r: r.fun).x, dtype=np.float64)


def fit_exposure_pool(probs, pop, q, target: float, floor: float = FLOOR, contrasts=CONTRASTS):
    """(w, c, dev entropy, reached): the smallest c whose JS-fitted pool with (pop + floor)^-c has
    top-``EXPOSURE_K`` exposure entropy >= ``target`` over the rows given; unreached: the most diverse c."""
    from spectra_rec.metrics.exposure import exposure_entropy, topk_exposure

    log_pop = np.log(np.asarray(pop, dtype=np.float64) + floor)
    best = None
    w = None
    for c in contrasts:
        # warm start from the last c: the weights move little between neighbouring contrasts
        w = fit_pool_weights(probs, q, floor, offset=-c * log_pop, starts=None if w is None else [w])
        ent = float(exposure_entropy(topk_exposure(log_pool(probs, w, floor, -c * log_pop), EXPOSURE_K)))
        if ent >= target:
            return w, float(c), ent, True
        if best is None or ent > best[2]:
            best = (w, float(c), ent)
    return (*best, False)


def pool_tables(tables: list[PriorTable], names: list[str], split, dev_fraction: float = 0.2,
                cohort_seed: int = 0, floor: float = FLOOR, exposure: bool = False) -> PriorTable:
    """The pool of ``tables`` (same categories) over the users every table has, weights fitted on dev.

    ``exposure``: with the ``exposure`` part too (popularity^-c, c chosen on dev), which ``names`` leaves out.
    """
    from spectra_rec.metrics.distribution import js_divergence

    label = POOL_SEPARATOR.join(list(names) + ([EXPOSURE_PART] if exposure else []))

    ds = split.dataset
    cats = tuple(ds.categories)
    common = set.intersection(*(set(t.user_ids) for t in tables))  # matrix() below names users ds lacks
    users = np.flatnonzero(np.isin(ds.user_ids.astype(str), list(common)))
    if not len(users):
        raise ConfigError(f"pool {label}: its priors share no user of {ds.name}")
    P = np.stack([t.matrix(ds, users) for t in tables])
    dev, _ = split.cohorts(dev_fraction, cohort_seed)
    dev_rows = np.flatnonzero(np.isin(users, dev))
    if not len(dev_rows):
        raise ConfigError(f"pool {label}: no dev-cohort user to fit the weights on")
    q = split.ground_truth(users=users[dev_rows])
    extra = {}
    if exposure:
        from spectra_rec.metrics.exposure import exposure_entropy, topk_exposure
        from spectra_rec.priors.history import history_prior, popularity

        ref = history_prior(split, EXPOSURE_REFERENCE).matrix(ds, users[dev_rows])
        target = float(exposure_entropy(topk_exposure(ref, EXPOSURE_K)))
        pop = popularity(split)[users]
        w, c, ent, reached = fit_exposure_pool(P[:, dev_rows], pop[dev_rows], q, target, floor)
        if not reached:
            logger.warning("pool %s: no contrast up to %g reaches %s's dev top-%d exposure entropy %.3f; kept c = %g (%.3f)",
                           label, CONTRASTS[-1], EXPOSURE_REFERENCE, EXPOSURE_K, target, c, ent)
        offset = -c * np.log(pop + floor)
        extra = {"exposure": {"reference": EXPOSURE_REFERENCE, "k": EXPOSURE_K, "contrast": c,
                              "reference_dev_entropy": round(target, 6), "dev_entropy": round(ent, 6),
                              "reached": reached}}
    else:
        w = fit_pool_weights(P[:, dev_rows], q, floor)
        offset = None
    probs = log_pool(P, w, floor, offset)
    meta = {
        "method": label,
        "model": next((t.meta.get("model") for t in tables if t.meta.get("model")), None),
        "dataset": ds.name,
        "split_ratio": split.ratio,
        "uses_heldout": any(bool(t.meta.get("uses_heldout")) for t in tables),
        "pool": {
            "components": list(names),
            "weights": [round(float(x), 6) for x in w],
            "floor": floor,
            "objective": "mean dev JS",
            "dev_fraction": dev_fraction,
            "cohort_seed": cohort_seed,
            "dev_users": int(len(dev_rows)),
            "dev_js": round(float(js_divergence(probs[dev_rows], q).mean()), 6),
            "dev_js_components": [round(float(js_divergence(P[i, dev_rows], q).mean()), 6) for i in range(len(P))],
            # what names each component's model: a pooled readout is traced to its adapter like the readout itself
            "provenance": [{k: t.meta[k] for k in PROVENANCE if t.meta.get(k) is not None} for t in tables],
            **extra,
        },
    }
    return PriorTable(ds.user_ids[users], cats, probs, meta, source=f"pool {label!r}")
