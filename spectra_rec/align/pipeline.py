"""The alignment stage end to end: CPT then LoRA SFT, cached under ``runs/align/{cpt,sft}/<hash>``.

``align(data, AlignConfig(), runs)`` returns the SFT folder (or the CPT folder with
``stage="cpt"``); ``load_aligned`` reads it back. Text comes from the train windows only
(:mod:`spectra_rec.text.corpus`). A seeded ``val_fraction`` of the users is kept out of both
CPT and SFT; their train-window text gives the validation (held-out users) loss.

Stage semantics: ``cpt`` = CPT only (for the from-scratch model: its pretraining);
``both`` = CPT then SFT; ``sft`` = SFT without CPT on ``base_model`` (the SFT-only ablation of
the paper's Appendix G). The from-scratch model is random before CPT, so with it ``sft``
behaves like ``both``.

Training writes checkpoints into ``runs/align/<stage>/.<hash>.work/``; an interrupted run resumes
from there, and the finished folder appears atomically (``artifacts.run_stage``). Under
torchrun / accelerate every rank trains; the main process writes the folder.
"""

from __future__ import annotations

import logging
import os
import resource
import shutil
import time
from dataclasses import asdict, replace
from pathlib import Path

import numpy as np

from spectra_rec import artifacts
from spectra_rec.align.config import STAGES, AlignConfig
from spectra_rec.align.train import resolve_bf16
from spectra_rec.errors import ConfigError
from spectra_rec.text import corpus as C
from spectra_rec.text import templates as T

log = logging.getLogger(__name__)


# ---------------------------------------------------------------------------------------------
# Inputs
# ---------------------------------------------------------------------------------------------


def resolve_data(data):
    """(Dataset, Split) from a DataConfig, a dataset name or directory, a Dataset, or a (Dataset, Split) pair."""
    from spectra_rec.data import Dataset, Split, load_dataset, split_dataset

    if isinstance(data, tuple) and len(data) == 2 and isinstance(data[1], Split):
        return data
    if isinstance(data, Split):
        return data.dataset, data
    if isinstance(data, Dataset):
        return data, split_dataset(data)
    if isinstance(data, (str, Path)):
        ds = load_dataset(data)
        return ds, split_dataset(ds)
    if hasattr(data, "dataset") and hasattr(data, "split_ratio"):  # spectra_rec.data.stage.DataConfig
        ds = load_dataset(data.dataset, category_field=data.category_field, taxonomy=getattr(data, "taxonomy", None))
        return ds, split_dataset(ds, data.split_ratio)
    raise ConfigError(f"align: cannot read data from {type(data).__name__}; pass a DataConfig, a name, or a Dataset")


def data_fingerprint(ds, split) -> dict:
    """Identity of the training data: source file digests, split ratio, category field."""
    fp = {"name": ds.name, "files": ds.input_digests(), "split_ratio": split.ratio, "category_field": ds.category_field,
          "users": ds.n_users, "items": ds.n_items, "interactions": ds.n_interactions, "K": ds.K}
    fp["hash"] = artifacts.config_hash(fp)
    return fp


def select_users(split, config: AlignConfig) -> tuple[np.ndarray, np.ndarray]:
    """(training users, validation users): a seeded sample of ``max_users``, then a seeded validation share."""
    rng = np.random.default_rng(config.seed)
    users = np.flatnonzero(split.n_train > 0)
    if config.max_users is not None and config.max_users < len(users):
        users = np.sort(rng.choice(users, size=config.max_users, replace=False))
    perm = rng.permutation(users)
    n_val = int(round(config.val_fraction * len(users)))
    if config.val_fraction > 0:
        n_val = max(1, n_val)
    return np.sort(perm[n_val:]), np.sort(perm[:n_val])


BASE_MODEL_FILES = ("*.json", "*.safetensors", "*.bin", "*.model", "*.txt", "*.jinja", "*.py", "*.tiktoken")
"""Files of a base model folder whose contents change what it computes: config, weights, tokenizer, code."""


