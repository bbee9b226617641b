"""Loading RecBole atomic files: tokens -> indices, membership m(i, c), metadata, and every bad input."""

from __future__ import annotations

import json

import numpy as np
import pytest

from spectra_rec.data import builtin_dataset_dir, load_dataset
from spectra_rec.errors import DataError, DataWarning

# ---- the hand-made toy dataset (conftest.TOY_*) ----------------------------------------------


def test_toy_sizes_and_vocabulary(toy):
    assert toy.name == "toy"
    assert (toy.n_users, toy.n_items, toy.n_interactions, toy.K) == (4, 5, 15, 3)
    assert toy.categories == ("A", "B", "C")  # no taxonomy: sorted category names
    assert list(toy.user_ids) == ["a", "b", "c", "d"]
    assert list(toy.item_ids) == ["1", "2", "3", "4", "5"]
    assert toy.summary() == {"dataset": "toy", "users": 4, "items": 5, "interactions": 15, "K": 3}


def test_membership_is_one_over_number_of_categories(toy):
    # m(i, c) = 1/|cats(i)| for c in cats(i)
    expected = np.array(
        [
            [1, 0, 0],  # 1: A
            [0, 1, 0],  # 2: B
            [1 / 2, 1 / 2, 0],  # 3: A B
            [0, 0, 1],  # 4: C
            [1 / 2, 0, 1 / 2],  # 5: A C
        ]
    )
    np.testing.assert_allclose(toy.membership.toarray(), expected, rtol=0, atol=1e-15)
    assert toy.item_categories(2) == ["A", "B"]


def test_token_lookup_and_unknown_tokens(toy):
    np.testing.assert_array_equal(toy.user_index(["d", "a"]), [3, 0])
    np.testing.assert_array_equal(toy.item_index("3"), [2])
    with pytest.raises(DataError, match=r"1 user_id value\(s\) not in dataset 'toy', e.g. \['zz'\]"):
        toy.user_index(["a", "zz"])
    with pytest.raises(DataError, match=r"item_id value\(s\) not in dataset 'toy'"):
        toy.item_index([99])


def test_numeric_tokens_sort_numerically(tmp_path, atomic_files):
    root = atomic_files(tmp_path / "num", "num", [("10", "10", 1), ("9", "9", 1), ("100", "100", 1)],
                        {"100": "A", "10": "A", "9": "B"})
    ds = load_dataset(root)
    assert list(ds.item_ids) == ["9", "10", "100"]  # not the lexicographic "10" < "100" < "9"
    assert list(ds.user_ids) == ["9", "10", "100"]


def test_category_listed_twice_counts_once_and_uncategorized_item_warns(tmp_path, atomic_files):
    items = "item_id:token\tclass:token_seq\n1\tA A B\n2\t\n"
    root = atomic_files(tmp_path / "dup", "dup", [("u", "1", 1), ("u", "2", 2)], items)
    with pytest.warns(DataWarning, match=r"1 item\(s\) have no 'class' value; their membership is all zero"):
        ds = load_dataset(root)
    np.testing.assert_allclose(ds.membership.toarray(), [[0.5, 0.5], [0.0, 0.0]])


def test_optional_metadata(tmp_path, atomic_files):
    users = "user_id:token\tage:token\tgender:token\nu\t30\tF\nv\t40\tM\n"
    items = "item_id:token\tmovie_title:token_seq\trelease_year:token\tclass:token_seq\n1\tToy Story\t1995\tA\n"
    root = atomic_files(tmp_path / "meta", "meta", [("u", "1", 1)], items, users=users)
    ds = load_dataset(root)
    assert list(ds.item_titles) == ["Toy Story"]  # title field guessed from its name
    assert list(ds.item_years) == ["1995"]
    assert ds.users.loc["u", "age"] == "30"


def test_taxonomy_orders_categories_and_may_hold_unused_ones(tmp_path, atomic_files):
    tax = {"G1": ["b", "a"], "G2": ["c"]}
    root = atomic_files(tmp_path / "tax", "tax", [("u", "1", 1), ("u", "2", 2)], {"1": "a", "2": "b c"}, tax)
    ds = load_dataset(root)
    assert ds.categories == ("b", "a", "c")  # taxonomy order, L1 by L1
    assert ds.taxonomy == {"G1": ("b", "a"), "G2": ("c",)}
    np.testing.assert_allclose(ds.membership.toarray(), [[0, 1, 0], [0.5, 0, 0.5]])


# ---- ml-100k, found inside the installed recbole package ---------------------------------------


