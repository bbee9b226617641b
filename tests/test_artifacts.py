"""Stage caching (docs/index.md, "Artifacts and caching"): config-hash folders, reuse, --fresh, atomic writes."""

from __future__ import annotations

import hashlib
import json
import sys

import numpy as np
import pytest

from spectra_rec import __version__, artifacts
from spectra_rec.artifacts import config_hash, file_digest, is_complete, read_manifest, run_stage


class Builder:
    """A build function that counts its calls and writes one file."""

    def __init__(self, fail: BaseException | None = None):
        self.calls = 0
        self.fail = fail
        self.seen_dirs = []

    def __call__(self, tmp):
        self.calls += 1
        self.seen_dirs.append(tmp)
        (tmp / "out.txt").write_text(f"call {self.calls}")
        (tmp / "nested").mkdir()
        (tmp / "nested" / "x.bin").write_bytes(b"\0" * 10)
        if self.fail is not None:
            raise self.fail
        return {"rows": 3}


def _hidden(root):
    return sorted(p.name for p in root.rglob(".*"))


def test_config_hash_is_sha256_of_canonical_json():
    cfg = {"b": [1, 2], "a": {"y": 1.5, "x": "s"}}
    blob = json.dumps(cfg, sort_keys=True, default=str).encode()
    assert config_hash(cfg) == hashlib.sha256(blob).hexdigest()[:12]
    assert config_hash({"a": {"x": "s", "y": 1.5}, "b": [1, 2]}) == config_hash(cfg)  # key order is irrelevant
    assert config_hash(cfg | {"b": [2, 1]}) != config_hash(cfg)


def test_file_digest(tmp_path):
    (tmp_path / "f").write_bytes(b"spectra" * 1000)
    assert file_digest(tmp_path / "f", chunk=7) == hashlib.sha256(b"spectra" * 1000).hexdigest()[:16]


def test_cached_by_config_hash(tmp_path):
    build = Builder()
    cfg = {"dataset": "toy", "ratio": 0.8}
    first = run_stage(tmp_path, "data", cfg, build)
    assert first == tmp_path / "data" / config_hash(cfg)
    assert (first / "out.txt").read_text() == "call 1"
    again = run_stage(tmp_path, "data", dict(reversed(cfg.items())), build)  # same config, other key order
    assert again == first and build.calls == 1
    other = run_stage(tmp_path, "data", cfg | {"ratio": 0.7}, build)
    assert other != first and build.calls == 2
    assert sorted(p.name for p in (tmp_path / "data").iterdir()) == sorted([first.name, other.name])
    # the build worked in a hidden temporary sibling, not in the final folder
    assert build.seen_dirs[0].parent == first.parent and build.seen_dirs[0].name.startswith(f".{first.name}.tmp-")
    assert _hidden(tmp_path) == []


def test_fresh_recomputes(tmp_path):
    build = Builder()
    folder = run_stage(tmp_path, "s", {"k": 1}, build)
    (folder / "stale.txt").write_text("from an older run")
    again = run_stage(tmp_path, "s", {"k": 1}, build, fresh=True)
    assert again == folder and build.calls == 2
    assert (folder / "out.txt").read_text() == "call 2"
    assert not (folder / "stale.txt").exists()  # the folder was replaced, not merged into


def test_incomplete_folder_is_rebuilt(tmp_path):
    cfg = {"k": 1}
    half = artifacts.stage_dir(tmp_path, "s", cfg)
    half.mkdir(parents=True)
    (half / "out.txt").write_text("half-written by a killed run")
    assert not is_complete(half)
    build = Builder()
    assert run_stage(tmp_path, "s", cfg, build) == half
    assert build.calls == 1 and (half / "out.txt").read_text() == "call 1" and is_complete(half)


@pytest.mark.parametrize("exc", [RuntimeError("disk full"), KeyboardInterrupt()])
def test_failed_build_leaves_nothing_that_looks_complete(tmp_path, exc):
    build = Builder(fail=exc)
    with pytest.raises(type(exc)):
        run_stage(tmp_path, "s", {"k": 1}, build)
    final = artifacts.stage_dir(tmp_path, "s", {"k": 1})
    assert not final.exists() and not is_complete(final)
    assert list((tmp_path / "s").iterdir()) == []  # no temporary folder left behind either
    # the next run builds it
    assert is_complete(run_stage(tmp_path, "s", {"k": 1}, Builder()))


