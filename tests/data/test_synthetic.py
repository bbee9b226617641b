"""The seeded synthetic generator: determinism, shape, taxonomy, head-heavy popularity, and
held-out distributions that converge to the known per-user preferences."""

from __future__ import annotations

import json

import numpy as np
import pytest

from spectra_rec.data import load_dataset, split_dataset
from spectra_rec.data.synthetic import SyntheticConfig, generate, make_synthetic
from spectra_rec.errors import ConfigError


def _arrays(d):
    return [d.preferences, d.item_primary, d.item_secondary, d.inter_user, d.inter_item, d.inter_time]


def test_same_seed_same_data_different_seed_different_data(tmp_path):
    cfg = SyntheticConfig(n_users=50, n_items=80, seed=3)
    a, b = generate(cfg), generate(cfg)
    for x, y in zip(_arrays(a), _arrays(b)):
        np.testing.assert_array_equal(x, y)
    c = generate(SyntheticConfig(n_users=50, n_items=80, seed=4))
    assert not np.array_equal(a.inter_item[:100], c.inter_item[:100])
    # the files are byte-identical too
    make_synthetic(tmp_path / "x", cfg)
    make_synthetic(tmp_path / "y", cfg)
    for p in sorted((tmp_path / "x").iterdir()):
        assert p.read_bytes() == (tmp_path / "y" / p.name).read_bytes(), p.name


def test_shape_taxonomy_and_files(synthetic_dir, synthetic):
    cfg = SyntheticConfig(n_users=200, n_items=400, n_l1=3, n_l2=4)
    assert cfg.K == 3 * 4
    names = {p.name for p in synthetic_dir.iterdir()}
    assert names == {f"synthetic.{s}" for s in ("inter", "item", "user", "taxonomy.json", "prefs.npy")}
    taxonomy = json.loads((synthetic_dir / "synthetic.taxonomy.json").read_text())
    assert taxonomy == {f"G{a}": [f"G{a}-s{b}" for b in range(4)] for a in range(3)}
    # the loader reads the same taxonomy: K = n_l1 * n_l2 categories in taxonomy order
    assert synthetic.K == 12
    assert synthetic.categories == tuple(c for kids in taxonomy.values() for c in kids)
    assert synthetic.taxonomy == {k: tuple(v) for k, v in taxonomy.items()}
    assert (synthetic.n_users, synthetic.n_items) == (200, 400)
    assert list(synthetic.user_ids[:3]) == ["u0", "u1", "u10"]  # tokens u<index>, sorted as strings
    prefs = np.load(synthetic_dir / "synthetic.prefs.npy")
    assert prefs.shape == (200, 12)
    np.testing.assert_allclose(prefs.sum(axis=1), 1.0, atol=1e-12)
    assert len(synthetic.users) == 200 and {"age", "gender"} <= set(synthetic.users.columns)


