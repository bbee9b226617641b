"""Load a dataset in RecBole atomic format into integer-coded arrays.

Raw tokens (the strings in the files) are translated to dense indices here and only here:
``Dataset.user_ids[u]`` / ``Dataset.item_ids[i]`` give the token of index ``u`` / ``i``.
Items are indexed in natural token order (numeric when every token is an integer), so
"ties broken by item id" in the split means ties broken by item index.
"""

from __future__ import annotations

import importlib.util
import json
import logging
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import scipy.sparse as sp

from spectra_rec.errors import DataError, DataWarning

log = logging.getLogger(__name__)

BUILTIN_DATASETS = ("ml-100k",)
"""Datasets that ship inside RecBole's wheel (found without importing RecBole)."""


@dataclass(frozen=True, eq=False)
class Dataset:
    """Interactions, item categories and optional user/item metadata of one dataset."""

    name: str
    source: Path
    user_ids: np.ndarray
    """Raw user tokens; position = user index."""
    item_ids: np.ndarray
    """Raw item tokens; position = item index."""
    categories: tuple[str, ...]
    """The category vocabulary C (K names); position = category index."""
    inter_user: np.ndarray
    inter_item: np.ndarray
    inter_time: np.ndarray
    membership: sp.csr_matrix
    """(n_items, K) with m(i, c) = 1/|cats(i)| for c in cats(i); all-zero rows for items without categories."""
    item_titles: np.ndarray | None = None
    item_years: np.ndarray | None = None
    users: pd.DataFrame | None = None
    """Optional user features, indexed by user token."""
    taxonomy: dict[str, tuple[str, ...]] | None = None
    """Optional L1 -> L2 map whose L2 names are ``categories``."""
    category_field: str = "class"
    taxonomy_path: Path | None = None
    """The JSON file ``taxonomy`` came from (``<name>.taxonomy.json`` or a file passed in)."""
    _user_index: dict = field(default_factory=dict, repr=False)
    _item_index: dict = field(default_factory=dict, repr=False)

    def input_digests(self) -> dict[str, str]:
        """File name -> content digest of every input file (atomic files and taxonomy): the data's identity."""
        from spectra_rec.artifacts import file_digest

        files = [p for p in sorted(Path(self.source).glob(f"{self.name}.*"))
                 if p.suffix in (".inter", ".item", ".user", ".json")]
        if self.taxonomy_path is not None and self.taxonomy_path not in files and self.taxonomy_path.exists():
            files.append(self.taxonomy_path)  # a file passed in, outside the dataset folder
        return {p.name: file_digest(p) for p in files}

    @property
    def n_users(self) -> int:
        return len(self.user_ids)

    @property
    def n_items(self) -> int:
        return len(self.item_ids)

    @property
    def n_interactions(self) -> int:
        return len(self.inter_user)

    @property
    def K(self) -> int:  # noqa: N802 - the paper's symbol
        return len(self.categories)

    def user_index(self, tokens) -> np.ndarray:
        """Map raw user tokens to indices; unknown tokens raise a DataError naming them."""
        return _lookup(self._user_index, tokens, "user_id", self.name)

    def has_users(self, tokens) -> np.ndarray:
        """Boolean mask: which raw user tokens the dataset knows."""
        return np.fromiter((str(t) in self._user_index for t in tokens), dtype=bool, count=len(tokens))

    def item_index(self, tokens) -> np.ndarray:
        """Map raw item tokens to indices; unknown tokens raise a DataError naming them."""
        return _lookup(self._item_index, tokens, "item_id", self.name)

    def item_categories(self, item: int) -> list[str]:
        row = self.membership.getrow(item)
        return [self.categories[c] for c in row.indices]

    def summary(self) -> dict:
        return {
            "dataset": self.name,
            "users": self.n_users,
            "items": self.n_items,
            "interactions": self.n_interactions,
            "K": self.K,
        }


def _lookup(index: dict, tokens, field_name: str, dataset: str) -> np.ndarray:
    tokens = [str(t) for t in np.atleast_1d(np.asarray(tokens, dtype=object))]
    out = np.fromiter((index.get(t, -1) for t in tokens), dtype=np.int64, count=len(tokens))
    if (out < 0).any():
        missing = [t for t, i in zip(tokens, out) if i < 0]
        raise DataError(
            f"{len(missing)} {field_name} value(s) not in dataset {dataset!r}, e.g. {missing[:5]}"
        )
    return out


def builtin_dataset_dir(name: str) -> Path:
    """The directory of a dataset shipped inside RecBole's wheel (RecBole is located, not imported)."""
    if name not in BUILTIN_DATASETS:
        raise DataError(f"unknown built-in dataset {name!r}; built-in: {list(BUILTIN_DATASETS)}")
    spec = importlib.util.find_spec("recbole")
    if spec is None or not spec.submodule_search_locations:
        raise DataError(
            f"dataset {name!r} ships inside the recbole package, which is not installed; "
            "run `make setup` or pass a dataset directory"
        )
    path = Path(next(iter(spec.submodule_search_locations))) / "dataset_example" / name
    if not (path / f"{name}.inter").exists():
        raise DataError(f"{path / (name + '.inter')} not found in the installed recbole package")
    return path


