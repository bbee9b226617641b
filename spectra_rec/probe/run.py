"""Library entry points: probe a cohort of users into a prior table (sharded, resumable), and the cached SPECTRA prior.

``probe_prior(dataset, split, model, tokenizer, readout="logit", out="p.parquet")`` writes:

    p.parquet                 the prior table (PriorTable format; metadata in the schema)
    p.scores.parquet          raw per-user scores s(c) (``s:<category>``), prompt stats, readout extras
    p.probe.json              metadata: readout, verbalizers, tau, template version, adapter manifest
                              hash, backend, cohort, timing, readout summary (e.g. DG parse counts)
    p.parquet.parts/          per-shard partial files, written atomically chunk by chunk

With ``shard=(i, n)`` a process handles the i-th of n contiguous slices of the cohort;
rerunning skips users already written (resume). The table is merged when every shard is
complete (by whichever shard finishes last, or by :func:`merge_shards`).

``spectra_prior(data, split, runs, readout="logit")`` is what the fusion job calls: it aligns
first when no adapter is cached (``spectra_rec.align.align``), then probes under
``artifacts.run_stage`` caching (``runs/probe/<hash>/prior.parquet``). Cohorts, shards, partial
files and the merge live in ``probe.shards`` (shared with the Ray driver) and are re-exported here.
"""

from __future__ import annotations

import logging
import shutil
import time
from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd

from spectra_rec import artifacts
from spectra_rec.data.stage import data_identity
from spectra_rec.errors import ConfigError
from spectra_rec.priors.table import PriorTable
from spectra_rec.probe.prompts import PromptBuilder
from spectra_rec.probe.readouts import Readout, make_readout, readout_class, readout_key
from spectra_rec.probe.shards import (
    check_answer_ids,
    check_shard,
    chunk_path,
    cohort,
    complete_shards,
    manifest_hash,
    merge_shards,
    output_paths,
    parse_shard,
    prepare_parts,
    read_parts,
    readout_summary,
    result_rows,
    rows_to_table,
    sft_history_summary,
    shard_users,
)
from spectra_rec.text.templates import TEMPLATE_VERSION

log = logging.getLogger(__name__)

def _model_name(model) -> str | None:
    cfg = getattr(model, "config", None)
    return getattr(cfg, "_name_or_path", None) or (type(model).__name__ if model is not None else None)


