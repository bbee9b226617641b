"""Pure readout math: yes/no score, softmax, branch selection, chain rule, shards (no model)."""

import numpy as np
import pytest

from spectra_rec.errors import ConfigError
from spectra_rec.probe.readouts import (
    chain_rule,
    make_readout,
    parse_branches,
    select_branches,
    softmax,
    yes_no_scores,
)
from spectra_rec.probe.run import cohort, parse_shard, shard_users


def test_yes_no_score_is_logsumexp_difference():
    lp = np.array([[-1.0, -2.0, -0.5, -3.0]])  # A = (Yes, yes), N = (No, no)
    expected = np.log(np.exp(-1.0) + np.exp(-2.0)) - np.log(np.exp(-0.5) + np.exp(-3.0))
    assert yes_no_scores(lp, 2)[0] == pytest.approx(expected, abs=1e-12)


def test_yes_no_score_ignores_a_shared_row_shift():
    # Backends return log-probabilities l - logZ: the row's constant cancels in s.
    logits = np.array([3.0, 1.0, -2.0, 0.5])
    lp = logits - np.log(np.exp(logits).sum() + 7.0)
    assert yes_no_scores(lp, 2) == pytest.approx(yes_no_scores(logits, 2), abs=1e-12)


def test_softmax_with_temperature():
    s = np.array([1.0, 2.0, 4.0])
    for tau in (0.5, 1.0, 3.0):
        e = np.exp(s / tau)
        assert softmax(s, tau) == pytest.approx(e / e.sum(), abs=1e-12)
    with pytest.raises(ConfigError, match="tau"):
        softmax(s, 0.0)


@pytest.mark.parametrize(
    "spec, expected",
    [("all", [0, 1, 2, 3]), ("top:2", [1, 3]), ("tail:1", [2]), ("top:9", [0, 1, 2, 3]), ("tail:2", [0, 2])],
)
def test_select_branches(spec, expected):
    p1 = np.array([0.2, 0.4, 0.1, 0.3])
    assert select_branches(p1, spec).tolist() == expected


@pytest.mark.parametrize("bad", ["some", "top", "top:0", "tail:-1", "top:x"])
def test_branch_spec_errors_name_the_value(bad):
    with pytest.raises(ConfigError, match="top:b"):
        parse_branches(bad)


def test_chain_rule_is_exact_on_a_partition_with_consistent_marginals():
    rng = np.random.default_rng(0)
    children = [[0, 3], [1, 4, 5], [2]]
    flat = rng.dirichlet(np.ones(6))
    p1 = np.array([flat[k].sum() for k in children])
    cond = {b: flat[k] / flat[k].sum() for b, k in enumerate(children)}
    assert chain_rule(p1, children, [0, 1, 2], cond, 6) == pytest.approx(flat, abs=1e-15)


def test_chain_rule_unexpanded_branches():
    children = [[0, 1], [2, 3]]
    p1 = np.array([0.6, 0.4])
    cond = {0: np.array([0.25, 0.75])}
    uniform = chain_rule(p1, children, [0], cond, 4, "uniform")
    assert uniform == pytest.approx([0.6 * 0.25, 0.6 * 0.75, 0.2, 0.2])
    zero = chain_rule(p1, children, [0], cond, 4, "zero")
    assert zero == pytest.approx([0.25, 0.75, 0.0, 0.0])


def test_unknown_readout_lists_the_registry():
    with pytest.raises(ConfigError, match="logit"):
        make_readout("nope")


def test_shards_partition_the_cohort(synthetic_split):
    users = cohort(synthetic_split)
    parts = [shard_users(users, (i, 3)) for i in range(3)]
    assert np.concatenate(parts).tolist() == users.tolist()
    assert max(map(len, parts)) - min(map(len, parts)) <= 1
    assert parse_shard("2/3") == (2, 3)
    for bad in ("3/3", "1", "a/b", "-1/2"):
        with pytest.raises(ConfigError, match="shard"):
            parse_shard(bad)


def test_choice_blocks():
    from spectra_rec.probe.readouts import choice_blocks

    assert choice_blocks(19) == [list(range(19))]
    blocks = choice_blocks(60, 26, anchor=7)
    assert [len(b) for b in blocks] == [26, 26, 10] and all(b[0] == 7 for b in blocks)
    assert sorted(c for b in blocks for c in b[1:]) == [c for c in range(60) if c != 7]
    assert choice_blocks(27, 26) == [[0, *range(1, 26)], [0, 26]]
