"""Convert raw public dataset files (MovieLens-1M/20M, Yelp, Amazon) into RecBole atomic files.

A reader in ``FORMATS`` turns a source folder into interactions and item metadata; ``convert``
filters them (minimum rating, iterative k-core, a seeded user sample) and writes
``<out>/<name>.inter`` and ``<out>/<name>.item`` atomically, ready for ``load_dataset(out)``.
Only items that keep interactions are written, so the catalogue is the interacted items.
"""

from __future__ import annotations

import ast
import html
import json
import logging
import os
import re
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from spectra_rec.errors import ConfigError, DataError, require_positive

log = logging.getLogger(__name__)

INTER_HEADER = "user_id:token\titem_id:token\trating:float\ttimestamp:float"
RESERVED_NAMES = ("ml-100k",)
"""RecBole special-cases these names (it would download or substitute its own copy)."""
_EPOCH = pd.Timestamp(0, tz="UTC")
_YEAR = re.compile(r"^(.*?)\s*\((\d{4})(?:[-\u2013]\d{0,4})?\)\s*$")


@dataclass(frozen=True)
class ConvertConfig:
    """Filters applied between reading the raw files and writing the atomic files."""

    min_rating: float | None = None
    """Keep interactions with rating >= this (None: keep all)."""
    min_user: int = 1
    """k-core: users need at least this many interactions (iterated with ``min_item`` until stable)."""
    min_item: int = 1
    """k-core: items need at least this many interactions."""
    max_users: int | None = None
    """Seeded sample of at most this many users, drawn after k-core filtering (which is then re-applied)."""
    seed: int = 0
    amazon_level: int = 1
    """Amazon only: depth of the category path used (0 is the store name)."""

    def __post_init__(self):
        require_positive(self, "min_user", "min_item", *(("max_users",) if self.max_users is not None else ()))
        if self.amazon_level < 0:
            raise ConfigError(f"ConvertConfig.amazon_level must be >= 0, got {self.amazon_level}")


@dataclass
class Raw:
    """What a reader returns: validated interactions, item metadata and the files they came from."""

    inter: pd.DataFrame
    """Columns user, item (str), rating (float), timestamp (Unix seconds)."""
    items: pd.DataFrame
    """Columns item, title, optional year, class (space-separated category tokens)."""
    inter_path: Path
    item_path: Path
    title_field: str = "title"


def category_token(name) -> str:
    """One token_seq token for a category name: whitespace runs become "_", double quotes become "'"."""
    return "_".join(str(name).split()).replace('"', "'")


def _class(names) -> str:
    """Space-separated unique category tokens of ``names`` (in order)."""
    return " ".join(dict.fromkeys(t for t in map(category_token, names) if t))


def _clean(text) -> str:
    """A title on one line: whitespace runs become one space; '"' becomes "'" (RecBole's CSV reader chokes on it)."""
    return "" if text is None else " ".join(str(text).split()).replace('"', "'")


def _title_year(title: str) -> tuple[str, str]:
    """``"Toy Story (1995)"`` -> ``("Toy Story", "1995")``; no year -> ``(title, "")``."""
    m = _YEAR.match(title.strip())
    return (_clean(m[1]), m[2]) if m else (_clean(title), "")


def _genres(text: str) -> list[str]:
    """MovieLens genres ``A|B``; ``(no genres listed)`` means none."""
    return [] if text.strip() in ("", "(no genres listed)") else text.split("|")


# ---- reading ------------------------------------------------------------------------------------
def _need(path: Path, what: str) -> None:
    if not path.is_file():
        raise DataError(f"{path} not found (expected {what})")


def _lines(path: Path, encoding: str = "utf-8"):
    """Yield (line number, line) of a text file, skipping blank lines."""
    with path.open("rb") as f:
        for n, raw in enumerate(f, 1):
            try:
                line = raw.decode(encoding).rstrip("\r\n")
            except UnicodeDecodeError:
                raise DataError(f"{path}, line {n}: not valid {encoding} text") from None
            if line.strip():
                yield n, line


def _dat(path: Path, fields: tuple[str, ...]):
    """Yield (line number, fields) of a MovieLens ``::``-separated latin-1 file."""
    _need(path, "::".join(fields) + " lines")
    for n, line in _lines(path, "latin-1"):
        parts = line.split("::")
        if len(parts) != len(fields):
            raise DataError(f"{path}, line {n}: expected {len(fields)} '::'-separated fields "
                            f"{'::'.join(fields)}, got {len(parts)}: {line[:80]!r}")
        yield n, parts