def base_fingerprint(config: AlignConfig, memo: Path | None = None) -> dict:
    """Identity of the base model: the sha256 of every weight, tokenizer, config and code file.

    Fine-tuning a base model in place changes the weights and so the key. Hashing streams each
    file (constant memory); with ``memo`` (a JSON file under ``runs/``) a digest is reused while
    the file's size and modification time are unchanged, so a warm rerun on an 8B model does not
    re-read 16 GB.
    """
    if config.base_model is None:
        return {"kind": "scratch", "model": config.model.to_dict(), "vocab_size": config.vocab_size}
    path = Path(config.base_model)
    files = sorted({f for pat in BASE_MODEL_FILES for f in path.glob(pat) if f.is_file()})
    digests = _memo_digests(files, memo)
    return {"kind": "hf", "path": str(path.resolve()), "files": {f.name: digests[f] for f in files}}


def _memo_digests(files: list[Path], memo: Path | None) -> dict[Path, str]:
    import json

    known = {}
    if memo is not None and memo.exists():
        try:
            known = json.loads(memo.read_text())
        except (OSError, ValueError):
            known = {}  # a damaged memo only costs a re-hash
    out, changed = {}, False
    for f in files:
        st = f.stat()
        key = f"{f.resolve()}|{st.st_size}|{st.st_mtime_ns}"
        if key not in known:
            known[key] = artifacts.file_sha256(f)
            changed = True
        out[f] = known[key]
    if memo is not None and changed:
        artifacts.write_json(memo, known)
    return out


# ---------------------------------------------------------------------------------------------
# Stage runner: train in a stable work folder (resumable), publish atomically
# ---------------------------------------------------------------------------------------------


def _dist():
    """(is_main, barrier) for torchrun / accelerate launches; trivial in a single process."""
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return True, lambda: None
    import torch
    from accelerate import PartialState

    # cpu=True on a machine without CUDA: accelerate then sets up MULTI_CPU (gloo). PartialState is a
    # process-wide singleton that the Trainer reuses, and a first PartialState() without it on CPU
    # is a non-distributed state: every rank would think it is the main process and train alone.
    state = PartialState(cpu=not torch.cuda.is_available())
    return state.is_main_process, state.wait_for_everyone


def _run(root: Path, stage: str, config: dict, train_fn, fresh: bool, seed: int) -> Path:
    final = artifacts.stage_dir(root, stage, config)
    if artifacts.is_complete(final) and not fresh:
        log.info("%s: reusing %s", stage, final)
        return final
    is_main, barrier = _dist()
    work = final.with_name(f".{final.name}.work")
    if fresh and is_main:
        shutil.rmtree(work, ignore_errors=True)
    barrier()
    # Every rank trains (the Trainer syncs them); only the main process's outputs are published,
    # the others write to a scratch folder so that no two processes write the same file.
    out = work / "out" if is_main else work / f"scratch-rank{os.environ.get('RANK', '0')}"
    t0 = time.perf_counter()
    extra = train_fn(work, out)
    extra["seconds"] = round(time.perf_counter() - t0, 3)  # the stage's own time (run_stage only moves files)
    barrier()  # every rank has finished writing under work/ before the main process publishes and deletes it
    if is_main:
        def build(tmp: Path) -> dict:
            for p in out.iterdir():
                shutil.move(str(p), str(tmp / p.name))
            return extra | {"peak_rss_mb": peak_rss_mb()}

        artifacts.run_stage(root, stage, config, build, fresh=True, seed=seed)
        shutil.rmtree(work, ignore_errors=True)
    barrier()
    return final


def peak_rss_mb() -> float:
    """Peak resident memory of this process (ru_maxrss is KiB on Linux)."""
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)


# ---------------------------------------------------------------------------------------------
# Stages
# ---------------------------------------------------------------------------------------------