def test_failed_fresh_rebuild_keeps_the_previous_artifact(tmp_path):
    folder = run_stage(tmp_path, "s", {"k": 1}, Builder())
    with pytest.raises(RuntimeError, match="boom"):
        run_stage(tmp_path, "s", {"k": 1}, Builder(fail=RuntimeError("boom")), fresh=True)
    assert is_complete(folder) and (folder / "out.txt").read_text() == "call 1"
    assert _hidden(tmp_path) == []


def test_manifest_fields(tmp_path):
    cfg = {"dataset": "toy", "n": np.int64(3), "path": tmp_path}
    folder = run_stage(tmp_path, "probe", cfg, Builder(), seed=13)
    m = read_manifest(folder)
    assert set(m) == {"stage", "hash", "config", "seed", "created", "seconds", "versions", "rows"}
    assert (m["stage"], m["hash"], m["seed"], m["rows"]) == ("probe", folder.name, 13, 3)
    assert m["config"] == {"dataset": "toy", "n": 3, "path": str(tmp_path)}  # numpy and Path made JSON
    assert m["seconds"] >= 0 and m["created"].endswith("+00:00")
    assert m["versions"]["spectra_rec"] == __version__
    assert m["versions"]["python"] == ".".join(map(str, sys.version_info[:3]))
    assert m["versions"]["numpy"] == np.__version__


def test_write_json_is_atomic_and_handles_numpy(tmp_path):
    path = artifacts.write_json(tmp_path / "a" / "b.json", {"x": np.float32(0.5), "y": np.arange(3)})
    assert json.loads(path.read_text()) == {"x": 0.5, "y": [0, 1, 2]}
    assert _hidden(tmp_path) == []
    with pytest.raises(TypeError, match="not JSON serializable: object"):
        artifacts.write_json(tmp_path / "c.json", {"x": object()})


def test_temporary_folder_of_a_killed_run_is_removed_on_the_next_run(tmp_path):
    import subprocess
    import sys

    from spectra_rec.artifacts import run_stage, stage_dir

    config = {"x": 1}
    final = stage_dir(tmp_path, "demo", config)
    # a pid that existed and is gone: a finished child process
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    orphan = final.with_name(f".{final.name}.tmp-{dead.pid}")
    orphan.mkdir(parents=True)
    (orphan / "half.bin").write_bytes(b"x")
    run_stage(tmp_path, "demo", config, lambda tmp: (tmp / "ok").write_text("1") and None)
    assert not orphan.exists()
    assert (final / "ok").read_text() == "1"


def test_write_parquet_round_trips_with_metadata_and_a_failed_write_keeps_the_old_file(tmp_path, monkeypatch):
    import pandas as pd
    import pyarrow.parquet as pq

    path = tmp_path / "t.parquet"
    first = pd.DataFrame({"user_id": ["a", "b"], "x": [0.25, 0.75]})
    artifacts.write_parquet(path, first, {b"spectra_rec": b'{"n": 2}'})
    assert pd.read_parquet(path).equals(first)
    assert pq.read_schema(path).metadata[b"spectra_rec"] == b'{"n": 2}'
    assert b"pandas" in pq.read_schema(path).metadata  # pandas' own entry is kept

    def half_then_crash(table, where, **kw):
        open(where, "wb").write(b"PAR1 half a file")
        raise KeyboardInterrupt

    monkeypatch.setattr(pq, "write_table", half_then_crash)
    with pytest.raises(KeyboardInterrupt):
        artifacts.write_parquet(path, pd.DataFrame({"user_id": ["c"], "x": [1.0]}))
    monkeypatch.undo()
    assert pd.read_parquet(path).equals(first)
    assert [p.name for p in tmp_path.iterdir()] == ["t.parquet"]


def test_write_parquet_is_the_one_parquet_writer_of_the_package():
    """Every Parquet file spectra_rec writes goes through artifacts.write_parquet (temporary file + rename)."""
    from pathlib import Path

    root = Path(artifacts.__file__).parent
    hits = [f"{p.relative_to(root)}:{i}" for p in sorted(root.rglob("*.py")) if p.name != "artifacts.py"
            for i, line in enumerate(p.read_text().splitlines(), 1)
            if ".to_parquet(" in line or "write_table(" in line]
    assert hits == []
