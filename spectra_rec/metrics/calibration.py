"""Calibration and per-bucket mass (docs/formulas.md; paper 4.3, Appendices C and D.3).

ECE bins (user, category) pairs by predicted probability into equal-width bins on [0, 1]:
ECE = sum_b (n_b / N) |mean p in b - mean q in b| = sum_b |sum p in b - sum q in b| / N.
The per-user pieces are bin sums (count, sum p, sum q per user and bin), so a bootstrap
over users reweights them without re-binning.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from spectra_rec.metrics.validate import as_distributions, as_pq, check_positive_int

__all__ = [
    "BinSums",
    "bucket_mass",
    "category_bias",
    "ece",
    "ece_bins",
    "ece_from_bins",
    "ece_from_sums",
    "pair_bins",
    "reliability",
    "top1_bins",
    "top1_pairs",
]


@dataclass(frozen=True)
class BinSums:
    """Per-user bin sums: ``count``, ``pred`` (sum of predicted) and ``true`` (sum of q), each (n_users, n_bins)."""

    count: np.ndarray
    pred: np.ndarray
    true: np.ndarray

    @property
    def n_bins(self) -> int:
        return self.count.shape[1]


def bin_index(pred: np.ndarray, n_bins: int) -> np.ndarray:
    """Equal-width bin of each probability: min(floor(p * n_bins), n_bins - 1)."""
    return np.minimum((pred * n_bins).astype(np.int64), n_bins - 1)


def pair_bins(pred, true, n_bins: int = 10, mask=None) -> BinSums:
    """Bin sums of (predicted, true) pairs per user (rows) over the columns selected by ``mask`` (K,) or (n, K)."""
    pred = np.asarray(pred, dtype=float)
    true = np.asarray(true, dtype=float)
    n_bins = check_positive_int(n_bins, "n_bins")
    if pred.shape != true.shape or pred.ndim != 2:
        raise ValueError(f"pred and true: expected equal (users x pairs) shapes, got {pred.shape} and {true.shape}")
    if not (np.isfinite(pred).all() and np.isfinite(true).all()):
        raise ValueError("pred and true: expected finite values")
    if (pred < 0).any() or (pred > 1 + 1e-9).any():
        raise ValueError(f"pred: expected probabilities in [0, 1], got range [{pred.min():.3g}, {pred.max():.3g}]")
    n, m = pred.shape
    sel = np.ones((n, m), dtype=bool) if mask is None else np.broadcast_to(np.asarray(mask, dtype=bool), (n, m))
    b = bin_index(pred, n_bins) + np.arange(n)[:, None] * n_bins
    flat = b[sel]
    size = n * n_bins
    count = np.bincount(flat, minlength=size).reshape(n, n_bins).astype(float)
    psum = np.bincount(flat, weights=pred[sel], minlength=size).reshape(n, n_bins)
    tsum = np.bincount(flat, weights=true[sel], minlength=size).reshape(n, n_bins)
    return BinSums(count, psum, tsum)


def ece_bins(p, q, n_bins: int = 10, mask=None) -> BinSums:
    """Per-user bin sums of all (user, category) pairs, or of the categories in ``mask`` (bucket-stratified ECE)."""
    p, q = as_pq(p, q)
    if mask is not None and np.asarray(mask).shape != (p.shape[1],):
        raise ValueError(f"mask: expected a boolean vector over the {p.shape[1]} categories, got shape {np.shape(mask)}")
    return pair_bins(p, q, n_bins, mask)


def top1_pairs(p, q) -> tuple[np.ndarray, np.ndarray]:
    """Per user: max_c p(c) and the mean of q over the categories tied at that max (the top-1 pick)."""
    p, q = as_pq(p, q)
    top = p.max(axis=1, keepdims=True)
    tied = p == top
    return top[:, 0], (q * tied).sum(axis=1) / tied.sum(axis=1)


def top1_bins(p, q, n_bins: int = 10) -> BinSums:
    """Bin sums for top-1 ECE: one (max_c p(c), q(argmax)) pair per user (paper D.3)."""
    pred, true = top1_pairs(p, q)
    return pair_bins(pred[:, None], true[:, None], n_bins)


def ece_from_bins(bins: BinSums, weights=None):
    """ECE = sum_b |sum_u w_u P_ub - sum_u w_u Q_ub| / sum_u w_u N_ub; float, or one value per weight row; NaN if no pairs."""
    if weights is None:
        c, ps, ts = bins.count.sum(0)[None], bins.pred.sum(0)[None], bins.true.sum(0)[None]
    else:
        w = np.atleast_2d(np.asarray(weights, dtype=float))
        if w.shape[1] != bins.count.shape[0]:
            raise ValueError(f"weights: expected {bins.count.shape[0]} users per row, got shape {w.shape}")
        c, ps, ts = w @ bins.count, w @ bins.pred, w @ bins.true
    out = ece_from_sums(c, ps, ts)
    return float(out[0]) if weights is None or np.ndim(weights) == 1 else out


def ece_from_sums(count, pred, true) -> np.ndarray:
    """Per row of cohort bin sums (rows: resamples): sum_b |pred_b - true_b| / sum_b count_b (NaN without pairs)."""
    count, pred, true = (np.atleast_2d(np.asarray(x, dtype=float)) for x in (count, pred, true))
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.abs(pred - true).sum(axis=1) / count.sum(axis=1)


def ece(p, q, n_bins: int = 10, mask=None) -> float:
    """ECE = sum_b (n_b / N) |mean p_b - mean q_b| over (user, category) pairs in equal-width bins (cohort value)."""
    return ece_from_bins(ece_bins(p, q, n_bins, mask))


def reliability(bins: BinSums) -> dict[str, np.ndarray]:
    """Reliability diagram points per bin: pair count, mean predicted, mean true (NaN for empty bins)."""
    c, ps, ts = bins.count.sum(0), bins.pred.sum(0), bins.true.sum(0)
    with np.errstate(invalid="ignore", divide="ignore"):
        return {
            "bin_low": np.arange(bins.n_bins) / bins.n_bins,
            "bin_high": np.arange(1, bins.n_bins + 1) / bins.n_bins,
            "count": c,
            "mean_pred": ps / c,
            "mean_true": ts / c,
        }


def bucket_mass(p, buckets, n_buckets: int = 3) -> np.ndarray:
    """mass_u(b) = sum_{c in bucket b} p_u(c), (n_users, n_buckets); buckets 0 head, 1 mid, 2 tail."""
    p = as_distributions(p, "p")
    b = np.asarray(buckets)
    if b.shape != (p.shape[1],) or not np.issubdtype(b.dtype, np.integer) or (b < 0).any() or (b >= n_buckets).any():
        raise ValueError(f"buckets: expected {p.shape[1]} integers in [0, {n_buckets}), got {b!r}")
    onehot = np.zeros((p.shape[1], n_buckets))
    onehot[np.arange(p.shape[1]), b] = 1.0
    return p @ onehot


def category_bias(p, q) -> np.ndarray:
    """Per-user signed error p_u(c) - q_u(c); its mean over users is the per-category bias."""
    p, q = as_pq(p, q)
    return p - q