def _common(ds, split, config: AlignConfig, users, val_users, runs: Path | None = None) -> dict:
    memo = Path(runs) / "align" / "base-digests.json" if runs is not None else None
    return {
        "data": data_fingerprint(ds, split),
        "template_version": T.TEMPLATE_VERSION,
        "base": base_fingerprint(config, memo),
        "seed": config.seed,
        "max_users": config.max_users,
        "val_fraction": config.val_fraction,
        "max_length": config.max_length,
        "users_digest": artifacts.config_hash({"train": users.tolist(), "val": val_users.tolist()}),
        # precision changes the trained weights, and the default resolves per machine: the resolved value
        "bf16": resolve_bf16(config.bf16),
        # checkpointing: in the key only when set, so that folders cached before the option keep their hash
        **({"gradient_checkpointing": True} if config.gradient_checkpointing else {}),
        # DDP multiplies the effective batch by the number of processes: a different model
        **({"world_size": _world_size()} if _world_size() > 1 else {}),
    }


def _world_size() -> int:
    return int(os.environ.get("WORLD_SIZE", "1"))


def _users_summary(users, val_users) -> dict:
    return {"train": int(len(users)), "val": int(len(val_users))}


def _manifest_common(tokenizer, ds, stage_config: dict, users, val_users) -> dict:
    """Manifest entries both stages record: tokenizer, answer-token ids, data identity, template, users."""
    from spectra_rec.align.tokenizer import check_single_tokens, token_cost

    return {
        "tokenizer": {
            "class": type(tokenizer).__name__,
            "name_or_path": str(getattr(tokenizer, "name_or_path", "")),
            "size": len(tokenizer),
            "pad_token_id": tokenizer.pad_token_id,
            "bos_token_id": tokenizer.bos_token_id,
            "eos_token_id": tokenizer.eos_token_id,
            "category_token_cost": token_cost(tokenizer, ds.categories),
        },
        "verbalizer_ids": check_single_tokens(tokenizer, T.Verbalizers().all()),
        "letter_ids": check_single_tokens(tokenizer, T.ANSWER_LETTERS),
        "data": stage_config["data"],
        "template_version": T.TEMPLATE_VERSION,
        "users": _users_summary(users, val_users),
    }


def cpt_stage_config(ds, split, config: AlignConfig, users, val_users, runs: Path | None = None) -> dict:
    return _common(ds, split, config, users, val_users, runs) | {
        "stage": "cpt",
        "cpt_mode": config.resolved_cpt_mode,
        "corpus": asdict(config.corpus),
        "train": asdict(config.cpt_train),
        "cpt_lora": config.to_dict()["cpt_lora"] if config.resolved_cpt_mode == "lora" else None,
        "trust_remote_code": config.trust_remote_code,
    }