# ---- the probe loop ---------------------------------------------------------------------------
def probe_prior(
    dataset,
    split,
    model,
    tokenizer,
    readout: str | Readout = "logit",
    *,
    readout_options: dict | None = None,
    users: Sequence[int] | None = None,
    max_users: int | None = None,
    backend="hf",
    backend_options: dict | None = None,
    max_items: int | None = None,
    shard: tuple[int, int] = (0, 1),
    out: str | Path | None = None,
    chunk_users: int = 16,
    adapter_manifest=None,
    model_name: str | None = None,
    fresh: bool = False,
    progress: bool = True,
) -> PriorTable:
    """Probe ``users`` (default: the split's evaluable users) and return their prior table.

    ``backend`` is a name (``hf``, ``vllm``) built from ``model``/``tokenizer`` with
    ``backend_options``, or a backend instance. ``max_items`` caps the history (the most
    recent train items); the model's context caps it further. With ``out`` the shard's rows
    are written chunk by chunk (resumable) and, once every shard is complete, merged into the
    table at ``out``; with several shards the returned table holds this shard's users until
    the merge. Without ``out`` nothing is written.
    """
    from spectra_rec.probe.backends import make_backend

    check_shard(shard)
    if chunk_users < 1:
        raise ConfigError(f"chunk_users must be >= 1, got {chunk_users}")
    if shard[1] > 1 and out is None:
        raise ConfigError("sharded probing needs out= (the shards merge through their partial files)")
    ro = make_readout(readout, **(readout_options or {}))
    be = make_backend(backend, model, tokenizer, **(backend_options or {})) if isinstance(backend, str) else backend
    history_summary = sft_history_summary(adapter_manifest)  # prompts read as the adapter's SFT wrote them
    builder = PromptBuilder(dataset, split, tokenizer, be.max_length, max_items, history_summary)
    ro.prepare(builder)
    check_answer_ids(ro, adapter_manifest)
    all_users = cohort(split, users, max_users)
    mine = shard_users(all_users, shard)
    cats = list(dataset.categories)
    meta = {
        "method": ro.method,
        **ro.meta(),
        "template_version": TEMPLATE_VERSION,
        "adapter_manifest_hash": manifest_hash(adapter_manifest),
        "model": model_name or _model_name(model),
        "backend": be.describe(),
        "dataset": dataset.name,
        "split_ratio": split.ratio,
        "max_items": max_items,
        "history_summary": history_summary,
        "cohort_users": int(len(all_users)),
        "cohort_digest": artifacts.config_hash({"users": all_users.tolist()}),
        "shards": shard[1],
        "uses_heldout": False,
    }
    paths = output_paths(out) if out is not None else None
    done = pd.DataFrame()
    shard_dir = None
    if paths is not None:
        shard_dir = prepare_parts(paths["parts"], meta, shard, fresh)
        done = read_parts([shard_dir])
    todo = np.setdiff1d(mine, done["user"].to_numpy() if len(done) else [], assume_unique=True)
    if len(done):
        log.info("shard %d/%d: resuming, %d of %d users already done", shard[0], shard[1], len(mine) - len(todo), len(mine))
    t0 = time.perf_counter()
    frames = [done] if len(done) else []
    new_frames = []
    bar = _tqdm(total=len(todo), disable=not progress, desc=f"probe {ro.name}", unit="user")
    for start in range(0, len(todo), chunk_users):
        chunk = todo[start : start + chunk_users]
        histories = [builder.history(int(u), ro.frame, ro.reserve) for u in chunk]
        results = ro.score(be, histories)
        frame = result_rows(dataset, histories, results, cats)
        if shard_dir is not None:
            artifacts.write_parquet(chunk_path(shard_dir, chunk[0]), frame)
        frames.append(frame)
        new_frames.append(frame)
        bar.update(len(chunk))
    bar.close()
    seconds = time.perf_counter() - t0
    new = pd.concat(new_frames, ignore_index=True) if new_frames else None
    if new is not None and (new["dropped"] > 0).any():
        log.info("%d of %d users had their oldest train items dropped (%d items) to fit the %d-token context%s",
                 int((new["dropped"] > 0).sum()), len(new), int(new["dropped"].sum()), be.max_length,
                 "" if max_items is None else f" or the {max_items}-item cap")
    if len(todo):
        log.info("shard %d/%d: %d users in %.1fs (%.2f users/s)", shard[0], shard[1], len(todo), seconds, len(todo) / seconds)
    if shard_dir is not None:
        artifacts.write_json(shard_dir / "DONE", {"users": int(len(mine)), "seconds": round(seconds, 3)})
        complete = complete_shards(paths["parts"], shard[1])
        if len(complete) == shard[1]:
            return merge_shards(out)
        log.info("shard %d/%d complete; %d of %d shards done; merge with merge_shards(%s) when all are",
                 shard[0], shard[1], len(complete), shard[1], out)
    frame = pd.concat(frames, ignore_index=True) if frames else result_rows(dataset, [], [], cats)
    frame = frame.set_index("user").loc[mine].reset_index()
    table, _ = rows_to_table(frame, cats, meta | _summary(ro, frame, seconds))
    return table


def _tqdm(**kw):
    from tqdm.auto import tqdm

    return tqdm(**kw)


