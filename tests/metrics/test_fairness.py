"""Tail-preference quartiles and per-quartile JS reduction against scipy and hand-worked cases."""

import warnings

import numpy as np
import pytest
from scipy.stats import wilcoxon

from spectra_rec.errors import DataWarning
from spectra_rec.metrics.fairness import preference_groups, quartile_reduction, ratio_interval, tail_preference


def test_tail_preference_sums_tail_bucket():
    q = np.array([[0.5, 0.3, 0.2], [0.1, 0.1, 0.8]])
    assert tail_preference(q, np.array([0, 2, 2])) == pytest.approx([0.5, 0.9])


def test_groups_are_value_quartiles():
    v = np.arange(8.0)  # edges 1.75, 3.5, 5.25
    assert list(preference_groups(v)) == [0, 0, 1, 1, 2, 2, 3, 3]


def test_tied_values_share_a_group():
    v = np.array([0, 0, 0, 0, 0, 0, 0.2, 0.5])
    g = preference_groups(v)
    assert (g[:6] == 0).all()
    assert set(np.unique(g)) <= {0, 3}


def test_reduction_per_quartile_matches_scipy_and_ratio():
    rng = np.random.default_rng(0)
    n = 200
    groups = np.repeat(np.arange(4), n // 4)
    base = rng.uniform(0.2, 0.4, n)
    gain = np.array([0.01, 0.02, 0.03, 0.04])[groups] + rng.normal(0, 0.01, n)
    method = base - gain
    out = quartile_reduction(method, base, groups, n_boot=200)
    rows = out["groups"]
    for i, r in enumerate(rows):
        sel = groups == i
        assert r["n"] == sel.sum()
        assert r["reduction"] == pytest.approx((base[sel] - method[sel]).mean())
        assert r["p"] == pytest.approx(wilcoxon(method[sel] - base[sel]).pvalue)
        assert r["low"] < r["reduction"] < r["high"]
        assert r["p_holm"] >= r["p"]
    assert out["ratio_last_first"] == pytest.approx(rows[3]["reduction"] / rows[0]["reduction"])
    assert out["ratio_low"] < out["ratio_last_first"] < out["ratio_high"]


def test_ratio_interval_matches_an_explicit_stratified_bootstrap():
    rng = np.random.default_rng(3)
    groups = np.repeat(np.arange(4), [30, 20, 25, 40])
    red = np.array([0.01, 0.0, 0.0, 0.05])[groups] + rng.normal(0, 0.01, groups.size)
    low, high = ratio_interval(red, groups, 3, 0, n_boot=400, seed=7)
    # the same draws, one resample at a time: Q4 users with seed, Q1 users with seed + 1
    q4, q1 = red[groups == 3], red[groups == 0]
    r4, r1 = np.random.default_rng(7), np.random.default_rng(8)
    idx4 = r4.integers(0, q4.size, size=(400, q4.size))
    idx1 = r1.integers(0, q1.size, size=(400, q1.size))
    ratios = np.array([q4[i4].mean() / q1[i1].mean() for i4, i1 in zip(idx4, idx1)])
    assert (low, high) == pytest.approx(tuple(np.quantile(ratios, [0.025, 0.975])))


def test_empty_quartile_is_nan_with_warning():
    groups = np.array([0, 0, 0, 3, 3, 3])
    base = np.array([0.3, 0.3, 0.3, 0.4, 0.4, 0.4])
    method = base - np.array([0.01, 0.02, 0.03, 0.05, 0.06, 0.07])
    with pytest.warns(DataWarning) as record:
        out = quartile_reduction(method, base, groups, n_boot=50)
    assert {str(w.message).split(":")[1].split(";")[0].strip() for w in record} == {"group Q2 has no users", "group Q3 has no users"}
    q2 = out["groups"][1]
    assert q2["n"] == 0 and np.isnan(q2["reduction"]) and np.isnan(q2["p"]) and np.isnan(q2["p_holm"])
    assert out["ratio_last_first"] == pytest.approx(0.06 / 0.02)


def test_bad_input():
    with pytest.raises(ValueError, match="js_base and js_method"):
        quartile_reduction([0.1, 0.2], [0.1], [0, 1])
    with pytest.raises(ValueError, match="groups"):
        quartile_reduction([0.1, 0.2], [0.1, 0.3], [0])
    with pytest.raises(ValueError, match="js_method: expected finite"):
        quartile_reduction([0.1, np.nan], [0.1, 0.3], [0, 1])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        preference_groups([0.1, 0.2, 0.3, 0.4])