def run_cpt(ds, split, config: AlignConfig, runs: Path, fresh: bool, device: str | None = None) -> Path:
    users, val_users = select_users(split, config)
    stage_config = cpt_stage_config(ds, split, config, users, val_users, runs)

    def train_fn(work: Path, out: Path) -> dict:
        from spectra_rec.align.model import build_tiny_qwen3, load_base_model
        from spectra_rec.align.tokenizer import build_tokenizer
        from spectra_rec.align.train import pack_documents, train

        docs = C.cpt_documents(ds, split, users, config.corpus, seed=config.seed)
        val_docs = C.cpt_documents(ds, split, val_users, _no_items(config.corpus), seed=config.seed)
        if config.base_model is None:
            tokenizer = build_tokenizer(
                C.tokenizer_texts(ds, split, users, config.corpus), vocab_size=config.vocab_size,
                extra_words=ds.categories, model_max_length=config.model.max_position_embeddings,
            )
            model = build_tiny_qwen3(tokenizer, config.model, seed=config.seed)
            if device:
                model.to(device)
        else:
            import torch

            dtype = torch.float32 if config.resolved_cpt_mode == "full" else None
            model, tokenizer = load_base_model(config.base_model, dtype=dtype, device=device,
                                               trust_remote_code=config.trust_remote_code)
        common = _manifest_common(tokenizer, ds, stage_config, users, val_users)
        if config.resolved_cpt_mode == "lora":
            model = _peft(model, config.cpt_lora, config.seed)
        train_set = pack_documents(tokenizer, docs, config.max_length)
        val_set = pack_documents(tokenizer, val_docs, config.max_length)
        log.info("CPT corpus: %d documents -> %d blocks of %d tokens (%d tokens); validation %d blocks",
                 len(docs), len(train_set), config.max_length, train_set.n_tokens, len(val_set))
        summary = train(model, tokenizer, train_set, {"val": val_set}, config.cpt_train, work, config.seed,
                        bf16=config.bf16, gradient_checkpointing=config.gradient_checkpointing)
        out.mkdir(parents=True, exist_ok=True)
        if config.resolved_cpt_mode == "lora":
            from spectra_rec.align.io import save_adapter

            files = save_adapter(model, out / "adapter")
            weights = "adapter"
        else:
            model.save_pretrained(str(out / "model"), safe_serialization=True)
            tokenizer.save_pretrained(str(out / "model"))
            files = {p.name: artifacts.file_digest(p) for p in sorted((out / "model").glob("*.safetensors"))}
            weights = "model"
        tokenizer.save_pretrained(str(out / "tokenizer"))
        base = {"kind": "scratch"} if config.base_model is None else {"kind": "hf", "path": str(Path(config.base_model).resolve())}
        return {
            "kind": "cpt",
            "base": base | {"weights": weights},
            **common,
            "corpus": {"documents": len(docs), "blocks": len(train_set), "tokens": train_set.n_tokens,
                       "val_blocks": len(val_set)},
            "training": summary,
            "files": files,
        }

    return _run(Path(runs) / "align", "cpt", stage_config, train_fn, fresh, config.seed)


def _no_items(corpus_config):
    return replace(corpus_config, include_items=False)


def _peft(model, lora, seed: int):
    from peft import get_peft_model

    from spectra_rec.align.model import seeded

    with seeded(seed):
        model = get_peft_model(model, lora.peft_config())
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    total = sum(p.numel() for p in model.parameters())
    log.info("LoRA: %d trainable of %d parameters (%.2f%%)", trainable, total, 100 * trainable / total)
    return model


def prompt_budget(tokenizer, ds, config: AlignConfig) -> int:
    """Tokens left for the history prefix once the longest question and answer are reserved."""
    questions = [T.name_question(), T.dg_question(config.sft.dg_k)] + [T.yes_no_question(c) for c in ds.categories]
    questions += [T.choice_question([ds.categories[k] for k in ch]) for ch in T.choice_blocks(ds.K)]
    for l1, kids in (ds.taxonomy or {}).items():  # the hierarchical probe's questions (SFT asks them too)
        questions += [T.yes_no_question(l1)] + [T.conditional_yes_no_question(l1, c) for c in kids]
    q = max(len(tokenizer(x, add_special_tokens=False)["input_ids"]) for x in questions)
    names = sorted((len(tokenizer(T.answer(c), add_special_tokens=False)["input_ids"]) for c in ds.categories),
                   reverse=True)
    a = sum(names[: config.sft.dg_k]) + 2 * config.sft.dg_k
    budget = config.max_length - q - a - 4  # bos, eos, margin
    if budget < 32:
        raise ConfigError(
            f"AlignConfig.max_length={config.max_length} leaves {budget} tokens for the history after the longest "
            f"question ({q}) and answer ({a}); raise max_length"
        )
    return budget


def make_fit(tokenizer, budget: int):
    """``fit(dataset, user, items, max_items, summary=False)`` keeping the most recent items within ``budget`` prefix tokens."""

    def count(text: str) -> int:
        return len(tokenizer(text)["input_ids"])

    def fit(dataset, user, items, max_items, summary=False):
        return T.fit_history_prefix(dataset, user, items, count, budget, max_items, summary)

    return fit