def _summary(ro: Readout, frame: pd.DataFrame, seconds: float) -> dict:
    out = {
        "users_with_dropped_items": int((frame["dropped"] > 0).sum()) if len(frame) else 0,
        "items_dropped_total": int(frame["dropped"].sum()) if len(frame) else 0,
        "mean_prefix_tokens": float(frame["prefix_tokens"].mean()) if len(frame) else None,
        "seconds_this_run": round(seconds, 3),
    }
    summary = readout_summary(ro, frame) if len(frame) else None
    if summary is not None:
        out["readout_summary"] = summary
    return out


# ---- the cached SPECTRA prior (fusion entry point) ------------------------------------------
def spectra_prior(
    data,
    split=None,
    runs: str | Path = Path("runs"),
    readout: str = "logit",
    *,
    readout_options: dict | None = None,
    adapter: str | Path | None = None,
    align_config=None,
    users: Sequence[int] | None = None,
    max_users: int | None = None,
    max_items: int | None = None,
    backend: str = "hf",
    backend_options: dict | None = None,
    device: str | None = None,
    dtype=None,
    trust_remote_code: bool = False,
    chunk_users: int = 16,
    fresh: bool = False,
    progress: bool = True,
    ray_config=None,
) -> PriorTable:
    """The SPECTRA prior table for ``data``: align when no adapter is cached, then probe (cached by configuration).

    ``data``: a ``DataConfig``, a dataset name/directory, a ``Dataset`` (with ``split``) or a
    ``(Dataset, Split)`` pair. ``adapter``: an align folder to use instead of aligning.
    ``max_items`` defaults to the adapter's SFT context size, and options not given to what the
    manifest implies for the readout (``Readout.manifest_defaults``: DG's ``k``, its SFT list length). ``fresh`` recomputes the probe stage only (a cached adapter is reused;
    pass ``adapter=`` or run ``spectra-rec align --fresh`` to retrain). ``ray_config``
    (a :class:`spectra_rec.probe.distributed.RayConfig`) probes on a Ray actor pool instead of
    this process: the same table, so not part of the cache key. Stage folder:
    ``runs/probe/<hash>/`` with ``prior.parquet``, raw scores, metadata and ``manifest.json``.
    """
    runs = Path(runs)
    ds, split = _resolve_data(data, split, runs)
    if adapter is None:
        from spectra_rec.align.pipeline import align

        adapter = align((ds, split), align_config, runs)
    adapter = Path(adapter)
    from spectra_rec.align.io import read_align_manifest

    manifest = read_align_manifest(adapter)
    options = dict(readout_options or {})
    max_items = max_items if max_items is not None else sft_context_items(manifest)
    for key, value in readout_class(readout).manifest_defaults(manifest).items():
        options.setdefault(key, value)
    all_users = cohort(split, users, max_users)
    config = probe_stage_config(ds, split, adapter, readout, options, all_users, max_items, backend,
                                backend_options, device, dtype)
    # Partial files live in a stable sibling of the stage folder, not in run_stage's per-process
    # temporary folder (deleted on Ctrl-C, cleared as an orphan by the next run): a rerun after an
    # interruption resumes from the users already written.
    final = artifacts.stage_dir(runs, "probe", config)
    work = final.with_name(f".{final.name}.work")
    if fresh:
        shutil.rmtree(work, ignore_errors=True)

    def build(tmp: Path) -> dict:
        from spectra_rec.align.io import load_aligned

        work.mkdir(parents=True, exist_ok=True)
        if ray_config is not None:
            from spectra_rec.probe.distributed import ModelSpec, probe_prior_ray

            table = probe_prior_ray(
                ds, split, ModelSpec(str(adapter.resolve()), "align", device), readout, out=work / "prior.parquet",
                readout_options=options, users=all_users, backend=backend, backend_options=backend_options,
                max_items=max_items, ray_config=ray_config, model_name=str(adapter), progress=progress,
            )
        else:
            if backend == "vllm":
                model = adapter
                from spectra_rec.align.io import load_tokenizer

                tokenizer = load_tokenizer(adapter / "tokenizer")
            else:  # LoRA folded in: faster
                model, tokenizer, _ = load_aligned(adapter, device=device, dtype=dtype, merge=True,
                                                   trust_remote_code=trust_remote_code)
            table = probe_prior(
                ds, split, model, tokenizer, readout, readout_options=options, users=all_users,
                backend=backend, backend_options=backend_options, max_items=max_items, out=work / "prior.parquet",
                chunk_users=chunk_users, adapter_manifest=adapter, model_name=str(adapter), progress=progress,
            )
        for name in ("prior.parquet", "prior.scores.parquet", "prior.probe.json"):
            shutil.copy2(work / name, tmp / name)  # copied: a kill while publishing still finds every part
        return {"users": int(len(table.user_ids)), "method": table.method,
                "engine": "local" if ray_config is None else "ray"}

    folder = artifacts.run_stage(runs, "probe", config, build, fresh=fresh)
    shutil.rmtree(work, ignore_errors=True)  # published; the stage folder is the unit
    return PriorTable.load(folder / "prior.parquet")


