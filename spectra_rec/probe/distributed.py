"""Distributed probing on Ray Data: users as a Dataset, ``map_batches`` over an actor pool.

    probe_prior_ray(dataset, split, ModelSpec("runs/align/sft/<hash>", kind="align"), "logit",
                    out="p.parquet", workers=4, gpus_per_worker=1)

Each actor loads one backend (hf or vllm) once, in its constructor, and scores the batches of
users it is given; the driver never loads the model. Batches are ``chunk_users`` users, the
same chunks a single-process run scores, and the driver writes each finished chunk into the
same partial-file folder ``probe_prior`` uses (``<out>.parts/shard-0000-of-0001/``), so

- the prior table, raw scores and metadata are the single-process ones, row for row;
- an interrupted run (either engine) resumes: finished users are read back, not probed again;
- the driver is the only writer, so workers on other machines need no shared filesystem.

A batch whose actor dies (a crash, an OOM kill, a lost node) is retried by Ray on a restarted
actor (Ray Data's actor pools restart actors and retry their tasks by default); an exception
raised by the probe code is not retried (it is deterministic) and fails the run with the
actor's traceback.

Ray is an optional dependency (``pip install 'spectra-rec[ray]'``); a missing piece gives a
clear error naming the flag. A local cluster is started with ``workers * cpus_per_worker`` CPUs
and a small object store; ``address="auto"`` or ``HOST:PORT`` joins a running one (every node
needs spectra-rec and the model folder at the same path).
"""

from __future__ import annotations

import importlib.util
import logging
import os
import socket
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd

from spectra_rec import artifacts
from spectra_rec.errors import ConfigError

log = logging.getLogger(__name__)

OBJECT_STORE_BYTES = 256 * 1024**2
"""Object store of a local cluster: batches are a few KB of user ids and a few MB of scores."""


@dataclass(frozen=True)
class ModelSpec:
    """What each actor loads: an align folder or a plain HF model folder, and how."""

    path: str
    """An align stage folder (``kind="align"``) or a Hugging Face model folder (``kind="model"``)."""
    kind: str = "align"
    """``align`` or ``model``."""
    device: str | None = None
    """hf backend: cpu, cuda (default: cuda when the actor has a GPU)."""
    dtype: str | None = None
    """bf16, fp16, fp32 (default: bf16 on CUDA, fp32 on CPU)."""
    threads: int | None = None
    """hf backend on CPU: torch threads per actor (default: the actor's CPUs)."""

    def __post_init__(self):
        if self.kind not in ("align", "model"):
            raise ConfigError(f"ModelSpec.kind must be 'align' or 'model', got {self.kind!r}")


@dataclass(frozen=True)
class RayConfig:
    """The Ray side of a run: cluster, pool size and resources per actor."""

    workers: int = 2
    """Actors in the pool, each with its own backend."""
    address: str | None = None
    """None: start a local cluster; ``auto``: the running local cluster; ``HOST:PORT``: a remote head."""
    cpus_per_worker: float = 1.0
    """CPUs reserved per actor."""
    gpus_per_worker: float = 0.0
    """GPUs per actor (vLLM with tensor parallelism needs that many)."""
    object_store_bytes: int = OBJECT_STORE_BYTES
    """Object store of a local cluster."""
    runtime_env: dict = field(default_factory=dict)
    """Extra Ray runtime environment (a local cluster inherits PYTHONPATH from the driver)."""

    def __post_init__(self):
        if self.workers < 1:
            raise ConfigError(f"--workers must be >= 1, got {self.workers}")
        if self.gpus_per_worker < 0:
            raise ConfigError(f"--gpus-per-worker must be >= 0, got {self.gpus_per_worker}")
        if self.cpus_per_worker <= 0:
            raise ConfigError(f"cpus_per_worker must be > 0, got {self.cpus_per_worker}")


def require_ray():
    """Import ray (and ray.data), or explain how to install it."""
    if importlib.util.find_spec("ray") is None:
        raise ConfigError(
            "--engine ray needs the optional 'ray' package, which is not installed: "
            "pip install 'spectra-rec[ray]' (or omit --engine for the single-process run)"
        )
    import ray
    import ray.data  # noqa: F401  (ray without its data extra lacks pyarrow-based datasets)

    return ray


