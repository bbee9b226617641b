"""The prior table: one category distribution per user, the toolkit's integration point.

On disk: one row per user, a ``user_id`` column with the dataset's raw user token and one
float column per category name; metadata (method, model, taxonomy, template version,
...) lives in the Parquet schema metadata or, for CSV, in ``<file>.meta.json``.
Invariants are checked once, at construction; downstream code trusts a PriorTable.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from spectra_rec import artifacts
from spectra_rec.errors import PriorTableError
from spectra_rec.metrics.validate import unnormalized_rows

SUM_TOLERANCE = 1e-4
"""Rows must sum to 1 within this; they are then renormalized exactly."""

RENORMALIZE_ABOVE = 1e-12
"""Rows whose sum is within this of 1 are kept as they are (floating-point rounding only)."""

_META_KEY = b"spectra_rec"


@dataclass(frozen=True, eq=False)
class PriorTable:
    """Per-user category distributions with their provenance."""

    user_ids: np.ndarray
    categories: tuple[str, ...]
    probs: np.ndarray
    meta: dict = field(default_factory=dict)
    source: str = "<memory>"
    """Where the table came from, for error messages."""

    def __post_init__(self):
        users = np.asarray(self.user_ids, dtype=object).astype(str).astype(object)
        probs = np.array(self.probs, dtype=np.float64)  # a copy: the caller's array may change later
        cats = tuple(str(c) for c in self.categories)
        where = self.source
        if probs.ndim != 2 or probs.shape != (len(users), len(cats)):
            raise PriorTableError(
                f"{where}: probabilities must have shape (users, categories) = ({len(users)}, {len(cats)}), "
                f"got {probs.shape}"
            )
        if len(set(cats)) != len(cats):
            dup = sorted({c for c in cats if cats.count(c) > 1})
            raise PriorTableError(f"{where}: duplicate category columns {dup}")
        dup_users = pd.Index(users).duplicated()
        if dup_users.any():
            raise PriorTableError(f"{where}: duplicate user_id values, e.g. {list(users[dup_users][:5])}")
        bad = ~np.isfinite(probs)
        if bad.any():
            r, c = np.argwhere(bad)[0]
            raise PriorTableError(
                f"{where}: {int(bad.sum())} NaN/inf value(s), e.g. user {users[r]!r} category {cats[c]!r}"
            )
        if (probs < 0).any():
            r, c = np.argwhere(probs < 0)[0]
            raise PriorTableError(
                f"{where}: negative probability {probs[r, c]:.3g} for user {users[r]!r} category {cats[c]!r}"
            )
        sums = probs.sum(axis=1)
        off = unnormalized_rows(sums, SUM_TOLERANCE)
        if off.size:
            raise PriorTableError(
                f"{where}: {off.size} row(s) do not sum to 1 (tolerance {SUM_TOLERANCE}), "
                f"e.g. user {users[off[0]]!r} sums to {sums[off[0]]:.6g}"
            )
        object.__setattr__(self, "user_ids", users)
        object.__setattr__(self, "categories", cats)
        # Renormalize only rows that are off by more than rounding, so that a save/load round
        # trip (or re-wrapping a table's probs) leaves every value bit-identical.
        drift = np.abs(sums - 1.0) > RENORMALIZE_ABOVE
        probs[drift] /= sums[drift, None]
        object.__setattr__(self, "probs", probs)
        object.__setattr__(self, "meta", dict(self.meta))

    @property
    def method(self) -> str:
        return str(self.meta.get("method", "unknown"))

    @property
    def uses_heldout(self) -> bool:
        """True for diagnostics built from held-out data (the oracle); reports must label them."""
        return bool(self.meta.get("uses_heldout", False))

    # ---- alignment with a dataset -------------------------------------------
    def check_categories(self, categories) -> None:
        check_columns(self.categories, categories, self.source)

    def matrix(self, dataset, users: np.ndarray) -> np.ndarray:
        """Probabilities for dataset user indices ``users``, columns in dataset category order.

        Raises when the table's categories differ from the dataset's, when it holds users
        the dataset does not know, or when a requested user has no row.
        """
        self.check_categories(dataset.categories)
        col = [self.categories.index(c) for c in dataset.categories]
        stray = list(self.user_ids[~dataset.has_users(self.user_ids)])
        if stray:
            raise PriorTableError(
                f"{self.source}: {len(stray)} user_id value(s) not in dataset {dataset.name!r}, e.g. {stray[:5]}"
            )
        row_of = {u: r for r, u in enumerate(self.user_ids)}
        tokens = dataset.user_ids[np.asarray(users, dtype=np.int64)]
        rows = np.fromiter((row_of.get(t, -1) for t in tokens), dtype=np.int64, count=len(tokens))
        if (rows < 0).any():
            missing = list(tokens[rows < 0][:5])
            raise PriorTableError(
                f"{self.source}: no row for {int((rows < 0).sum())} user(s) of the cohort, e.g. {missing}"
            )
        return self.probs[rows][:, col]

    # ---- I/O ------------------------------------------------------------------
    def to_frame(self) -> pd.DataFrame:
        df = pd.DataFrame(self.probs, columns=list(self.categories))
        df.insert(0, "user_id", self.user_ids)
        return df

    def save(self, path: str | Path) -> Path:
        """Write Parquet (``.parquet``) or CSV (``.csv`` + ``.meta.json``) via a temporary file."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        # No time stamp: the same table gives the same bytes (the stage manifest records when it was made).
        meta = self.meta
        df = self.to_frame()
        if path.suffix == ".parquet":
            return artifacts.write_parquet(path, df, {_META_KEY: json.dumps(meta).encode()})
        tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
        if path.suffix == ".csv":
            df.to_csv(tmp, index=False)  # shortest round-trip repr: reading back gives the same floats
            meta_path = Path(str(path) + ".meta.json")
            meta_tmp = meta_path.with_name(f".{meta_path.name}.tmp-{os.getpid()}")
            meta_tmp.write_text(json.dumps(meta, indent=1))
            meta_tmp.replace(meta_path)
        else:
            raise PriorTableError(f"{path}: prior tables are saved as .parquet or .csv, not {path.suffix!r}")
        tmp.replace(path)
        return path

    @classmethod
    def load(cls, path: str | Path, categories=None) -> PriorTable:
        """Read a table written by :meth:`save` or by any tool that follows the format.

        With ``categories`` (the dataset's), the columns are checked against them before any row
        invariant, so a missing column is reported by name rather than as rows that do not sum to 1.
        Unreadable files (corrupt or truncated Parquet, CSV that does not parse, duplicate column
        names) raise a PriorTableError naming the file.
        """
        path = Path(path)
        if not path.exists():
            raise PriorTableError(f"prior table {path} not found")
        meta: dict = {}
        if path.suffix == ".parquet":
            import pyarrow as pa
            import pyarrow.parquet as pq

            try:
                _check_unique_columns(list(pq.read_schema(path).names), path)
                tbl = pq.read_table(path)
            except (pa.ArrowException, OSError) as exc:
                raise PriorTableError(f"{path}: not a readable Parquet file ({_one_line(exc)})") from None
            raw = (tbl.schema.metadata or {}).get(_META_KEY)
            meta = _parse_meta(raw, path) if raw else {}
            df = tbl.to_pandas()
        elif path.suffix == ".csv":
            try:
                header = pd.read_csv(path, header=None, nrows=1, dtype=str, keep_default_na=False)
                _check_unique_columns(list(header.iloc[0]) if len(header) else [], path)
                df = pd.read_csv(path)
                if "user_id" in df.columns:
                    # user tokens are read verbatim: "NA", "null" or "nan" are tokens, not missing values
                    df["user_id"] = pd.read_csv(path, usecols=["user_id"], dtype=str, keep_default_na=False)["user_id"]
            except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError, ValueError) as exc:
                if isinstance(exc, PriorTableError):
                    raise
                raise PriorTableError(f"{path}: not a readable CSV prior table ({type(exc).__name__}: {_one_line(exc)})") from None
            meta_path = Path(str(path) + ".meta.json")
            if meta_path.exists():
                meta = _parse_meta(meta_path.read_bytes(), meta_path)
        else:
            raise PriorTableError(f"{path}: expected a .parquet or .csv prior table, got {path.suffix!r}")
        if "user_id" not in df.columns:
            raise PriorTableError(f"{path}: missing column 'user_id'; found {list(df.columns)[:10]}")
        empty = df["user_id"].isna().to_numpy() | (df["user_id"].astype(str).str.strip() == "").to_numpy()
        if empty.any():
            raise PriorTableError(f"{path}: column 'user_id' is empty in {int(empty.sum())} row(s)")
        cats = [c for c in df.columns if c != "user_id"]
        if categories is not None:
            check_columns(cats, categories, str(path))
        non_numeric = [c for c in cats if not pd.api.types.is_numeric_dtype(df[c])]
        if non_numeric:
            raise PriorTableError(f"{path}: category column(s) {non_numeric[:5]} are not numeric")
        return cls(
            df["user_id"].astype(str).to_numpy(object), tuple(cats), df[cats].to_numpy(np.float64), meta, str(path)
        )


