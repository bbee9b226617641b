"""History priors (paper Appendix E diagnostics) against hand computations, and the leakage proof
for them: changing held-out interactions changes none of them except the labelled oracle."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from spectra_rec.priors import HISTORY_PRIORS, PriorTable, history_prior
from spectra_rec.errors import ConfigError

# Toy (conftest.TOY_*): categories A, B, C; m(1)=A, m(2)=B, m(3)=A/2+B/2, m(4)=C, m(5)=A/2+C/2.
# Train windows: a [3, 1, 2, 4]; b [1, 1, 2, 4, 2]; c [4]; d [5]. Held out: a [5]; b [3, 4]; d [1].


def _probs(split, method):
    return history_prior(split, method).matrix(split.dataset, np.arange(split.dataset.n_users))


def test_uhf_by_hand(toy_split):
    expected = [
        [1.5 / 4, 1.5 / 4, 1 / 4],  # a: A 1/2 + 1, B 1/2 + 1, C 1 over 4 items
        [2 / 5, 2 / 5, 1 / 5],  # b: A 2, B 2, C 1
        [0, 0, 1],  # c: C
        [1 / 2, 0, 1 / 2],  # d: A/2 + C/2
    ]
    np.testing.assert_allclose(_probs(toy_split, "uhf"), expected, rtol=0, atol=1e-12)


def test_laplace_by_hand(toy_split):
    # (n_u(c) + 1) / (n_u + K), K = 3
    expected = [[2.5 / 7, 2.5 / 7, 2 / 7], [3 / 8, 3 / 8, 2 / 8], [1 / 4, 1 / 4, 2 / 4], [1.5 / 4, 1 / 4, 1.5 / 4]]
    np.testing.assert_allclose(_probs(toy_split, "uhf-laplace"), expected, rtol=0, atol=1e-12)


def test_markov_by_hand(toy_split):
    # consecutive train pairs: a (3,1) (1,2) (2,4); b (1,1) (1,2) (2,4) (4,2); c and d have none.
    # counts sum_pairs m(i,c) m(j,c'): (3,1) gives A->A 1/2 and B->A 1/2; (1,2) x2 gives A->B 2;
    # (2,4) x2 gives B->C 2; (1,1) gives A->A 1; (4,2) gives C->B 1.
    counts = np.array([[1.5, 2, 0], [0.5, 0, 2], [0, 1, 0]])
    T = (counts + 1) / (counts + 1).sum(axis=1, keepdims=True)  # alpha = 1
    np.testing.assert_allclose(T[0], [2.5 / 6.5, 3 / 6.5, 1 / 6.5])
    expected = [
        T[2],  # a: last train item 4 -> C
        T[1],  # b: last train item 2 -> B
        T[2],  # c: 4 -> C
        0.5 * T[0] + 0.5 * T[2],  # d: 5 -> A/2 + C/2
    ]
    np.testing.assert_allclose(_probs(toy_split, "markov"), expected, rtol=0, atol=1e-12)


def test_popularity_uniform_oracle_by_hand(toy_split):
    # global train-window category mass: A 4, B 3.5, C 3.5 (out of 11 train interactions)
    np.testing.assert_allclose(_probs(toy_split, "popularity"), np.tile([4 / 11, 3.5 / 11, 3.5 / 11], (4, 1)))
    np.testing.assert_allclose(_probs(toy_split, "uniform"), np.full((4, 3), 1 / 3))
    oracle = history_prior(toy_split, "oracle")
    np.testing.assert_allclose(
        oracle.matrix(toy_split.dataset, np.arange(4)),
        [[1 / 2, 0, 1 / 2], [1 / 4, 1 / 4, 1 / 2], [1 / 3, 1 / 3, 1 / 3], [1, 0, 0]],  # c: nothing held out
        atol=1e-12,
    )


def test_tables_carry_metadata_and_label_the_oracle(toy_split):
    for method in HISTORY_PRIORS:
        t = history_prior(toy_split, method)
        assert isinstance(t, PriorTable)
        assert list(t.user_ids) == ["a", "b", "c", "d"]  # every user with a train window
        assert t.categories == ("A", "B", "C")
        np.testing.assert_allclose(t.probs.sum(axis=1), 1.0, atol=1e-12)
        assert t.meta["method"] == t.method == method
        assert t.meta["dataset"] == "toy" and t.meta["split_ratio"] == 0.8 and t.meta["taxonomy"] == "flat"
        assert t.uses_heldout is (method == "oracle")


def test_windowed_uhf_by_hand(toy_split):
    # last 2 train items: a [2, 4] -> B, C; b [4, 2] -> C, B; c [4] -> C; d [5] -> A/2 + C/2
    expected = [[0, 1 / 2, 1 / 2], [0, 1 / 2, 1 / 2], [0, 0, 1], [1 / 2, 0, 1 / 2]]
    np.testing.assert_allclose(_probs(toy_split, "uhf@2"), expected, rtol=0, atol=1e-12)
    # Laplace over the same window: (n_u(c) + 1) / (n_u + 3)
    expected = [[1 / 5, 2 / 5, 2 / 5], [1 / 5, 2 / 5, 2 / 5], [1 / 4, 1 / 4, 2 / 4], [1.5 / 4, 1 / 4, 1.5 / 4]]
    np.testing.assert_allclose(_probs(toy_split, "uhf-laplace@2"), expected, rtol=0, atol=1e-12)
    # a window longer than every history is the whole train window
    np.testing.assert_allclose(_probs(toy_split, "uhf@99"), _probs(toy_split, "uhf"), rtol=0, atol=0)
    t = history_prior(toy_split, "uhf@2")
    assert t.method == "uhf@2" and t.meta["context_window"] == 2 and not t.uses_heldout


@pytest.mark.parametrize("spec, message", [
    ("uhf@0", "integer >= 1"), ("uhf@x", "integer >= 1"), ("uhf@", "integer >= 1"),
    ("markov@5", r"only \['uhf', 'uhf-laplace'\] take a context window"), ("popularity@3", "take a context window"),
    ("spectra@3", "unknown prior"),
])
def test_bad_window_specs_are_named(toy_split, spec, message):
    with pytest.raises(ConfigError, match=message):
        history_prior(toy_split, spec)


def test_unknown_prior_lists_the_registry(toy_split):
    with pytest.raises(ConfigError, match=r"unknown prior 'spectra'; history priors: \['markov', 'oracle', "):
        history_prior(toy_split, "spectra")


def test_uhf_matches_an_independent_pandas_computation_on_ml100k(ml100k, ml100k_split):
    """The split and UHF recomputed from the raw file with pandas, sharing no code with the library."""
    raw = pd.read_csv(ml100k.source / "ml-100k.inter", sep="\t", dtype=str)
    raw.columns = ["user", "item", "rating", "time"]
    raw["time"] = raw["time"].astype(float)
    raw["item_num"] = raw["item"].astype(int)
    raw = raw.sort_values(["user", "time", "item_num"])
    raw["pos"] = raw.groupby("user").cumcount()
    n = raw.groupby("user")["item"].transform("size")
    train = raw[raw["pos"] < np.maximum(1, (n * 4) // 5)]
    items = pd.read_csv(ml100k.source / "ml-100k.item", sep="\t", dtype=str)
    genres = dict(zip(items.iloc[:, 0], items.iloc[:, -1].str.split()))
    cats = ml100k.categories
    mass = {}
    for user, item in zip(train["user"], train["item"]):
        g = genres[item]
        row = mass.setdefault(user, np.zeros(len(cats)))
        for c in g:
            row[cats.index(c)] += 1 / len(g)
    users = sorted(mass, key=int)[:200]  # a sample keeps this fast
    expected = np.array([mass[u] / mass[u].sum() for u in users])
    got = history_prior(ml100k_split, "uhf").matrix(ml100k, ml100k.user_index(users))
    np.testing.assert_allclose(got, expected, rtol=0, atol=1e-12)


@pytest.mark.parametrize("method", sorted(HISTORY_PRIORS))
def test_priors_are_distributions_on_synthetic(synthetic_split, method):
    t = history_prior(synthetic_split, method)
    assert t.probs.shape == (200, 12)
    assert (t.probs >= 0).all()
    np.testing.assert_allclose(t.probs.sum(axis=1), 1.0, atol=1e-12)


def test_history_priors_ignore_heldout_changes(synthetic_split, perturbed_split):
    """LEAKAGE: every held-out interaction replaced by another item. Train-side priors are identical;
    the oracle (the only one built from held-out data, and labelled so) changes."""
    users = np.arange(synthetic_split.dataset.n_users)
    for method in sorted(HISTORY_PRIORS):
        a = history_prior(synthetic_split, method).matrix(synthetic_split.dataset, users)
        b = history_prior(perturbed_split, method).matrix(perturbed_split.dataset, users)
        if method == "oracle":
            assert np.abs(a - b).max() > 0.1
            assert history_prior(perturbed_split, method).uses_heldout
        else:
            np.testing.assert_array_equal(a, b, err_msg=method)
            assert not history_prior(perturbed_split, method).uses_heldout


def test_uhf_decay_by_hand(toy_split):
    from spectra_rec.priors.history import uhf_decay

    d, s = 0.5, 0.25
    pop = np.array([4, 3.5, 3.5]) / 11
    # user a: train [3, 1, 2, 4], ages 3, 2, 1, 0 -> weights d^3, d^2, d, 1
    mass_a = d**3 * np.array([0.5, 0.5, 0]) + d**2 * np.array([1, 0, 0]) + d * np.array([0, 1, 0]) + np.array([0, 0, 1])
    expected_a = (1 - s) * mass_a / mass_a.sum() + s * pop
    got = uhf_decay(toy_split, decay=d, shrink=s)
    np.testing.assert_allclose(got[0], expected_a, rtol=0, atol=1e-12)
    np.testing.assert_allclose(got[2], (1 - s) * np.array([0, 0, 1]) + s * pop, atol=1e-12)  # c: [4]
    # decay 1 and no shrinkage is plain UHF
    np.testing.assert_allclose(uhf_decay(toy_split, 1.0, 0.0), _probs(toy_split, "uhf"), atol=1e-12)
    # registered with the defaults chosen on dev (benchmarks/tune_uhf_decay.py)
    np.testing.assert_allclose(_probs(toy_split, "uhf-decay"), uhf_decay(toy_split, 0.97, 0.4)[:4], atol=1e-12)
    with pytest.raises(ConfigError, match="decay must be in"):
        uhf_decay(toy_split, decay=0.0)
    with pytest.raises(ConfigError, match="shrink must be in"):
        uhf_decay(toy_split, shrink=1.5)