def _check_address(address: str) -> None:
    """A HOST:PORT that nothing answers on is a bad flag, not a 60-second hang inside ray.init."""
    if address in ("auto", "local") or address.startswith("ray://"):
        return
    host, sep, port = address.rpartition(":")
    if not sep or not port.isdigit():
        raise ConfigError(f"--address must be auto or HOST:PORT, got {address!r}")
    try:
        with socket.create_connection((host, int(port)), timeout=3):
            pass
    except OSError as exc:
        raise ConfigError(
            f"--address {address}: no Ray cluster answers there ({exc.strerror or exc}); start one with "
            "`ray start --head` or omit --address for a local cluster"
        ) from None


def _local_gpus() -> int:
    try:
        import torch

        return torch.cuda.device_count()
    except ImportError:
        return 0


def preflight(config: RayConfig) -> None:
    """The checks that need no cluster: ray importable, GPUs present for a local cluster, the address answers."""
    require_ray()
    if config.address is None and config.gpus_per_worker > 0 and _local_gpus() == 0:
        raise ConfigError(f"--gpus-per-worker {config.gpus_per_worker:g}: this machine has no CUDA GPU")
    if config.address is not None:
        _check_address(config.address)


def connect(config: RayConfig):
    """Start or join a Ray cluster for ``config``; returns (ray, started_here)."""
    ray = require_ray()
    preflight(config)
    if ray.is_initialized():
        return ray, False
    if config.address is not None:
        try:
            ray.init(address=config.address, runtime_env=config.runtime_env or None, log_to_driver=False)
        except ConnectionError as exc:
            raise ConfigError(f"--address {config.address}: cannot connect to a Ray cluster ({exc})") from None
        gpus = ray.cluster_resources().get("GPU", 0)
        if config.gpus_per_worker > 0 and gpus < config.gpus_per_worker:
            ray.shutdown()
            raise ConfigError(f"--gpus-per-worker {config.gpus_per_worker:g}: the cluster at {config.address} has {gpus:g} GPU(s)")
        return ray, True
    env = dict(config.runtime_env)
    if os.environ.get("PYTHONPATH"):  # workers import this checkout, as the driver does
        env.setdefault("env_vars", {}).setdefault("PYTHONPATH", os.environ["PYTHONPATH"])
    ray.init(
        num_cpus=max(2, int(np.ceil(config.workers * config.cpus_per_worker))),
        num_gpus=_local_gpus() or None,
        object_store_memory=config.object_store_bytes,
        include_dashboard=False,
        log_to_driver=False,
        runtime_env=env or None,
        logging_level=logging.WARNING,
    )
    return ray, True


# ---- the actor ---------------------------------------------------------------------------------
class ProbeActor:
    """One backend, loaded once; ``__call__`` scores a batch of users into their result rows."""

    def __init__(self, dataset, split, spec: ModelSpec, backend: str, backend_options: dict, readout: str,
                 readout_options: dict, max_items: int | None, history_summary: bool = False):
        from spectra_rec.probe.backends import make_backend
        from spectra_rec.probe.prompts import PromptBuilder
        from spectra_rec.probe.readouts import make_readout
        from spectra_rec.probe.shards import check_answer_ids

        if spec.threads:
            import torch

            torch.set_num_threads(spec.threads)
        model, tokenizer = _load(spec, backend)
        self.dataset, self.split = dataset, split
        self.backend = make_backend(backend, model, tokenizer, **backend_options)
        self.readout = make_readout(readout, **readout_options)
        self.builder = PromptBuilder(dataset, split, tokenizer, self.backend.max_length, max_items, history_summary)
        self.readout.prepare(self.builder)
        check_answer_ids(self.readout, Path(spec.path) if spec.kind == "align" else None)

    def __call__(self, batch: dict) -> pd.DataFrame:
        from spectra_rec.probe.shards import result_rows

        users = np.asarray(batch["user"], dtype=np.int64)
        ro = self.readout
        histories = [self.builder.history(int(u), ro.frame, ro.reserve) for u in users]
        return result_rows(self.dataset, histories, ro.score(self.backend, histories), list(self.dataset.categories))