def probe_stage_config(ds, split, adapter: Path, readout: str, options: dict, users: np.ndarray,
                       max_items: int | None, backend: str, backend_options: dict | None,
                       device: str | None = None, dtype=None) -> dict:
    """The probe stage's cache key: every input that changes the table, none that only changes speed.

    Data identity covers every input file (an external ``--taxonomy`` included); device and
    dtype are part of it because bf16 and fp32 scores differ.
    """
    from spectra_rec.align.model import default_device

    dev = str(device or default_device())
    return {
        "readout": readout,
        "readout_options": readout_key(readout, options),
        "adapter": str(Path(adapter).resolve()),
        "adapter_manifest_hash": manifest_hash(adapter),
        "data": data_identity(ds, split),
        "users": artifacts.config_hash({"users": np.asarray(users).tolist()}),
        "max_items": max_items,
        "backend": backend,
        "backend_options": {k: v for k, v in (backend_options or {}).items() if k not in _SPEED_OPTIONS},
        "device": dev,
        "dtype": _dtype_name(dtype, dev),
        "template_version": TEMPLATE_VERSION,
    }


def _dtype_name(dtype, device: str) -> str:
    """The dtype a model is probed in (None: the device's default, as the loader resolves it)."""
    from spectra_rec.align.model import default_dtype, resolve_dtype

    return str(resolve_dtype(dtype) or default_dtype(device)).replace("torch.", "")


_SPEED_OPTIONS = ("batch_size", "workers", "num_workers", "runs", "cache_dir")
"""Backend options that change speed or where caches live, not scores: left out of the cache key."""


def _resolve_data(data, split, runs: Path):
    if split is not None:  # the split knows its dataset; ``data`` may be a DataConfig, a name or the Dataset
        return split.dataset, split
    if isinstance(data, tuple) and len(data) == 2:
        return data
    if hasattr(data, "dataset") and hasattr(data, "split_ratio"):  # DataConfig
        from spectra_rec.data.stage import data_stage

        ds, sp, _ = data_stage(data, runs)
        return ds, sp
    from spectra_rec.data import Dataset, load_dataset, split_dataset

    ds = data if isinstance(data, Dataset) else load_dataset(data)
    return ds, split_dataset(ds)


def sft_context_items(manifest: dict) -> int | None:
    """The history length (items) an align folder's SFT was trained with (None when its manifest does not say)."""
    ctx = manifest.get("context") or {}
    if ctx.get("max_items") is not None:
        return int(ctx["max_items"])
    sft = (manifest.get("config") or {}).get("sft") or {}
    return int(sft["context_items"]) if sft.get("context_items") is not None else None


__all__ = [
    "check_shard", "cohort", "merge_shards", "parse_shard", "probe_prior", "probe_stage_config", "sft_context_items",
    "shard_users", "spectra_prior",
]
