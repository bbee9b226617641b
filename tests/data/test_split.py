"""The per-user chronological split, ground truth, item slices, category buckets, cohorts, and
the RecBole benchmark export (docs/index.md, "Protocol"), including the leakage proof for the
export: nothing held out reaches a backbone's training or validation rows.
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from spectra_rec.data import load_dataset, split_dataset
from spectra_rec.data.export import export_recbole_benchmark
from spectra_rec.errors import ConfigError, DataWarning

# Toy indices (conftest.TOY_*): users a, b, c, d -> 0..3; items "1".."5" -> 0..4; categories A, B, C.


# ---- order and window sizes ----------------------------------------------------------------------


def test_toy_chronological_order_ties_by_item_id(toy_split):
    s = toy_split
    # user a: 3@5, then 1@10 and 2@10 tie on time -> item id order 1, 2; then 4@20, 5@30
    np.testing.assert_array_equal(s.item[s.ptr[0] : s.ptr[1]], [2, 0, 1, 3, 4])
    np.testing.assert_array_equal(s.time[s.ptr[0] : s.ptr[1]], [5, 10, 10, 20, 30])
    np.testing.assert_array_equal(s.item[s.ptr[1] : s.ptr[2]], [0, 0, 1, 3, 1, 2, 3])  # user b in time order


def test_toy_window_sizes(toy_split):
    s = toy_split
    # n_train = max(1, floor(0.8 n)): a 5 -> 4, b 7 -> floor(5.6) = 5, c 1 -> max(1, 0) = 1, d 2 -> max(1, 1) = 1
    np.testing.assert_array_equal(s.n_train, [4, 5, 1, 1])
    np.testing.assert_array_equal(s.n_heldout, [1, 2, 0, 1])
    np.testing.assert_array_equal(s.train_items(0), [2, 0, 1, 3])
    np.testing.assert_array_equal(s.heldout_items(0), [4])
    np.testing.assert_array_equal(s.heldout_items(1), [2, 3])
    assert len(s.heldout_items(2)) == 0
    np.testing.assert_array_equal(s.eval_users, [0, 1, 3])  # c has nothing held out
    np.testing.assert_array_equal(s.targets, [4, 2, -1, 0])  # first held-out item; -1 for c


def test_file_row_order_does_not_matter(tmp_path, toy_dir, toy_split):
    header, *rows = (toy_dir / "toy.inter").read_text().splitlines()
    (tmp_path / "rev").mkdir()
    (tmp_path / "rev" / "toy.inter").write_text("\n".join([header, *reversed(rows)]) + "\n")
    (tmp_path / "rev" / "toy.item").write_text((toy_dir / "toy.item").read_text())
    s = split_dataset(load_dataset(tmp_path / "rev"))
    np.testing.assert_array_equal(s.item, toy_split.item)
    np.testing.assert_array_equal(s.is_train, toy_split.is_train)


def test_chronological_order_and_train_size_on_ml100k(ml100k_split):
    s = ml100k_split
    same_user = s.user[1:] == s.user[:-1]
    ordered = (s.time[1:] > s.time[:-1]) | ((s.time[1:] == s.time[:-1]) & (s.item[1:] >= s.item[:-1]))
    assert ordered[same_user].all()
    assert (np.diff(s.user) >= 0).all()
    n = np.diff(s.ptr)
    np.testing.assert_array_equal(s.n_train, np.maximum(1, (4 * n) // 5))  # floor(0.8 n) in integers
    # the train flag marks exactly the first n_train rows of each user
    np.testing.assert_array_equal(np.bincount(s.user[s.is_train], minlength=len(n)), s.n_train)
    assert (s.position()[s.is_train] < s.n_train[s.user[s.is_train]]).all()
    assert s.summary()["train_interactions"] + s.summary()["heldout_interactions"] == 100_000


def test_ratio_is_floored_in_decimal(tmp_path, atomic_files):
    # 0.29 * 100 = 28.999999999999996 in floating point; the contract is floor(29.0) = 29
    root = atomic_files(tmp_path / "r", "r", [("u", str(i), i) for i in range(100)], {str(i): "A" for i in range(100)})
    ds = load_dataset(root)
    assert split_dataset(ds, 0.29).n_train[0] == 29
    assert split_dataset(ds, 0.57).n_train[0] == 57
    assert split_dataset(ds, 0.999).n_train[0] == 99


@pytest.mark.parametrize("ratio", [0.0, 1.0, -0.2, 1.5])
def test_bad_ratio(toy, ratio):
    with pytest.raises(ConfigError, match=rf"split ratio must be in \(0, 1\), got {ratio}"):
        split_dataset(toy, ratio)


# ---- ground truth --------------------------------------------------------------------------------


def test_toy_ground_truth_long_term(toy_split):
    q = toy_split.ground_truth()
    expected = np.array(
        [
            [1 / 2, 0, 1 / 2],  # a: held-out [5] -> m(5) = A/2 + C/2
            [(1 / 2) / 2, (1 / 2) / 2, 1 / 2],  # b: [3, 4] -> (A/2 + B/2 + C) / 2
            [1, 0, 0],  # d: [1] -> A
        ]
    )
    np.testing.assert_allclose(q, expected, rtol=0, atol=1e-12)


def test_toy_ground_truth_short_term(toy_split):
    q1 = toy_split.ground_truth(n=1)
    np.testing.assert_allclose(q1[1], [1 / 2, 1 / 2, 0], atol=1e-12)  # b: first held-out only, [3]
    np.testing.assert_allclose(q1[[0, 2]], toy_split.ground_truth()[[0, 2]], atol=1e-12)  # one held-out item
    np.testing.assert_allclose(toy_split.ground_truth(n=5), toy_split.ground_truth(), atol=1e-12)
    np.testing.assert_allclose(toy_split.ground_truth(users=[1]), [[1 / 4, 1 / 4, 1 / 2]], atol=1e-12)
    with pytest.raises(ConfigError, match="short-term window n must be >= 1, got 0"):
        toy_split.ground_truth(n=0)


def test_ground_truth_refuses_users_with_nothing_held_out(toy_split):
    # c has a single interaction: its held-out window is empty, so it has no q_u (not a uniform one)
    with pytest.raises(ConfigError, match=r"1 user\(s\) with an empty held-out window, e.g. \['c'\]"):
        toy_split.ground_truth(users=[0, 2])


def test_uncategorized_heldout_items_warn(tmp_path, atomic_files):
    items = "item_id:token\tclass:token_seq\n1\tA\n2\tB\n3\t\n"
    root = atomic_files(tmp_path / "w", "w", [("u", "1", 1), ("u", "2", 2), ("u", "1", 3), ("u", "2", 4), ("u", "3", 5)], items)
    with pytest.warns(DataWarning):
        s = split_dataset(load_dataset(root))
    with pytest.warns(DataWarning, match=r"1 user\(s\) have only uncategorized held-out items; their ground truth is uniform"):
        np.testing.assert_allclose(s.ground_truth(), [[0.5, 0.5]])


@pytest.mark.parametrize("n", [None, 1, 5])
def test_ground_truth_matches_a_loop_on_synthetic(synthetic_split, n):
    s, ds = synthetic_split, synthetic_split.dataset
    M = ds.membership.toarray()
    q = s.ground_truth(n=n)
    assert q.shape == (len(s.eval_users), ds.K)
    for row, u in enumerate(s.eval_users):
        held = s.heldout_items(u)[: n or None]
        mass = sum(M[i] for i in held)
        np.testing.assert_allclose(q[row], mass / mass.sum(), rtol=0, atol=1e-12)


# ---- train-side derived state --------------------------------------------------------------------


def test_toy_train_mass(toy_split):
    # a: 3,1,2,4 -> A 1/2+1, B 1/2+1, C 1 ; b: 1,1,2,4,2 -> A 2, B 2, C 1 ; c: 4 -> C ; d: 5 -> A/2 + C/2
    np.testing.assert_allclose(toy_split.train_mass, [[1.5, 1.5, 1], [2, 2, 1], [0, 0, 1], [0.5, 0, 0.5]])


def test_toy_item_slices(toy_split):
    # train counts: item1 1+2 = 3, item2 1+2 = 3, item3 1, item4 1+1+1 = 3, item5 1
    np.testing.assert_array_equal(toy_split.item_train_counts, [3, 3, 1, 3, 1])
    # ranked (ties by item): 1, 2, 4, 3, 5 -> rank r gets slice min(3r // 5, 2): 0, 0, 1, 1, 2
    np.testing.assert_array_equal(toy_split.item_slice, [0, 0, 1, 1, 2])


def test_unseen_items_are_tail(tmp_path, atomic_files):
    # 3 items, only item 1 seen in training; item 2 is held out only, item 3 never interacted with.
    # Ranked by count: 1, 2, 3 -> thirds 0, 1, 2; item 2 has count 0 so it is tail, not mid.
    root = atomic_files(tmp_path / "u", "u", [("x", "1", 1), ("x", "1", 2), ("x", "1", 3), ("x", "1", 4), ("x", "2", 5)],
                        {"1": "A", "2": "A", "3": "B"})
    s = split_dataset(load_dataset(root))
    np.testing.assert_array_equal(s.item_train_counts, [4, 0, 0])
    np.testing.assert_array_equal(s.item_slice, [0, 2, 2])
    assert s.summary()["target_slices"] == {"head": 0, "mid": 0, "tail": 1}


def test_item_slices_are_thirds_on_ml100k(ml100k_split):
    s = ml100k_split
    n = s.dataset.n_items
    counts = s.item_train_counts
    assert np.bincount(s.item_slice).tolist() == [561, 561, 560]  # ranks r -> min(3r // 1682, 2)
    # popularity is monotone across slices: every head item is at least as popular as every mid item, ...
    assert counts[s.item_slice == 0].min() >= counts[s.item_slice == 1].max()
    assert counts[s.item_slice == 1].min() >= counts[s.item_slice == 2].max()
    assert (s.item_slice[counts == 0] == 2).all()
    # counts are computed from the train windows only
    np.testing.assert_array_equal(counts, np.bincount(s.item[s.is_train], minlength=n))
    assert counts.sum() == s.is_train.sum()
    summary = s.summary()
    assert sum(summary["target_slices"].values()) == len(s.eval_users) == 943


def test_toy_category_buckets(toy_split):
    # category train mass: A 1.5+2+0+0.5 = 4, B 1.5+2 = 3.5, C 1+1+1+0.5 = 3.5 -> ranks A, B, C (tie by index)
    np.testing.assert_allclose(toy_split.category_train_mass, [4, 3.5, 3.5])
    np.testing.assert_array_equal(toy_split.category_bucket, [0, 1, 2])
    assert toy_split.summary()["category_buckets"] == {
        "head": ["A"],
        "mid": ["B"],
        "tail": ["C"],
        "sizes": {"head": 1, "mid": 1, "tail": 1},
    }


def test_category_buckets_on_ml100k(ml100k_split):
    s = ml100k_split
    mass = s.category_train_mass
    order = np.argsort(-mass, kind="stable")
    expected = np.empty(19, dtype=int)
    expected[order] = np.minimum(np.arange(19) * 3 // 19, 2)  # 7 / 6 / 6
    np.testing.assert_array_equal(s.category_bucket, expected)
    assert np.bincount(s.category_bucket).tolist() == [7, 6, 6]
    cats = s.dataset.categories
    head = {cats[k] for k in np.flatnonzero(s.category_bucket == 0)}
    assert {"Drama", "Comedy", "Action"} <= head
    assert cats[int(np.argmin(mass))] in {"unknown", "Documentary", "Film-Noir", "Fantasy"}


def test_toy_summary(toy_split):
    s = toy_split.summary()
    assert (s["train_interactions"], s["heldout_interactions"], s["eval_users"]) == (11, 4, 3)
    assert s["item_slices"] == {"head": 2, "mid": 2, "tail": 1}
    # targets: a -> item 5 (tail), b -> item 3 (mid), d -> item 1 (head)
    assert s["target_slices"] == {"head": 1, "mid": 1, "tail": 1}


# ---- cohorts -------------------------------------------------------------------------------------


def test_cohorts_disjoint_seeded_reproducible(synthetic_split):
    users = synthetic_split.eval_users
    dev, test = synthetic_split.cohorts(0.2, seed=7)
    assert len(np.intersect1d(dev, test)) == 0
    np.testing.assert_array_equal(np.union1d(dev, test), users)
    assert len(dev) == round(0.2 * len(users))
    assert (np.diff(dev) > 0).all() and (np.diff(test) > 0).all()
    dev2, test2 = synthetic_split.cohorts(0.2, seed=7)
    np.testing.assert_array_equal(dev, dev2)
    np.testing.assert_array_equal(test, test2)
    dev3, _ = synthetic_split.cohorts(0.2, seed=8)
    assert not np.array_equal(dev, dev3)
    # the dev cohort is a draw over all users, not a prefix of them
    assert dev.max() > len(users) // 2 and dev.min() < len(users) // 2


@pytest.mark.parametrize("frac", [0.001, 0.05, 0.2, 0.5, 0.8, 0.99])
def test_cohort_sizes_follow_the_dev_fraction(synthetic_split, frac):
    n = len(synthetic_split.eval_users)
    dev, test = synthetic_split.cohorts(frac, seed=0)
    assert len(dev) == max(1, round(frac * n)) and len(test) == n - len(dev)
    assert len(np.intersect1d(dev, test)) == 0 and set(np.union1d(dev, test)) == set(synthetic_split.eval_users)


@pytest.mark.parametrize("frac", [0.0, 1.0, -0.1])
def test_bad_dev_fraction(synthetic_split, frac):
    with pytest.raises(ConfigError, match=rf"dev_fraction must be in \(0, 1\), got {frac}"):
        synthetic_split.cohorts(frac)


def test_a_dev_fraction_that_leaves_no_test_cohort_is_refused(synthetic_split):
    n = len(synthetic_split.eval_users)
    with pytest.raises(ConfigError, match=rf"dev_fraction 0.999 of {n} evaluable users leaves no test cohort"):
        synthetic_split.cohorts(0.999)


# ---- RecBole benchmark export --------------------------------------------------------------------


def _read_rows(path):
    lines = path.read_text().splitlines()
    assert lines[0] == "user_id:token\titem_id:token\titem_id_list:token_seq"
    return [tuple(line.split("\t")) for line in lines[1:]]


def test_toy_export_rows_by_hand(toy_split, tmp_path):
    counts = export_recbole_benchmark(toy_split, tmp_path, "toy")
    assert counts == {"train": 5, "valid": 2, "test": 3}
    # train: targets at positions 1 .. n_train-2 with the prefix before them as context
    assert _read_rows(tmp_path / "toy.train.inter") == [
        ("a", "1", "3"),
        ("a", "2", "3 1"),
        ("b", "1", "1"),
        ("b", "2", "1 1"),
        ("b", "4", "1 1 2"),
    ]
    # valid: target = last train item; c and d have a 1-item train window and no valid row
    assert _read_rows(tmp_path / "toy.valid.inter") == [("a", "4", "3 1 2"), ("b", "2", "1 1 2 4")]
    # test: target = first held-out item, context = the whole train window
    assert _read_rows(tmp_path / "toy.test.inter") == [("a", "5", "3 1 2 4"), ("b", "3", "1 1 2 4 2"), ("d", "1", "5")]
    assert (tmp_path / "toy.item").read_text().split("\n") == ["item_id:token", "1", "2", "3", "4", "5", ""]
    assert not list(tmp_path.glob("*.tmp"))


def test_export_truncates_context_to_max_len(toy_split, tmp_path):
    export_recbole_benchmark(toy_split, tmp_path, "toy", max_len=2)
    assert _read_rows(tmp_path / "toy.test.inter")[1] == ("b", "3", "4 2")  # the 2 most recent train items
    assert _read_rows(tmp_path / "toy.train.inter")[-1] == ("b", "4", "1 2")


def test_export_uses_only_train_windows(synthetic_split, tmp_path):
    """Every train/valid row (target and context) is a prefix of its user's train window; test rows
    are (whole train window -> first held-out item)."""
    s, ds = synthetic_split, synthetic_split.dataset
    max_len = int(s.n_train.max())  # no truncation, so contexts are compared whole
    counts = export_recbole_benchmark(s, tmp_path, "syn", max_len=max_len)
    train_seq = {ds.user_ids[u]: list(ds.item_ids[s.train_items(u)]) for u in range(ds.n_users)}
    rows = {k: _read_rows(tmp_path / f"syn.{k}.inter") for k in ("train", "valid", "test")}
    assert {k: len(v) for k, v in rows.items()} == counts
    assert counts["train"] == int(np.maximum(s.n_train - 2, 0).sum())
    for kind in ("train", "valid"):
        for user, target, ctx in rows[kind]:
            seq = ctx.split() + [target]
            assert seq == train_seq[user][: len(seq)], (kind, user)
    valid_lens = {u: len(c.split()) + 1 for u, _, c in rows["valid"]}
    assert all(valid_lens[u] == len(train_seq[u]) for u in valid_lens)  # valid target = last train item
    assert [u for u, _, _ in rows["test"]] == list(ds.user_ids[s.eval_users])
    for user, target, ctx in rows["test"]:
        u = int(ds.user_index(user)[0])
        assert ctx.split() == train_seq[user]
        assert target == ds.item_ids[s.heldout_items(u)[0]] == ds.item_ids[s.targets[u]]


def test_export_ignores_heldout_changes(synthetic_split, perturbed_split, tmp_path):
    """LEAKAGE: change every held-out interaction; train and valid files stay byte-identical, and
    test rows change only in their target."""
    a, b = tmp_path / "a", tmp_path / "b"
    export_recbole_benchmark(synthetic_split, a, "syn")
    export_recbole_benchmark(perturbed_split, b, "syn")
    assert (~perturbed_split.is_train).sum() > 1000
    assert not np.array_equal(synthetic_split.item[~synthetic_split.is_train], perturbed_split.item[~perturbed_split.is_train])
    for kind in ("train", "valid"):
        assert (a / f"syn.{kind}.inter").read_bytes() == (b / f"syn.{kind}.inter").read_bytes()
    ta, tb = _read_rows(a / "syn.test.inter"), _read_rows(b / "syn.test.inter")
    assert [(u, c) for u, _, c in ta] == [(u, c) for u, _, c in tb]
    assert all(x != y for (_, x, _), (_, y, _) in zip(ta, tb))  # every target moved to another item
    # the train-side state of the split is unchanged too
    np.testing.assert_array_equal(synthetic_split.item_slice, perturbed_split.item_slice)
    np.testing.assert_array_equal(synthetic_split.category_bucket, perturbed_split.category_bucket)
    np.testing.assert_array_equal(synthetic_split.train_mass, perturbed_split.train_mass)


# ---- properties on random interaction logs -----------------------------------------------------

@st.composite
def _logs(draw):
    n_users, n_items = draw(st.integers(1, 6)), draw(st.integers(1, 8))
    rows = draw(
        st.lists(st.tuples(st.integers(0, n_users - 1), st.integers(0, n_items - 1), st.integers(0, 5)), min_size=1, max_size=60)
    )
    ratio = draw(st.sampled_from([0.5, 0.8, 0.29, 0.9]))
    return n_items, rows, ratio


@settings(max_examples=60, deadline=None, database=None)  # no .hypothesis/ in the repo
@given(_logs())
def test_split_properties(log):
    """Against a direct sort per user: windows, targets, slices; q_u rows sum to 1; cohorts disjoint."""
    import scipy.sparse as sp

    from spectra_rec.data.dataset import Dataset

    n_items, rows, ratio = log
    users = sorted({u for u, _, _ in rows})
    u_arr = np.array([users.index(u) for u, _, _ in rows])
    i_arr = np.array([i for _, i, _ in rows])
    t_arr = np.array([t for _, _, t in rows], dtype=float)
    parity = np.arange(n_items) % 2  # two categories: even and odd item ids
    membership = sp.csr_matrix(np.stack([1 - parity, parity], axis=1).astype(float))
    ds = Dataset("p", None, np.array([str(u) for u in users], dtype=object),
                 np.array([str(i) for i in range(n_items)], dtype=object), ("even", "odd"),
                 u_arr, i_arr, t_arr, membership)
    s = split_dataset(ds, ratio)
    for u in range(len(users)):
        mine = sorted((t, i) for uu, i, t in zip(u_arr, i_arr, t_arr) if uu == u)  # time, then item id
        n = len(mine)
        k = max(1, int(round(ratio * n, 9) // 1))  # floor(ratio * n) in decimal, at least 1
        assert s.n_train[u] == k
        assert s.train_items(u).tolist() == [i for _, i in mine[:k]]
        assert s.heldout_items(u).tolist() == [i for _, i in mine[k:]]
        assert s.targets[u] == (mine[k][1] if n > k else -1)
    counts = np.bincount([i for (i, train) in zip(s.item, s.is_train) if train], minlength=n_items)
    ranked = sorted(range(n_items), key=lambda i: (-counts[i], i))
    for r, i in enumerate(ranked):
        assert s.item_slice[i] == (2 if counts[i] == 0 else min(3 * r // n_items, 2))
    np.testing.assert_allclose(s.ground_truth().sum(axis=1), 1.0, atol=1e-12)
    dev, test = s.cohorts(0.5, seed=0)
    assert len(np.intersect1d(dev, test)) == 0
    assert sorted(np.concatenate([dev, test]).tolist()) == s.eval_users.tolist()
