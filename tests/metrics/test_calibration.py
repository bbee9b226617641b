"""ECE (aggregate, stratified, top-1), reliability, per-bucket mass and per-category bias: hand-computed cases."""

import numpy as np
import pytest

from spectra_rec.metrics.calibration import (
    bucket_mass,
    category_bias,
    ece,
    ece_bins,
    ece_from_bins,
    reliability,
    top1_bins,
    top1_pairs,
)


P = np.array([[0.05, 0.25, 0.70], [0.15, 0.15, 0.70]])
Q = np.array([[0.00, 0.50, 0.50], [0.40, 0.20, 0.40]])


def _ece_by_hand(pred, true, n_bins):
    """Loop over pairs: the textbook definition."""
    pred, true = np.ravel(pred), np.ravel(true)
    total = 0.0
    for b in range(n_bins):
        lo, hi = b / n_bins, (b + 1) / n_bins
        sel = (pred >= lo) & ((pred < hi) if b < n_bins - 1 else (pred <= hi))
        if sel.any():
            total += sel.mean() * abs(pred[sel].mean() - true[sel].mean())
    return total


def test_ece_hand_worked():
    # 5 bins of width .2: bin0 {.05,.15,.15} vs {0,.4,.2}; bin1 {.25} vs {.5}; bin3 {.7,.7} vs {.5,.4}
    expected = 3 / 6 * abs(0.35 / 3 - 0.6 / 3) + 1 / 6 * abs(0.25 - 0.5) + 2 / 6 * abs(0.7 - 0.45)
    assert ece(P, Q, n_bins=5) == pytest.approx(expected)
    assert ece(P, Q, n_bins=5) == pytest.approx(_ece_by_hand(P, Q, 5))


def test_ece_matches_loop_on_random_data():
    rng = np.random.default_rng(0)
    p = rng.dirichlet(np.full(19, 0.3), size=200)
    q = rng.dirichlet(np.full(19, 0.3), size=200)
    for n_bins in (1, 10, 15):
        assert ece(p, q, n_bins) == pytest.approx(_ece_by_hand(p, q, n_bins), rel=1e-10)


def test_perfect_calibration_is_zero_and_probability_one_lands_in_last_bin():
    q = np.array([[1.0, 0.0], [0.0, 1.0]])
    assert ece(q, q, 10) == 0.0
    assert ece_bins(q, q, 10).count.sum(axis=0)[-1] == 2


def test_stratified_ece_uses_only_the_masked_categories():
    mask = np.array([False, False, True])
    assert ece(P, Q, n_bins=5, mask=mask) == pytest.approx(_ece_by_hand(P[:, 2], Q[:, 2], 5))
    with pytest.raises(ValueError, match="mask"):
        ece(P, Q, mask=[True, False])


def test_top1_ece_averages_q_over_tied_argmax():
    pred, true = top1_pairs([[0.4, 0.4, 0.2], [0.1, 0.2, 0.7]], [[0.1, 0.5, 0.4], [0.3, 0.3, 0.4]])
    assert pred == pytest.approx([0.4, 0.7])
    assert true == pytest.approx([0.3, 0.4])
    b = top1_bins([[0.4, 0.4, 0.2], [0.1, 0.2, 0.7]], [[0.1, 0.5, 0.4], [0.3, 0.3, 0.4]], n_bins=10)
    assert ece_from_bins(b) == pytest.approx(0.5 * 0.1 + 0.5 * 0.3)


def test_weighted_ece_equals_ece_on_resampled_users():
    rng = np.random.default_rng(1)
    p = rng.dirichlet(np.ones(5), size=30)
    q = rng.dirichlet(np.ones(5), size=30)
    idx = rng.integers(0, 30, size=30)
    w = np.bincount(idx, minlength=30).astype(float)
    assert ece_from_bins(ece_bins(p, q), weights=w[None])[0] == pytest.approx(ece(p[idx], q[idx]), rel=1e-12)


def test_reliability_points():
    r = reliability(ece_bins(P, Q, n_bins=5))
    assert r["count"] == pytest.approx([3, 1, 0, 2, 0])
    assert r["mean_pred"][3] == pytest.approx(0.7)
    assert r["mean_true"][3] == pytest.approx(0.45)
    assert np.isnan(r["mean_pred"][2])


def test_bucket_mass_and_bias():
    buckets = np.array([0, 2, 2])
    assert bucket_mass(P, buckets) == pytest.approx(np.array([[0.05, 0, 0.95], [0.15, 0, 0.85]]))
    assert category_bias(P, Q).mean(axis=0) == pytest.approx([-0.1, -0.15, 0.25])
    with pytest.raises(ValueError, match="buckets"):
        bucket_mass(P, np.array([0, 1, 3]))


@pytest.mark.parametrize("n_bins", [0, 1.5])
def test_bad_bins(n_bins):
    with pytest.raises(ValueError, match="n_bins"):
        ece(P, Q, n_bins)