def test_ml100k_builtin(ml100k):
    assert ml100k.summary() == {"dataset": "ml-100k", "users": 943, "items": 1682, "interactions": 100000, "K": 19}
    assert {"Action", "Comedy", "Drama", "Film-Noir", "Sci-Fi", "unknown"} <= set(ml100k.categories)
    # every ml-100k item has at least one genre: each membership row sums to 1
    np.testing.assert_allclose(np.asarray(ml100k.membership.sum(axis=1)).ravel(), 1.0, atol=1e-12)
    toy_story = int(ml100k.item_index("1")[0])
    assert ml100k.item_titles[toy_story] == "Toy Story"
    assert sorted(ml100k.item_categories(toy_story)) == ["Animation", "Children's", "Comedy"]
    row = ml100k.membership.getrow(toy_story).toarray().ravel()
    assert row[row > 0] == pytest.approx([1 / 3] * 3)
    assert len(ml100k.users) == 943 and {"age", "gender", "occupation"} <= set(ml100k.users.columns)


def test_builtin_lookup_errors():
    with pytest.raises(DataError, match=r"unknown built-in dataset 'ml-1m'; built-in: \['ml-100k'\]"):
        builtin_dataset_dir("ml-1m")
    with pytest.raises(DataError, match=r"--dataset 'no/such/dir' is neither a directory of atomic files"):
        load_dataset("no/such/dir")


# ---- bad input: every message names the file and what is wrong ---------------------------------

INTER_HEADER = "user_id:token\titem_id:token\ttimestamp:float\n"


def test_missing_inter_file(tmp_path):
    (tmp_path / "x").mkdir()
    (tmp_path / "x" / "x.item").write_text("item_id:token\tclass:token_seq\n1\tA\n")
    with pytest.raises(DataError, match=r"expected x\.inter or exactly one <name>\.inter file, found none"):
        load_dataset(tmp_path / "x")
    with pytest.raises(DataError, match=r"x[/\\]y\.inter not found"):
        load_dataset(tmp_path / "x", name="y")


def test_two_inter_files_are_ambiguous(tmp_path, atomic_files):
    root = atomic_files(tmp_path / "d", "p", [("u", "1", 1)], {"1": "A"})
    atomic_files(root, "q", [("u", "1", 1)], {"1": "A"})
    with pytest.raises(DataError, match=r"exactly one <name>\.inter file, found \['p', 'q'\]"):
        load_dataset(root)
    assert load_dataset(root, name="q").name == "q"


def test_missing_item_file(tmp_path):
    (tmp_path / "x").mkdir()
    (tmp_path / "x" / "x.inter").write_text(INTER_HEADER + "u\t1\t1\n")
    with pytest.raises(DataError, match=r"x\.item not found"):
        load_dataset(tmp_path / "x")


@pytest.mark.parametrize("column", ["user_id", "item_id", "timestamp"])
def test_missing_inter_column_names_file_and_column(tmp_path, atomic_files, column):
    cols = [c for c in ("user_id:token", "item_id:token", "timestamp:float") if not c.startswith(column)]
    inter = "\t".join(cols) + "\n" + "\t".join("1" for _ in cols) + "\n"
    root = atomic_files(tmp_path / "m", "m", inter, {"1": "A"})
    with pytest.raises(DataError, match=rf"m\.inter: missing column\(s\) \['{column}'\]"):
        load_dataset(root)


def test_missing_category_column_names_file_and_column(tmp_path, atomic_files):
    root = atomic_files(tmp_path / "m", "m", [("u", "1", 1)], "item_id:token\tgenre:token_seq\n1\tA\n")
    with pytest.raises(DataError, match=r"m\.item: missing column\(s\) \['class'\]; found \['item_id', 'genre'\]"):
        load_dataset(root)
    assert load_dataset(root, category_field="genre").categories == ("A",)


def test_items_absent_from_item_file(tmp_path, atomic_files):
    root = atomic_files(tmp_path / "m", "m", [("u", "1", 1), ("u", "99", 2)], {"1": "A", "2": "B"})
    with pytest.raises(DataError, match=r"m\.inter: 1 item_id value\(s\) absent from .*m\.item, e.g. \['99'\]"):
        load_dataset(root)


def test_duplicate_item_rows(tmp_path, atomic_files):
    root = atomic_files(tmp_path / "m", "m", [("u", "1", 1)], "item_id:token\tclass:token_seq\n1\tA\n1\tB\n")
    with pytest.raises(DataError, match=r"m\.item: duplicate item_id values, e.g. \['1'\]"):
        load_dataset(root)


@pytest.mark.parametrize(
    ("value", "shown"), [("yesterday", "'yesterday'"), ("", "''"), ("nan", "'nan'"), ("inf", "'inf'")]
)
def test_bad_timestamp(tmp_path, atomic_files, value, shown):
    inter = INTER_HEADER + "u\t1\t5\nu\t1\t" + value + "\n"
    root = atomic_files(tmp_path / "m", "m", inter, {"1": "A"})
    with pytest.raises(
        DataError, match=rf"m\.inter: field 'timestamp' must be a finite number; 1 row\(s\) are not, e.g. data row 2: {shown}"
    ):
        load_dataset(root)


