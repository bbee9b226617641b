"""RecBole backbones: train on the train windows, export user representations and item embeddings.

The only module that talks to RecBole (through :mod:`fusion.recbole_compat`). A trained
backbone is cached by configuration hash under ``runs/backbone/<hash>/`` with:

- ``recbole/``: the split as RecBole benchmark files (train / valid / test), contexts cut to
  the backbone's ``MAX_ITEM_LIST_LENGTH`` (see :mod:`spectra_rec.data.export`);
- ``model.pth``: RecBole's checkpoint (pickles its Config; loaded with weights_only=False only
  after its sha256 matches ``model_sha256`` in the folder's manifest, recorded at write time);
- ``user_repr.npy``: (n_users, H) sequence representation of each user's whole train window
  (the context of the fusion target), rows in dataset user-index order (zeros: no train window);
- ``item_emb.npy``: (n_items, H) item embeddings in dataset item-index order;
- ``recbole_metrics.json``: RecBole's own valid/test NDCG@10, HR@10, MRR@10 (full ranking).

base score(u, i) = user_repr[u] . item_emb[i], which is what ``full_sort_predict`` computes
for SASRec and GRU4Rec (checked in tests). Warm runs read the arrays without importing RecBole.
"""

from __future__ import annotations

import functools
import json
import logging
import time
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import yaml

from spectra_rec import artifacts
from spectra_rec.data.export import export_recbole_benchmark, recbole_dataset_name
from spectra_rec.data.split import Split
from spectra_rec.errors import ConfigError, ConfigWarning, DataWarning

log = logging.getLogger(__name__)

CONFIG_DIR = Path(__file__).resolve().parent.parent / "recbole_configs"
SUPPORTED_MODELS = ("SASRec", "GRU4Rec")
"""Tested backbones; other RecBole sequential models with ``forward(item_seq, item_seq_len)`` and
``item_embedding`` whose ``full_sort_predict`` is their inner product work too."""


@dataclass(frozen=True)
class BackboneConfig:
    """Which RecBole model to train and how."""

    model: str = "SASRec"
    """A RecBole sequential model name (SASRec, GRU4Rec, ...)."""
    epochs: int | None = None
    """Overrides the YAML's epochs (upper bound; early stopping on valid NDCG@10)."""
    patience: int | None = None
    """Overrides the YAML's ``stopping_step``: epochs without a better valid NDCG@10 that are
    tolerated; RecBole stops at the next one."""
    seed: int = 2020
    """RecBole's init_seed."""
    device: str = "cpu"
    """cpu or cuda."""
    overrides: dict = field(default_factory=dict)
    """Extra RecBole config keys (highest priority)."""
    detect_anomaly: bool = False
    """Debugging only: train under ``torch.autograd.detect_anomaly`` (about twice as slow; the
    results are the same, so it is not part of the cache key)."""
    dropout_kernel: str = "uniform"
    """How dropout masks are drawn: ``uniform`` (:class:`fusion.dropout.UniformDropout`, the same
    distribution without ``bernoulli_``'s slow CPU path) or ``bernoulli`` (RecBole's ``nn.Dropout``)."""
    threads: int | None = None
    """Intra-op threads while training. None: one for recurrent models (a GRU's many tiny kernels
    spend more on thread hand-offs than they gain), PyTorch's default otherwise. Speed only: not in
    the cache key."""
    amp: bool | None = None
    """Train under bfloat16 autocast (RecBole's ``enable_amp``). None: on for a CPU with native bf16
    (AVX512-BF16 or AMX), off elsewhere; the resolved value is part of the cache key."""

    def __post_init__(self):
        from fusion.dropout import DROPOUT_KERNELS

        if self.dropout_kernel not in DROPOUT_KERNELS:
            raise ConfigError(f"--dropout-kernel must be one of {list(DROPOUT_KERNELS)}, got {self.dropout_kernel!r}")
        if self.epochs is not None and self.epochs < 1:
            raise ConfigError(f"--epochs must be >= 1, got {self.epochs}")
        if self.patience is not None and self.patience < 0:
            raise ConfigError(f"--patience must be >= 0, got {self.patience}")
        if self.threads is not None and self.threads < 1:
            raise ConfigError(f"--backbone-threads must be >= 1, got {self.threads}")
        if self.device not in ("cpu", "cuda"):
            raise ConfigError(f"device must be 'cpu' or 'cuda', got {self.device!r}")


