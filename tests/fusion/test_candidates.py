"""Candidate sets without RecBole: sampled negatives (true negatives, seeded, uniform, target once) and
Faiss retrieval (flat = an exact numpy top-N by inner product, hnsw / ivf recall against it), on the
synthetic split with random embeddings. Real Faiss indexes throughout."""

import logging

import numpy as np
import pytest
from scipy.stats import chisquare

from fusion.candidates import build_index, index_recall, retrieval_candidates, sampled_negatives, search
from spectra_rec.errors import ConfigError, DataError


def _interacted(split, u) -> set:
    """Every item the user touched (train and held-out), from the dataset's raw interaction arrays."""
    ds = split.dataset
    return set(ds.inter_item[ds.inter_user == u].tolist())


def _numpy_top(queries, items, k):
    """(ids, scores) of the k largest inner products per query, by a full float64 sort."""
    s = queries.astype(np.float64) @ items.astype(np.float64).T
    ids = np.argsort(-s, axis=1, kind="stable")[:, :k]
    return ids, np.take_along_axis(s, ids, axis=1)


@pytest.fixture
def one_faiss_thread():
    """HNSW construction with several OpenMP threads is not deterministic; two builds must agree here."""
    import faiss

    before = faiss.omp_get_max_threads()
    faiss.omp_set_num_threads(1)
    yield
    faiss.omp_set_num_threads(before)


# ---- sampled negatives ---------------------------------------------------------------------------


def test_sampled_negatives_are_true_negatives_with_the_target_once(synthetic_split):
    split = synthetic_split
    users = split.eval_users
    c = sampled_negatives(split, users, 99, seed=3)
    assert c.name == "neg99" and c.info == {"negatives": 99, "short_sets": 0}
    assert c.items.shape == (len(users), 100) and c.items.dtype == np.int64
    assert c.mask.all() and c.target_found.all()
    np.testing.assert_array_equal(c.users, users)
    for r, u in enumerate(users):
        row, target = c.items[r], c.targets[r]
        seen = _interacted(split, u)
        first_heldout = split.item[(split.user == u) & ~split.is_train][0]
        assert target == first_heldout and row[0] == target and np.sum(row == target) == 1
        assert len(set(row.tolist())) == 100 and not set(row[1:].tolist()) & seen
        assert ((0 <= row) & (row < split.dataset.n_items)).all()


def test_sampled_negatives_are_seeded(synthetic_split):
    users = synthetic_split.eval_users[:40]
    a, b, other = (sampled_negatives(synthetic_split, users, 99, seed=s) for s in (5, 5, 6))
    np.testing.assert_array_equal(a.items, b.items)
    assert not np.array_equal(a.items, other.items)
    np.testing.assert_array_equal(a.items[:, 0], other.items[:, 0])  # the target column does not move


def test_sampled_negatives_are_uniform_over_the_unseen_items(synthetic_split):
    split = synthetic_split
    u = int(split.eval_users[0])
    pool = np.setdiff1d(np.arange(split.dataset.n_items), sorted(_interacted(split, u)))
    n_neg, draws = 20, 400
    counts = np.zeros(split.dataset.n_items)
    for seed in range(draws):
        np.add.at(counts, sampled_negatives(split, np.array([u]), n_neg, seed=seed).items[0, 1:], 1)
    assert counts[np.setdiff1d(np.arange(split.dataset.n_items), pool)].sum() == 0
    # each unseen item is drawn n_neg / |pool| of the time; without replacement the counts are, if
    # anything, less spread than the chi-square test assumes
    assert chisquare(counts[pool]).pvalue > 1e-3
    assert counts[pool].sum() == n_neg * draws


def test_a_user_with_too_few_unseen_items_gets_all_of_them_padded(synthetic_split, caplog):
    split = synthetic_split
    users = split.eval_users[:10]
    n_items = split.dataset.n_items
    with caplog.at_level(logging.WARNING, logger="fusion.candidates"):
        c = sampled_negatives(split, users, 999, seed=0)  # 400 items: every case is short
    assert c.name == "neg999" and c.info["short_sets"] == len(users) and c.items.shape == (len(users), 1000)
    assert "10 case(s) have fewer than 999 negatives" in caplog.text
    for r, u in enumerate(users):
        row = c.items[r]
        unseen = set(range(n_items)) - _interacted(split, u)
        assert set(row[1:][row[1:] >= 0].tolist()) == unseen
        assert (row[1 + len(unseen):] == -1).all() and c.mask[r].sum() == 1 + len(unseen)


@pytest.mark.parametrize("n_neg", [0, -5])
def test_sampled_negatives_refuse_a_non_positive_count(synthetic_split, n_neg):
    with pytest.raises(ConfigError, match=rf"number of negatives must be >= 1, got {n_neg}"):
        sampled_negatives(synthetic_split, synthetic_split.eval_users, n_neg, seed=0)


# ---- Faiss retrieval -----------------------------------------------------------------------------