def check_columns(columns, categories, where: str) -> None:
    """Raise a PriorTableError naming the unknown and missing categories when ``columns`` differ from ``categories``."""
    expected = tuple(categories)
    columns = [str(c) for c in columns]
    unknown = [c for c in columns if c not in expected]
    missing = [c for c in expected if c not in columns]
    if unknown or missing:
        parts = []
        if unknown:
            parts.append(f"unknown categories {unknown[:10]}")
        if missing:
            parts.append(f"missing categories {missing[:10]}")
        raise PriorTableError(
            f"{where}: category columns do not match the dataset's {len(expected)} categories: " + "; ".join(parts)
        )


def _one_line(exc: BaseException, limit: int = 200) -> str:
    text = " ".join(str(exc).split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _check_unique_columns(names: list, path: Path) -> None:
    seen, dup = set(), []
    for n in names:
        if n in seen and n not in dup:
            dup.append(n)
        seen.add(n)
    if dup:
        raise PriorTableError(f"{path}: duplicate column name(s) {dup[:10]}")


def _parse_meta(raw: bytes, where: Path) -> dict:
    try:
        meta = json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise PriorTableError(f"{where}: table metadata is not valid JSON ({exc})") from None
    if not isinstance(meta, dict):
        raise PriorTableError(f"{where}: table metadata must be a JSON object, got {type(meta).__name__}")
    return meta