def _load(spec: ModelSpec, backend: str):
    """(model or model path, tokenizer) for the actor's backend."""
    if spec.kind == "align":
        from spectra_rec.align.io import load_aligned, load_tokenizer

        if backend == "vllm":
            return spec.path, load_tokenizer(Path(spec.path) / "tokenizer")
        model, tokenizer, _ = load_aligned(Path(spec.path), device=spec.device, dtype=spec.dtype, merge=True)
        return model, tokenizer
    if backend == "vllm":
        from transformers import AutoTokenizer

        return spec.path, AutoTokenizer.from_pretrained(spec.path)
    from spectra_rec.align.model import load_base_model

    return load_base_model(spec.path, dtype=spec.dtype, device=spec.device)


def _tokenizer(spec: ModelSpec):
    from transformers import AutoTokenizer

    path = Path(spec.path) / "tokenizer" if spec.kind == "align" else Path(spec.path)
    if not path.is_dir():
        raise ConfigError(f"{'--adapter' if spec.kind == 'align' else '--model'} {spec.path!r}: no tokenizer folder at {path}")
    return AutoTokenizer.from_pretrained(str(path))


# ---- the driver --------------------------------------------------------------------------------
def probe_prior_ray(
    dataset,
    split,
    spec: ModelSpec,
    readout: str = "logit",
    *,
    out: str | Path,
    readout_options: dict | None = None,
    users: Sequence[int] | None = None,
    max_users: int | None = None,
    backend: str = "hf",
    backend_options: dict | None = None,
    max_items: int | None = None,
    chunk_users: int = 16,
    ray_config: RayConfig = RayConfig(),
    model_name: str | None = None,
    fresh: bool = False,
    progress: bool = True,
    actor_cls: type = ProbeActor,
):
    """Probe the cohort on a Ray actor pool into ``out`` (the single-process files); returns the PriorTable.

    ``actor_cls`` is the class Ray instantiates per actor (a subclass can add instrumentation).
    """
    from spectra_rec.probe.prompts import PromptBuilder
    from spectra_rec.probe.readouts import make_readout
    from spectra_rec.probe.shards import (cohort, manifest_hash, merge_shards, output_paths, prepare_parts, read_parts,
                                          sft_history_summary)
    from spectra_rec.text.templates import TEMPLATE_VERSION

    if chunk_users < 1:
        raise ConfigError(f"--chunk-users must be >= 1, got {chunk_users}")
    preflight(ray_config)
    if backend == "vllm" and ray_config.address is None:
        from spectra_rec.probe.backends.vllm import require_vllm

        require_vllm()  # before a cluster starts: the actors would fail the same way
    readout_options = dict(readout_options or {})
    backend_options = dict(backend_options or {})
    for key in ("runs", "cache_dir"):  # actors may run in another working directory
        if backend_options.get(key) is not None:
            backend_options[key] = str(Path(backend_options[key]).resolve())
    if backend == "vllm" and backend_options.pop("merge", False) and spec.kind == "align":
        # Merge once, here, not in every actor (they would race on the same merged stage).
        from spectra_rec.probe.backends.vllm import merged_model_dir

        merged = merged_model_dir(Path(spec.path), Path(backend_options.get("runs", "runs")))
        log.info("ray: actors serve the merged model %s", merged)
        adapter_spec = spec
        spec = ModelSpec(str(merged), "model", spec.device, spec.dtype, spec.threads)
    else:
        adapter_spec = spec
    # The driver's copy of the readout, for the metadata (its answer tokens, blocks, anchor): it
    # needs the tokenizer, never the weights.
    adapter_manifest = Path(adapter_spec.path) if adapter_spec.kind == "align" else None
    history_summary = sft_history_summary(adapter_manifest)  # the merged model's folder no longer says
    ro = make_readout(readout, **readout_options)
    ro.prepare(PromptBuilder(dataset, split, _tokenizer(spec), 1 << 30, max_items, history_summary))
    all_users = cohort(split, users, max_users)
    meta = {
        "method": ro.method,
        **ro.meta(),
        "template_version": TEMPLATE_VERSION,
        "adapter_manifest_hash": manifest_hash(adapter_manifest),
        "model": model_name or adapter_spec.path,
        "backend": {"backend": backend, "engine": "ray", "workers": ray_config.workers,
                    "gpus_per_worker": ray_config.gpus_per_worker},
        "dataset": dataset.name,
        "split_ratio": split.ratio,
        "max_items": max_items,
        "history_summary": history_summary,
        "cohort_users": int(len(all_users)),
        "cohort_digest": artifacts.config_hash({"users": all_users.tolist()}),
        "shards": 1,
        "uses_heldout": False,
    }
    paths = output_paths(out)
    shard_dir = prepare_parts(paths["parts"], meta, (0, 1), fresh)
    done = read_parts([shard_dir])
    todo = np.setdiff1d(all_users, done["user"].to_numpy() if len(done) else [], assume_unique=True)
    if len(done):
        log.info("ray: resuming, %d of %d users already done", len(all_users) - len(todo), len(all_users))
    t0 = time.perf_counter()
    if len(todo):
        ray, started = connect(ray_config)
        try:
            _run_pool(ray, dataset, split, spec, backend, backend_options, readout, readout_options, max_items,
                      todo, chunk_users, ray_config, shard_dir, actor_cls, progress, history_summary)
        finally:
            if started:
                ray.shutdown()
    seconds = time.perf_counter() - t0
    if len(todo):
        log.info("ray: %d users in %.1fs (%.2f users/s) on %d workers", len(todo), seconds, len(todo) / seconds,
                 ray_config.workers)
    artifacts.write_json(shard_dir / "DONE", {"users": int(len(all_users)), "seconds": round(seconds, 3),
                                              "probed_this_run": int(len(todo)), **meta["backend"]})
    return merge_shards(out)


