"""spectra_rec.metrics.stats against scipy and hand-worked cases."""

import warnings

import numpy as np
import pytest
from scipy.stats import wilcoxon

from spectra_rec.errors import DataWarning
from spectra_rec.metrics.stats import bootstrap_ci, holm, paired_bootstrap_ci, paired_wilcoxon


# ---------- paired_wilcoxon ----------

def test_wilcoxon_matches_scipy_on_differences():
    rng = np.random.default_rng(1)
    a = rng.random(40)
    b = a + rng.normal(0.05, 0.1, 40)
    assert paired_wilcoxon(a, b) == pytest.approx(wilcoxon(b - a).pvalue, rel=1e-12)


def test_wilcoxon_is_symmetric_in_order():
    rng = np.random.default_rng(2)
    a, b = rng.random(30), rng.random(30)
    assert paired_wilcoxon(a, b) == pytest.approx(paired_wilcoxon(b, a), rel=1e-12)


def test_wilcoxon_hand_worked_exact():
    # d = 1..5 all positive: W- = 0, exact two-sided p = 2 * P(W- = 0) = 2 / 2**5
    a = np.zeros(5)
    b = np.arange(1.0, 6.0)
    assert paired_wilcoxon(a, b) == pytest.approx(2 / 2**5)


def test_wilcoxon_all_zero_differences_is_one():
    a = np.array([0.1, 0.2, 0.3])
    assert paired_wilcoxon(a, a.copy()) == 1.0


def test_wilcoxon_drops_zero_differences():
    a = np.array([0, 0, 0, 0, 0, 0, 0.0])
    b = np.array([0, 0, 1, 2, 3, 4, 5.0])
    assert paired_wilcoxon(a, b) == pytest.approx(2 / 2**5)


def test_wilcoxon_empty_is_nan_with_warning():
    with pytest.warns(DataWarning):
        assert np.isnan(paired_wilcoxon([], []))


@pytest.mark.parametrize(
    "a, b, match",
    [
        ([0.1, np.nan], [0.1, 0.2], "a: expected finite"),
        ([0.1, 0.2], [0.1, np.inf], "b: expected finite"),
        ([0.1, 0.2], [0.1, 0.2, 0.3], "equal length, got 2 and 3"),
        ([[0.1, 0.2]], [[0.1, 0.2]], "a: expected a 1-D"),
    ],
)
def test_wilcoxon_rejects_bad_input(a, b, match):
    with pytest.raises(ValueError, match=match):
        paired_wilcoxon(a, b)


# ---------- holm ----------

def test_holm_hand_worked():
    # m = 4, sorted p = .01 .02 .03 .04 -> 4*.01, 3*.02, 2*.03, 1*.04 = .04 .06 .06 .04 -> running max .04 .06 .06 .06
    p = np.array([0.03, 0.01, 0.04, 0.02])
    assert holm(p) == pytest.approx([0.06, 0.04, 0.06, 0.06])


def test_holm_caps_at_one_and_is_monotone_in_p():
    rng = np.random.default_rng(3)
    p = rng.random(25)
    adj = holm(p)
    assert (adj <= 1).all() and (adj >= p - 1e-15).all()
    order = np.argsort(p)
    assert (np.diff(adj[order]) >= -1e-15).all()


def test_holm_single_test_is_unchanged():
    assert holm([0.2]) == pytest.approx([0.2])


def test_holm_keeps_nan_out_of_the_family():
    adj = holm([0.01, np.nan, 0.04])
    assert np.isnan(adj[1])
    assert adj[[0, 2]] == pytest.approx([2 * 0.01, 0.04])


@pytest.mark.parametrize("bad", [[0.1, 1.5], [-0.1], [np.inf]])
def test_holm_rejects_out_of_range(bad):
    with pytest.raises(ValueError, match="pvalues"):
        holm(bad)


# ---------- bootstrap_ci ----------

def test_bootstrap_matches_explicit_resampling_loop():
    v = np.random.default_rng(4).random(57)
    rng = np.random.default_rng(7)
    idx = rng.integers(0, v.size, size=(200, v.size))
    means = v[idx].mean(axis=1)
    expected = np.quantile(means, [0.025, 0.975])
    assert bootstrap_ci(v, n_boot=200, seed=7) == pytest.approx(tuple(expected), rel=1e-12)


def test_bootstrap_is_seeded_and_brackets_the_mean():
    v = np.random.default_rng(5).normal(2.0, 1.0, 300)
    lo, hi = bootstrap_ci(v, n_boot=500, seed=0)
    assert (lo, hi) == bootstrap_ci(v, n_boot=500, seed=0)
    assert lo < v.mean() < hi
    # width close to the normal-theory 2 * 1.96 * sd / sqrt(n)
    assert hi - lo == pytest.approx(2 * 1.96 * v.std(ddof=1) / np.sqrt(v.size), rel=0.2)


def test_bootstrap_constant_values_give_a_point():
    assert bootstrap_ci(np.full(10, 0.3), n_boot=50) == pytest.approx((0.3, 0.3))


