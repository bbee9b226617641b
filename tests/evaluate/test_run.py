"""spectra_rec.evaluate: library and CLI on synthetic data, including synthetic sanity checks with known answers."""

import json
import warnings

import numpy as np
import pytest

from spectra_rec.cli import main
from spectra_rec.data import load_dataset, split_dataset
from spectra_rec.data.synthetic import SyntheticConfig, make_synthetic
from spectra_rec.errors import ConfigError, DataWarning
from spectra_rec.evaluate import HELDOUT_TAG, EvalConfig, coarsen, evaluate, evaluate_arrays, load_priors
from spectra_rec.metrics.distribution import js_divergence
from spectra_rec.metrics.theory import dg_js_floor, outside_mass, uniform_on_topk
from spectra_rec.priors import PriorTable, history_prior

FAST = dict(n_boot=100, cohort="all")


@pytest.fixture(scope="module")
def synth(tmp_path_factory):
    root = tmp_path_factory.mktemp("synth")
    d = make_synthetic(root / "data", SyntheticConfig(n_users=240, n_items=300, n_l1=3, n_l2=4, seed=3))
    ds = load_dataset(d)
    return d, ds, split_dataset(ds)


def _dg_table(split, k=3, source="uhf"):
    """A DG-like prior: uniform on the top-k of the history prior (what a decoded list looks like)."""
    base = history_prior(split, source)
    return PriorTable(base.user_ids, base.categories, uniform_on_topk(base.probs, k), {"method": "dg"}, "dg-like")


# ---------------------------------------------------------------- synthetic sanity checks with known answers
def test_oracle_has_js_zero_and_ndcg_one_and_is_labelled(synth):
    _, ds, split = synth
    priors = {"oracle": history_prior(split, "oracle"), "uhf": history_prior(split, "uhf")}
    res = evaluate(split, priors, EvalConfig(**FAST))
    lab = "oracle" + HELDOUT_TAG
    rows = res.per_user[res.per_user["method"] == lab]
    assert len(rows) == len(split.eval_users)
    assert (rows["JS"] == 0).all()
    for k in (1, 3, 5, 10):
        assert rows[f"NDCG@{k}"].to_numpy() == pytest.approx(np.ones(len(rows)), abs=1e-12)
    assert lab in res.summary["JS"] and "oracle" not in res.summary["JS"]
    assert any(m["label"] == lab and m["uses_heldout"] for m in res.methods)


def test_uniform_on_topk_has_the_lemma1_floor(synth):
    """JS(uniform-on-top-k, q) >= h(delta/2) - h(delta)/2, delta = q mass outside the list (derivation in theory.py)."""
    _, ds, split = synth
    dg = _dg_table(split, k=3)
    res = evaluate(split, {"dg": dg, "uhf": history_prior(split, "uhf")}, EvalConfig(**FAST))
    users = split.eval_users
    q = split.ground_truth(users=users)
    p_dg = dg.matrix(ds, users)
    delta = outside_mass(q, p_dg > 0)
    assert (delta > 0).mean() > 0.5  # the truth has mass outside most lists
    floor = dg_js_floor(q, p_dg)
    js = res.per_user.loc[res.per_user["method"] == "dg", "JS"].to_numpy()
    assert js == pytest.approx(js_divergence(p_dg, q))
    assert (js >= floor - 1e-12).all()
    assert (floor[delta > 0] > 0).all()
    fl = res.theory["baseline_floor"]
    assert fl["sparse"] and fl["share_js_at_or_above_floor"] == 1.0
    assert res.theory["k"] == 3
    # equality case: the truth uniform on the list plus delta outside
    q_eq = np.array([[0.3, 0.3, 0.3, 0.1, 0.0]])
    p_eq = uniform_on_topk(q_eq, 3)
    assert js_divergence(p_eq, q_eq)[0] == pytest.approx(dg_js_floor(q_eq, p_eq)[0], abs=1e-12)


def test_truth_plus_small_noise_beats_dg_on_js_and_ndcg(synth):
    _, ds, split = synth
    users = split.eval_users
    q = split.ground_truth(users=users)
    rng = np.random.default_rng(0)
    noisy = q + rng.uniform(0, 0.02, q.shape)
    noisy /= noisy.sum(axis=1, keepdims=True)
    dg = _dg_table(split, k=3).matrix(ds, users)
    res = evaluate_arrays({"dg": dg, "truth+noise": noisy}, q, split.category_bucket, ds.categories,
                          EvalConfig(n_boot=200), n_train=split.n_train[users])
    for metric, better in (("JS", -1), ("NDCG@5", 1), ("NDCG@10", 1)):
        c = next(c for c in res.comparisons if c["metric"] == metric and c["b"] == "truth+noise")
        assert c["a"] == "dg"
        assert np.sign(c["diff"]) == better
        assert c["p_holm"] < 0.05
        assert (c["high"] < 0) if better < 0 else (c["low"] > 0)