def _run_pool(ray, dataset, split, spec, backend, backend_options, readout, readout_options, max_items, todo,
              chunk_users, cfg: RayConfig, shard_dir: Path, actor_cls, progress, history_summary: bool = False) -> None:
    from tqdm.auto import tqdm

    from spectra_rec.probe.shards import chunk_path

    # One block per chunk of users: Ray Data then hands each actor exactly the chunks a
    # single-process run scores (batch boundaries never straddle blocks here).
    chunks = [todo[s : s + chunk_users] for s in range(0, len(todo), chunk_users)]
    users = ray.data.from_pandas([pd.DataFrame({"user": c}) for c in chunks])
    scored = users.map_batches(
        actor_cls,
        fn_constructor_kwargs=dict(dataset=dataset, split=split, spec=spec, backend=backend,
                                   backend_options=backend_options, readout=readout,
                                   readout_options=readout_options, max_items=max_items,
                                   history_summary=history_summary),
        batch_size=chunk_users,
        batch_format="numpy",
        concurrency=cfg.workers,
        num_cpus=cfg.cpus_per_worker,
        num_gpus=cfg.gpus_per_worker or None,
    )
    bar = tqdm(total=len(todo), disable=not progress, desc=f"probe {readout} (ray x{cfg.workers})", unit="user")
    for frame in scored.iter_batches(batch_size=None, batch_format="pandas", prefetch_batches=0):
        if not len(frame):
            continue
        # numpy-backed columns, as the single-process frames are (Arrow hands back int64[pyarrow])
        frame = pd.DataFrame({c: frame[c].to_numpy() for c in frame.columns})
        # Written as it arrives: an interrupted run keeps every chunk that reached the driver.
        for start in range(0, len(frame), chunk_users):
            part = frame.iloc[start : start + chunk_users].reset_index(drop=True)
            artifacts.write_parquet(chunk_path(shard_dir, part["user"].min()), part)
        bar.update(len(frame))
    bar.close()


__all__ = ["ModelSpec", "ProbeActor", "RayConfig", "connect", "preflight", "probe_prior_ray", "require_ray"]