LATER_SFT_OPTIONS = ("history_summary", "target_lift")
"""SFTConfig fields that joined the cache key after folders were cached: left out of it while off."""


def sft_stage_config(ds, split, config: AlignConfig, users, val_users, cpt_dir: Path | None,
                     runs: Path | None = None) -> dict:
    return _common(ds, split, config, users, val_users, runs) | {
        "stage": "sft",
        "cpt": cpt_dir.name if cpt_dir is not None else None,
        # options added later (off by default) are in the key only when set, so that folders cached
        # before them keep their hash
        "sft": {k: v for k, v in config.sft.to_dict().items() if k not in LATER_SFT_OPTIONS or v},
        "train": asdict(config.sft_train),
        "sft_mode": config.resolved_sft_mode,
        "lora": config.to_dict()["lora"] if config.resolved_sft_mode == "lora" else None,
        "trust_remote_code": config.trust_remote_code,
    }


def run_sft(ds, split, config: AlignConfig, runs: Path, fresh: bool, cpt_dir: Path | None,
            device: str | None = None) -> Path:
    users, val_users = select_users(split, config)
    stage_config = sft_stage_config(ds, split, config, users, val_users, cpt_dir, runs)
    sft_root = artifacts.stage_dir(Path(runs) / "align", "sft", stage_config)

    def train_fn(work: Path, out: Path) -> dict:
        from spectra_rec.align.io import load_stage_model, read_align_manifest, save_adapter
        from spectra_rec.align.model import load_base_model
        from spectra_rec.align.train import encode_examples, train

        if cpt_dir is not None:
            model, tokenizer, cpt_manifest = load_stage_model(cpt_dir, device=device, merge=True,
                                                              trust_remote_code=config.trust_remote_code)
            base = {"kind": "cpt", "dir": os.path.relpath(cpt_dir, sft_root)}
            cpt_summary = _cpt_digest(read_align_manifest(cpt_dir))
        else:
            model, tokenizer = load_base_model(config.base_model, device=device,
                                               trust_remote_code=config.trust_remote_code)
            base = {"kind": "hf", "path": str(Path(config.base_model).resolve())}
            cpt_summary = None
        common = _manifest_common(tokenizer, ds, stage_config, users, val_users)
        budget = prompt_budget(tokenizer, ds, config)
        fit = make_fit(tokenizer, budget)
        points = list(C.reference_points(ds, split, users, config.sft, seed=config.seed, fit=fit))
        val_points = list(C.reference_points(ds, split, val_users, config.sft, seed=config.seed + 1, fit=fit))
        examples = [C.Example(rp.user, fmt, rp.prefix + q, a, rp.dropped, rp.ref)
                    for rp in points for fmt, q, a in rp.questions]
        val_examples = [C.Example(rp.user, fmt, rp.prefix + q, a, rp.dropped, rp.ref)
                        for rp in val_points for fmt, q, a in rp.questions]
        if not examples:
            raise ConfigError("SFT: no examples (every train window is shorter than min_context + min_future)")
        eval_sets = {"val": encode_examples(tokenizer, val_examples, config.max_length)}
        for fmt in C.FORMATS:
            rows = [r for r in eval_sets["val"].rows if r["format"] == fmt]
            if rows:
                eval_sets[f"val_{fmt}"] = type(eval_sets["val"])(rows)
        packed = bool(config.sft.readout_loss)
        extra_train = {}
        if packed:
            from spectra_rec.align import readout_sft as R

            spec = R.readout_spec(tokenizer, ds)
            history = config.sft.history_weight > 0
            train_set = R.pack_reference_points(tokenizer, spec, points, config.sft.readout_loss, config.max_length,
                                                history=history)
            # the readouts' KL alone on held-out users: the packed rows without their answer tokens
            val_reads = [replace(rp, questions=()) for rp in val_points]
            if val_reads:
                eval_sets["val_readouts"] = R.pack_reference_points(tokenizer, spec, val_reads,
                                                                    config.sft.readout_loss, config.max_length,
                                                                    history=history)
            extra_train = {"collator": R.PackedCollator(tokenizer.pad_token_id),
                           "trainer_class": lambda base: R.trainer_class(spec, config.sft.readout_weight, base,
                                                                         config.sft.history_weight)}
        else:
            train_set = encode_examples(tokenizer, examples, config.max_length)
        dropped = np.array([e.dropped for e in examples])
        formats = {f: int(sum(e.format == f for e in examples)) for f in C.FORMATS}
        log.info("SFT: %d examples (%s) in %d rows, %d tokens, %d answer tokens; readout loss %s on %d reference "
                 "points; validation %d examples", len(examples), formats, len(train_set), train_set.n_tokens,
                 train_set.n_label_tokens, list(config.sft.readout_loss), len(points) if packed else 0,
                 len(val_examples))
        model.train()
        full = config.resolved_sft_mode == "full"
        if not full:
            model = _peft(model, config.lora, config.seed)
        trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
        summary = train(model, tokenizer, train_set, eval_sets, config.sft_train, work, config.seed,
                        group_by_length=True, bf16=config.bf16, gradient_checkpointing=config.gradient_checkpointing,
                        **extra_train)
        out.mkdir(parents=True, exist_ok=True)
        if full:
            model.save_pretrained(str(out / "model"), safe_serialization=True)
            files = {p.name: artifacts.file_digest(p) for p in sorted((out / "model").glob("*.safetensors"))}
        else:
            files = save_adapter(model, out / "adapter")
        tokenizer.save_pretrained(str(out / "tokenizer"))
        return {
            "kind": "sft",
            "base": base | {"weights": "model" if full else "adapter"},
            **common,
            "examples": {"train": len(examples), "rows": len(train_set), "val": len(val_examples), "formats": formats,
                         "reference_points": len(points), "readout_loss": list(config.sft.readout_loss),
                         "tokens": train_set.n_tokens, "answer_tokens": train_set.n_label_tokens,
                         "trainable_parameters": int(trainable)},
            "context": {"max_items": config.sft.context_items, "history_summary": config.sft.history_summary,
                        "prefix_token_budget": budget,
                        "examples_with_dropped_items": int((dropped > 0).sum()),
                        "items_dropped_total": int(dropped.sum())},
            "training": summary,
            "cpt": cpt_summary,
            "files": files,
        }

    return _run(Path(runs) / "align", "sft", stage_config, train_fn, fresh, config.seed)


