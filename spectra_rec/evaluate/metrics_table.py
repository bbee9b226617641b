"""The metrics ``spectra-rec evaluate`` reports, one row each: adding a metric is one row here.

Per-user metrics (:class:`UserMetric`) give one value per user; their cohort mean gets a bootstrap
CI and, when ``paired``, Wilcoxon comparisons between methods. Cohort metrics
(:class:`CohortMetric`) are not means: each user contributes a linear ``block`` of sums and a
``reducer`` turns the column sums into the statistic, so the shared bootstrap pass resamples
them for the price of one weighted sum.

A label may hold one placeholder that the row expands over: ``{k}`` (``EvalConfig.k``),
``{exposure_k}`` (``EvalConfig.exposure_k``) or ``{bucket}`` (head, mid, tail; the function gets the
bucket's index). Both tables are passed to :func:`spectra_rec.evaluate.evaluate` /
``evaluate_arrays`` as ``user_metrics=`` / ``cohort_metrics=``, so a caller can add a row without
touching this module (``USER_METRICS + (UserMetric(...),)``).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial
from typing import Callable

import numpy as np

from spectra_rec.evaluate.config import BUCKETS
from spectra_rec.metrics import calibration, distribution, exposure, ranking


@dataclass(frozen=True)
class MetricContext:
    """What a metric function may read besides (p, q)."""

    buckets: np.ndarray
    """(K,) category bucket index (0 head, 1 mid, 2 tail)."""
    n_bins: int
    """ECE bins."""


@dataclass(frozen=True)
class UserMetric:
    """A per-user metric row: ``fn(p, q, ctx, **param) -> (n,)`` values."""

    label: str
    fn: Callable
    paired: bool = True
    """Compared between methods (paired Wilcoxon, Holm across pairs); False: mean and CI only."""
    reference: bool = False
    """Also computed on the truth itself (``fn(q, q, ...)``) and reported as the reference value."""


@dataclass(frozen=True)
class CohortMetric:
    """A cohort metric row: ``block(p, q, ctx, **param) -> (n, width)`` per-user sums (None: undefined here) and
    ``reducer(S, ctx) -> (b,)`` from (b, width) column sums."""

    label: str
    block: Callable
    reducer: Callable
    reference: bool = False
    """Also computed on the truth's own lists (``block(q, q, ...)``) and reported as the reference value."""


_PARAMS = {
    "{k}": lambda config: [(k, {"k": k}) for k in config.k],
    "{exposure_k}": lambda config: [(k, {"exposure_k": k}) for k in config.exposure_k],
    "{bucket}": lambda config: [(b, {"bucket": j}) for j, b in enumerate(BUCKETS)],
}


def expand(label: str, config) -> list[tuple[str, dict]]:
    """(concrete label, keyword arguments) for every value of the row's placeholder (the label itself if none)."""
    for placeholder, values in _PARAMS.items():
        if placeholder in label:
            return [(label.replace(placeholder, str(shown)), kw) for shown, kw in values(config)]
    return [(label, {})]


def user_metric_rows(rows, config) -> list[tuple[str, Callable, UserMetric]]:
    """(label, fn(p, q, ctx), row) for every expanded per-user row, in table order."""
    return [(lab, partial(row.fn, **kw), row) for row in rows for lab, kw in expand(row.label, config)]


def cohort_metric_rows(rows, config) -> list[tuple[str, Callable, CohortMetric]]:
    """(label, block(p, q, ctx), row) for every expanded cohort row, in table order."""
    return [(lab, partial(row.block, **kw), row) for row in rows for lab, kw in expand(row.label, config)]


def _js(p, q, ctx):
    return distribution.js_divergence(p, q)


def _tv(p, q, ctx):
    return distribution.total_variation(p, q)


def _ndcg(p, q, ctx, k):
    return ranking.category_ndcg(p, q, k)


def _bucket_mass(p, q, ctx, bucket):
    return calibration.bucket_mass(p, ctx.buckets)[:, bucket]


def _eps(p, q, ctx):
    return distribution.max_abs_error(p, q)


USER_METRICS: tuple[UserMetric, ...] = (
    UserMetric("JS", _js),
    UserMetric("TV", _tv),
    UserMetric("NDCG@{k}", _ndcg),
    UserMetric("mass/{bucket}", _bucket_mass, paired=False, reference=True),
    UserMetric("eps", _eps, paired=False),
)
"""Per-user metrics, in report order (``eps`` = max_c |p - q|, the Theorem 1 quantity)."""


def _exposure_block(p, q, ctx, exposure_k):
    return exposure.topk_exposure(p, exposure_k)


def _entropy(S, ctx):
    return exposure.counts_entropy(S)


def _bins_block(bins):
    return np.hstack([bins.count, bins.pred, bins.true])


def _ece_block(p, q, ctx):
    return _bins_block(calibration.ece_bins(p, q, ctx.n_bins))


def _ece_bucket_block(p, q, ctx, bucket):
    mask = ctx.buckets == bucket
    if not mask.any():  # a vocabulary too small to fill every bucket: no stratum to calibrate
        return None
    return _bins_block(calibration.ece_bins(p, q, ctx.n_bins, mask=mask))


def _top1_block(p, q, ctx):
    return _bins_block(calibration.top1_bins(p, q, ctx.n_bins))


def _ece(S, ctx):
    nb = ctx.n_bins
    return calibration.ece_from_sums(S[:, :nb], S[:, nb : 2 * nb], S[:, 2 * nb :])


COHORT_METRICS: tuple[CohortMetric, ...] = (
    CohortMetric("Entropy@{exposure_k}", _exposure_block, _entropy, reference=True),
    CohortMetric("ECE", _ece_block, _ece),
    CohortMetric("ECE/{bucket}", _ece_bucket_block, _ece),
    CohortMetric("ECE/top1", _top1_block, _ece),
)
"""Cohort metrics: top-k exposure entropy (bits) and ECE (aggregate, per category bucket, top-1)."""