# ---------------------------------------------------------------- the library
def test_summary_means_equal_per_user_means_and_cis_bracket(synth):
    _, ds, split = synth
    res = evaluate(split, {"uhf": history_prior(split, "uhf"), "popularity": history_prior(split, "popularity")},
                   EvalConfig(**FAST))
    assert res.baseline == "popularity"
    for metric in ("JS", "NDCG@10", "mass/tail"):
        for lab in ("uhf", "popularity"):
            e = res.summary[metric][lab]
            vals = res.per_user.loc[res.per_user["method"] == lab, metric]
            assert e["mean"] == pytest.approx(vals.mean())
            assert e["low"] <= e["mean"] + 1e-12 and e["mean"] <= e["high"] + 1e-12
    assert res.summary["Entropy@3"]["popularity"]["mean"] == pytest.approx(np.log2(3))  # same 3 for everyone
    assert "ECE/top1" in res.summary and "ECE/tail" in res.summary
    assert res.reference["mass/tail"]["mean"] == pytest.approx(
        res.per_user.loc[res.per_user["method"] == "uhf", "truth_mass/tail"].mean())
    assert len(res.strata) == 5 * 2 and {r["stratum"] for r in res.strata} == {f"A{i}" for i in range(1, 6)}
    assert sum(res.fairness["group_sizes"]) == len(split.eval_users)
    assert len(res.bias) == 2 * ds.K


def test_short_term_truth_and_cohorts_differ(synth):
    _, ds, split = synth
    pri = {"uhf": history_prior(split, "uhf")}
    long_ = evaluate(split, pri, EvalConfig(n_boot=50))
    short = evaluate(split, pri, EvalConfig(n_boot=50, truth="short", short_n=2))
    dev = evaluate(split, pri, EvalConfig(n_boot=50, cohort="dev"))
    assert long_.n_users == short.n_users and long_.n_users + dev.n_users == len(split.eval_users)
    assert short.summary["JS"]["uhf"]["mean"] != long_.summary["JS"]["uhf"]["mean"]


def test_taxonomy_coarsening_sums_columns(synth):
    _, ds, split = synth
    mm = {"G0-s1": "G0-s0", "G1-s2": "G1-s0"}
    kept, M = coarsen(ds.categories, mm)
    assert len(kept) == ds.K - 2 and "G0-s1" not in kept
    q = split.ground_truth(users=split.eval_users)
    assert (q @ M)[:, kept.index("G0-s0")] == pytest.approx(q[:, 0] + q[:, 1])
    res = evaluate(split, {"uhf": history_prior(split, "uhf"), "popularity": history_prior(split, "popularity")},
                   EvalConfig(n_boot=50, merge_map=mm))
    (variant,) = res.variants.values()
    assert variant.categories == kept and variant.n_users == res.n_users
    for bad, match in (({"Nope": "G0-s0"}, "unknown categories"), ({"G0-s1": "G0-s2", "G0-s2": "G0-s3"}, "themselves")):
        with pytest.raises(ConfigError, match=match):
            coarsen(ds.categories, bad)


def test_empty_quartile_is_nan_with_warning_not_a_crash():
    rng = np.random.default_rng(0)
    n, K = 80, 6
    buckets = np.array([0, 0, 1, 1, 2, 2])
    q = rng.dirichlet(np.ones(K), size=n)
    q[:60, 4:] = 0  # 75% of users have no tail mass: quartile edges tie at 0
    q /= q.sum(axis=1, keepdims=True)
    p = rng.dirichlet(np.ones(K), size=n)
    with pytest.warns(DataWarning, match="has no users"):
        res = evaluate_arrays({"a": p, "b": q * 0.5 + p * 0.5}, q, buckets, list("abcdef"), EvalConfig(n_boot=50))
    groups = res.fairness["methods"]["b"]["groups"]
    assert any(g["n"] == 0 and np.isnan(g["reduction"]) for g in groups)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(truth="medium"), "truth"),
        (dict(k=(0, 5)), "k must be"),
        (dict(k=()), "k must be"),
        (dict(cohort="train"), "cohort"),
        (dict(n_boot=0), "n_boot"),
        (dict(alpha=1.5), "alpha"),
    ],
)
def test_config_validation_names_the_field(kwargs, match):
    with pytest.raises(ConfigError, match=match):
        EvalConfig(**kwargs)


def test_invalid_arrays_name_the_argument():
    q = np.array([[0.5, 0.5], [1.0, 0.0]])
    with pytest.raises(ValueError, match=r"probs\['x'\]: expected every row to sum to 1"):
        evaluate_arrays({"x": np.array([[0.5, 0.6], [1.0, 0.0]])}, q, [0, 2], ["a", "b"])
    with pytest.raises(ValueError, match=r"probs\['x'\]: expected finite"):
        evaluate_arrays({"x": np.array([[np.nan, 0.5], [1.0, 0.0]])}, q, [0, 2], ["a", "b"])
    with pytest.raises(ValueError, match=r"probs\['x'\]: expected shape"):
        evaluate_arrays({"x": np.array([[0.5, 0.5]])}, q, [0, 2], ["a", "b"])
    with pytest.raises(ConfigError, match="baseline 'zzz'"):
        evaluate_arrays({"x": q}, q, [0, 2], ["a", "b"], EvalConfig(baseline="zzz"))