def test_items_and_interactions_are_well_formed():
    cfg = SyntheticConfig(n_users=300, n_items=500, n_l1=4, n_l2=5, min_interactions=7, seed=1)
    d = generate(cfg)
    # every category has at least one item (by its primary category)
    assert np.bincount(d.item_primary, minlength=cfg.K).min() >= 1
    # a second category is a sibling leaf under the same L1, never the primary itself
    has2 = d.item_secondary >= 0
    assert 0.2 < has2.mean() < 0.4  # second_category_rate = 0.3
    assert (d.item_secondary[has2] // cfg.n_l2 == d.item_primary[has2] // cfg.n_l2).all()
    assert (d.item_secondary[has2] != d.item_primary[has2]).all()
    counts = np.bincount(d.inter_user, minlength=cfg.n_users)
    assert counts.min() >= cfg.min_interactions
    assert abs(counts.mean() - cfg.mean_interactions) < 1.0  # 7 + Poisson(23): mean 30, sd of mean 0.28
    # per-user times strictly increase (so the split never depends on tie-breaking)
    same = d.inter_user[1:] == d.inter_user[:-1]
    assert (np.diff(d.inter_time)[same] > 0).all()
    assert d.inter_item.min() >= 0 and d.inter_item.max() < cfg.n_items


def test_every_category_has_an_item_even_at_the_minimum_catalogue():
    d = generate(SyntheticConfig(n_users=5, n_items=12, n_l1=3, n_l2=4, category_zipf=3.0))
    assert sorted(d.item_primary.tolist()) == list(range(12))


def test_category_popularity_is_head_heavy():
    # p_u ~ Dirichlet(a * K * pop): E[p_u] = pop (up to the 1e-3 floor), pop(rank r) = (1/r) / H_K
    cfg = SyntheticConfig(n_users=4000, n_items=300, n_l1=3, n_l2=4, category_zipf=1.0, seed=2)
    d = generate(cfg)
    zipf = 1.0 / np.arange(1, 13)
    zipf /= zipf.sum()
    mean_pref = np.sort(d.preferences.mean(axis=0))[::-1]
    np.testing.assert_allclose(mean_pref, zipf, atol=0.02)  # sd of each mean <= 0.23 / sqrt(4000) = 0.004
    share = np.sort(np.bincount(d.item_primary[d.inter_item], minlength=12))[::-1] / len(d.inter_item)
    assert share[:4].sum() > 0.6  # Zipf(1), K=12: top third holds 0.67
    assert share[-4:].sum() < 0.15  # bottom third holds 0.12
    assert share[0] > 5 * share[-1]


def _expected_heldout(d):
    """E[q_u] = p_u @ A with A[c] = sum over items of primary c of P(item | c) m(item, .):
    items of a category are drawn by Zipf over their index order within the category."""
    cfg = d.config
    A = np.zeros((cfg.K, cfg.K))
    for c in range(cfg.K):
        items = np.flatnonzero(d.item_primary == c)
        w = 1.0 / np.arange(1, len(items) + 1) ** cfg.item_zipf
        w /= w.sum()
        for i, wi in zip(items, w):
            if d.item_secondary[i] >= 0:
                A[c, c] += wi / 2
                A[c, d.item_secondary[i]] += wi / 2
            else:
                A[c, c] += wi
    return d.preferences @ A


@pytest.mark.parametrize("second_rate", [0.0, 0.3])
def test_heldout_distribution_converges_to_true_preferences(tmp_path, second_rate):
    """With ~1000 held-out interactions per user, the held-out q_u is within a total-variation
    distance of 0.5 * sqrt(K / n) (the bound on E[TV] of an n-sample empirical distribution) of
    the expected distribution: p_u itself when items carry one category."""
    cfg = SyntheticConfig(
        n_users=20, n_items=200, mean_interactions=5000, concentration=0.3, second_category_rate=second_rate, seed=5
    )
    d = generate(cfg)
    root = make_synthetic(tmp_path / "big", cfg)
    split = split_dataset(load_dataset(root))
    ds = split.dataset
    q = split.ground_truth()
    assert len(split.eval_users) == 20
    users = np.array([int(t[1:]) for t in ds.user_ids[split.eval_users]])  # token u<index> -> generator index
    expected = d.preferences[users] if second_rate == 0 else _expected_heldout(d)[users]
    tv = 0.5 * np.abs(q - expected).sum(axis=1)
    n_min = split.n_heldout[split.eval_users].min()
    assert n_min > 900
    bound = 0.5 * np.sqrt(cfg.K / n_min)  # 0.5 * sqrt(12 / 900) = 0.058
    assert tv.mean() < bound
    assert tv.max() < 2 * bound
    # and the same users' first 20 held-out interactions are much further off
    tv_short = 0.5 * np.abs(split.ground_truth(n=20) - expected).sum(axis=1)
    assert tv_short.mean() > 2 * tv.mean()


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"n_users": 0}, r"SyntheticConfig\.n_users must be >= 1, got 0"),
        ({"n_l2": 0}, r"SyntheticConfig\.n_l2 must be >= 1, got 0"),
        ({"n_items": 11}, r"SyntheticConfig\.n_items \(11\) must be >= K = n_l1 \* n_l2 \(12\)"),
        ({"concentration": 0.0}, r"SyntheticConfig\.concentration must be > 0, got 0\.0"),
    ],
)
def test_bad_config(kwargs, message):
    with pytest.raises(ConfigError, match=message):
        SyntheticConfig(**kwargs)


def test_planted_preferred_categories_and_word_names():
    from spectra_rec.data.synthetic import LEAF_WORDS, SyntheticConfig, generate

    data = generate(SyntheticConfig(n_users=50, n_items=60, n_l1=2, n_l2=4, preferred_categories=3,
                                    category_names="words", seed=1))
    assert ((data.preferences > 0).sum(axis=1) == 3).all()
    np.testing.assert_allclose(data.preferences.sum(axis=1), 1.0)
    assert data.categories == list(LEAF_WORDS[:8])
    assert data.taxonomy == {"G0": list(LEAF_WORDS[:4]), "G1": list(LEAF_WORDS[4:8])}
    # every interaction's category is one of its user's preferred ones
    cats = data.item_primary[data.inter_item]
    assert (data.preferences[data.inter_user, cats] > 0).all()
    with pytest.raises(ConfigError, match="category_names must be one of"):
        SyntheticConfig(category_names="emoji")
