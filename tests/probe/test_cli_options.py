"""The probe CLI reads each readout's options off its config's fields; the lists of readouts come from the registry."""

from __future__ import annotations

import argparse

import pytest

from spectra_rec.probe import cli
from spectra_rec.probe.readouts import AUTO_TAU_READOUTS, PROBE_READOUTS, READOUTS, readout_key
from spectra_rec.priors.registry import SPECTRA_PRIORS


def _args(*argv: str):
    p = argparse.ArgumentParser()
    cli.add_arguments(p)
    return p.parse_args(list(argv))


@pytest.mark.parametrize("readout", PROBE_READOUTS)
def test_default_flags_give_the_library_defaults_cache_key(readout):
    options = cli.readout_options(_args("--readout", readout))
    assert readout_key(readout, options) == readout_key(readout, {})


def test_flags_reach_the_fields_of_the_same_name():
    args = _args("--readout", "hier", "--branches", "top:2", "--tau", "0.5", "--tau-l2", "2", "--unexpanded", "zero",
                 "--verbalizers", "Yes/No", "--taxonomy", "some/file.json")
    options = cli.readout_options(args)
    assert options["branches"] == "top:2" and options["tau"] == 0.5 and options["tau_l2"] == 2.0
    assert options["unexpanded"] == "zero"
    assert options["verbalizers"].affirmative == ("Yes",) and options["verbalizers"].negative == ("No",)
    assert "taxonomy" not in options  # the dataset's --taxonomy file is not hier's taxonomy option
    choice = cli.readout_options(_args("--readout", "choice", "--anchor", "Drama", "--tau", "2"))
    assert choice == {"tau": 2.0, "anchor": "Drama"}
    assert cli.readout_options(_args("--readout", "name", "--tau-l2", "3")) == {"tau": 1.0}


def test_readout_lists_follow_the_registry():
    assert PROBE_READOUTS == ("logit", "name", "choice", "hier")
    assert set(AUTO_TAU_READOUTS) == {"logit", "name", "choice"}
    assert {"dg", "rerank"} <= set(READOUTS) and not {"dg", "rerank"} & set(PROBE_READOUTS)
    # every SPECTRA readout has a prior name, and every prior name reads a SPECTRA readout
    assert sorted(SPECTRA_PRIORS.values()) == sorted(PROBE_READOUTS)
