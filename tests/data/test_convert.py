"""Converters from raw public dataset files (MovieLens-1M/20M, Yelp, Amazon) to atomic files:
each format on tiny files in the real layout, the filters, the atomic write and bad-input errors."""

from __future__ import annotations

import json
import re

import pandas as pd
import pytest

from spectra_rec.cli import main
from spectra_rec.data import load_dataset, split_dataset
from spectra_rec.data.convert import ConvertConfig, category_token, convert, k_core
from spectra_rec.errors import ConfigError, DataError, DataWarning

ML1M_MOVIES = [
    "1::Toy Story (1995)::Animation|Children's|Comedy",
    "2::Mis\u00e9rables, Les (1995)::Drama|Musical",
    "3::Heat (1995)::Action|Crime|Thriller",
    "4::Never Rated (1999)::Drama",
]
ML1M_RATINGS = [
    "1::1::5::978300760",
    "1::2::3::978302109",
    "2::1::4::978301968",
    "2::3::2::978300275",
    "3::2::5::978824291",
    "3::9::4::978824292",  # movie 9 has no row in movies.dat: dropped
]
ML20M_MOVIES = (
    "movieId,title,genres\n"
    "1,Toy Story (1995),Adventure|Animation|Children|Comedy|Fantasy\n"
    '2,"American President, The (1995)",Comedy|Drama|Romance\n'
    '3,"""Great Performances"" Cats (1998)",Musical\n'
    "4,Babylon 5,(no genres listed)\n"
    "5,Fawlty Towers (1975-1979),Comedy\n"
)
ML20M_RATINGS = [(1, 1, 3.5, 1112486027), (1, 2, 4.0, 1112484676), (2, 3, 2.5, 1112484819),
                 (2, 4, 5.0, 1094785740), (3, 5, 1.0, 1112485000), (3, 1, 4.5, 1112485001)]
YELP_BUSINESS = [
    {"business_id": "b1", "name": "Pizza Place", "city": "Tempe", "categories": "Restaurants, Pizza, Food & Restaurants"},
    {"business_id": "b2", "name": "Tab\tName", "categories": None},
    {"business_id": "b3", "name": "Gym", "categories": "Active Life, Fitness &  Instruction"},
]
YELP_REVIEWS = [
    {"review_id": "r1", "user_id": "u1", "business_id": "b1", "stars": 5.0, "date": "2016-03-09 00:44:42", "text": "Great"},
    {"review_id": "r2", "user_id": "u1", "business_id": "b2", "stars": 3, "date": "2017-01-14 21:30:33", "text": "Ok"},
    {"review_id": "r3", "user_id": "u2", "business_id": "b1", "stars": 4.0, "date": "2018-07-01 12:00:00", "text": ""},
    {"review_id": "r4", "user_id": "u2", "business_id": "b3", "stars": 1.0, "date": "2012-12-31 23:59:59", "text": ""},
    {"review_id": "r5", "user_id": "u3", "business_id": "gone", "stars": 2.0, "date": "2019-01-01 00:00:00", "text": ""},
]
AMAZON_META = [
    {"asin": "A1", "title": "Gone Girl", "category": ["Books", "Literature & Fiction", "Mystery"]},
    {"asin": "A2", "title": "Cookbook", "category": ["Books", "Cookbooks, Food &amp; Wine"]},
    {"asin": "A3", "title": "Just Books", "category": ["Books"]},  # no level-1 category
    {"asin": "A4", "title": "Nothing", "category": []},
]
AMAZON_REVIEWS = [("R1", "A1", 5.0, 1424304000), ("R1", "A2", 4.0, 1424390400), ("R2", "A1", 3.0, 1424476800),
                  ("R2", "A3", 2.0, 1424563200), ("R3", "A4", 1.0, 1424649600)]


def _jsonl(path, records):
    path.write_text("".join(json.dumps(r) + "\n" for r in records))


def ml1m(root, ratings=ML1M_RATINGS, movies=ML1M_MOVIES):
    root.mkdir(parents=True, exist_ok=True)
    (root / "ratings.dat").write_text("".join(line + "\n" for line in ratings))
    (root / "movies.dat").write_bytes("".join(line + "\n" for line in movies).encode("latin-1"))
    return root


def ml20m(root, ratings=ML20M_RATINGS, movies=ML20M_MOVIES):
    root.mkdir(parents=True, exist_ok=True)
    rows = ratings if isinstance(ratings, str) else "".join(",".join(map(str, r)) + "\n" for r in ratings)
    (root / "ratings.csv").write_text(rows if rows.startswith("userId") else "userId,movieId,rating,timestamp\n" + rows)
    (root / "movies.csv").write_text(movies)
    return root


