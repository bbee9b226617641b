"""Top-k exposure and its entropy against scipy.stats.entropy and hand-worked cases."""

import numpy as np
import pytest
from scipy.stats import entropy as scipy_entropy

from spectra_rec.metrics.exposure import exposure_entropy, topk_exposure


def test_exposure_counts_topk_slots_without_ties():
    p = np.array([[0.5, 0.3, 0.1, 0.1 - 1e-9, 1e-9], [0.1, 0.2, 0.3, 0.15, 0.25]])
    e = topk_exposure(p, 2)
    assert e == pytest.approx(np.array([[1, 1, 0, 0, 0], [0, 0, 1, 0, 1]], dtype=float))


def test_ties_at_the_cut_share_the_remaining_slots():
    # top-3 of (.4, .2, .2, .2): c0 surely, two slots shared by three tied categories
    e = topk_exposure([[0.4, 0.2, 0.2, 0.2]], 3)
    assert e[0] == pytest.approx([1, 2 / 3, 2 / 3, 2 / 3])
    assert topk_exposure(np.full((1, 5), 0.2), 2)[0] == pytest.approx(np.full(5, 0.4))


def test_rows_sum_to_min_k_K():
    p = np.random.default_rng(0).dirichlet(np.ones(6), size=20)
    assert topk_exposure(p, 3).sum(axis=1) == pytest.approx(np.full(20, 3.0))
    assert topk_exposure(p, 10).sum(axis=1) == pytest.approx(np.full(20, 6.0))


def test_entropy_matches_scipy_on_column_sums():
    p = np.random.default_rng(1).dirichlet(np.full(19, 0.3), size=100)
    e = topk_exposure(p, 3)
    assert exposure_entropy(e) == pytest.approx(scipy_entropy(e.sum(axis=0), base=2), rel=1e-12)


def test_entropy_hand_worked():
    # every user's top-1 is c0: entropy 0; users split evenly over 4 categories: 2 bits
    assert exposure_entropy(topk_exposure(np.tile([0.7, 0.1, 0.1, 0.1], (5, 1)), 1)) == 0.0
    assert exposure_entropy(topk_exposure(np.eye(4) * 0.96 + 0.01, 1)) == pytest.approx(2.0)


def test_entropy_with_bootstrap_weights_equals_resampled_rows():
    e = topk_exposure(np.random.default_rng(2).dirichlet(np.ones(5), size=12), 2)
    idx = np.random.default_rng(3).integers(0, 12, size=12)
    w = np.bincount(idx, minlength=12).astype(float)
    assert exposure_entropy(e, weights=w[None])[0] == pytest.approx(exposure_entropy(e[idx]), rel=1e-12)


def test_bad_input():
    with pytest.raises(ValueError, match="k: expected k >= 1"):
        topk_exposure([[0.5, 0.5]], 0)
    with pytest.raises(ValueError, match="p: expected every row to sum to 1"):
        topk_exposure([[0.5, 0.6]], 1)
    with pytest.raises(ValueError, match="exposure"):
        exposure_entropy(np.array([[np.nan, 1.0]]))