def _json(path: Path, keys: tuple[str, ...], literal: bool = False):
    """Yield (line number, record) of a JSON-lines file; ``literal`` also accepts Python dict literals."""
    _need(path, f"JSON lines with keys {list(keys)}")
    for n, line in _lines(path):
        try:
            rec = json.loads(line)
        except json.JSONDecodeError as exc:
            rec = _literal(line) if literal else None
            if rec is None:
                raise DataError(f"{path}, line {n}: not valid JSON ({exc.msg}); "
                                f"expected one object with keys {list(keys)} per line") from None
        if not isinstance(rec, dict):
            raise DataError(f"{path}, line {n}: expected a JSON object, got {type(rec).__name__}")
        missing = [k for k in keys if k not in rec]
        if missing:
            raise DataError(f"{path}, line {n}: missing key(s) {missing}; expected keys {list(keys)}")
        yield n, rec


def _literal(line: str):
    """The Amazon-2014 metadata files hold Python dict literals, not JSON."""
    try:
        return ast.literal_eval(line)
    except Exception:  # noqa: BLE001 - any failure means "not a literal"
        return None


def _csv(path: Path, columns: tuple[str, ...]) -> pd.DataFrame:
    """A CSV file with a header, read as strings; column ``line`` holds each row's line number."""
    _need(path, f"a CSV file with header {','.join(columns)}")
    try:
        df = pd.read_csv(path, dtype=str, keep_default_na=False, skip_blank_lines=False)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as exc:
        raise DataError(f"{path}: unparseable CSV ({str(exc).strip()}); expected header {','.join(columns)}") from None
    missing = [c for c in columns if c not in df.columns]
    if missing:
        raise DataError(f"{path}: missing column(s) {missing}; expected header {','.join(columns)}, "
                        f"found {list(df.columns)}")
    df = df[list(columns)].fillna("").assign(line=np.arange(len(df)) + 2)
    return df[(df[list(columns)] != "").any(axis=1)]  # blank lines


def _frame(rows: list, columns: list[str]) -> pd.DataFrame:
    return pd.DataFrame(rows, columns=columns, dtype=object) if rows else pd.DataFrame(columns=columns)


