"""Cohorts, shards and the partial files every probe engine writes the same way.

A probe run writes ``p.parquet.parts/`` next to its table: ``config.json`` (the run's
fingerprint) and one folder per shard of atomically written ``chunk-*.parquet`` files plus a
``DONE`` marker. :func:`merge_shards` turns complete shards into the table, the raw scores and
the metadata. The local loop (``probe.run``) and the Ray driver (``probe.distributed``) both
build on this module, so neither imports the other's internals.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd

from spectra_rec import artifacts
from spectra_rec.errors import ConfigError
from spectra_rec.priors.table import PriorTable
from spectra_rec.probe.readouts import READOUTS, Readout

log = logging.getLogger(__name__)

PARTS_FORMAT = 1


# ---- cohorts and shards -------------------------------------------------------------
def parse_shard(text: str) -> tuple[int, int]:
    """``"i/n"`` (0-based i) -> (i, n)."""
    try:
        i, n = (int(x) for x in str(text).split("/"))
    except ValueError:
        raise ConfigError(f"--shard must look like i/n (e.g. 0/4), got {text!r}") from None
    check_shard((i, n))
    return i, n


def check_shard(shard: tuple[int, int]) -> None:
    i, n = shard
    if n < 1 or not 0 <= i < n:
        raise ConfigError(f"shard must satisfy 0 <= i < n, got {i}/{n}")


def cohort(split, users: Sequence[int] | None = None, max_users: int | None = None) -> np.ndarray:
    """The users to probe (sorted): ``users`` or the split's evaluable users, the first ``max_users`` of them."""
    u = np.asarray(split.eval_users if users is None else users, dtype=np.int64)
    u = np.unique(u)
    if len(u) and (u.min() < 0 or u.max() >= split.dataset.n_users):
        raise ConfigError(f"user indices must be in [0, {split.dataset.n_users}), got {u.min()}..{u.max()}")
    no_train = u[split.n_train[u] == 0]
    if len(no_train):
        raise ConfigError(f"{len(no_train)} user(s) have an empty train window, e.g. index {int(no_train[0])}")
    if max_users is not None:
        if max_users < 1:
            raise ConfigError(f"max_users must be >= 1, got {max_users}")
        u = u[:max_users]
    return u


def shard_users(users: np.ndarray, shard: tuple[int, int]) -> np.ndarray:
    """The i-th of n contiguous, near-equal slices of ``users``."""
    check_shard(shard)
    return np.array_split(np.asarray(users), shard[1])[shard[0]]


# ---- metadata -----------------------------------------------------------------------------
def manifest_hash(adapter_manifest) -> str | None:
    """sha256 prefix of an adapter's ``manifest.json`` (a folder, a file, or a manifest dict)."""
    if adapter_manifest is None:
        return None
    if isinstance(adapter_manifest, dict):
        return artifacts.config_hash(adapter_manifest)
    p = Path(adapter_manifest)
    p = p / artifacts.MANIFEST if p.is_dir() else p
    return artifacts.file_digest(p)


def load_manifest(adapter_manifest) -> dict | None:
    """An adapter's manifest from a folder, a file or a manifest dict (None when absent or unreadable)."""
    if adapter_manifest is None or isinstance(adapter_manifest, dict):
        return adapter_manifest
    p = Path(adapter_manifest)
    p = p / artifacts.MANIFEST if p.is_dir() else p
    try:
        return json.loads(p.read_text())
    except (OSError, json.JSONDecodeError):
        return None


def sft_history_summary(adapter_manifest) -> bool:
    """Whether an adapter's SFT prompts summed up the history older than their context (``SFTConfig.history_summary``)."""
    manifest = load_manifest(adapter_manifest) or {}
    ctx = manifest.get("context") or {}
    if "history_summary" in ctx:
        return bool(ctx["history_summary"])
    return bool(((manifest.get("config") or {}).get("sft") or {}).get("history_summary", False))


