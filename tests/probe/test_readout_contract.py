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


def test_only_dg_takes_a_default_from_the_align_manifest():
    from spectra_rec.probe.readouts import READOUTS

    manifest = {"config": {"sft": {"dg_k": 4, "context_items": 9}}}
    assert READOUTS["dg"].manifest_defaults(manifest) == {"k": 4}
    assert READOUTS["dg"].manifest_defaults({"config": {"sft": {}}}) == {}
    assert all(READOUTS[n].manifest_defaults(manifest) == {} for n in READOUTS if n != "dg")


@pytest.mark.parametrize("given, manifest_k, expected", [(None, 4, 4), (None, None, 3), (2, 4, 2)])
def test_dg_cli_takes_k_from_the_option_then_the_manifest_then_3(given, manifest_k, expected, tmp_path):
    from argparse import Namespace

    from spectra_rec.probe.cli_common import fill_probe_defaults

    class DS:
        name = "d"

    manifest = {"config": {"sft": {"context_items": 7} | ({"dg_k": manifest_k} if manifest_k else {})}}
    args = Namespace(max_items=None, out=None, runs=tmp_path)
    options = {"k": given, "max_new_tokens": None}
    max_items, _ = fill_probe_defaults(args, "dg", options, "{dataset}-{readout}-{model}.parquet", DS(), None, manifest,
                                       "m", None, {"k": 3})
    assert options == {"k": expected, "max_new_tokens": None} and max_items == 7
    logit_options = {"tau": 1.0}
    fill_probe_defaults(args, "logit", logit_options, "{dataset}.parquet", DS(), None, manifest, "m", None, None)
    assert logit_options == {"tau": 1.0}
