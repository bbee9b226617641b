"""Item-level ranking metrics against RecBole's own evaluator and hand-worked cases."""

import numpy as np
import pytest
import torch

from fusion.evaluate import ranking_metrics, summarize, target_rank
from spectra_rec.errors import DataWarning


def test_rank_counts_ties_against_the_target_and_missing_targets_are_inf():
    scores = np.array([[3.0, 5.0, 3.0, 1.0], [1.0, 2.0, 3.0, -np.inf]])
    items = np.array([[10, 11, 12, 13], [20, 21, 22, -1]])
    targets = np.array([10, 99])
    assert target_rank(scores, items, targets).tolist() == [3.0, np.inf]


def test_metrics_hand_worked():
    m = ranking_metrics(np.array([1.0, 3.0, 11.0, np.inf]), k=10)
    assert m["NDCG@10"] == pytest.approx([1.0, 1 / np.log2(4), 0.0, 0.0])
    assert m["HR@10"].tolist() == [1, 1, 0, 0]
    assert m["MRR@10"] == pytest.approx([1.0, 1 / 3, 0.0, 0.0])


def test_metrics_match_recbole_evaluator_on_random_scores():
    from fusion.recbole_compat import import_recbole

    import_recbole()
    from recbole.evaluator.metrics import MRR, NDCG, Hit

    rng = np.random.default_rng(1)
    n, C, k = 200, 50, 10
    scores = rng.normal(size=(n, C))
    items = np.tile(np.arange(C), (n, 1))
    targets = rng.integers(0, C, size=n)
    ours = ranking_metrics(target_rank(scores, items, targets), k)
    # RecBole's metrics read a (n, k) boolean "is the i-th ranked item relevant" matrix
    topk = np.argsort(-scores, axis=1)[:, :k]
    pos_index = torch.as_tensor(topk == targets[:, None])
    pos_len = np.ones(n, dtype=np.int64)
    cfg = {"topk": [k], "metric_decimal_place": 8}
    assert ours["NDCG@10"] == pytest.approx(NDCG(cfg).metric_info(pos_index.numpy(), pos_len)[:, k - 1])
    assert ours["HR@10"] == pytest.approx(Hit(cfg).metric_info(pos_index.numpy())[:, k - 1])
    assert ours["MRR@10"] == pytest.approx(MRR(cfg).metric_info(pos_index.numpy())[:, k - 1])


def test_summarize_reports_empty_slice_as_nan_with_warning():
    vals = {"NDCG@10": np.array([1.0, 0.0, 0.5])}
    mask = np.array([True, True, True])
    slices = np.array([0, 0, 2])
    with pytest.warns(DataWarning, match="slice 'mid' has no test cases"):
        out = summarize(vals, mask, slices)
    assert out["overall"] == {"NDCG@10": pytest.approx(0.5), "n": 3}
    assert out["head"]["NDCG@10"] == pytest.approx(0.5)
    assert out["mid"]["n"] == 0 and np.isnan(out["mid"]["NDCG@10"])
    assert out["tail"]["NDCG@10"] == pytest.approx(0.5)


def _sweep(dev_rows: dict, grid):
    return {norm: {"dev": [float(r.mean()) for r in rows]} for norm, rows in dev_rows.items()}, \
        {norm: np.array(rows) for norm, rows in dev_rows.items()}


def test_one_standard_error_rule_by_hand():
    """A consistent dev gain keeps the best w; a gain within one paired SE gives way to the smallest such w."""
    from fusion.evaluate import select

    grid = [0.0, 0.1, 0.5]
    base = np.array([0.2, 0.4, 0.6, 0.8])
    # d = best - candidate per case: for w=0.1 d = [0.1, 0, 0.1, 0] -> mean 0.05, sd 0.0577, se 0.0289
    #                                  for w=0   d = [0.1, 0.1, 0.1, 0.1] -> mean 0.1, se 0 -> outside
    best = base + 0.1
    w01 = best - np.array([0.1, 0.0, 0.1, 0.0])
    sw, cases = _sweep({"minmax": [base, w01, best]}, grid)
    assert select(sw, grid, rule="max")[:2] == ("minmax", 0.5)
    d = best - w01
    assert d.mean() > d.std(ddof=1) / np.sqrt(4)  # mean 0.05 > se 0.029: w=0.1 is outside one SE
    assert select(sw, grid, cases, rule="1se")[:2] == ("minmax", 0.5)
    # noisier: the same mean gap with a large spread falls inside one SE, and the smallest such w wins
    noisy = best - np.array([0.4, -0.2, 0.3, -0.3])  # d mean 0.05, sd 0.33, se 0.16
    sw, cases = _sweep({"minmax": [base, noisy, best], "rank": [base, base + 0.05, best - 0.01]}, grid)
    assert select(sw, grid, cases, rule="1se")[:2] == ("minmax", 0.1)
    # and w = 0 itself when its gap is within noise
    base_noisy = best - np.array([0.5, -0.3, 0.4, -0.3])  # d mean 0.075, se 0.2
    sw, cases = _sweep({"minmax": [base_noisy, noisy, best]}, grid)
    assert select(sw, grid, cases, rule="1se")[:2] == ("minmax", 0.0)
    with pytest.raises(ValueError, match="selection rule must be one of"):
        select(sw, grid, cases, rule="median")