def yelp(root, reviews=YELP_REVIEWS, business=YELP_BUSINESS):
    root.mkdir(parents=True, exist_ok=True)
    _jsonl(root / "yelp_academic_dataset_review.json", reviews)
    _jsonl(root / "yelp_academic_dataset_business.json", business)
    return root


def amazon(root, reviews=AMAZON_REVIEWS, meta=AMAZON_META):
    root.mkdir(parents=True, exist_ok=True)
    _jsonl(root / "reviews.json", [{"overall": r, "verified": True, "reviewerID": u, "asin": i, "unixReviewTime": t,
                                    "reviewText": "fine"} for u, i, r, t in reviews])
    _jsonl(root / "meta.json", meta)
    return root


def _times(ds) -> dict:
    return {(ds.user_ids[u], ds.item_ids[i]): t for u, i, t in zip(ds.inter_user, ds.inter_item, ds.inter_time)}


def _item(ds, token) -> int:
    return int(ds.item_index([token])[0])


def _check_split(ds):
    split = split_dataset(ds)
    assert len(split.user) == ds.n_interactions and split.n_train.sum() + split.n_heldout.sum() == ds.n_interactions


def test_category_token():
    assert category_token("Food & Restaurants") == "Food_&_Restaurants"
    assert category_token("  Active \t Life\n") == "Active_Life"
    assert category_token("Sci-Fi") == "Sci-Fi"


def test_ml_1m(tmp_path):
    out = tmp_path / "out"
    summary = convert("ml-1m", ml1m(tmp_path / "raw"), out)
    assert summary == {"dataset": "ml-1m", "users": 3, "items": 3, "interactions": 5, "K": 8,
                       "items_without_category": 0, "dropped_min_rating": 0, "dropped_no_metadata": 1,
                       "dropped_k_core": 0, "dropped_max_users": 0}
    assert sorted(p.name for p in out.iterdir()) == ["ml-1m.inter", "ml-1m.item"]
    assert (out / "ml-1m.item").read_text().splitlines()[0] == \
        "item_id:token\tmovie_title:token_seq\trelease_year:token\tclass:token_seq"
    ds = load_dataset(out)
    assert (ds.name, ds.n_users, ds.n_items, ds.n_interactions) == ("ml-1m", 3, 3, 5)
    assert ds.categories == ("Action", "Animation", "Children's", "Comedy", "Crime", "Drama", "Musical", "Thriller")
    assert list(ds.item_ids) == ["1", "2", "3"] and list(ds.item_years) == ["1995"] * 3
    assert list(ds.item_titles) == ["Toy Story", "Mis\u00e9rables, Les", "Heat"]
    assert ds.item_categories(_item(ds, "2")) == ["Drama", "Musical"]
    assert _times(ds) == {("1", "1"): 978300760, ("1", "2"): 978302109, ("2", "1"): 978301968,
                          ("2", "3"): 978300275, ("3", "2"): 978824291}
    inter = pd.read_csv(out / "ml-1m.inter", sep="\t")
    assert list(inter.columns) == ["user_id:token", "item_id:token", "rating:float", "timestamp:float"]
    assert list(inter["rating:float"]) == [5.0, 3.0, 4.0, 2.0, 5.0]
    _check_split(ds)


def test_ml_20m(tmp_path):
    out = tmp_path / "out"
    summary = convert("ml-20m", ml20m(tmp_path / "raw"), out, name="ml-25m")
    assert (summary["users"], summary["items"], summary["interactions"], summary["K"]) == (3, 5, 6, 8)
    assert summary["items_without_category"] == 1
    with pytest.warns(DataWarning, match="1 item"):
        ds = load_dataset(out)
    assert ds.name == "ml-25m" and (ds.n_users, ds.n_items, ds.n_interactions) == (3, 5, 6)
    assert ds.categories == ("Adventure", "Animation", "Children", "Comedy", "Drama", "Fantasy", "Musical", "Romance")
    assert list(ds.item_titles) == ["Toy Story", "American President, The", "'Great Performances' Cats",
                                    "Babylon 5", "Fawlty Towers"]
    assert list(ds.item_years) == ["1995", "1995", "1998", "", "1975"]
    assert ds.item_categories(_item(ds, "4")) == []  # (no genres listed)
    assert _times(ds)[("2", "4")] == 1094785740
    # RecBole reads atomic files with pandas' python engine and default quoting: a '"' would break it
    recbole_view = pd.read_csv(out / "ml-25m.item", delimiter="\t", dtype=str, engine="python")
    assert list(recbole_view["item_id:token"]) == ["1", "2", "3", "4", "5"]
    _check_split(ds)