def test_flat_index_equals_an_exact_numpy_top_n():
    rng = np.random.default_rng(1)
    items = rng.normal(size=(500, 16)).astype(np.float32)
    queries = rng.normal(size=(30, 16)).astype(np.float32)
    ids, scores = search(build_index(items, "flat"), queries, 25)
    want_ids, want_scores = _numpy_top(queries, items, 25)
    np.testing.assert_array_equal(ids, want_ids)
    np.testing.assert_allclose(scores, want_scores, rtol=1e-5, atol=1e-5)  # float32 inner products


def test_retrieval_candidates_are_the_numpy_top_n_without_train_items(synthetic_split):
    split = synthetic_split
    ds = split.dataset
    rng = np.random.default_rng(2)
    user_repr = rng.normal(size=(ds.n_users, 16)).astype(np.float32)
    item_emb = rng.normal(size=(ds.n_items, 16)).astype(np.float32)
    users = split.eval_users
    c = retrieval_candidates(split, users, user_repr, item_emb, top_n=30, index_kind="flat")
    assert c.name == "retrieval" and c.items.shape == (len(users), 30) and c.mask.all()
    order, _ = _numpy_top(user_repr[users], item_emb, ds.n_items)
    found = []
    for r, u in enumerate(users):
        train = set(split.item[(split.user == u) & split.is_train].tolist())
        want = [i for i in order[r] if i not in train][:30]
        np.testing.assert_array_equal(c.items[r], want)
        found.append(split.targets[u] in want)  # held-out items stay retrievable
    assert c.info == {"top_n": 30, "index": "flat", "recall@30": pytest.approx(np.mean(found))}
    assert 0 < np.mean(found) < 1


def test_retrieval_pads_when_the_catalogue_runs_out(synthetic_split):
    split = synthetic_split
    ds = split.dataset
    rng = np.random.default_rng(3)
    user_repr, item_emb = rng.normal(size=(ds.n_users, 8)), rng.normal(size=(ds.n_items, 8))
    users = split.eval_users[:15]
    c = retrieval_candidates(split, users, user_repr, item_emb, top_n=ds.n_items)
    for r, u in enumerate(users):
        train = set(split.item[(split.user == u) & split.is_train].tolist())
        left = set(range(ds.n_items)) - train  # everything outside the train window, nothing twice
        assert set(c.items[r, : len(left)].tolist()) == left and (c.items[r, len(left):] == -1).all()
        assert c.target_found[r] == (split.targets[u] not in train)
    assert c.info[f"recall@{ds.n_items}"] == pytest.approx(c.target_found.mean())


def test_hnsw_and_ivf_recall_against_the_exact_top_k(one_faiss_thread):
    rng = np.random.default_rng(4)
    items = rng.normal(size=(2000, 32)).astype(np.float32)
    queries = rng.normal(size=(50, 32)).astype(np.float32)
    exact, _ = _numpy_top(queries, items, 20)

    def recall(ids):
        return np.mean([len(np.intersect1d(a, e)) / 20 for a, e in zip(ids, exact)])

    hnsw, _ = search(build_index(items, "hnsw"), queries, 20, ef_search=256)
    assert recall(hnsw) >= 0.9
    assert index_recall(items, queries, 20, "hnsw", ef_search=256) == pytest.approx(recall(hnsw))
    ivf = build_index(items, "ivf")
    assert ivf.nlist == int(np.sqrt(2000))
    exhaustive, _ = search(ivf, queries, 20)  # nprobe defaults to nlist: every list is scanned
    assert recall(exhaustive) == 1.0
    one_list, _ = search(ivf, queries, 20, nprobe=1)
    assert ivf.nprobe == 1 and recall(one_list) < 0.9  # the setting reaches the index
    assert index_recall(items, queries, 20, "ivf") == 1.0


def test_retrieval_bad_inputs_name_the_setting(synthetic_split):
    ds = synthetic_split.dataset
    emb = np.zeros((ds.n_items, 4), dtype=np.float32)
    with pytest.raises(ConfigError, match=r"unknown Faiss index 'annoy'; options: \['flat', 'hnsw', 'ivf'\]"):
        build_index(emb, "annoy")
    with pytest.raises(ConfigError, match="retrieval top-N must be >= 1, got 0"):
        retrieval_candidates(synthetic_split, synthetic_split.eval_users, np.zeros((ds.n_users, 4)), emb, top_n=0)
    with pytest.raises(DataError, match=r"user representations \(\d+, 5\) and item embeddings \(\d+, 4\) must have the same width"):
        retrieval_candidates(synthetic_split, synthetic_split.eval_users, np.zeros((ds.n_users, 5)), emb)
    with pytest.raises(DataError, match=rf"item embeddings must be \({ds.n_items} items, H\), got \(3, 4\)"):
        retrieval_candidates(synthetic_split, synthetic_split.eval_users, np.zeros((ds.n_users, 4)), emb[:3])