def check_answer_ids(ro: Readout, adapter_manifest) -> None:
    """Warn when the answer tokens found in context differ from the ids the adapter was trained on."""
    manifest = load_manifest(adapter_manifest)
    if manifest is None:
        return
    ids = getattr(ro, "token_ids", None) or []
    for key, words in ro.answer_words().items():
        trained = manifest.get(key) or {}
        for w, i in zip(words, ids):
            if w in trained and int(trained[w]) != int(i):
                log.warning("answer word %r reads token %d but the adapter's manifest has %d (%s)", w, i, trained[w], key)


def output_paths(out: Path) -> dict[str, Path]:
    """The files of a probe run writing its table to ``out``: table, raw scores, metadata, partial files."""
    out = Path(out)
    if out.suffix not in (".parquet", ".csv"):
        raise ConfigError(f"--out must end in .parquet or .csv, got {out.name!r}")
    return {
        "table": out,
        "scores": out.with_name(out.stem + ".scores.parquet"),
        "meta": out.with_name(out.stem + ".probe.json"),
        "parts": out.with_name(out.name + ".parts"),
    }


# ---- result rows ----------------------------------------------------------------------------
def result_rows(dataset, histories, results, cats) -> pd.DataFrame:
    """One row per user: ids, prompt stats, ``p:<c>`` probabilities, ``s:<c>`` raw scores, ``x:<key>`` extras."""
    users = np.array([h.user for h in histories], dtype=np.int64)
    data = {
        "user": users,
        "user_id": dataset.user_ids[users].astype(str) if len(users) else np.array([], dtype=str),
        "n_items": np.array([h.n_items for h in histories], dtype=np.int64),
        "dropped": np.array([h.dropped for h in histories], dtype=np.int64),
        "prefix_tokens": np.array([len(h.ids) for h in histories], dtype=np.int64),
    }
    probs = np.array([r.probs for r in results], dtype=np.float64).reshape(len(results), len(cats))
    scores = np.array([r.scores for r in results], dtype=np.float64).reshape(len(results), len(cats))
    for j, c in enumerate(cats):
        data[f"p:{c}"] = probs[:, j]
    for j, c in enumerate(cats):
        data[f"s:{c}"] = scores[:, j]
    keys = list(dict.fromkeys(k for r in results for k in r.extra))
    for k in keys:
        data[f"x:{k}"] = [r.extra.get(k) for r in results]
    return pd.DataFrame(data)


def rows_to_table(frame: pd.DataFrame, cats, meta) -> tuple[PriorTable, pd.DataFrame]:
    """(prior table, raw scores frame) from result rows."""
    probs = frame[[f"p:{c}" for c in cats]].to_numpy(np.float64)
    table = PriorTable(frame["user_id"].to_numpy(object), tuple(cats), probs, meta)
    raw = frame.drop(columns=[f"p:{c}" for c in cats])
    return table, raw


def readout_summary(readout: Readout | type[Readout] | None, frame: pd.DataFrame) -> dict | None:
    """The readout's totals over the users' ``x:`` extras (e.g. DG parse counts), or None."""
    if readout is None:
        return None
    extras = frame[[c for c in frame.columns if c.startswith("x:")]].rename(columns=lambda c: c[2:])
    return readout.summarize(extras)


# ---- partial files ------------------------------------------------------------------------------
def fingerprint(meta: dict) -> dict:
    """What partial files must agree on to be resumed: the run's metadata, the backend by name only."""
    keep = {k: v for k, v in meta.items() if k not in ("backend",)}
    keep["backend"] = {k: v for k, v in meta["backend"].items() if k in ("backend",)}
    return {"format": PARTS_FORMAT, "meta": keep}


def prepare_parts(parts: Path, meta: dict, shard: tuple[int, int], fresh: bool) -> Path:
    """The shard's partial-file folder, checked against (or stamped with) the run's fingerprint."""
    parts.mkdir(parents=True, exist_ok=True)
    cfg_path = parts / "config.json"
    fp = json.loads(json.dumps(fingerprint(meta), default=artifacts.json_default))
    if cfg_path.exists():
        old = json.loads(cfg_path.read_text())
        if old != fp:
            if not fresh:
                diff = sorted(k for k in set(old["meta"]) | set(fp["meta"]) if old["meta"].get(k) != fp["meta"].get(k))
                raise ConfigError(
                    f"{parts} holds partial results of a different probe configuration (differs in {diff}); "
                    "pass fresh=True (--fresh) to discard them, or choose another --out"
                )
    shard_dir = parts / f"shard-{shard[0]:04d}-of-{shard[1]:04d}"
    if fresh and shard_dir.exists():
        for p in shard_dir.iterdir():
            p.unlink()
    if fresh or not cfg_path.exists():
        artifacts.write_json(cfg_path, fp)
    shard_dir.mkdir(exist_ok=True)
    (shard_dir / "DONE").unlink(missing_ok=True)
    return shard_dir


