"""``--tau auto``: the temperature fitted on the dev cohort, its metadata, and its errors."""

from __future__ import annotations


import numpy as np
import pytest

from spectra_rec.errors import ConfigError
from spectra_rec.probe.temperature import fit_tau, parse_tau, tempered


def _js(p, q):
    # independent of spectra_rec.metrics: scipy's JS distance, squared (base 2)
    from scipy.spatial.distance import jensenshannon

    return np.array([jensenshannon(a, b, base=2) ** 2 for a, b in zip(p, q)])


def test_fit_tau_recovers_the_temperature_that_generated_the_truth():
    rng = np.random.default_rng(0)
    s = rng.normal(size=(200, 6)) * 3
    q = tempered(s, 2.5)
    fit = fit_tau(s, q, "logit")
    assert fit["tau"] == pytest.approx(2.5, rel=1e-3)
    assert fit["dev_js"] == pytest.approx(0.0, abs=1e-6)
    assert fit["dev_js_tau1"] == pytest.approx(_js(tempered(s, 1.0), q).mean(), abs=1e-6)  # rounded to 6 places
    assert fit["objective"] == "mean dev JS" and fit["dev_users"] == 200


def test_fit_tau_is_the_minimum_of_an_explicit_grid():
    rng = np.random.default_rng(1)
    s = rng.normal(size=(100, 5))
    q = rng.dirichlet(np.ones(5) * 0.5, size=100)
    fit = fit_tau(s, q, "name")
    grid = np.exp(np.linspace(np.log(1 / 32), np.log(32), 2001))
    best = min(_js(tempered(s, t), q).mean() for t in grid)
    assert fit["dev_js"] <= best + 1e-6
    assert softmax_rows_sum_to_one(tempered(s, fit["tau"]))


def softmax_rows_sum_to_one(p):
    return np.allclose(p.sum(1), 1.0) and (p >= 0).all()


def test_fit_tau_errors_name_the_readout():
    with pytest.raises(ConfigError, match=r"--tau auto \(choice readout\): the dev cohort is empty"):
        fit_tau(np.zeros((0, 4)), np.zeros((0, 4)), "choice")
    s = np.zeros((3, 4))
    s[1, 2] = np.nan
    with pytest.raises(ConfigError, match=r"--tau auto \(logit readout\): 1 score\(s\) are NaN"):
        fit_tau(s, np.full((3, 4), 0.25), "logit")


def test_parse_tau():
    assert parse_tau("auto") == "auto" and parse_tau("0.5") == 0.5
    for bad in ("0", "-1", "x", "nan"):
        with pytest.raises(ConfigError, match="--tau must be a number > 0 or 'auto'"):
            parse_tau(bad)


def test_probe_cli_tau_auto_writes_the_fitted_table(synthetic_dir, tmp_path):
    """The real probe CLI on a tiny random model: tau fitted on the dev users, recorded in the metadata."""
    from spectra_rec.cli import main
    from spectra_rec.data import load_dataset, split_dataset
    from spectra_rec.priors import PriorTable
    from spectra_rec.testing.tiny import tiny_model_and_tokenizer

    ds = load_dataset(synthetic_dir)
    model, tok = tiny_model_and_tokenizer(ds)
    model.save_pretrained(tmp_path / "m")
    tok.save_pretrained(tmp_path / "m")
    out = tmp_path / "p.parquet"
    rc = main(["probe", "--dataset", str(synthetic_dir), "--model", str(tmp_path / "m"), "--readout", "name",
               "--tau", "auto", "--out", str(out), "--runs", str(tmp_path / "runs"), "--max-items", "5",
               "--max-users", "50", "--no-progress"])
    assert rc == 0
    table = PriorTable.load(out)
    fit = table.meta["tau_fit"]
    assert table.meta["tau"] == fit["tau"] > 0
    split = split_dataset(ds)
    dev, _ = split.cohorts(0.2, 0)
    assert fit["dev_users"] == len(np.intersect1d(dev, split.eval_users[:50])) > 0  # the probed dev users
    # the rows are softmax(s / tau) of the raw scores
    import pandas as pd

    raw = pd.read_parquet(out.with_name("p.scores.parquet")).set_index("user_id")
    s = raw.loc[[str(u) for u in table.user_ids], [f"s:{c}" for c in table.categories]].to_numpy()
    np.testing.assert_allclose(table.probs, tempered(s, fit["tau"]), atol=1e-12)
    # the fitted tau is no worse on dev than tau = 1
    assert fit["dev_js"] <= fit["dev_js_tau1"] + 1e-12


def test_probe_cli_tau_auto_rejects_the_hierarchical_readout(synthetic_dir, tmp_path, capsys):
    from spectra_rec.cli import main

    rc = main(["probe", "--dataset", str(synthetic_dir), "--readout", "hier", "--tau", "auto",
               "--out", str(tmp_path / "p.parquet"), "--runs", str(tmp_path / "runs")])
    assert rc == 2
    assert "--tau auto supports --readout logit/name/choice" in capsys.readouterr().err