def test_short_line_leaves_timestamp_empty(tmp_path, atomic_files):
    root = atomic_files(tmp_path / "m", "m", INTER_HEADER + "u\t1\t5\nu\t1\n", {"1": "A"})
    with pytest.raises(DataError, match=r"field 'timestamp' must be a finite number"):
        load_dataset(root)


@pytest.mark.parametrize("field", ["user_id", "item_id"])
def test_empty_ids(tmp_path, atomic_files, field):
    row = "\t1\t6\n" if field == "user_id" else "u\t\t6\n"
    root = atomic_files(tmp_path / "m", "m", INTER_HEADER + "u\t1\t5\n" + row, {"1": "A"})
    with pytest.raises(DataError, match=rf"m\.inter: field '{field}' is empty in 1 row\(s\), e.g. data row 2"):
        load_dataset(root)


def test_no_categories_at_all(tmp_path, atomic_files):
    root = atomic_files(tmp_path / "m", "m", [("u", "1", 1)], "item_id:token\tclass:token_seq\n1\t\n")
    with pytest.raises(DataError, match=r"m\.item: field 'class' holds no categories"):
        load_dataset(root)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('{"G": ["A", ', r"m\.taxonomy\.json: not valid JSON"),
        ('["A", "B"]', r"m\.taxonomy\.json: expected a non-empty object mapping each L1 name"),
        ('{"G": []}', r"expected a non-empty object mapping each L1 name to a non-empty list of L2 names"),
        ('{"G": "A"}', r"expected a non-empty object mapping"),
        ('{"G": ["A", 3]}', r"expected a non-empty object mapping .*\(strings\)"),
        ("{}", r"expected a non-empty object mapping"),
        ('{"G": ["A"], "H": ["A", "B"]}', r"L2 category 'A' appears under both 'G' and 'H'"),
    ],
)
def test_bad_taxonomy(tmp_path, atomic_files, text, message):
    root = atomic_files(tmp_path / "m", "m", [("u", "1", 1)], {"1": "A"}, taxonomy=text)
    with pytest.raises(DataError, match=message):
        load_dataset(root)


def test_category_absent_from_taxonomy(tmp_path, atomic_files):
    root = atomic_files(tmp_path / "m", "m", [("u", "1", 1)], {"1": "A Zed"}, taxonomy={"G": ["A", "B"]})
    with pytest.raises(
        DataError, match=r"m\.item: field 'class' has categories absent from the taxonomy .*m\.taxonomy\.json: \['Zed'\]"
    ):
        load_dataset(root)


def test_taxonomy_file_is_plain_json(tmp_path, atomic_files):
    """A taxonomy written by hand (any key order) loads; its L1 order is kept."""
    tax = {"Z": ["z1"], "A": ["a1", "a2"]}
    root = atomic_files(tmp_path / "m", "m", [("u", "a1", 1)], {"a1": "a1"}, taxonomy=json.dumps(tax, indent=2))
    assert load_dataset(root).categories == ("z1", "a1", "a2")


def test_a_taxonomy_file_passed_in_overrides_and_joins_the_data_identity(tmp_path, ml100k):
    """The shipped ml-100k recipe partitions the 19 genres; the data stage hashes it with the atomic files."""
    from pathlib import Path

    from spectra_rec.data.stage import DataConfig, data_stage

    recipe = Path(__file__).resolve().parents[2] / "datasets" / "ml-100k.taxonomy.json"
    ds = load_dataset("ml-100k", taxonomy=recipe)
    assert sorted(ds.categories) == sorted(ml100k.categories) and len(ds.taxonomy) == 6
    assert ds.taxonomy_path == recipe and "ml-100k.taxonomy.json" in ds.input_digests()
    # same interactions and the same membership up to the column order the taxonomy sets
    order = [ml100k.categories.index(c) for c in ds.categories]
    assert (ds.membership != ml100k.membership[:, order]).nnz == 0
    _, _, plain = data_stage(DataConfig(), tmp_path / "runs")
    _, _, with_tax = data_stage(DataConfig(taxonomy=str(recipe)), tmp_path / "runs")
    assert plain != with_tax
    with pytest.raises(DataError, match=r"taxonomy '.*nowhere\.json': no such file"):
        load_dataset("ml-100k", taxonomy=tmp_path / "nowhere.json")
    short = tmp_path / "short.json"
    short.write_text(json.dumps({"G": ["Drama", "Comedy"]}))
    with pytest.raises(DataError, match=r"ml-100k\.item: field 'class' has categories absent from the taxonomy .*short\.json"):
        load_dataset("ml-100k", taxonomy=short)
