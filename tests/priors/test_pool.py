"""Log-linear pools of priors (``A*B``): the formula, the dev-cohort fit, and the held-out data it may read."""

from __future__ import annotations

import numpy as np
import pytest

from spectra_rec.data import load_dataset, split_dataset
from spectra_rec.errors import ConfigError
from spectra_rec.evaluate import load_priors
from spectra_rec.metrics.distribution import js_divergence
from spectra_rec.priors import history_prior
from spectra_rec.priors.pool import EXPOSURE_K, FLOOR, fit_pool_weights, log_pool
from spectra_rec.priors.registry import resolve_prior
from spectra_rec.testing.data import perturb_heldout
from spectra_rec.testing.priors import contract_splits


@pytest.fixture(scope="module")
def splits(tmp_path_factory):
    return contract_splits(tmp_path_factory.mktemp("pool"))


def test_log_pool_is_the_normalized_weighted_product():
    rng = np.random.default_rng(0)
    P = rng.dirichlet(np.ones(5), size=(3, 4))  # 3 components, 4 users, 5 categories
    w = np.array([0.7, -0.2, 1.3])
    want = np.empty((4, 5))
    for u in range(4):
        prod = [np.prod([(P[i, u, c] + FLOOR) ** w[i] for i in range(3)]) for c in range(5)]
        want[u] = np.array(prod) / sum(prod)
    np.testing.assert_allclose(log_pool(P, w), want, rtol=1e-12)


def test_the_fit_recovers_weights_that_generated_the_truth():
    rng = np.random.default_rng(1)
    P = rng.dirichlet(np.ones(6), size=(2, 300))
    w = np.array([0.6, 1.4])
    q = log_pool(P, w)
    got = fit_pool_weights(P, q)
    np.testing.assert_allclose(got, w, atol=0.02)
    assert js_divergence(log_pool(P, got), q).mean() < 1e-5


def test_a_pool_is_at_least_as_close_to_the_dev_truth_as_its_parts(splits):
    split, _ = splits
    table = resolve_prior("uhf-decay*popularity", split)
    meta = table.meta["pool"]
    dev, _ = split.cohorts(0.2, 0)
    assert table.method == "uhf-decay*popularity" and meta["components"] == ["uhf-decay", "popularity"]
    assert meta["dev_users"] == len(dev) and meta["cohort_seed"] == 0
    q = split.ground_truth(users=dev)
    pooled = js_divergence(table.matrix(split.dataset, dev), q).mean()
    parts = [js_divergence(history_prior(split, s).matrix(split.dataset, dev), q).mean() for s in meta["components"]]
    np.testing.assert_allclose(meta["dev_js_components"], parts, atol=1e-6)
    assert pooled <= min(parts) + 1e-9
    np.testing.assert_allclose(meta["dev_js"], pooled, atol=1e-6)
    np.testing.assert_allclose(table.probs.sum(axis=1), 1.0, atol=1e-12)


def test_only_the_dev_cohorts_held_out_interactions_reach_the_pool(splits, tmp_path):
    split, _ = splits
    dev, test = split.cohorts(0.2, 0)
    a = resolve_prior("uhf*popularity", split)
    test_changed = split_dataset(load_dataset(perturb_heldout(split, tmp_path / "test" / "contract", users=test)))
    b = resolve_prior("uhf*popularity", test_changed)
    assert a.user_ids.tolist() == b.user_ids.tolist()
    np.testing.assert_array_equal(a.probs, b.probs)  # the reported cohort is never read
    dev_changed = split_dataset(load_dataset(perturb_heldout(split, tmp_path / "dev" / "contract", users=dev)))
    c = resolve_prior("uhf*popularity", dev_changed)
    assert c.meta["pool"]["weights"] != a.meta["pool"]["weights"]  # the weights are fitted on dev
    other = resolve_prior("uhf*popularity", split, cohorts=(0.2, 1))
    assert other.meta["pool"]["cohort_seed"] == 1 and other.meta["pool"]["weights"] != a.meta["pool"]["weights"]


def test_pools_take_tables_and_labels(splits, tmp_path):
    split, _ = splits
    path = history_prior(split, "markov").save(tmp_path / "m.parquet")
    pri = load_priors(split, [f"mix={path}*uhf"])
    assert pri["mix"].meta["pool"]["components"] == [str(path), "uhf"]


@pytest.mark.parametrize("flag", ["--prior", "--priors"])
@pytest.mark.parametrize("spec, match", [
    ("uhf*", r"{flag} 'uhf\*': a pool needs two or more prior specs joined by '\*'"),
    ("*uhf", r"{flag} '\*uhf': a pool needs two or more prior specs"),
    ("uhf*bogus", r"{flag} 'bogus' is neither a prior name"),
])
def test_bad_pool_specs_are_one_line_errors_naming_the_flag(splits, flag, spec, match):
    with pytest.raises(ConfigError, match=match.format(flag=flag)) as exc:
        resolve_prior(spec, splits[0], flag=flag)
    assert "\n" not in str(exc.value)


def test_priors_and_evaluate_commands_take_a_pool(capsys, tmp_path, synthetic_dir, synthetic_split):
    import json

    from spectra_rec.cli import main
    from spectra_rec.priors import PriorTable

    runs = tmp_path / "runs"
    assert main(["priors", "--dataset", str(synthetic_dir), "--method", "uhf*popularity", "--runs", str(runs)]) == 0
    out = capsys.readouterr().out.strip()
    assert out.endswith("synthetic-uhf+popularity.parquet")
    table = PriorTable.load(out)
    np.testing.assert_allclose(table.probs, resolve_prior("uhf*popularity", synthetic_split).probs, atol=1e-12)
    rc = main(["evaluate", "--dataset", str(synthetic_dir), "--runs", str(runs), "--cohort", "test", "--no-figures",
               "--out", str(tmp_path / "ev"), "--priors", "uhf", f"pool={out}", "uhf-decay*uhf"])
    assert rc == 0
    results = json.loads((tmp_path / "ev" / "results.json").read_text())
    assert [m["name"] for m in results["methods"]] == ["uhf", "pool", "uhf-decay*uhf"]


