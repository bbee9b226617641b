"""The prior table: Parquet/CSV round trips with metadata, alignment with a dataset, and a
message-checked test for every bad input."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from spectra_rec.errors import PriorTableError
from spectra_rec.priors import PriorTable, history_prior

CATS = ("A", "B", "C")


def _table(users=("a", "b", "c", "d"), probs=None, **meta):
    if probs is None:
        probs = np.random.default_rng(0).dirichlet(np.ones(3), size=len(users))
    return PriorTable(np.array(users, dtype=object), CATS, probs, {"method": "test", **meta})


# ---- round trips ------------------------------------------------------------------------------


@pytest.mark.parametrize("suffix", [".parquet", ".csv"])
def test_round_trip_is_exact_and_keeps_metadata(tmp_path, suffix):
    t = _table(users=("a", "NA", "007", "nan"), model="tiny-qwen", taxonomy="L2", template_version="v1")
    path = t.save(tmp_path / "sub" / f"prior{suffix}")
    assert path == tmp_path / "sub" / f"prior{suffix}"
    back = PriorTable.load(path)
    # user tokens verbatim (no "NA" -> NaN, no "007" -> 7), floats bit-identical
    assert list(back.user_ids) == ["a", "NA", "007", "nan"]
    assert back.categories == CATS
    np.testing.assert_array_equal(back.probs, t.probs)
    assert back.meta["method"] == "test" and back.meta["model"] == "tiny-qwen"
    assert back.meta["taxonomy"] == "L2" and back.meta["template_version"] == "v1"
    assert "created" not in back.meta  # no clock in the file: the stage manifest records when
    assert back.source == str(path)
    leftovers = [p.name for p in path.parent.iterdir() if p.name.startswith(".")]
    assert leftovers == []  # the temporary file was renamed
    # Same table, same bytes: a rerun with the same seed reproduces the file exactly.
    again = t.save(tmp_path / "again" / f"prior{suffix}")
    assert again.read_bytes() == path.read_bytes()


def test_csv_layout_is_plain(tmp_path):
    path = _table(users=("a",), probs=[[0.5, 0.25, 0.25]]).save(tmp_path / "p.csv")
    assert path.read_text().splitlines() == ["user_id,A,B,C", "a,0.5,0.25,0.25"]
    meta = json.loads((tmp_path / "p.csv.meta.json").read_text())
    assert meta["method"] == "test" and "created" not in meta


def test_csv_written_by_another_tool_loads_without_metadata(tmp_path):
    (tmp_path / "ext.csv").write_text("user_id,B,A,C\n7,0.2,0.3,0.5\n")
    t = PriorTable.load(tmp_path / "ext.csv")
    assert t.meta == {} and t.method == "unknown" and not t.uses_heldout
    assert list(t.user_ids) == ["7"] and t.categories == ("B", "A", "C")


def test_history_prior_round_trip(tmp_path, synthetic_split):
    t = history_prior(synthetic_split, "oracle")
    back = PriorTable.load(t.save(tmp_path / "oracle.parquet"))
    assert back.uses_heldout and back.method == "oracle"
    users = np.arange(synthetic_split.dataset.n_users)
    np.testing.assert_array_equal(back.matrix(synthetic_split.dataset, users), t.matrix(synthetic_split.dataset, users))


def test_rows_within_tolerance_are_renormalized():
    t = _table(users=("a",), probs=[[0.5, 0.25, 0.25 + 5e-5]])
    assert t.probs.sum() == pytest.approx(1.0, abs=1e-15)
    np.testing.assert_allclose(t.probs, [[0.5, 0.25, 0.25 + 5e-5]] / np.float64(1 + 5e-5))


def test_table_owns_its_values():
    probs = np.array([[0.5, 0.25, 0.25]])
    t = PriorTable(["a"], CATS, probs)
    probs[0, 0] = -7.0  # the caller's array changes after validation; the table does not
    np.testing.assert_array_equal(t.probs, [[0.5, 0.25, 0.25]])
    np.testing.assert_array_equal(PriorTable(t.user_ids, t.categories, t.probs).probs, t.probs)  # bit-stable


# ---- alignment with a dataset -----------------------------------------------------------------


def test_matrix_reorders_columns_and_rows(toy):
    # columns in another order, rows in another order: matrix() returns dataset order
    probs = np.array([[0.1, 0.2, 0.7], [0.6, 0.3, 0.1]])  # columns C, A, B
    t = PriorTable(["d", "a"], ("C", "A", "B"), probs)
    out = t.matrix(toy, toy.user_index(["a", "d"]))
    np.testing.assert_array_equal(out, [[0.3, 0.1, 0.6], [0.2, 0.7, 0.1]])


def test_unknown_and_missing_categories(toy):
    t = PriorTable(["a"], ("A", "B", "Zed"), [[0.2, 0.3, 0.5]])
    with pytest.raises(
        PriorTableError,
        match=r"category columns do not match the dataset's 3 categories: unknown categories \['Zed'\]; "
        r"missing categories \['C'\]",
    ):
        t.matrix(toy, [0])
    with pytest.raises(PriorTableError, match=r"missing categories \['C'\]$"):
        PriorTable(["a"], ("A", "B"), [[0.5, 0.5]]).check_categories(toy.categories)


def test_users_not_in_the_dataset(toy):
    t = _table(users=("a", "b", "ghost"))
    with pytest.raises(PriorTableError, match=r"1 user_id value\(s\) not in dataset 'toy', e.g. \['ghost'\]"):
        t.matrix(toy, [0])


def test_cohort_user_without_a_row(toy):
    t = _table(users=("a", "b"))
    with pytest.raises(PriorTableError, match=r"no row for 1 user\(s\) of the cohort, e.g. \['d'\]"):
        t.matrix(toy, toy.user_index(["a", "d"]))


# ---- invariants at construction --------------------------------------------------------------


@pytest.mark.parametrize(
    ("probs", "message"),
    [
        ([[0.5, np.nan, 0.5]], r"<memory>: 1 NaN/inf value\(s\), e.g. user 'a' category 'B'"),
        ([[0.5, np.inf, 0.5]], r"NaN/inf value"),
        ([[1.2, -0.2, 0.0]], r"negative probability -0\.2 for user 'a' category 'B'"),
        ([[0.5, 0.4, 0.0]], r"1 row\(s\) do not sum to 1 \(tolerance 0\.0001\), e.g. user 'a' sums to 0\.9"),
        ([[0.5, 0.5]], r"probabilities must have shape \(users, categories\) = \(1, 3\), got \(1, 2\)"),
    ],
)
def test_bad_values(probs, message):
    with pytest.raises(PriorTableError, match=message):
        PriorTable(["a"], CATS, probs)


def test_duplicate_users_and_categories():
    with pytest.raises(PriorTableError, match=r"duplicate user_id values, e.g. \['a'\]"):
        PriorTable(["a", "b", "a"], CATS, np.full((3, 3), 1 / 3))
    with pytest.raises(PriorTableError, match=r"duplicate category columns \['A'\]"):
        PriorTable(["a"], ("A", "B", "A"), [[0.2, 0.3, 0.5]])


# ---- bad files ------------------------------------------------------------------------------


def test_wrong_suffix(tmp_path):
    with pytest.raises(PriorTableError, match=r"prior tables are saved as \.parquet or \.csv, not '\.txt'"):
        _table().save(tmp_path / "p.txt")
    (tmp_path / "p.json").write_text("{}")
    with pytest.raises(PriorTableError, match=r"p\.json: expected a \.parquet or \.csv prior table, got '\.json'"):
        PriorTable.load(tmp_path / "p.json")
    with pytest.raises(PriorTableError, match=r"prior table .*absent\.csv not found"):
        PriorTable.load(tmp_path / "absent.csv")


@pytest.mark.parametrize("suffix", [".csv", ".parquet"])
def test_missing_user_id_column(tmp_path, suffix):
    df = pd.DataFrame({"user": ["a"], "A": [0.5], "B": [0.5]})
    path = tmp_path / f"p{suffix}"
    df.to_csv(path, index=False) if suffix == ".csv" else df.to_parquet(path, index=False)
    with pytest.raises(PriorTableError, match=r"p\.\w+: missing column 'user_id'; found \['user', 'A', 'B'\]"):
        PriorTable.load(path)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("user_id,A,B,C\na,0.5,,0.5\n", r"bad\.csv: 1 NaN/inf value\(s\), e.g. user 'a' category 'B'"),
        ("user_id,A,B,C\na,0.5,x,0.5\n", r"bad\.csv: category column\(s\) \['B'\] are not numeric"),
        ("user_id,A,B,C\na,0.6,-0.1,0.5\n", r"bad\.csv: negative probability"),
        ("user_id,A,B,C\na,0.5,0.5,0.5\n", r"bad\.csv: 1 row\(s\) do not sum to 1 .* sums to 1\.5"),
        ("user_id,A,B,C\na,0.5,0.5,0\na,0,0,1\n", r"bad\.csv: duplicate user_id values, e.g. \['a'\]"),
        ("user_id,A,B,C\n,0.5,0.5,0\n", r"bad\.csv: column 'user_id' is empty in 1 row\(s\)"),
    ],
)
def test_bad_csv_files(tmp_path, text, message):
    (tmp_path / "bad.csv").write_text(text)
    with pytest.raises(PriorTableError, match=message):
        PriorTable.load(tmp_path / "bad.csv")


def test_bad_parquet_values_name_the_file(tmp_path):
    pd.DataFrame({"user_id": ["a"], "A": [np.nan], "B": [1.0]}).to_parquet(tmp_path / "bad.parquet", index=False)
    with pytest.raises(PriorTableError, match=r"bad\.parquet: 1 NaN/inf value\(s\), e.g. user 'a' category 'A'"):
        PriorTable.load(tmp_path / "bad.parquet")