def _cpt_digest(manifest: dict) -> dict:
    tr = manifest.get("training", {})
    return {"hash": manifest.get("hash"), "seconds": tr.get("seconds"), "train_loss_last10_mean": tr.get("train_loss_last10_mean"),
            "eval_loss_before": tr.get("eval_loss_before"), "eval_loss_after": tr.get("eval_loss_after")}


def align(data, config: AlignConfig | None = None, runs: Path = Path("runs"), fresh: bool = False,
          stage: str = "both", device: str | None = None) -> Path:
    """Run (or reuse) the alignment stages; returns the SFT folder (``stage='cpt'``: the CPT folder).

    ``data``: a ``DataConfig``, a dataset name or directory, a ``Dataset`` or a ``(Dataset, Split)``.
    ``fresh`` recomputes every stage it runs.
    """
    if stage not in STAGES:
        raise ConfigError(f"align stage must be one of {list(STAGES)}, got {stage!r}")
    config = config or AlignConfig()
    ds, split = resolve_data(data)
    cpt_dir = None
    if stage in ("cpt", "both") or config.base_model is None:
        cpt_dir = run_cpt(ds, split, config, runs, fresh, device)
        if stage == "cpt":
            return cpt_dir
    return run_sft(ds, split, config, runs, fresh, cpt_dir, device)