def test_load_priors_resolves_names_files_and_labels(synth, tmp_path):
    _, ds, split = synth
    path = _dg_table(split).save(tmp_path / "dg.parquet")
    pri = load_priors(split, ["uhf", str(path), f"dg2={path}", "uhf@5"])
    assert list(pri) == ["uhf", "dg", "dg2", "uhf@5"]
    assert pri["uhf@5"].meta["context_window"] == 5
    with pytest.raises(ConfigError, match="only .* take a context window"):
        load_priors(split, ["markov@5"])
    with pytest.raises(ConfigError, match=r"--priors 'nonsense' is neither a prior name \(history priors \['markov'.*"
                                          r"SPECTRA readouts \['spectra'"):
        load_priors(split, ["nonsense"])
    with pytest.raises(ConfigError, match="two priors named 'uhf'"):
        load_priors(split, ["uhf", "uhf"])


# ---------------------------------------------------------------- the CLI
def test_cli_writes_the_full_report(synth, tmp_path, capsys):
    data_dir, ds, split = synth
    dg_path = _dg_table(split).save(tmp_path / "dg.csv")
    mm = tmp_path / "merge.json"
    mm.write_text(json.dumps({"G0-s1": "G0-s0"}))
    out = tmp_path / "report"
    rc = main(["evaluate", "--dataset", str(data_dir), "--priors", "uhf", "popularity", "oracle", f"dg={dg_path}",
               "--n-boot", "50", "--merge-map", str(mm), "--out", str(out), "--runs", str(tmp_path / "runs")])
    assert rc == 0
    console = capsys.readouterr().out
    for token in ("JS", "NDCG@5", "NDCG@10", "exposure entropy@3", "mass/tail", "baseline dg", "oracle" + HELDOUT_TAG):
        assert token in console
    for name in ("report.md", "per_user.csv", "summary.csv", "comparisons.csv", "category_bias.csv", "fairness.csv",
                 "results.json", "manifest.json", "js_by_method.png", "category_bias.png", "reliability.png",
                 "fairness_quartiles.png", "exposure_entropy.png"):
        assert (out / name).exists(), name
    report = (out / "report.md").read_text()
    assert "oracle" + HELDOUT_TAG in report and "Robustness variant: taxonomy coarsened 12 -> 11" in report
    data = json.loads((out / "results.json").read_text(), parse_constant=lambda c: pytest.fail(f"bare {c} in JSON"))
    assert data["baseline"] == "dg" and "oracle" + HELDOUT_TAG in data["summary"]["JS"]
    assert (out / "js_by_method.png").read_bytes()[:4] == b"\x89PNG"


@pytest.mark.parametrize(
    "extra, match",
    [
        (["--k", "0"], "--k: expected integers >= 1"),
        (["--priors", "bogus"], "--priors 'bogus' is neither a prior name"),
        (["--priors", "markov@5"], "--priors: prior 'markov@5': only"),
        (["--tau", "0.5"], "--tau applies to --priors spectra"),
        (["--baseline", "dg"], "baseline 'dg' is not among"),
    ],
)
def test_cli_bad_arguments(synth, tmp_path, capsys, extra, match):
    data_dir, _, _ = synth
    args = ["evaluate", "--dataset", str(data_dir), "--n-boot", "20", "--no-figures", "--out", str(tmp_path / "o"),
            "--runs", str(tmp_path / "runs")]
    assert main(args + extra) == 2  # the CLI turns a ConfigError into one line on stderr
    assert match in capsys.readouterr().err
    assert not (tmp_path / "o").exists()


def test_no_warnings_on_an_ordinary_run(synth):
    _, ds, split = synth
    with warnings.catch_warnings():
        warnings.simplefilter("error", DataWarning)
        evaluate(split, {"uhf": history_prior(split, "uhf"), "dg": _dg_table(split)}, EvalConfig(n_boot=50))


def test_the_spectra_flags_apply_to_a_pool_with_a_spectra_part(tmp_path):
    from argparse import Namespace

    from spectra_rec.evaluate.cli import spectra_options

    args = Namespace(priors=["uhf", "mix=spectra-name*uhf*exposure"], backend="hf", adapter=tmp_path, tau=0.5,
                     fresh=False, runs=tmp_path / "runs")
    opts = spectra_options(args)
    assert opts.adapter == tmp_path and opts.tau == 0.5
    with pytest.raises(ConfigError, match=r"--adapter applies to --priors spectra\|.* \(alone or in a pool\)"):
        spectra_options(Namespace(**{**vars(args), "priors": ["uhf*markov"]}))