def test_yelp(tmp_path):
    out = tmp_path / "out"
    summary = convert("yelp", yelp(tmp_path / "raw"), out)
    assert (summary["users"], summary["items"], summary["interactions"], summary["K"]) == (2, 3, 4, 5)
    assert summary["dropped_no_metadata"] == 1 and summary["items_without_category"] == 1
    assert (out / "yelp.item").read_text().splitlines()[0] == "item_id:token\ttitle:token_seq\tclass:token_seq"
    with pytest.warns(DataWarning):
        ds = load_dataset(out)
    assert ds.categories == ("Active_Life", "Fitness_&_Instruction", "Food_&_Restaurants", "Pizza", "Restaurants")
    assert ds.item_categories(_item(ds, "b1")) == ["Food_&_Restaurants", "Pizza", "Restaurants"]
    assert ds.item_categories(_item(ds, "b2")) == [] and ds.item_years is None
    assert ds.item_titles[_item(ds, "b2")] == "Tab Name"
    # UTC: 2016-03-09 00:44:42 -> 1457484282, 2012-12-31 23:59:59 -> 1356998399
    assert _times(ds) == {("u1", "b1"): 1457484282, ("u1", "b2"): 1484429433, ("u2", "b1"): 1530446400,
                          ("u2", "b3"): 1356998399}
    _check_split(ds)


@pytest.mark.parametrize(("level", "categories", "without"), [
    (0, ("Books",), 1),
    (1, ("Cookbooks,_Food_&_Wine", "Literature_&_Fiction"), 2),
    (2, ("Mystery",), 3),
])
def test_amazon_levels(tmp_path, level, categories, without):
    out = tmp_path / "out"
    summary = convert("amazon", amazon(tmp_path / "raw"), out, ConvertConfig(amazon_level=level))
    assert (summary["users"], summary["items"], summary["interactions"]) == (3, 4, 5)
    assert summary["K"] == len(categories) and summary["items_without_category"] == without
    with pytest.warns(DataWarning, match=f"{without} item"):
        ds = load_dataset(out)
    assert ds.categories == categories and ds.name == "amazon"
    assert list(ds.item_titles) == ["Gone Girl", "Cookbook", "Just Books", "Nothing"]
    assert _times(ds)[("R2", "A3")] == 1424563200
    _check_split(ds)


def test_amazon_2014_metadata_format(tmp_path):
    raw = amazon(tmp_path / "raw", reviews=[("R1", "B1", 5.0, 1), ("R1", "B2", 4.0, 2)], meta=[])
    (raw / "meta.json").write_text(  # the 2014 files hold Python literals, categories a list of paths
        "{'asin': 'B1', 'title': 'Cozy One', 'categories': [['Books', 'Mystery', 'Cozy'], ['Books', 'Other']]}\n"
        '{"asin": "B2", "categories": [["Books", "Science Fiction"]]}\n'
    )
    convert("amazon", raw, tmp_path / "out")
    ds = load_dataset(tmp_path / "out")
    assert ds.categories == ("Mystery", "Science_Fiction") and list(ds.item_titles) == ["Cozy One", ""]


def test_k_core_is_iterated_until_stable(tmp_path):
    # min 2 per user and item: u4 and i3 go, then i4 (left with u3 only), then u3 (left with i1 only)
    pairs = [(1, 1), (1, 2), (1, 3), (2, 1), (2, 2), (3, 1), (3, 4), (4, 4)]
    raw = ml20m(tmp_path / "raw", [(u, i, 4.0, 100 + n) for n, (u, i) in enumerate(pairs)])
    summary = convert("ml-20m", raw, tmp_path / "out", ConvertConfig(min_user=2, min_item=2))
    assert (summary["users"], summary["items"], summary["interactions"], summary["dropped_k_core"]) == (2, 2, 4, 4)
    ds = load_dataset(tmp_path / "out")
    assert sorted(_times(ds)) == [("1", "1"), ("1", "2"), ("2", "1"), ("2", "2")]
    inter = pd.DataFrame(pairs, columns=["user", "item"])
    assert len(k_core(inter, 2, 1)) == 7 and len(k_core(inter, 1, 2)) == 7 and len(k_core(inter, 2, 2)) == 4