@dataclass(frozen=True, eq=False)
class Backbone:
    """A trained backbone's exported arrays (dataset index order) and its own metrics."""

    model: str
    folder: Path
    user_repr: np.ndarray
    item_emb: np.ndarray
    recbole_metrics: dict

    def scores(self, users: np.ndarray, items: np.ndarray) -> np.ndarray:
        """Base scores of ``items`` (n, C) for ``users`` (n,): row-wise inner products."""
        return np.einsum("nh,nch->nc", self.user_repr[users], self.item_emb[items])

    def full_scores(self, users: np.ndarray) -> np.ndarray:
        return self.user_repr[users] @ self.item_emb.T


def config_layers(model: str, dataset_name: str) -> list[Path]:
    """base.yaml, <model>.yaml, <dataset>.yaml: those that exist and set at least one key
    (RecBole crashes on a YAML file holding only comments)."""
    layers = []
    for name in ("base", model, dataset_name):
        p = CONFIG_DIR / f"{name}.yaml"
        if p.exists() and _read_yaml(p):
            layers.append(p)
    return layers


def _read_yaml(path: Path) -> dict:
    """One YAML layer as a mapping; a syntax error or a non-mapping is a ConfigError naming the file."""
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (yaml.YAMLError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: not valid YAML ({' '.join(str(exc).split())})") from None
    if data is not None and not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping of RecBole keys, got {type(data).__name__}")
    return data or {}


def resolved_yaml(model: str, dataset_name: str) -> dict:
    """The RecBole keys of every YAML layer (base, model, dataset), later layers winning; warns on unknown keys."""
    out: dict = {}
    known = _recbole_known_keys()
    for p in config_layers(model, dataset_name):
        layer = _read_yaml(p)
        unknown = sorted(set(layer) - known) if known else []
        for key in unknown:
            # RecBole's Config returns None for a key it never heard of: a typo trains with defaults
            warnings.warn(f"{p}: {key!r} is not a RecBole setting (typo?); RecBole will ignore it",
                          ConfigWarning, stacklevel=3)
        out.update(layer)
    return out


@functools.lru_cache(maxsize=1)
def _recbole_known_keys() -> frozenset:
    """Every key that RecBole's shipped property files define (overall, model, dataset defaults)."""
    import importlib.util

    spec = importlib.util.find_spec("recbole")
    if spec is None or not spec.submodule_search_locations:
        return frozenset()
    props = Path(next(iter(spec.submodule_search_locations))) / "properties"
    keys: set = set()
    for f in props.rglob("*.yaml"):
        keys |= set(yaml.safe_load(f.read_text(encoding="utf-8")) or {})
    return frozenset(keys)


SPEED_KEYS = ("worker", "eval_batch_size", "show_progress")
"""RecBole keys that change speed or output, not the trained model: left out of the cache key."""


def backbone_stage_config(config: "BackboneConfig", dataset_name: str, data_folder: Path) -> dict:
    """The backbone stage's cache key: model settings, every resolved YAML key but the speed ones, the data stage."""
    resolved = check_backbone_inputs(config, dataset_name)
    backbone = _cache_fields(config)
    backbone["overrides"] = {k: v for k, v in config.overrides.items() if k not in SPEED_KEYS}
    return {"backbone": backbone, "yaml": {k: v for k, v in resolved.items() if k not in SPEED_KEYS},
            "data": Path(data_folder).name}


def check_backbone_inputs(config: "BackboneConfig", dataset_name: str) -> dict:
    """Validate the model name and parse every YAML layer, before any training; returns the resolved keys."""
    if config.model not in SUPPORTED_MODELS:
        check_model_name(config.model)
    return resolved_yaml(config.model, dataset_name) | config.overrides


def check_model_name(model: str) -> None:
    """Fail early, naming the supported models, for a name RecBole does not know as sequential."""
    from fusion.recbole_compat import import_recbole

    import_recbole()
    import importlib

    seq = importlib.import_module("recbole.model.sequential_recommender")
    if not hasattr(seq, model):
        known = sorted(n for n in dir(seq) if not n.startswith("_") and n[0].isupper())
        raise ConfigError(
            f"unknown backbone --model {model!r}; supported: {list(SUPPORTED_MODELS)} "
            f"(other RecBole sequential models: {known})"
        )


def backbone_stage(
    split: Split,
    data_folder: Path,
    config: BackboneConfig,
    runs: Path = Path("runs"),
    fresh: bool = False,
) -> Backbone:
    """Train (or reuse) ``config.model`` on the split's RecBole benchmark files and export its arrays."""
    ds = split.dataset
    stage_config = backbone_stage_config(config, ds.name, data_folder)
    resolved = stage_config["yaml"]
    folder = artifacts.stage_dir(runs, "backbone", stage_config)
    if artifacts.is_complete(folder) and not fresh:
        try:
            return load_backbone(folder, config.model, ds.n_users, ds.n_items)
        except (OSError, ValueError, KeyError, EOFError) as exc:  # np.load of an empty file: EOFError
            warnings.warn(
                f"cached backbone {folder} is missing or corrupt ({exc}); retraining", DataWarning, stacklevel=2
            )
            fresh = True

    def build(tmp: Path) -> dict:
        # the benchmark files live with the model, cut to this backbone's own context length
        rb_name = recbole_dataset_name(ds.name)
        rows = export_recbole_benchmark(split, tmp / "recbole" / rb_name, rb_name, int(resolved["MAX_ITEM_LIST_LENGTH"]))
        return _train(split, tmp / "recbole", config, tmp) | {"recbole_rows": rows}

    folder = artifacts.run_stage(runs, "backbone", stage_config, build, fresh=fresh, seed=config.seed)
    return load_backbone(folder, config.model, ds.n_users, ds.n_items)


def _cache_fields(config: BackboneConfig) -> dict:
    """The configuration that changes a trained backbone (debug switches left out, ``amp`` resolved)."""
    d = asdict(config)
    d.pop("detect_anomaly")
    d.pop("threads")
    d["amp"] = resolved_amp(config)
    return d


SINGLE_THREAD_MODELS = ("GRU4Rec",)
"""Recurrent backbones: on ml-100k one thread ran a GRU4Rec step in half the time of two
(``benchmarks/profile_backbone.py``, variant ``threads1``)."""


def resolved_threads(config: BackboneConfig) -> int:
    """``config.threads``, or where it is None: 1 for :data:`SINGLE_THREAD_MODELS`, else torch's current count."""
    import torch

    if config.threads is not None:
        return config.threads
    return 1 if config.model in SINGLE_THREAD_MODELS else torch.get_num_threads()


def resolved_amp(config: BackboneConfig) -> bool:
    """``config.amp``, or where it is None: whether this CPU computes bfloat16 natively.

    Without native bf16 the CPU emulates it and autocast is slower than float32; on CUDA autocast
    means float16 with loss scaling, which RecBole leaves to the user (``--amp``).
    """
    if config.amp is not None:
        return bool(config.amp)
    if config.device != "cpu":
        return False
    from spectra_rec.align.model import native_cpu_bf16

    return native_cpu_bf16()


def load_backbone(folder: Path, model: str, n_users: int, n_items: int) -> Backbone:
    folder = Path(folder)
    recorded = (artifacts.read_manifest(folder).get("array_digests") or {}) if artifacts.is_complete(folder) else {}
    for name, digest in recorded.items():  # a flipped byte still loads: compare with what was written
        if artifacts.file_digest(folder / name) != digest:
            raise ValueError(f"{folder / name} does not match the digest recorded in its manifest")
    user_repr = np.load(folder / "user_repr.npy")
    item_emb = np.load(folder / "item_emb.npy")
    if user_repr.shape[0] != n_users or item_emb.shape[0] != n_items or user_repr.shape[1] != item_emb.shape[1]:
        raise ValueError(
            f"shapes user_repr {user_repr.shape} / item_emb {item_emb.shape} do not match "
            f"{n_users} users x {n_items} items"
        )
    if not (folder / "model.pth").exists():
        raise OSError(f"{folder / 'model.pth'} is missing")
    metrics = json.loads((folder / "recbole_metrics.json").read_text())
    return Backbone(model, folder, user_repr, item_emb, metrics)


def recbole_config(model: str, data_path: Path, dataset_name: str, config: BackboneConfig, checkpoint_dir: Path):
    """RecBole Config from our YAML layers (looked up by our dataset name) over the exported benchmark files."""
    from fusion.recbole_compat import import_recbole, pandas3_patches

    import_recbole()
    from recbole.config import Config

    cfg = {
        "data_path": str(data_path),
        "dataset": recbole_dataset_name(dataset_name),
        "checkpoint_dir": str(checkpoint_dir),
        "seed": config.seed,
        "use_gpu": config.device == "cuda",
        "log_wandb": False,
    }
    if config.epochs is not None:
        cfg["epochs"] = config.epochs
    if config.patience is not None:
        cfg["stopping_step"] = config.patience
    cfg["enable_amp"] = resolved_amp(config)
    cfg.update(config.overrides)
    with pandas3_patches():
        return Config(
            model=model,
            config_file_list=[str(p) for p in config_layers(model, dataset_name)],
            config_dict=cfg,
        )


def prepare_recbole(split: Split, data_path: Path, config: BackboneConfig, checkpoint_dir: Path):
    """RecBole's Config, dataset, (train, valid, test) loaders and a freshly initialised model, seeded.

    Call inside :func:`fusion.recbole_compat.quiet_recbole`. Shared by training, loading and
    ``benchmarks/profile_backbone.py``, so all three build exactly the same objects.
    """
    from fusion.recbole_compat import pandas3_patches

    rconfig = recbole_config(config.model, data_path, split.dataset.name, config, checkpoint_dir)
    from recbole.data import create_dataset, data_preparation
    from recbole.utils import get_model, init_seed

    init_seed(rconfig["seed"], rconfig["reproducibility"])
    with pandas3_patches():
        rdata = create_dataset(rconfig)
        loaders = data_preparation(rconfig, rdata)
    init_seed(rconfig["seed"] + rconfig["local_rank"], rconfig["reproducibility"])
    model = get_model(config.model)(rconfig, loaders[0].dataset).to(rconfig["device"])
    _check_interface(model, config.model)
    if config.dropout_kernel == "uniform":
        from fusion.dropout import swap_dropout

        swap_dropout(model)
    return rconfig, rdata, loaders, model


def _train(split: Split, data_path: Path, config: BackboneConfig, out: Path) -> dict:
    """RecBole training with early stopping on the valid file; then export arrays and metrics."""
    from fusion.recbole_compat import import_recbole, quiet_recbole

    import_recbole()
    with quiet_recbole(tensorboard_dir=out / "tensorboard"):
        return _train_quiet(split, data_path, config, out)


def _train_quiet(split: Split, data_path: Path, config: BackboneConfig, out: Path) -> dict:
    import torch

    from fusion.recbole_compat import load_checkpoint

    ds = split.dataset
    rconfig, rdata, (train_data, valid_data, test_data), model = prepare_recbole(split, data_path, config, out)
    from recbole.utils import get_trainer

    trainer = get_trainer(rconfig["MODEL_TYPE"], config.model)(rconfig, model)
    trainer.saved_model_file = str(out / "model.pth")

    t0 = time.perf_counter()
    log.info(
        "training %s on %d train sequences in %d batches of %d (at most %d epochs, early stopping after %d "
        "without a better valid NDCG@10)",
        config.model, len(train_data.dataset), len(train_data), rconfig["train_batch_size"], rconfig["epochs"],
        rconfig["stopping_step"],
    )
    epoch_log = _EpochLogger(trainer, rconfig["epochs"], rconfig["stopping_step"])
    threads, before = resolved_threads(config), torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        with torch.autograd.set_detect_anomaly(config.detect_anomaly):
            best_valid, _ = trainer.fit(
                train_data, valid_data, verbose=False, saved=True, show_progress=_interactive(), callback_fn=epoch_log
            )
    finally:
        torch.set_num_threads(before)
    train_seconds = time.perf_counter() - t0

    # torch >= 2.6 refuses RecBole's pickled Config under weights_only=True: load our own file, whose
    # digest goes into the manifest so later loads can check it before unpickling.
    model_sha256 = artifacts.file_sha256(out / "model.pth")
    state = load_checkpoint(out / "model.pth", model_sha256, map_location=rconfig["device"])
    model.load_state_dict(state["state_dict"])
    model.load_other_parameter(state.get("other_parameter"))
    test_result = trainer.evaluate(test_data, load_best_model=False, show_progress=False)

    rb_items = rdata.token2id(rdata.iid_field, list(ds.item_ids))
    model.eval()
    with torch.no_grad():
        item_emb = _item_embeddings(model)[torch.as_tensor(rb_items)].cpu().numpy()
        user_repr = _user_representations(model, split, rdata, rconfig["MAX_ITEM_LIST_LENGTH"], rconfig["device"])
    np.save(out / "user_repr.npy", user_repr.astype(np.float32))
    np.save(out / "item_emb.npy", item_emb.astype(np.float32))
    metrics = {
        "valid": {k: float(v) for k, v in (epoch_log.best or {}).items()} or {"ndcg@10": float(best_valid)},
        "test": {k: float(v) for k, v in test_result.items()},
        "epochs_run": epoch_log.epochs,
        "best_epoch": epoch_log.best_epoch,
        "stopped_early": epoch_log.epochs < rconfig["epochs"],
        "valid_curve": epoch_log.curve,
        "anomaly_mode": epoch_log.anomaly_mode,
        "amp": bool(rconfig["enable_amp"]),
        "threads": threads,
        "dropout_kernel": config.dropout_kernel,
        "train_seconds": round(train_seconds, 1),
        "seconds_per_epoch": round(train_seconds / max(epoch_log.epochs, 1), 1),
        "train_sequences": len(train_data.dataset),
        "protocol": "RecBole full ranking over all items; valid target = last train item, "
        "test target = first held-out item with the whole train window as context",
    }
    artifacts.write_json(out / "recbole_metrics.json", metrics)
    log.info(
        "%s: %d epochs in %.0fs; RecBole test NDCG@10 %.4f, HR@10 %.4f",
        config.model, epoch_log.epochs, train_seconds, metrics["test"].get("ndcg@10", float("nan")),
        metrics["test"].get("hit@10", float("nan")),
    )
    arrays = {n: artifacts.file_digest(out / n) for n in ("user_repr.npy", "item_emb.npy")}
    return {"recbole_metrics": metrics, "model_sha256": model_sha256, "array_digests": arrays}


def _interactive() -> bool:
    """RecBole's own per-batch tqdm bars only on a terminal (they would flood a log file)."""
    import sys

    return sys.stderr.isatty()


class _EpochLogger:
    """RecBole's fit callback: one line per epoch with the valid result, elapsed time and an ETA.

    RecBole's logger is silenced; this is what a user sees while a backbone trains. Two ETAs: the
    time left if no better epoch comes (early stopping ends the run then) and at the epoch cap.
    """

    def __init__(self, trainer, max_epochs: int, patience: int):
        self.trainer, self.max_epochs, self.patience = trainer, max_epochs, patience
        self.epochs, self.best, self.best_epoch, self.curve = 0, None, 0, []
        self.anomaly_mode = False
        self.t0 = time.perf_counter()

    def __call__(self, epoch_idx, valid_score):
        import torch

        self.epochs = epoch_idx + 1
        self.curve.append(round(float(valid_score), 6))
        self.anomaly_mode = self.anomaly_mode or torch.is_anomaly_enabled()
        if self.trainer.best_valid_score == valid_score:
            self.best, self.best_epoch = {"ndcg@10": valid_score}, self.epochs
        elapsed = time.perf_counter() - self.t0
        per_epoch = elapsed / self.epochs
        # RecBole stops once `patience` + 1 epochs in a row fail to reach the best
        stop_in = min(self.max_epochs, self.best_epoch + self.patience + 1) - self.epochs
        log.info(
            "epoch %d/%d: valid NDCG@10 %.4f (best %.4f at epoch %d), %.1f s/epoch, elapsed %.0f s; "
            "%.0f s left if no better epoch comes, %.0f s at the epoch cap",
            self.epochs, self.max_epochs, valid_score, self.trainer.best_valid_score, self.best_epoch,
            per_epoch, elapsed, stop_in * per_epoch, (self.max_epochs - self.epochs) * per_epoch,
        )


def _check_interface(model, name: str) -> None:
    if not hasattr(model, "item_embedding") or not hasattr(model, "forward"):
        raise ConfigError(
            f"backbone {name!r} exposes no item_embedding / sequence representation; "
            f"supported: {list(SUPPORTED_MODELS)}"
        )


def _item_embeddings(model):
    return model.item_embedding.weight


def _user_representations(model, split: Split, rdata, max_len: int, device) -> np.ndarray:
    """forward(item_seq, item_seq_len) over each user's whole train window (the fusion context)."""
    import torch

    ds = split.dataset
    rb_items = np.asarray(rdata.token2id(rdata.iid_field, list(ds.item_ids)))
    hidden = _item_embeddings(model).shape[1]
    out = np.zeros((ds.n_users, hidden), dtype=np.float32)
    users = np.flatnonzero(split.n_train > 0)
    for start in range(0, len(users), 1024):
        batch = users[start : start + 1024]
        seqs = [rb_items[split.train_items(u)[-max_len:]] for u in batch]
        lens = np.array([len(s) for s in seqs])
        mat = np.zeros((len(batch), max_len), dtype=np.int64)
        for r, s in enumerate(seqs):
            mat[r, : len(s)] = s  # RecBole sequences are left-aligned, padded with 0 on the right
        rep = model.forward(torch.as_tensor(mat, device=device), torch.as_tensor(lens, device=device))
        out[batch] = rep.detach().cpu().numpy()
    return out


def load_recbole_model(folder: Path, split: Split, config: BackboneConfig):
    """Rebuild the trained RecBole model and dataset from a backbone folder (for the fused wrapper).

    Returns (model, recbole_dataset, recbole_config, test_dataloader).
    """
    from fusion.recbole_compat import import_recbole, quiet_recbole

    import_recbole()
    with quiet_recbole():
        return _load_recbole_model(folder, split, config)


def _load_recbole_model(folder: Path, split: Split, config: BackboneConfig):
    from fusion.recbole_compat import load_checkpoint

    rconfig, rdata, (_, _, test_data), model = prepare_recbole(split, Path(folder) / "recbole", config, Path(folder))
    manifest = artifacts.read_manifest(folder) if artifacts.is_complete(folder) else {}
    state = load_checkpoint(Path(folder) / "model.pth", manifest.get("model_sha256"), map_location=rconfig["device"])
    model.load_state_dict(state["state_dict"])
    model.eval()
    return model, rdata, rconfig, test_data
