"""Blend: normalizations, affinity, w = 0 identity, the external-ranker API and its errors."""

import numpy as np
import pytest
import scipy.sparse as sp

from fusion.blend import FUSION_RULES, NORMALIZATIONS, affinity, blend, fuse_scores, get_fusion_rule, register_fusion_rule
from spectra_rec.errors import ConfigError, PriorTableError
from spectra_rec.priors.table import PriorTable
from spectra_rec.testing.fusion import FusionRuleTests


@pytest.fixture
def rng():
    return np.random.default_rng(0)


def _ranking(x):
    return np.argsort(-x, axis=1, kind="stable")


@pytest.mark.parametrize("norm", sorted(NORMALIZATIONS))
def test_w0_reproduces_base_ranking_and_w1_the_prior_ranking(norm, rng):
    base = rng.normal(size=(30, 50))
    aff = rng.random((30, 50))
    mask = np.ones_like(base, dtype=bool)
    assert (_ranking(blend(base, aff, 0.0, mask, norm)) == _ranking(base)).all()
    assert (_ranking(blend(base, aff, 1.0, mask, norm)) == _ranking(aff)).all()


@pytest.mark.parametrize("norm", sorted(NORMALIZATIONS))
def test_normalizations_are_strictly_increasing_per_row(norm, rng):
    x = rng.normal(size=(10, 20))
    y = NORMALIZATIONS[norm](x, np.ones_like(x, dtype=bool))
    for xr, yr in zip(x, y):
        o = np.argsort(xr)
        assert (np.diff(yr[o]) > 0).all()


def test_normalization_formulas_hand_worked():
    x = np.array([[1.0, 2.0, 4.0]])
    m = np.ones_like(x, dtype=bool)
    assert NORMALIZATIONS["minmax"](x, m) == pytest.approx(np.array([[0, 1 / 3, 1]]))
    z = (x - x.mean()) / x.std()
    assert NORMALIZATIONS["zscore"](x, m) == pytest.approx(z)
    e = np.exp(x - 4)
    assert NORMALIZATIONS["softmax"](x, m) == pytest.approx(e / e.sum())
    assert NORMALIZATIONS["rank"](x, m) == pytest.approx(np.array([[1 / 3, 2 / 3, 1]]))


def test_padding_is_ignored_by_normalization_and_ends_at_minus_inf():
    base = np.array([[1.0, 2.0, 100.0]])
    mask = np.array([[True, True, False]])
    out = blend(base, np.zeros_like(base), 0.0, mask, "minmax")
    assert out[0, :2] == pytest.approx([0.0, 1.0])  # the padded 100 did not stretch the range
    assert out[0, 2] == -np.inf


def test_affinity_is_prior_dot_membership():
    P = np.array([[0.5, 0.5, 0.0], [0.0, 0.0, 1.0]])
    M = sp.csr_matrix(np.array([[1.0, 0, 0], [0, 0.5, 0.5], [0, 0, 1.0]]))
    items = np.array([[0, 1, -1], [2, 1, 0]])
    a = affinity(P, M, items)
    assert a == pytest.approx(np.array([[0.5, 0.25, 0.0], [1.0, 0.5, 0.0]]))


@pytest.mark.parametrize("w", [-0.1, 1.5, float("nan")])
def test_w_outside_unit_interval_is_rejected(w):
    with pytest.raises(ConfigError, match=r"w must be in \[0, 1\]"):
        blend(np.zeros((1, 2)), np.zeros((1, 2)), w, np.ones((1, 2), bool))


def test_unknown_normalization_lists_options():
    with pytest.raises(ConfigError, match="options: .*minmax"):
        blend(np.zeros((1, 2)), np.zeros((1, 2)), 0.5, np.ones((1, 2), bool), "l2")


def test_fuse_scores_external_ranker_matches_formula(rng):
    base = rng.normal(size=(4, 6))
    M = rng.random((6, 3))
    M /= M.sum(axis=1, keepdims=True)
    P = rng.dirichlet(np.ones(3), size=4)
    fused = fuse_scores(base, M, P, w=0.3)
    a = P @ M.T
    mm = lambda x: (x - x.min(1, keepdims=True)) / (x.max(1, keepdims=True) - x.min(1, keepdims=True))  # noqa: E731
    assert fused == pytest.approx(0.7 * mm(base) + 0.3 * mm(a))


def test_fuse_scores_accepts_a_prior_table_and_nan_for_missing_candidates(rng):
    table = PriorTable(["u1", "u2"], ("a", "b"), np.array([[1.0, 0.0], [0.0, 1.0]]))
    base = np.array([[1.0, np.nan, 0.0], [0.0, 1.0, 2.0]])
    M = np.array([[1.0, 0.0], [0.0, 1.0], [0.5, 0.5]])
    out = fuse_scores(base, M, table, w=1.0)
    assert out[0, 1] == -np.inf
    assert out[0, 0] > out[0, 2]  # user 1 prefers category a
    assert np.argmax(out[1]) == 1


def test_fuse_scores_errors_name_the_mismatch():
    with pytest.raises(PriorTableError, match="3 categories but item_membership has 2"):
        fuse_scores(np.zeros((1, 2)), np.eye(2), np.array([[0.2, 0.3, 0.5]]), 0.5)
    with pytest.raises(PriorTableError, match="2 rows but base_scores has 1"):
        fuse_scores(np.zeros((1, 2)), np.eye(2), np.array([[0.5, 0.5], [0.5, 0.5]]), 0.5)
    with pytest.raises(PriorTableError, match="prior: expected every row to sum to 1.*row 0 sums to 1.1"):
        fuse_scores(np.zeros((1, 2)), np.eye(2), np.array([[0.5, 0.6]]), 0.5)
    with pytest.raises(ConfigError, match="2 rows but base_scores has 3 candidate columns"):
        fuse_scores(np.zeros((1, 3)), np.eye(2), np.array([[0.5, 0.5]]), 0.5)


class TestLinearRule(FusionRuleTests):
    """The registered ``linear`` rule passes the fusion-rule contract."""

    rule = FUSION_RULES["linear"]


def test_registry_names_the_linear_rule_and_refuses_unknown_or_duplicate_names():
    assert FUSION_RULES["linear"] is blend and get_fusion_rule("linear") is blend
    with pytest.raises(ConfigError, match=r"unknown fusion rule 'nope'; options: \['linear'\]"):
        get_fusion_rule("nope")
    with pytest.raises(ConfigError, match="already registered"):
        register_fusion_rule("linear", blend)


def test_fuse_scores_uses_the_named_rule(rng):
    base = rng.normal(size=(4, 6))
    M = np.eye(6)[:, :3] + np.eye(6)[:, 3:]
    P = rng.dirichlet(np.ones(3), size=4)
    assert np.array_equal(fuse_scores(base, M, P, w=0.4, rule="linear"), fuse_scores(base, M, P, w=0.4))
    with pytest.raises(ConfigError, match="unknown fusion rule"):
        fuse_scores(base, M, P, w=0.4, rule="nope")