def test_a_bad_part_fails_before_any_spectra_part_is_aligned(splits, tmp_path):
    spectra = __import__("spectra_rec.priors.registry", fromlist=["SpectraOptions"]).SpectraOptions(runs=tmp_path / "r")
    for spec, match in [("spectra-name*bogus", "'bogus' is neither a prior name"),
                        ("spectra-name*markov@3", r"prior 'markov@3': only \['uhf', 'uhf-laplace'\] take a context window")]:
        with pytest.raises(ConfigError, match=match):
            resolve_prior(spec, splits[0], spectra=spectra)
    assert not (tmp_path / "r").exists()  # nothing was aligned or probed


def _dev_entropy(split, probs_dev):
    from spectra_rec.metrics.exposure import exposure_entropy, topk_exposure

    return float(exposure_entropy(topk_exposure(probs_dev, EXPOSURE_K)))


def test_the_exposure_part_is_the_smallest_contrast_reaching_uhfs_dev_entropy(splits):
    split, _ = splits
    ds = split.dataset
    dev, _ = split.cohorts(0.2, 0)
    table = resolve_prior("uhf-decay*markov*exposure", split)
    meta = table.meta["pool"]
    e = meta["exposure"]
    assert table.method == "uhf-decay*markov*exposure" and meta["components"] == ["uhf-decay", "markov"]
    target = _dev_entropy(split, history_prior(split, "uhf").matrix(ds, dev))
    assert e["reached"] and e["reference"] == "uhf" and e["contrast"] > 0
    np.testing.assert_allclose(e["reference_dev_entropy"], target, atol=1e-6)
    # the table is the product formula with the recorded weights and contrast, by an explicit loop
    parts = [history_prior(split, s).matrix(ds, dev) for s in meta["components"]]
    pop = history_prior(split, "popularity").matrix(ds, dev)
    w, c = meta["weights"], e["contrast"]
    want = np.array([[np.prod([(P[u, k] + FLOOR) ** wi for P, wi in zip(parts, w)]) * (pop[u, k] + FLOOR) ** -c
                      for k in range(ds.K)] for u in range(len(dev))])
    want /= want.sum(axis=1, keepdims=True)
    got = table.matrix(ds, dev)
    np.testing.assert_allclose(got, want, atol=1e-5)  # the recorded weights are rounded to 6 digits
    assert _dev_entropy(split, got) >= target
    # one grid step less, its weights fitted afresh, stays below the reference
    q = split.ground_truth(users=dev)
    off = -(c - 0.05) * np.log(pop + FLOOR)
    below = log_pool(parts, fit_pool_weights(parts, q, offset=off), offset=off)
    assert _dev_entropy(split, below) < target


def test_a_pool_ranking_like_uhf_needs_no_contrast_and_one_like_popularity_never_reaches_it(splits, caplog):
    split, _ = splits
    ds = split.dataset
    dev, _ = split.cohorts(0.2, 0)
    same = resolve_prior("uhf*exposure", split)  # a power of uhf ranks every user's categories as uhf does
    assert same.meta["pool"]["exposure"]["contrast"] == 0 and same.meta["pool"]["exposure"]["reached"]
    with caplog.at_level("WARNING"):
        never = resolve_prior("popularity*uniform*exposure", split)  # every user gets one ranking, whatever c
    e = never.meta["pool"]["exposure"]
    assert not e["reached"] and "no contrast up to 3 reaches uhf's dev top-3 exposure entropy" in caplog.text
    np.testing.assert_allclose(e["dev_entropy"], np.log2(3), atol=1e-6)  # one top 3 for every dev user
    assert e["contrast"] == 0  # the most diverse contrast, the smallest of the ties
    top3 = np.sort(np.argsort(-never.matrix(ds, dev), axis=1)[:, :3], axis=1)
    assert (top3 == top3[0]).all()


def test_the_exposure_pool_reads_only_the_dev_cohorts_held_out_interactions(splits, tmp_path):
    split, _ = splits
    _, test = split.cohorts(0.2, 0)
    a = resolve_prior("uhf-decay*markov*exposure", split)
    changed = split_dataset(load_dataset(perturb_heldout(split, tmp_path / "contract", users=test)))
    b = resolve_prior("uhf-decay*markov*exposure", changed)
    np.testing.assert_array_equal(a.probs, b.probs)
    assert a.meta["pool"]["exposure"] == b.meta["pool"]["exposure"]


@pytest.mark.parametrize("spec, match", [
    ("exposure", r"--prior 'exposure' is a pool part only, e.g. spectra-name\*uhf\*exposure"),
    ("uhf*exposure*exposure", r"--prior 'uhf\*exposure\*exposure': 'exposure' may appear once in a pool"),
    ("exposure*exposure", r"'exposure' may appear once in a pool, next to at least one prior"),
])
def test_bad_exposure_specs_are_one_line_errors(splits, spec, match):
    with pytest.raises(ConfigError, match=match) as exc:
        resolve_prior(spec, splits[0])
    assert "\n" not in str(exc.value)


def test_a_pool_with_a_spectra_part_takes_the_spectra_flags():
    from spectra_rec.priors.registry import uses_spectra

    assert uses_spectra("spectra-name*uhf*exposure") and uses_spectra("spectra") and uses_spectra("uhf* spectra-choice")
    assert not uses_spectra("uhf*popularity") and not uses_spectra("uhf")
