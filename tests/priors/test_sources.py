"""Every history prior passes the prior-source contract (spectra_rec.testing.priors), and the contract
catches priors that break it."""

from __future__ import annotations

import numpy as np
import pytest

from spectra_rec.priors import HISTORY_PRIORS, PriorTable
from spectra_rec.priors import history
from spectra_rec.testing.priors import PriorSourceTests, contract_splits


class TestUHF(PriorSourceTests):
    spec = "uhf"


class TestUHFWindow(PriorSourceTests):
    spec = "uhf@5"


class TestUHFLaplace(PriorSourceTests):
    spec = "uhf-laplace"


class TestUHFLaplaceWindow(PriorSourceTests):
    spec = "uhf-laplace@3"


class TestUHFDecay(PriorSourceTests):
    spec = "uhf-decay"


class TestMarkov(PriorSourceTests):
    spec = "markov"


class TestPopularity(PriorSourceTests):
    spec = "popularity"


class TestUniform(PriorSourceTests):
    spec = "uniform"


class TestOracle(PriorSourceTests):
    spec = "oracle"
    reads_heldout = True  # q itself, labelled: the one source allowed to read the held-out window


def test_every_registered_history_prior_has_a_contract_class():
    covered = {cls.spec.partition("@")[0] for cls in PriorSourceTests.__subclasses__() if cls.__name__.startswith("Test")}
    assert covered >= set(HISTORY_PRIORS)


# ---------------------------------------------------------------- the contract catches broken sources
class LeakyUHF(PriorSourceTests):
    """UHF mixed with the held-out truth: what a prior built over the whole window looks like."""

    spec = "uhf"

    def build(self, split):
        ds = split.dataset
        users = np.flatnonzero(split.n_train > 0)
        probs = 0.5 * history.uhf(split) + 0.5 * history.oracle(split)
        return PriorTable(ds.user_ids[users], ds.categories, probs[users], {"method": "uhf"})


class NoisyUHF(PriorSourceTests):
    """UHF plus unseeded noise: a different table on every call."""

    spec = "uhf"

    def build(self, split):
        ds = split.dataset
        users = np.flatnonzero(split.n_train > 0)
        noisy = history.uhf(split)[users] + np.random.default_rng().uniform(0, 0.1, size=(len(users), ds.K))
        return PriorTable(ds.user_ids[users], ds.categories, noisy / noisy.sum(1, keepdims=True), {"method": "uhf"})


class UnlabelledOracle(PriorSourceTests):
    """The oracle opted out of the held-out check, but its table does not say it reads held-out data."""

    spec = "oracle"
    reads_heldout = True

    def build(self, split):
        t = history.history_prior(split, "oracle")
        return PriorTable(t.user_ids, t.categories, t.probs, t.meta | {"uses_heldout": False})


@pytest.fixture(scope="module")
def splits(tmp_path_factory):
    return contract_splits(tmp_path_factory.mktemp("broken"))


def test_contract_catches_a_prior_that_reads_heldout_data(splits):
    with pytest.raises(AssertionError, match="held-out interactions reached the prior"):
        LeakyUHF().test_held_out_interactions_change_nothing(splits)
    LeakyUHF().test_rows_are_distributions(splits)  # the leak is invisible to the other checks


def test_contract_catches_a_nondeterministic_prior(splits):
    with pytest.raises(AssertionError, match="not deterministic"):
        NoisyUHF().test_same_split_gives_the_same_table(splits)


def test_contract_catches_an_oracle_that_does_not_say_it_reads_heldout_data(splits):
    with pytest.raises(AssertionError, match="must say so"):
        UnlabelledOracle().test_held_out_interactions_change_nothing(splits)