def _interactions(rows, path: Path, fields, dates: bool = False) -> pd.DataFrame:
    """Validate ``[line, user, item, rating, time]`` rows (source names ``fields``); reports the first bad one."""
    df = (rows if isinstance(rows, pd.DataFrame) else _frame(rows, ["line", *fields])).reset_index(drop=True)

    def check(bad, field: str, expected: str) -> None:
        if np.asarray(bad, dtype=bool).any():
            i = int(np.flatnonzero(np.asarray(bad, dtype=bool))[0])
            raise DataError(f"{path}, line {df['line'].iloc[i]}: {field!r} must be {expected}, "
                            f"got {df[field].iloc[i]!r}")

    user, item, rating, time = fields
    ids = {}
    for f in (user, item):
        ids[f] = df[f].astype(str).str.strip()
        check(df[f].isna() | (ids[f] == ""), f, "a non-empty id")
    r = pd.to_numeric(df[rating], errors="coerce").astype(float)
    check(~np.isfinite(r), rating, "a number")
    if dates:
        t = pd.to_datetime(df[time], utc=True, errors="coerce", format="ISO8601")
        check(t.isna(), time, "a date like '2016-03-09 00:44:42'")
        ts = ((t - _EPOCH) // pd.Timedelta(seconds=1)).astype(np.int64)
    else:
        ts = pd.to_numeric(df[time], errors="coerce").astype(float)
        check(~np.isfinite(ts), time, "a Unix time in seconds")
        ts = ts.astype(np.int64) if (ts == np.floor(ts)).all() else ts
    return pd.DataFrame({"user": ids[user], "item": ids[item], "rating": r, "timestamp": ts})


def read_ml_1m(src: Path, config: ConvertConfig) -> Raw:
    """MovieLens-1M: ``ratings.dat`` and ``movies.dat`` (``::``-separated, latin-1)."""
    rp, mp = src / "ratings.dat", src / "movies.dat"
    fields = ("UserID", "MovieID", "Rating", "Timestamp")
    inter = _interactions([[n, *p] for n, p in _dat(rp, fields)], rp, fields)
    items = [(p[0].strip(), *_title_year(p[1]), _class(_genres(p[2])))
             for _, p in _dat(mp, ("MovieID", "Title", "Genres"))]
    return Raw(inter, _frame(items, ["item", "title", "year", "class"]), rp, mp, "movie_title")


def read_ml_20m(src: Path, config: ConvertConfig) -> Raw:
    """MovieLens-20M/25M/latest: ``ratings.csv`` and ``movies.csv`` (with headers)."""
    rp, mp = src / "ratings.csv", src / "movies.csv"
    fields = ("userId", "movieId", "rating", "timestamp")
    inter = _interactions(_csv(rp, fields), rp, fields)
    m = _csv(mp, ("movieId", "title", "genres"))
    items = [(i.strip(), *_title_year(t), _class(_genres(g))) for i, t, g in zip(m["movieId"], m["title"], m["genres"])]
    return Raw(inter, _frame(items, ["item", "title", "year", "class"]), rp, mp, "movie_title")


def read_yelp(src: Path, config: ConvertConfig) -> Raw:
    """Yelp Open Dataset: review and business JSON-lines files (categories a comma-separated string or null)."""
    rp, bp = src / "yelp_academic_dataset_review.json", src / "yelp_academic_dataset_business.json"
    keys = ("user_id", "business_id", "stars", "date")
    inter = _interactions([[n, *(rec[k] for k in keys)] for n, rec in _json(rp, keys)], rp, keys, dates=True)
    items = []
    for n, rec in _json(bp, ("business_id", "name", "categories")):
        cats = rec["categories"]
        if not isinstance(cats, (str, list, type(None))):
            raise DataError(f"{bp}, line {n}: 'categories' must be a comma-separated string, a list or null, "
                            f"got {cats!r}")
        cats = cats.split(",") if isinstance(cats, str) else cats or []
        items.append((str(rec["business_id"]).strip(), _clean(rec["name"]), _class(cats)))
    return Raw(inter, _frame(items, ["item", "title", "class"]), rp, bp)


def read_amazon(src: Path, config: ConvertConfig) -> Raw:
    """Amazon reviews (2018 or 2014): ``reviews.json`` and ``meta.json``; the category is ``path[amazon_level]``."""
    rp, mp = src / "reviews.json", src / "meta.json"
    keys = ("reviewerID", "asin", "overall", "unixReviewTime")
    inter = _interactions([[n, *(rec[k] for k in keys)] for n, rec in _json(rp, keys, literal=True)], rp, keys)
    items, level = [], config.amazon_level
    for n, rec in _json(mp, ("asin",), literal=True):
        path = rec.get("category", rec.get("categories")) or []
        if not isinstance(path, list):
            raise DataError(f"{mp}, line {n}: 'category' must be a list like [\"Books\", \"Mystery\"], got {path!r}")
        if path and isinstance(path[0], list):  # 2014: a list of paths; the first one
            path = path[0]
        cats = [html.unescape(str(path[level]))] if len(path) > level else []
        items.append((str(rec["asin"]).strip(), _clean(rec.get("title")), _class(cats)))
    return Raw(inter, _frame(items, ["item", "title", "class"]), rp, mp)


FORMATS = {"ml-1m": read_ml_1m, "ml-20m": read_ml_20m, "yelp": read_yelp, "amazon": read_amazon}
"""Format name -> reader(src, config) -> Raw."""


# ---- filtering ----------------------------------------------------------------------------------
def k_core(inter: pd.DataFrame, min_user: int = 1, min_item: int = 1) -> pd.DataFrame:
    """Drop users with < ``min_user`` and items with < ``min_item`` interactions, repeatedly until stable."""
    while min_user > 1 or min_item > 1:
        keep = ((inter.groupby("user")["user"].transform("size") >= min_user)
                & (inter.groupby("item")["item"].transform("size") >= min_item))
        if keep.all():
            break
        inter = inter[keep]
    return inter


def sample_users(inter: pd.DataFrame, max_users: int, seed: int = 0) -> pd.DataFrame:
    """Interactions of a seeded sample of at most ``max_users`` users (independent of row order)."""
    users = np.sort(np.asarray(inter["user"].unique(), dtype=object))
    if len(users) <= max_users:
        return inter
    chosen = np.random.default_rng(seed).choice(len(users), size=max_users, replace=False)
    return inter[inter["user"].isin(users[chosen])]


def filter_interactions(raw: Raw, config: ConvertConfig) -> tuple[pd.DataFrame, dict]:
    """Apply min_rating, drop items without metadata, k-core and the user sample; returns (inter, dropped counts)."""
    inter = raw.inter
    dropped = dict.fromkeys(["dropped_min_rating", "dropped_no_metadata", "dropped_k_core", "dropped_max_users"], 0)
    if inter.empty:
        raise DataError(f"{raw.inter_path}: no interactions found")

    def step(key: str, new: pd.DataFrame) -> pd.DataFrame:
        dropped[key] += len(inter) - len(new)
        return new

    if config.min_rating is not None:
        inter = step("dropped_min_rating", inter[inter["rating"] >= config.min_rating])
    inter = step("dropped_no_metadata", inter[inter["item"].isin(raw.items["item"])])
    if dropped["dropped_no_metadata"]:
        log.warning("dropped %d interaction(s) whose item has no row in %s",
                    dropped["dropped_no_metadata"], raw.item_path)
    inter = step("dropped_k_core", k_core(inter, config.min_user, config.min_item))
    if config.max_users is not None:
        inter = step("dropped_max_users", sample_users(inter, config.max_users, config.seed))
        inter = step("dropped_k_core", k_core(inter, config.min_user, config.min_item))
    if inter.empty:
        raise DataError(f"{raw.inter_path}: no interactions left after filtering ({len(raw.inter)} read; "
                        f"{dropped}); relax min_rating / min_user / min_item")
    return inter, dropped


# ---- writing ------------------------------------------------------------------------------------
def _check_out(out: Path, overwrite: bool) -> None:
    if out.exists() and not out.is_dir():
        raise DataError(f"output {out} exists and is not a directory")
    if out.is_dir() and any(out.iterdir()) and not overwrite:
        raise DataError(f"output {out} exists and is not empty; pass overwrite=True (--overwrite) to replace it")


def write_atomic_files(folder: Path, name: str, inter: pd.DataFrame, items: pd.DataFrame, title_field: str) -> None:
    """Write ``<folder>/<name>.inter`` and ``.item`` (tab-separated, no quoting)."""
    with (folder / f"{name}.inter").open("w", encoding="utf-8", newline="\n") as f:
        f.write(INTER_HEADER + "\n")
        cols = (inter[c].tolist() for c in ("user", "item", "rating", "timestamp"))
        f.writelines(f"{u}\t{i}\t{r}\t{t}\n" for u, i, r, t in zip(*cols))
    year = "year" in items.columns
    cols = ["item", "title", *(["year"] if year else []), "class"]
    header = ["item_id:token", f"{title_field}:token_seq", *(["release_year:token"] if year else []), "class:token_seq"]
    with (folder / f"{name}.item").open("w", encoding="utf-8", newline="\n") as f:
        f.write("\t".join(header) + "\n")
        f.writelines("\t".join(row) + "\n" for row in zip(*(items[c].tolist() for c in cols)))


def _write_atomic(out: Path, name: str, inter: pd.DataFrame, items: pd.DataFrame, title_field: str) -> None:
    """Write into a temporary sibling folder, then rename it onto ``out`` (replacing an existing ``out``)."""
    tmp, old = (out.with_name(f".{out.name}.{tag}-{os.getpid()}") for tag in ("tmp", "old"))
    for leftover in (tmp, old):
        shutil.rmtree(leftover, ignore_errors=True)
    tmp.mkdir(parents=True)
    try:
        write_atomic_files(tmp, name, inter, items, title_field)
        if out.exists():
            out.replace(old)
        tmp.replace(out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        if old.exists() and not out.exists():
            old.replace(out)  # put the previous output back
        raise
    shutil.rmtree(old, ignore_errors=True)


def convert(fmt: str, src, out, config: ConvertConfig | None = None, name: str | None = None,
            overwrite: bool = False) -> dict:
    """Convert the raw ``fmt`` files in ``src`` into ``<out>/<name>.{inter,item}``; returns a summary dict."""
    config = config or ConvertConfig()
    if fmt not in FORMATS:
        raise ConfigError(f"unknown format {fmt!r}; known: {list(FORMATS)}")
    name = name or fmt
    if name in RESERVED_NAMES or not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_-]*", name):
        raise ConfigError(f"dataset name {name!r} must be letters, digits, '-' or '_' and not one of "
                          f"{list(RESERVED_NAMES)} (RecBole special-cases those)")
    src, out = Path(src), Path(out).absolute()
    if not src.is_dir():
        raise DataError(f"input {src} is not a directory (expected the raw {fmt} files)")
    # Replacing --out removes it as a whole: if it is (or holds) the raw folder, the raw files go too.
    src_real, out_real = src.resolve(), out.resolve()
    if out_real == src_real or out_real in src_real.parents:
        raise ConfigError(f"--out {str(out)!r} is (or contains) the --input folder {str(src)!r}; replacing it would "
                          "delete the raw files: choose another --out")
    _check_out(out, overwrite)
    raw = FORMATS[fmt](src, config)
    if raw.items["item"].duplicated().any():
        log.warning("%s: %d duplicate item row(s); keeping the first of each",
                    raw.item_path, int(raw.items["item"].duplicated().sum()))
        raw.items = raw.items.drop_duplicates("item")
    inter, dropped = filter_interactions(raw, config)
    items = raw.items[raw.items["item"].isin(inter["item"].unique())]
    categories = {c for s in items["class"] for c in s.split()}
    if not categories:
        raise DataError(f"{raw.item_path}: none of the {len(items)} kept item(s) has a category")
    _write_atomic(out, name, inter, items, raw.title_field)
    summary = {"dataset": name, "users": int(inter["user"].nunique()), "items": len(items),
               "interactions": len(inter), "K": len(categories),
               "items_without_category": int((items["class"] == "").sum()), **dropped}
    log.info("converted %s %s -> %s: %s", fmt, src, out, summary)
    return summary
