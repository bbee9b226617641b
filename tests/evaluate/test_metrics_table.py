"""The evaluate metric tables: adding a per-user or a cohort metric is one row, and it reaches every output."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from spectra_rec.errors import DataWarning
from spectra_rec.evaluate import COHORT_METRICS, USER_METRICS, CohortMetric, EvalConfig, UserMetric, evaluate_arrays
from spectra_rec.evaluate.metrics_table import expand
from spectra_rec.metrics import exposure
from spectra_rec.report import write_report

CFG = EvalConfig(n_boot=60, k=(1, 3), exposure_k=(2, 4), activity_strata=0)


@pytest.fixture(scope="module")
def arrays():
    rng = np.random.default_rng(7)
    n, K = 80, 9
    q = rng.dirichlet(np.ones(K) * 0.5, size=n)
    probs = {"a": rng.dirichlet(np.ones(K), size=n), "b": 0.7 * q + 0.3 * rng.dirichlet(np.ones(K), size=n)}
    return probs, q, np.repeat([0, 1, 2], 3)


def _l1(p, q, ctx):
    return np.abs(p - q).sum(axis=1)


def _coverage(S, ctx):
    return (S > 0).mean(axis=1)


EXTRA_USER = UserMetric("L1", _l1)
EXTRA_COHORT = CohortMetric("Coverage@{exposure_k}", lambda p, q, ctx, exposure_k: exposure.topk_exposure(p, exposure_k),
                            _coverage, reference=True)


def test_labels_expand_over_their_placeholder():
    assert expand("NDCG@{k}", CFG) == [("NDCG@1", {"k": 1}), ("NDCG@3", {"k": 3})]
    assert [lab for lab, _ in expand("mass/{bucket}", CFG)] == ["mass/head", "mass/mid", "mass/tail"]
    assert expand("JS", CFG) == [("JS", {})]


def test_an_extra_per_user_row_reaches_summary_comparisons_per_user_and_files(arrays, tmp_path):
    probs, q, buckets = arrays
    plain = evaluate_arrays(probs, q, buckets, list("abcdefghi"), CFG)
    res = evaluate_arrays(probs, q, buckets, list("abcdefghi"), CFG, user_metrics=USER_METRICS + (EXTRA_USER,))
    for lab, p in probs.items():
        l1 = np.abs(p - q).sum(axis=1)  # independent of the row's function: written out again here
        assert res.summary["L1"][lab]["mean"] == pytest.approx(l1.mean(), abs=1e-12)
        assert res.summary["L1"][lab]["low"] <= l1.mean() <= res.summary["L1"][lab]["high"]
        np.testing.assert_allclose(res.per_user.loc[res.per_user["method"] == lab, "L1"], l1, atol=1e-12)
    (cmp,) = [c for c in res.comparisons if c["metric"] == "L1"]
    assert cmp["diff"] == pytest.approx(np.abs(probs["b"] - q).sum(1).mean() - np.abs(probs["a"] - q).sum(1).mean())
    # the other metrics do not move
    for lab in probs:
        assert res.summary["JS"][lab] == pytest.approx(plain.summary["JS"][lab], abs=1e-12)
    write_report(res, tmp_path, figures=False)
    summary = pd.read_csv(tmp_path / "summary.csv")
    assert set(summary.loc[summary["metric"] == "L1", "method"]) == {"a", "b"}
    assert "L1" in json.loads((tmp_path / "results.json").read_text())["summary"]
    assert "L1" in pd.read_csv(tmp_path / "per_user.csv").columns


def test_an_extra_cohort_row_gets_point_value_ci_reference_and_baseline_difference(arrays):
    probs, q, buckets = arrays
    res = evaluate_arrays(probs, q, buckets, list("abcdefghi"), CFG, cohort_metrics=COHORT_METRICS + (EXTRA_COHORT,))
    K = q.shape[1]
    for k in CFG.exposure_k:
        for lab, p in [("a", probs["a"]), ("b", probs["b"]), ("truth", q)]:  # continuous draws: no ties at the cut
            shown = np.unique(np.argsort(-p, axis=1)[:, :k])
            got = res.reference[f"Coverage@{k}"] if lab == "truth" else res.summary[f"Coverage@{k}"][lab]
            assert got["mean"] == pytest.approx(len(shown) / K)
            assert got["low"] <= got["mean"] + 1e-12 and got["high"] >= got["mean"] - 1e-12
    base = res.baseline
    other = next(lab for lab in probs if lab != base)
    (cc,) = [c for c in res.cohort_comparisons if c["metric"] == "Coverage@2"]
    assert (cc["a"], cc["b"]) == (base, other)
    assert cc["diff"] == pytest.approx(res.summary["Coverage@2"][other]["mean"] - res.summary["Coverage@2"][base]["mean"])


def test_an_undefined_block_leaves_the_metric_out(arrays):
    probs, q, _ = arrays
    with pytest.warns(DataWarning, match="has no users"):  # no tail categories: every user in one quartile
        res = evaluate_arrays(probs, q, np.zeros(9, dtype=int), list("abcdefghi"), CFG)  # every category in head
    assert "ECE/head" in res.summary and "ECE/mid" not in res.summary and "ECE/tail" not in res.summary