def chunk_path(shard_dir: Path, first_user: int) -> Path:
    """The partial file of the chunk of users starting at user index ``first_user``."""
    return Path(shard_dir) / f"chunk-{int(first_user):08d}.parquet"


def read_parts(dirs) -> pd.DataFrame:
    """Every chunk written under ``dirs``, concatenated (empty when none)."""
    files = sorted(p for d in dirs for p in Path(d).glob("chunk-*.parquet"))
    if not files:
        return pd.DataFrame()
    return pd.concat([pd.read_parquet(p) for p in files], ignore_index=True)


def complete_shards(parts: Path, n: int) -> list[Path]:
    """The shard folders of an n-shard run that carry their ``DONE`` marker."""
    return [d for i in range(n) if ((d := parts / f"shard-{i:04d}-of-{n:04d}") / "DONE").exists()]


def merge_shards(out: str | Path) -> PriorTable:
    """Merge the complete shards of ``out``'s partial files into the prior table, raw scores and metadata."""
    paths = output_paths(out)
    cfg_path = paths["parts"] / "config.json"
    if not cfg_path.exists():
        raise FileNotFoundError(f"{paths['parts']}: no partial results to merge (config.json missing)")
    meta = json.loads(cfg_path.read_text())["meta"]
    n = int(meta["shards"])
    complete = complete_shards(paths["parts"], n)
    if len(complete) != n:
        missing = sorted(set(range(n)) - {int(d.name.split("-")[1]) for d in complete})
        raise ConfigError(f"{paths['parts']}: cannot merge, shard(s) {missing} of {n} are not complete")
    frame = read_parts(complete)
    dup = frame["user"].duplicated()
    if dup.any():
        raise ConfigError(f"{paths['parts']}: user(s) {frame.loc[dup, 'user_id'].head(5).tolist()} appear twice")
    if len(frame) != meta["cohort_users"]:
        raise ConfigError(f"{paths['parts']}: {len(frame)} users written, expected {meta['cohort_users']}")
    frame = frame.sort_values("user", kind="stable").reset_index(drop=True)
    cats = [c[2:] for c in frame.columns if c.startswith("p:")]
    seconds = sum(json.loads((d / "DONE").read_text()).get("seconds", 0.0) for d in complete)
    info = {
        "users_with_dropped_items": int((frame["dropped"] > 0).sum()),
        "items_dropped_total": int(frame["dropped"].sum()),
        "mean_prefix_tokens": float(frame["prefix_tokens"].mean()),
    }
    summary = readout_summary(READOUTS.get(meta.get("readout")), frame)
    if summary is not None:
        info["readout_summary"] = summary
    table, raw = rows_to_table(frame, cats, meta | info)
    table.save(paths["table"])
    artifacts.write_parquet(paths["scores"], raw)
    files = {k: v.name for k, v in paths.items()}  # siblings of the table (names survive a folder rename)
    # Timing goes to the sidecar only: the table itself is byte-identical for the same inputs and seed.
    artifacts.write_json(paths["meta"], table.meta | {"categories": cats, "files": files,
                                                      "seconds_total_last_runs": round(seconds, 3)})
    log.info("wrote %s (%d users x %d categories), raw scores %s", paths["table"], len(frame), len(cats), paths["scores"])
    return PriorTable.load(paths["table"]) if paths["table"].suffix == ".parquet" else table


__all__ = [
    "check_answer_ids", "check_shard", "chunk_path", "cohort", "complete_shards", "fingerprint", "manifest_hash",
    "merge_shards", "output_paths", "parse_shard", "prepare_parts", "read_parts", "readout_summary",
    "result_rows", "rows_to_table", "shard_users",
]