def test_min_rating(tmp_path):
    summary = convert("ml-20m", ml20m(tmp_path / "raw"), tmp_path / "out", ConvertConfig(min_rating=4.0))
    assert (summary["users"], summary["items"], summary["interactions"], summary["dropped_min_rating"]) == (3, 3, 3, 3)
    with pytest.warns(DataWarning):  # movie 4 has no genres
        ds = load_dataset(tmp_path / "out")
    assert sorted(_times(ds)) == [("1", "2"), ("2", "4"), ("3", "1")]


def test_max_users_is_seeded_and_ignores_row_order(tmp_path):
    rows = [(u, (1, 2, 3, 5)[(u + k) % 4], 3.0, 1000 * u + k) for u in range(1, 41) for k in range(3)]
    users = {}
    for tag, data, seed in [("a", rows, 0), ("b", rows[::-1], 0), ("c", rows, 1)]:
        summary = convert("ml-20m", ml20m(tmp_path / f"raw-{tag}", data), tmp_path / tag, ConvertConfig(max_users=10, seed=seed))
        assert (summary["users"], summary["interactions"], summary["dropped_max_users"]) == (10, 30, 90)
        users[tag] = set(load_dataset(tmp_path / tag).user_ids)
    assert users["a"] == users["b"] and users["a"] != users["c"]


def test_existing_output_is_refused_unless_overwrite(tmp_path):
    raw, out = ml1m(tmp_path / "raw"), tmp_path / "out"
    out.mkdir()
    convert("ml-1m", raw, out)  # an empty folder is fine
    with pytest.raises(DataError, match=r"out exists and is not empty; pass overwrite=True"):
        convert("ml-1m", raw, out, ConvertConfig(min_rating=4))
    assert load_dataset(out).n_interactions == 5  # untouched
    (out / "stray.txt").write_text("x")
    convert("ml-1m", raw, out, ConvertConfig(min_rating=4), overwrite=True)
    assert sorted(p.name for p in out.iterdir()) == ["ml-1m.inter", "ml-1m.item"]
    assert load_dataset(out).n_interactions == 3
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out", "raw"]


def test_failed_conversion_leaves_no_partial_output(tmp_path, monkeypatch):
    import spectra_rec.data.convert as convert_module

    raw = ml1m(tmp_path / "raw", ratings=ML1M_RATINGS + ["4::1::x::978824291"])
    with pytest.raises(DataError, match="line 7"):
        convert("ml-1m", raw, tmp_path / "out")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["raw"]

    def broken_write(folder, name, *args):
        (folder / f"{name}.inter").write_text("partial")
        raise OSError("disk full")

    monkeypatch.setattr(convert_module, "write_atomic_files", broken_write)
    raw = ml1m(tmp_path / "raw")
    with pytest.raises(OSError, match="disk full"):
        convert("ml-1m", raw, tmp_path / "out")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["raw"]
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "keep.txt").write_text("previous")
    with pytest.raises(OSError, match="disk full"):
        convert("ml-1m", raw, tmp_path / "out", overwrite=True)
    assert [p.name for p in (tmp_path / "out").iterdir()] == ["keep.txt"]  # the old output survives
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out", "raw"]


def _bad(tmp_path, case):
    """Write a raw folder that is broken in one way; returns (format, folder, config)."""
    raw = tmp_path / "raw"
    if case == "ml1m-missing-file":
        ml1m(raw).joinpath("movies.dat").unlink()
    elif case == "ml1m-short-line":
        ml1m(raw, ratings=ML1M_RATINGS[:2] + ["1::3::4"])
    elif case == "ml1m-empty":
        ml1m(raw, ratings=[])
    elif case == "ml20m-missing-column":
        ml20m(raw, "userId,movieId,rating\n1,1,4.0\n")
    elif case == "ml20m-bad-number":
        ml20m(raw, "userId,movieId,rating,timestamp\n1,1,4.0,5\n1,2,x,6\n")
    elif case == "ml20m-empty-id":
        ml20m(raw, "userId,movieId,rating,timestamp\n1,1,4.0,5\n\n,2,3.0,6\n")
    elif case == "ml20m-bad-csv":
        ml20m(raw, "userId,movieId,rating,timestamp\n1,1,4.0,5\n1,2,3.0,6,7\n")
    elif case == "yelp-missing-key":
        yelp(raw, reviews=[YELP_REVIEWS[0], {k: v for k, v in YELP_REVIEWS[1].items() if k != "stars"}])
    elif case == "yelp-bad-date":
        yelp(raw, reviews=[YELP_REVIEWS[0], {**YELP_REVIEWS[1], "date": "yesterday"}])
    elif case == "yelp-bad-categories":
        yelp(raw, business=[YELP_BUSINESS[0], {**YELP_BUSINESS[1], "categories": 7}])
    elif case == "amazon-bad-json":
        amazon(raw).joinpath("meta.json").write_text(json.dumps(AMAZON_META[0]) + "\n{'asin': oops\n")
    elif case == "amazon-bad-category":
        amazon(raw, meta=[{"asin": "A1", "category": "Books"}])
    elif case == "amazon-no-category":
        amazon(raw, meta=[{"asin": a, "category": ["Books"]} for a in ("A1", "A2", "A3", "A4")])
    elif case == "filtered-empty":
        return "ml-1m", ml1m(raw), ConvertConfig(min_user=10)
    fmt = case.split("-")[0].replace("ml1m", "ml-1m").replace("ml20m", "ml-20m")
    return fmt, raw, ConvertConfig()