def test_bootstrap_large_cohort_uses_blocks():
    v = np.random.default_rng(6).random(50_000)
    lo, hi = bootstrap_ci(v, n_boot=200, seed=1)
    assert lo < v.mean() < hi


def test_bootstrap_empty_is_nan_with_warning():
    with pytest.warns(DataWarning):
        lo, hi = bootstrap_ci([])
    assert np.isnan(lo) and np.isnan(hi)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"values": [0.1, np.nan]}, "values: expected finite"),
        ({"values": [0.1], "n_boot": 0}, "n_boot"),
        ({"values": [0.1], "alpha": 1.2}, "alpha"),
    ],
)
def test_bootstrap_rejects_bad_input(kwargs, match):
    with pytest.raises(ValueError, match=match):
        bootstrap_ci(**kwargs)


# ---------- paired_bootstrap_ci ----------

def test_paired_diff_matches_explicit_loop():
    rng = np.random.default_rng(8)
    a = rng.random(40)
    b = a + rng.normal(0.1, 0.05, 40)
    idx = np.random.default_rng(3).integers(0, 40, size=(300, 40))
    diffs = b[idx].mean(axis=1) - a[idx].mean(axis=1)
    expected = np.quantile(diffs, [0.025, 0.975])
    assert paired_bootstrap_ci(a, b, n_boot=300, seed=3) == pytest.approx(tuple(expected), rel=1e-9)


def test_paired_ratio_matches_explicit_loop():
    rng = np.random.default_rng(9)
    a = rng.random(40) + 0.5
    b = a * 1.1 + rng.normal(0, 0.02, 40)
    idx = np.random.default_rng(4).integers(0, 40, size=(300, 40))
    lifts = b[idx].mean(axis=1) / a[idx].mean(axis=1) - 1
    expected = np.quantile(lifts, [0.025, 0.975])
    lo, hi = paired_bootstrap_ci(a, b, n_boot=300, seed=4, stat="ratio")
    assert (lo, hi) == pytest.approx(tuple(expected), rel=1e-9)
    assert lo < 0.1 < hi


def test_paired_is_tighter_than_unpaired_for_correlated_users():
    rng = np.random.default_rng(10)
    base = rng.random(200)
    a, b = base, base + 0.01 + rng.normal(0, 0.001, 200)
    lo, hi = paired_bootstrap_ci(a, b, n_boot=400)
    lo_a, hi_a = bootstrap_ci(a, n_boot=400)
    assert 0 < lo < 0.01 < hi
    assert hi - lo < (hi_a - lo_a) / 10


def test_paired_ratio_zero_baseline_is_nan_with_warning():
    with pytest.warns(DataWarning):
        lo, hi = paired_bootstrap_ci(np.zeros(5), np.ones(5), n_boot=20, stat="ratio")
    assert np.isnan(lo) and np.isnan(hi)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"a": [0.1, 0.2], "b": [0.1]}, "equal length"),
        ({"a": [0.1], "b": [0.2], "stat": "median"}, "stat: expected 'diff' or 'ratio'"),
        ({"a": [np.nan], "b": [0.2]}, "a: expected finite"),
    ],
)
def test_paired_rejects_bad_input(kwargs, match):
    with pytest.raises(ValueError, match=match):
        paired_bootstrap_ci(**kwargs)


def test_no_warnings_on_ordinary_input():
    rng = np.random.default_rng(11)
    a, b = rng.random(20), rng.random(20)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        paired_wilcoxon(a, b)
        bootstrap_ci(a, n_boot=50)
        paired_bootstrap_ci(a, b, n_boot=50, stat="ratio")


# ---------- weights-based resampling ----------

from spectra_rec.metrics.stats import bootstrap_means, bootstrap_stat_ci, percentile_interval, resample_weights  # noqa: E402


def test_resample_weights_are_the_bootstrap_ci_draws():
    v = np.random.default_rng(12).random(33)
    W = np.concatenate(list(resample_weights(33, 300, seed=5)))
    assert W.shape == (300, 33) and (W.sum(axis=1) == 33).all()
    lo, hi = percentile_interval(W @ v / 33)
    assert (lo, hi) == pytest.approx(bootstrap_ci(v, n_boot=300, seed=5), rel=1e-12)


def test_bootstrap_means_columns_and_stat_ci():
    X = np.random.default_rng(13).random((40, 3))
    M = bootstrap_means(X, n_boot=200, seed=2)
    assert M.shape == (200, 3)
    lo, hi = percentile_interval(M)
    for j in range(3):
        assert (lo[j], hi[j]) == pytest.approx(bootstrap_ci(X[:, j], n_boot=200, seed=2), rel=1e-12)
    # a cohort statistic: the mean again, through bootstrap_stat_ci
    assert bootstrap_stat_ci(lambda W: W @ X[:, 0] / 40, 40, n_boot=200, seed=2) == pytest.approx((lo[0], hi[0]))


def test_bootstrap_means_rejects_nan():
    with pytest.raises(ValueError, match="columns"):
        bootstrap_means(np.array([[np.nan]]))
