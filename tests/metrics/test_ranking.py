"""Category NDCG@k against scikit-learn's ndcg_score and hand-worked cases."""

import numpy as np
import pytest
from sklearn.metrics import ndcg_score

from spectra_rec.metrics.ranking import category_ndcg


def _dists(n, K, seed):
    return np.random.default_rng(seed).dirichlet(np.full(K, 0.4), size=n)


@pytest.mark.parametrize("k", [1, 3, 5, 10])
def test_matches_sklearn_without_ties(k):
    p, q = _dists(40, 19, 0), _dists(40, 19, 1)
    expected = [ndcg_score(q[i : i + 1], p[i : i + 1], k=k) for i in range(40)]
    assert category_ndcg(p, q, k) == pytest.approx(expected, abs=1e-12)


@pytest.mark.parametrize("k", [1, 2, 3, 5])
def test_matches_sklearn_tie_averaging(k):
    rng = np.random.default_rng(2)
    q = _dists(30, 8, 3)
    # coarse scores produce many ties, including across the cut-off
    raw = rng.integers(0, 3, size=(30, 8)).astype(float) + 1e-9
    p = raw / raw.sum(axis=1, keepdims=True)
    expected = [ndcg_score(q[i : i + 1], p[i : i + 1], k=k, ignore_ties=False) for i in range(30)]
    assert category_ndcg(p, q, k) == pytest.approx(expected, abs=1e-12)


def test_hand_worked_case():
    # p ranks c0, c1, c2; gains q = (.2, .5, .3); DCG@2 = .2/1 + .5/log2(3); IDCG@2 = .5 + .3/log2(3)
    p = [[0.6, 0.3, 0.1]]
    q = [[0.2, 0.5, 0.3]]
    expected = (0.2 + 0.5 / np.log2(3)) / (0.5 + 0.3 / np.log2(3))
    assert category_ndcg(p, q, 2)[0] == pytest.approx(expected)


def test_uniform_prior_gets_the_expected_random_ranking():
    # all tied: every category gets the mean gain 1/K at every rank
    q = np.array([[0.7, 0.2, 0.1, 0.0]])
    p = np.full((1, 4), 0.25)
    disc = 1 / np.log2(np.arange(2, 4))  # ranks 1..2
    expected = 0.25 * disc.sum() / (0.7 * disc[0] + 0.2 * disc[1])
    assert category_ndcg(p, q, 2)[0] == pytest.approx(expected)


def test_perfect_ranking_is_one_and_bounds_hold():
    q = _dists(50, 19, 4)
    for k in (1, 3, 5, 10, 19, 40):
        assert category_ndcg(q, q, k) == pytest.approx(np.ones(50))
    p = _dists(50, 19, 5)
    nd = category_ndcg(p, q, 5)
    assert ((nd >= 0) & (nd <= 1 + 1e-12)).all()


@pytest.mark.parametrize("k", [0, -1, 2.5, "3", True])
def test_bad_k_names_the_argument(k):
    with pytest.raises(ValueError, match="k: expected"):
        category_ndcg([[0.5, 0.5]], [[0.5, 0.5]], k)