def resolve_dataset_dir(dataset: str | Path) -> Path:
    """A dataset directory given by path, or a built-in dataset name."""
    p = Path(dataset)
    if p.is_dir():
        return p
    if str(dataset) in BUILTIN_DATASETS:
        return builtin_dataset_dir(str(dataset))
    raise DataError(
        f"--dataset {str(dataset)!r} is neither a directory of atomic files nor a built-in dataset "
        f"({list(BUILTIN_DATASETS)})"
    )


def read_atomic(path: Path, fields: tuple[str, ...] | None = None) -> pd.DataFrame:
    """Read one RecBole atomic file (only ``fields`` when given); columns renamed from ``name:type`` to ``name``."""
    if not path.exists():
        raise DataError(f"{path} not found")
    usecols = None if fields is None else (lambda c: c.split(":", 1)[0] in fields)
    # object columns of Python str: pandas 3 string arrays cost a conversion at every to_numpy
    try:
        df = pd.read_csv(path, sep="\t", dtype=object, keep_default_na=False, quoting=3, engine="c", usecols=usecols,
                         encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise DataError(f"{path}: not UTF-8 text (byte {exc.start}: {exc.reason}); re-encode the file as UTF-8") from None
    except pd.errors.EmptyDataError:
        raise DataError(f"{path}: empty file (expected a header line of name:type fields)") from None
    except (pd.errors.ParserError, ValueError) as exc:
        raise DataError(f"{path}: not a readable tab-separated atomic file ({exc})") from None
    df.columns = [c.split(":", 1)[0] for c in df.columns]
    return df


def _require(df: pd.DataFrame, cols: list[str], path: Path) -> None:
    missing = [c for c in cols if c not in df.columns]
    if missing:
        raise DataError(f"{path}: missing column(s) {missing}; found {list(df.columns)}")


def _require_tokens(col: pd.Series, path: Path, field_name: str) -> None:
    """Ids must be non-empty tokens (a short line or a stray tab leaves them empty or NaN)."""
    vals = col.to_numpy(dtype=object)
    empty = pd.isna(vals) | (vals == "")
    if empty.any():
        first = int(np.flatnonzero(empty)[0])
        raise DataError(
            f"{path}: field {field_name!r} is empty in {int(empty.sum())} row(s), e.g. data row {first + 1}"
        )


def _codes(vocabulary: np.ndarray, tokens: pd.Series) -> np.ndarray:
    """Index of each token in ``vocabulary`` (hash lookup; object dtype avoids pandas 3 string inference)."""
    index = pd.Index(vocabulary, dtype=object)
    return index.get_indexer(pd.Index(tokens.to_numpy(dtype=object), dtype=object)).astype(np.int64)


def _natural_order(tokens: np.ndarray) -> np.ndarray:
    """Sorted unique tokens, numerically when all are integers."""
    uniq = pd.unique(tokens)
    try:
        keys = np.array([int(t) for t in uniq])
        return uniq[np.argsort(keys, kind="stable")]
    except ValueError:
        return np.sort(uniq.astype(str))


def _guess_title_field(cols) -> str | None:
    for c in cols:
        if "title" in c.lower():
            return c
    return None


def load_dataset(
    dataset: str | Path,
    category_field: str = "class",
    title_field: str | None = None,
    name: str | None = None,
    taxonomy: str | Path | None = None,
) -> Dataset:
    """Load ``<dir>/<name>.inter`` and ``.item`` (+ optional ``.user``, ``.taxonomy.json``; ``taxonomy`` overrides the latter)."""
    root = resolve_dataset_dir(dataset)
    name = name or _infer_name(root)
    inter_path, item_path = root / f"{name}.inter", root / f"{name}.item"
    inter = read_atomic(inter_path, fields=("user_id", "item_id", "timestamp"))
    _require(inter, ["user_id", "item_id", "timestamp"], inter_path)
    items = read_atomic(item_path)
    _require(items, ["item_id", category_field], item_path)
    if items["item_id"].duplicated().any():
        dup = items.loc[items["item_id"].duplicated(), "item_id"].head(5).tolist()
        raise DataError(f"{item_path}: duplicate item_id values, e.g. {dup}")

    for f in ("user_id", "item_id"):
        _require_tokens(inter[f], inter_path, f)
    _require_tokens(items["item_id"], item_path, "item_id")
    try:  # fast path: a vectorized cast; the slower coercion below only finds the bad rows
        times = inter["timestamp"].astype(np.float64).to_numpy()
    except (ValueError, TypeError):
        times = pd.to_numeric(inter["timestamp"], errors="coerce").to_numpy(np.float64)
    bad = ~np.isfinite(times)
    if bad.any():
        first = int(np.flatnonzero(bad)[0])
        raise DataError(
            f"{inter_path}: field 'timestamp' must be a finite number; {int(bad.sum())} row(s) are not, "
            f"e.g. data row {first + 1}: {inter['timestamp'].iloc[first]!r}"
        )

    # hash-based set difference (np.setdiff1d sorts object arrays: 12 s on 3M interactions)
    inter_items = pd.Index(pd.unique(inter["item_id"].to_numpy(dtype=object)), dtype=object)
    unknown_items = inter_items[~inter_items.isin(items["item_id"].to_numpy(dtype=object))]
    if len(unknown_items):
        raise DataError(
            f"{inter_path}: {len(unknown_items)} item_id value(s) absent from {item_path}, "
            f"e.g. {sorted(map(str, unknown_items))[:5]}"
        )

    user_ids = _natural_order(inter["user_id"].to_numpy())
    item_ids = _natural_order(items["item_id"].to_numpy())
    user_index = {t: i for i, t in enumerate(user_ids)}
    item_index = {t: i for i, t in enumerate(item_ids)}
    items = items.set_index("item_id").loc[item_ids]

    cat_lists = [s.split() for s in items[category_field].to_numpy()]
    taxonomy_path = Path(taxonomy) if taxonomy is not None else root / f"{name}.taxonomy.json"
    if taxonomy is not None and not taxonomy_path.is_file():
        raise DataError(f"taxonomy {str(taxonomy_path)!r}: no such file (expected an L1 -> [L2, ...] JSON object)")
    taxonomy = _load_taxonomy(taxonomy_path)
    if taxonomy is None:
        taxonomy_path = None
    if taxonomy is not None:
        categories = tuple(c for children in taxonomy.values() for c in children)
        vocab = set(categories)
        stray = sorted({c for cats in cat_lists for c in cats} - vocab)
        if stray:
            raise DataError(
                f"{item_path}: field {category_field!r} has categories absent from the taxonomy "
                f"{taxonomy_path}: {stray[:10]}"
            )
    else:
        categories = tuple(sorted({c for cats in cat_lists for c in cats}))
    if not categories:
        raise DataError(f"{item_path}: field {category_field!r} holds no categories")
    cat_index = {c: k for k, c in enumerate(categories)}

    rows, cols, vals = [], [], []
    empty = 0
    for i, cats in enumerate(cat_lists):
        cats = list(dict.fromkeys(cats))  # an item listing a category twice counts it once
        if not cats:
            empty += 1
        for c in cats:
            rows.append(i)
            cols.append(cat_index[c])
            vals.append(1.0 / len(cats))
    if empty:
        warnings.warn(
            f"{item_path}: {empty} item(s) have no {category_field!r} value; their membership is all zero",
            DataWarning,
            stacklevel=2,
        )
    membership = sp.csr_matrix((vals, (rows, cols)), shape=(len(item_ids), len(categories)))

    title_field = title_field or _guess_title_field(items.columns)
    titles = items[title_field].to_numpy(dtype=object) if title_field in items.columns else None
    years = None
    for yf in ("release_year", "year"):
        if yf in items.columns:
            years = items[yf].to_numpy(dtype=object)
            break

    users = None
    user_path = root / f"{name}.user"
    if user_path.exists():
        users = read_atomic(user_path)
        _require(users, ["user_id"], user_path)
        users = users.drop_duplicates("user_id").set_index("user_id")

    ds = Dataset(
        name=name,
        source=root,
        user_ids=user_ids.astype(object),
        item_ids=item_ids.astype(object),
        categories=categories,
        inter_user=_codes(user_ids, inter["user_id"]),
        inter_item=_codes(item_ids, inter["item_id"]),
        inter_time=times,
        membership=membership,
        item_titles=titles,
        item_years=years,
        users=users,
        taxonomy=taxonomy,
        category_field=category_field,
        taxonomy_path=taxonomy_path,
        _user_index=user_index,
        _item_index=item_index,
    )
    log.info("loaded %s: %s", name, ds.summary())
    return ds


def _infer_name(root: Path) -> str:
    """The directory's name, or the stem of its only ``.inter`` file."""
    if (root / f"{root.name}.inter").exists():
        return root.name
    stems = sorted(p.name[: -len(".inter")] for p in root.glob("*.inter") if p.name.count(".") == 1)
    if len(stems) == 1:
        return stems[0]
    raise DataError(
        f"{root}: expected {root.name}.inter or exactly one <name>.inter file, found {stems or 'none'}"
    )


def _load_taxonomy(path: Path) -> dict[str, tuple[str, ...]] | None:
    """An L1 -> [L2, ...] JSON object; every L2 name must appear once."""
    if not path.exists():
        return None
    try:
        raw = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise DataError(f"{path}: not valid JSON ({exc})") from None
    if not isinstance(raw, dict) or not raw or not all(
        isinstance(v, list) and v and all(isinstance(c, str) and c.strip() for c in v) for v in raw.values()
    ):
        raise DataError(
            f"{path}: expected a non-empty object mapping each L1 name to a non-empty list of L2 names "
            f"(strings), got {json.dumps(raw)[:200]}"
        )
    seen: dict[str, str] = {}
    for l1, children in raw.items():
        for c in children:
            if c in seen:
                raise DataError(f"{path}: L2 category {c!r} appears under both {seen[c]!r} and {l1!r}")
            seen[c] = l1
    return {l1: tuple(children) for l1, children in raw.items()}
