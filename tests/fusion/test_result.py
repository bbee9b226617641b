"""fusion.evaluate.evaluate_fusion: one FusionResult, a user's w skips the sweep, borrowed choices are
labelled as such. Synthetic score matrices, no RecBole."""

import numpy as np
import pytest

import fusion.evaluate as fe
from fusion.candidates import Candidates
from fusion.evaluate import CaseScores, Choice, evaluate_fusion, evaluate_set, lift, summarize
from spectra_rec.errors import ConfigError

W_GRID = (0.0, 0.1, 0.5, 1.0)
NORMS = ("minmax", "rank")


def _cases(name: str, seed: int, n: int = 40, C: int = 12) -> CaseScores:
    """Random base scores; the prior affinity puts extra weight on the target, so some w > 0 helps."""
    rng = np.random.default_rng(seed)
    items = np.stack([rng.permutation(50)[:C] for _ in range(n)])
    targets = items[np.arange(n), rng.integers(0, C, n)]
    base = rng.normal(size=(n, C))
    aff = rng.dirichlet(np.ones(C), size=n) + 0.3 * (items == targets[:, None])
    cands = Candidates(name, np.arange(n), targets, items, {"seed": seed})
    return CaseScores(cands, base, aff, rng.integers(0, 3, n))


SETS = {"a": 1, "b": 2, "c": 3}
DEV = np.arange(40) < 12
TEST = ~DEV


def _build(name):
    return _cases(name, SETS[name])


def test_the_result_carries_summaries_and_lift_of_the_per_case_metrics():
    res = evaluate_fusion(SETS, _build, DEV, TEST, W_GRID, NORMS, n_boot=50, seed=3)
    assert list(res.sets) == ["a", "b", "c"] and res.k == 10 and res.w_grid == W_GRID
    for r in res.sets.values():
        assert r.w_source == "dev"
        assert r.summary["base"] == summarize(r.base, TEST, r.slices)
        assert r.summary["fused"] == summarize(r.fused, TEST, r.slices)
        assert r.lift == lift(r.base["NDCG@10"], r.fused["NDCG@10"], TEST, r.slices, 50, 3)
        assert set(r.base) == {"NDCG@10", "HR@10", "MRR@10"}


def test_a_user_w_runs_no_sweep_and_is_labelled_user(monkeypatch):
    def no_sweep(*a, **kw):
        raise AssertionError("a fixed w must not sweep")

    monkeypatch.setattr(fe, "sweep", no_sweep)
    res = evaluate_fusion(SETS, _build, DEV, TEST, W_GRID, NORMS, w=0.1, select_on="b", n_boot=20)
    assert res.user_w == 0.1
    for r in res.sets.values():
        assert (r.w, r.normalization, r.w_source) == (0.1, "minmax", "user")
        assert r.sweep == {} and r.info["best_w_on_test_paper_style"] is None
        assert r.info["selection_rule"] == "fixed"
    # the same fused metrics as the swept path at that setting
    direct = _build("a").per_case(0.1, "minmax")
    assert np.array_equal(res.sets["a"].fused["NDCG@10"], direct["NDCG@10"])


def test_a_borrowed_choice_is_kept_apart_from_a_user_choice():
    res = evaluate_fusion(SETS, _build, DEV, TEST, W_GRID, NORMS, select_on="b", selection="max", n_boot=20)
    lender = res.sets["b"]
    assert lender.w_source == "dev" and "borrowed_from" not in lender.info
    for name in ("a", "c"):
        r = res.sets[name]
        assert (r.w, r.normalization) == (lender.w, lender.normalization)
        assert r.w_source == "borrowed" and r.info["borrowed_from"] == "b" and r.info["selection_rule"] == "borrowed"
        assert r.sweep  # still swept, for the curves and the paper-style figure
    own = evaluate_set(_build("a"), DEV, TEST, W_GRID, NORMS, selection="max", n_boot=20)
    assert own.w_source == "dev"


def test_choice_refuses_an_unknown_source_and_a_lender_without_borrowing():
    with pytest.raises(ValueError, match="source must be one of"):
        Choice("minmax", 0.1, "guess")
    with pytest.raises(ValueError, match="borrowed_from"):
        Choice("minmax", 0.1, "dev", borrowed_from="a")


def test_an_unknown_fusion_rule_fails_before_any_set_is_built():
    built = []
    with pytest.raises(ConfigError, match="unknown fusion rule .nope."):
        evaluate_fusion(SETS, lambda n: built.append(n) or _build(n), DEV, TEST, W_GRID, NORMS, rule="nope")
    assert built == []
