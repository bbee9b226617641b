"""Every built-in readout passes the readout contract (spectra_rec.testing.readouts) on the tiny model."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("torch")

from spectra_rec.probe.readout_base import UserResult  # noqa: E402
from spectra_rec.probe.readouts import LogitReadout, readout_key  # noqa: E402
from spectra_rec.testing.readouts import ReadoutTests  # noqa: E402
from spectra_rec.text.templates import Verbalizers  # noqa: E402


class TestLogit(ReadoutTests):
    readout = "logit"
    options = {"tau": 0.7}
    bad_options = ({"tau": 0}, {"tau": -1.0}, {"tau": "warm"}, {"verbalizers": Verbalizers((), ("No",))})


class TestName(ReadoutTests):
    readout = "name"
    options = {"tau": 1.3}
    bad_options = ({"tau": 0.0},)


class TestChoice(ReadoutTests):
    readout = "choice"
    bad_options = ({"tau": 0}, {"letters": ("A",)}, {"letters": ("A", "A")}, {"anchor": 1.5})


class TestChoiceAnchoredBlocks(ReadoutTests):
    readout = "choice"
    options = {"letters": ("A", "B", "C"), "anchor": 2}  # K = 6 > 3 letters: blocks anchored on category 2


class TestHier(ReadoutTests):
    readout = "hier"
    options = {"branches": "top:1", "tau_l2": 0.8}
    bad_options = ({"branches": "top:0"}, {"branches": "some"}, {"unexpanded": "half"}, {"l2_prompt": "nested"},
                   {"tau_l2": 0}, {"taxonomy": 3})


class TestDG(ReadoutTests):
    readout = "dg"
    options = {"k": 3, "max_new_tokens": 24}
    bad_options = ({"k": 0}, {"k": 2.5}, {"max_new_tokens": 0})


class TestRerank(ReadoutTests):
    readout = "rerank"
    bad_options = ({"normalize": "max"}, {"tau": 0}, {"yes": ""})


class _Unnormalized(LogitReadout):
    """A broken readout: the logit readout's probabilities doubled."""

    def score(self, backend, histories):
        return [UserResult(r.probs * 2, r.scores, r.extra) for r in super().score(backend, histories)]


def test_the_contract_catches_a_readout_returning_unnormalized_probabilities():
    suite = type("Broken", (ReadoutTests,), {"readout_cls": _Unnormalized})()
    with pytest.raises(AssertionError):
        suite.test_probs_are_distributions_over_the_K_categories()
    suite.test_same_users_score_the_same_on_a_fresh_readout_and_backend()  # the other checks see nothing wrong


def test_readout_keys_are_the_former_constructor_defaults():
    """The probe stage's readout part of the key, written out: a moved or renamed option would change every hash."""
    verb = {"affirmative": ["Yes", "yes"], "negative": ["No", "no"]}
    assert readout_key("logit", {}) == {"verbalizers": verb, "tau": 1.0}
    assert readout_key("name", {}) == {"tau": 1.0}
    assert readout_key("choice", {}) == {"tau": 1.0, "letters": list("ABCDEFGHIJKLMNOPQRSTUVWXYZ"), "anchor": 0}
    assert readout_key("hier", {}) == {"taxonomy": None, "branches": "all", "tau": 1.0, "tau_l2": None,
                                       "verbalizers": verb, "unexpanded": "uniform", "l2_prompt": "conditional"}
    assert readout_key("dg", {}) == {"k": 5, "max_new_tokens": None}
    assert readout_key("rerank", {}) == {"normalize": "sum", "tau": 1.0, "yes": "yes", "no": "no"}
    tax = {"G1": ["b", "c"], "G0": ["a"]}
    assert readout_key("hier", {"taxonomy": tax})["taxonomy"] == tax
    assert np.isclose(readout_key("logit", {"tau": 1})["tau"], 1.0)