@pytest.mark.parametrize(("case", "message"), [
    ("ml1m-missing-file", r"raw/movies\.dat not found \(expected MovieID::Title::Genres lines\)"),
    ("ml1m-short-line", r"ratings\.dat, line 3: expected 4 '::'-separated fields UserID::MovieID::Rating::Timestamp, got 3"),
    ("ml1m-empty", r"ratings\.dat: no interactions found"),
    ("ml20m-missing-column", r"ratings\.csv: missing column\(s\) \['timestamp'\]; expected header userId,movieId,rating,timestamp"),
    ("ml20m-bad-number", r"ratings\.csv, line 3: 'rating' must be a number, got 'x'"),
    ("ml20m-empty-id", r"ratings\.csv, line 4: 'userId' must be a non-empty id"),
    ("ml20m-bad-csv", r"ratings\.csv: unparseable CSV \(.*line 3.*\)"),
    ("yelp-missing-key", r"yelp_academic_dataset_review\.json, line 2: missing key\(s\) \['stars'\]"),
    ("yelp-bad-date", r"yelp_academic_dataset_review\.json, line 2: 'date' must be a date like .*, got 'yesterday'"),
    ("yelp-bad-categories", r"yelp_academic_dataset_business\.json, line 2: 'categories' must be a comma-separated string"),
    ("amazon-bad-json", r"meta\.json, line 2: not valid JSON"),
    ("amazon-bad-category", r"meta\.json, line 1: 'category' must be a list"),
    ("amazon-no-category", r"meta\.json: none of the 4 kept item\(s\) has a category"),
    ("filtered-empty", r"ratings\.dat: no interactions left after filtering \(6 read"),
])
def test_bad_input_names_file_and_expectation(tmp_path, case, message):
    fmt, raw, config = _bad(tmp_path, case)
    with pytest.raises(DataError, match=message):
        convert(fmt, raw, tmp_path / "out", config)
    assert not (tmp_path / "out").exists()


def test_bad_options(tmp_path):
    raw = ml1m(tmp_path / "raw")
    with pytest.raises(ConfigError, match="'ml-100k'"):
        convert("ml-1m", raw, tmp_path / "out", name="ml-100k")
    with pytest.raises(ConfigError, match="unknown format 'netflix'"):
        convert("netflix", raw, tmp_path / "out")
    with pytest.raises(ConfigError, match="min_user must be >= 1"):
        ConvertConfig(min_user=0)
    with pytest.raises(DataError, match="is not a directory"):
        convert("ml-1m", tmp_path / "nowhere", tmp_path / "out")


def test_cli_convert(capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    raw, out = ml1m(tmp_path / "raw"), tmp_path / "out"
    assert main(["convert", "--format", "ml-1m", "--input", str(raw), "--out", str(out), "--min-rating", "4"]) == 0
    rows = dict(re.split(r"\s{2,}", line, maxsplit=1) for line in capsys.readouterr().out.splitlines())
    assert rows["atomic files"] == str(out) and rows["users"] == "3" and rows["interactions"] == "3"
    assert rows["K (categories)"] == "5" and rows["dropped rating/metadata/k-core/sample"] == "2/1/0/0"
    assert load_dataset(out).n_interactions == 3

    (raw / "movies.dat").unlink()
    assert main(["convert", "--format", "ml-1m", "--input", str(raw), "--out", str(tmp_path / "o2")]) == 2
    err = capsys.readouterr().err
    assert re.search(r"spectra-rec convert: error: .*movies\.dat not found", err) and "Traceback" not in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out", "raw"]
