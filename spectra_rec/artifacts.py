"""Stage caching: a folder per stage named by a hash of its configuration.

A stage is skipped when a complete folder (with ``manifest.json``) exists for the same
hash. Work happens in a temporary sibling folder that is renamed on success, so an
interrupted run never leaves a half artifact that looks complete.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
import logging
import os
import platform
import shutil
import sys
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Iterator

log = logging.getLogger(__name__)

MANIFEST = "manifest.json"


def config_hash(config: dict) -> str:
    """First 12 hex digits of sha256 over the canonical JSON of ``config``."""
    blob = json.dumps(config, sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:12]


def file_digest(path: Path, chunk: int = 1 << 20) -> str:
    """sha256 of a file's bytes (first 16 hex digits)."""
    h = hashlib.sha256()
    with Path(path).open("rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()[:16]


def file_sha256(path: Path, chunk: int = 1 << 22) -> str:
    """Full sha256 hex digest of a file, read in chunks (constant memory for multi-GB weight files)."""
    h = hashlib.sha256()
    with Path(path).open("rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def versions() -> dict:
    """Versions of the toolkit and of the heavy libraries already imported (none is imported here)."""
    from spectra_rec import __version__

    out = {"spectra_rec": __version__, "python": platform.python_version()}
    for mod in ("numpy", "pandas", "torch", "transformers", "peft", "faiss", "recbole", "vllm"):
        m = sys.modules.get(mod)
        if m is not None:
            out[mod] = getattr(m, "__version__", "?")
    return out


def stage_dir(root: Path, stage: str, config: dict) -> Path:
    return Path(root) / stage / config_hash(config)


def is_complete(path: Path) -> bool:
    return (Path(path) / MANIFEST).exists()


def read_manifest(path: Path) -> dict:
    return json.loads((Path(path) / MANIFEST).read_text())


def run_stage(
    root: Path,
    stage: str,
    config: dict,
    build: Callable[[Path], dict | None],
    fresh: bool = False,
    seed: int | None = None,
) -> Path:
    """Return the folder of ``stage`` for ``config``, building it with ``build(tmp_dir)`` if needed.

    ``build`` writes its files into the temporary folder and may return extra manifest fields.
    """
    final = stage_dir(root, stage, config)
    if is_complete(final) and not fresh:
        log.info("%s: reusing %s", stage, final)
        return final
    _remove_orphans(final)
    tmp = final.with_name(f".{final.name}.tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    t0 = time.perf_counter()
    try:
        extra = build(tmp) or {}
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    manifest = {
        "stage": stage,
        "hash": final.name,
        "config": config,
        "seed": seed,
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "seconds": round(time.perf_counter() - t0, 3),
        "versions": versions(),
    } | extra
    write_json(tmp / MANIFEST, manifest)
    if final.exists():
        shutil.rmtree(final)
    tmp.replace(final)
    log.info("%s: wrote %s (%.1fs)", stage, final, manifest["seconds"])
    return final


def _remove_orphans(final: Path, tags: tuple[str, ...] = ("tmp",)) -> None:
    """Delete temporary folders of this stage left by runs that were killed (their process is gone)."""
    for tmp in (t for tag in tags for t in final.parent.glob(f".{final.name}.{tag}-*")):
        try:
            pid = int(tmp.name.rsplit("-", 1)[1])
            os.kill(pid, 0)  # raises when no such process exists
        except (ValueError, ProcessLookupError):
            log.info("removing %s left by an interrupted run", tmp)
            shutil.rmtree(tmp, ignore_errors=True)
        except PermissionError:
            pass  # alive, owned by someone else


@contextmanager
def publishing(out: Path) -> Iterator[Path]:
    """Write a whole output folder atomically: yields a temporary sibling, renamed onto ``out`` on success.

    An existing ``out`` is replaced only once the new folder is complete; temporary folders of
    killed runs (their process is gone) are removed first, and the temporary folder is removed
    when the body raises. A kill at any point leaves either the old or the new folder, never a
    half-written one under the final name.
    """
    out = Path(out).absolute()
    out.parent.mkdir(parents=True, exist_ok=True)
    _remove_orphans(out, ("tmp", "old"))
    tmp = out.with_name(f".{out.name}.tmp-{os.getpid()}")
    old = out.with_name(f".{out.name}.old-{os.getpid()}")
    for leftover in (tmp, old):
        shutil.rmtree(leftover, ignore_errors=True)
    tmp.mkdir()
    try:
        yield tmp
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    if out.exists():
        out.replace(old)
    tmp.replace(out)
    shutil.rmtree(old, ignore_errors=True)


def write_json(path: Path, obj) -> Path:
    """Write JSON through a temporary file and an atomic rename."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    tmp.write_text(json.dumps(obj, indent=1, default=json_default))
    tmp.replace(path)
    return path


def write_text(path: Path, text: str) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    tmp.write_text(text)
    tmp.replace(path)
    return path


def write_parquet(path: Path, frame, metadata: dict[bytes, bytes] | None = None) -> Path:
    """Write a DataFrame (no index) as Parquet through a temporary file and an atomic rename.

    ``metadata`` is merged into the schema metadata (pandas' own entry is kept).
    """
    import pyarrow as pa
    import pyarrow.parquet as pq

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    table = pa.Table.from_pandas(frame, preserve_index=False)
    if metadata:
        table = table.replace_schema_metadata({**(table.schema.metadata or {}), **metadata})
    try:
        pq.write_table(table, tmp)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    tmp.replace(path)
    return path


def json_default(o):
    """``json.dumps`` default for numpy scalars and arrays and paths (what stage configs and results hold)."""
    import numpy as np

    if isinstance(o, np.integer):
        return int(o)
    if isinstance(o, np.floating):
        return float(o)
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, Path):
        return str(o)
    raise TypeError(f"not JSON serializable: {type(o).__name__}")

