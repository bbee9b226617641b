"""spectra_rec.report: rounding, marks, tables, files (built from a small evaluate_arrays result)."""

import json

import numpy as np
import pandas as pd
import pytest

from spectra_rec.evaluate import HELDOUT_TAG, EvalConfig, evaluate_arrays
from spectra_rec.report import format_ci, headline_table, markdown_report, sig_mark, write_report
from spectra_rec.report.tables import fmt_p


@pytest.fixture(scope="module")
def result():
    rng = np.random.default_rng(0)
    n, K = 120, 9
    q = rng.dirichlet(np.full(K, 0.5), size=n)
    pop = np.tile(q.mean(axis=0), (n, 1))
    noisy = q + rng.uniform(0, 0.05, q.shape)
    noisy /= noisy.sum(axis=1, keepdims=True)
    buckets = np.repeat([0, 1, 2], 3)
    return evaluate_arrays(
        {"popularity": pop, "close": noisy, "oracle": q}, q, buckets, [f"c{i}" for i in range(K)],
        EvalConfig(n_boot=100, exposure_k=(1, 3)), n_train=rng.integers(5, 50, n), uses_heldout={"oracle": True},
    )


def test_format_and_marks():
    assert format_ci({"mean": 0.123456, "low": 0.1, "high": 0.15}) == "0.1235 [0.1000, 0.1500]"
    assert format_ci({"mean": float("nan"), "low": 0.1, "high": 0.2}).startswith("n/a")
    assert [sig_mark(p) for p in (0.0005, 0.005, 0.03, 0.2, float("nan"))] == ["***", "**", "*", "", ""]
    assert fmt_p(1e-7) == "<1e-4" and fmt_p(0.01234) == "0.0123"


def test_headline_table_has_every_method_and_metric(result):
    text = headline_table(result)
    for token in ("JS", "NDCG@5", "NDCG@10", "exposure entropy@3", "mass/tail", "close", "(baseline)", "truth"):
        assert token in text
    assert "oracle" + HELDOUT_TAG in text and "held-out" in text
    close_line = next(line for line in text.splitlines() if line.startswith("close"))
    assert "***" in close_line  # much closer to q than popularity, 120 users
    js = result.summary["JS"]["close"]
    assert f"{js['mean']:.4f} [{js['low']:.4f}, {js['high']:.4f}]" in close_line


def test_markdown_has_all_sections(result):
    md = markdown_report(result)
    for section in ("## Headline", "## Distributional alignment", "## Category ranking", "## Long tail",
                    "## Calibration", "## Per-category bias", "## Cross-user fairness", "## Theorem 1 check",
                    "## User-activity strata", "## All method pairs"):
        assert section in md
    assert md.count("oracle" + HELDOUT_TAG) >= 5
    assert "oracle" not in md.replace("oracle" + HELDOUT_TAG, "")


def test_write_report_files(result, tmp_path):
    paths = write_report(result, tmp_path, manifest={"seed": 0})
    for name in ("report.md", "per_user.csv", "summary.csv", "comparisons.csv", "category_bias.csv", "fairness.csv",
                 "strata.csv", "results.json", "manifest.json"):
        assert (tmp_path / name).exists(), name
    for fig in ("js_by_method", "category_bias", "reliability", "fairness_quartiles", "exposure_entropy"):
        assert paths[f"{fig}.png"].read_bytes()[:4] == b"\x89PNG"
    per_user = pd.read_csv(tmp_path / "per_user.csv")
    assert len(per_user) == 3 * 120 and set(per_user["method"]) == {"popularity", "close", "oracle" + HELDOUT_TAG}
    # per-user values are written unrounded (8 significant digits), not at the report's 4 decimals
    assert per_user["JS"].to_numpy() == pytest.approx(result.per_user["JS"].to_numpy(), rel=1e-7)
    data = json.loads((tmp_path / "results.json").read_text(), parse_constant=lambda c: pytest.fail(f"bare {c}"))
    assert data["summary"]["JS"]["close"]["mean"] == pytest.approx(result.summary["JS"]["close"]["mean"])


def test_write_report_without_figures(result, tmp_path):
    paths = write_report(result, tmp_path, figures=False)
    assert not any(str(p).endswith(".png") for p in paths.values())
    assert "![" not in (tmp_path / "report.md").read_text()
