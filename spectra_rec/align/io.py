"""Load what the alignment stages wrote: CPT models and SFT adapters (safetensors + manifest.json).

Folder layout (``runs/align/...``, one folder per configuration hash):

    cpt/<hash>/model/        full model (from-scratch or full CPT): safetensors + config + tokenizer
    cpt/<hash>/adapter/      CPT LoRA adapter over a base model (adapter_model.safetensors)
    cpt/<hash>/tokenizer/    tokenizer (always)
    sft/<hash>/adapter/      the SFT LoRA adapter (adapter_model.safetensors + adapter_config.json)
    sft/<hash>/model/        or the fully fine-tuned model (full SFT of the from-scratch model)
    sft/<hash>/tokenizer/    tokenizer (always)
    */manifest.json          base model, tokenizer, data hash, template version, seed, training curve

``load_aligned(dir)`` returns ``(model, tokenizer, manifest)`` for either kind of folder.
"""

from __future__ import annotations

import logging
import warnings
from pathlib import Path

from spectra_rec import artifacts
from spectra_rec.errors import ConfigError, DataError
from spectra_rec.text.templates import TEMPLATE_VERSION

log = logging.getLogger(__name__)

MANIFEST_KEYS = {
    "stage", "hash", "config", "seed", "created", "seconds", "versions", "kind", "base", "tokenizer", "data",
    "template_version", "users", "training", "cpt", "files", "peak_rss_mb", "verbalizer_ids", "letter_ids",
    "context", "examples", "corpus",
}


def read_align_manifest(path: Path) -> dict:
    path = Path(path)
    if not artifacts.is_complete(path):
        raise DataError(f"{path}: no manifest.json (not a finished align stage folder)")
    manifest = artifacts.read_manifest(path)
    unknown = sorted(set(manifest) - MANIFEST_KEYS)
    if unknown:
        warnings.warn(f"{path / artifacts.MANIFEST}: ignoring unknown key(s) {unknown} (newer version?)", stacklevel=2)
    if manifest.get("template_version") not in (None, TEMPLATE_VERSION):
        warnings.warn(
            f"{path}: trained with prompt templates {manifest.get('template_version')!r}, this code renders "
            f"{TEMPLATE_VERSION!r}; probe results may not match training",
            stacklevel=2,
        )
    return manifest


def load_tokenizer(path: Path):
    """The tokenizer saved in an align folder; a missing or unreadable one is a DataError naming the folder."""
    from transformers import AutoTokenizer

    path = Path(path)
    if not path.is_dir() or not any(path.iterdir()):
        raise DataError(f"{path}: tokenizer folder is missing or empty (an incomplete or damaged align folder)")
    try:
        return AutoTokenizer.from_pretrained(str(path))
    except (OSError, ValueError, TypeError, KeyError) as exc:
        raise DataError(f"{path}: cannot read the tokenizer ({type(exc).__name__}: {exc})") from None


def verify_files(folder: Path, recorded: dict | None, manifest_dir: Path) -> None:
    """Check each file of ``folder`` listed in the manifest's ``files`` against its recorded digest.

    A truncated or overwritten adapter otherwise fails deep inside safetensors (or, worse, loads).
    """
    for name, digest in (recorded or {}).items():
        f = Path(folder) / name
        if not f.exists():
            raise DataError(f"{f}: missing (listed in {Path(manifest_dir) / artifacts.MANIFEST})")
        if artifacts.file_digest(f) != digest:
            raise DataError(
                f"{f}: content does not match the digest recorded in {Path(manifest_dir) / artifacts.MANIFEST} "
                "(damaged or modified after the align stage wrote it)"
            )


def _resolve(stage_dir: Path, rel: str) -> Path:
    p = Path(rel)
    return p if p.is_absolute() else (Path(stage_dir) / p).resolve()


def load_stage_model(stage_dir: Path, device: str | None = None, dtype=None, merge: bool = True,
                     trust_remote_code: bool = False):
    """The model a stage folder describes, as a plain causal LM when ``merge`` (adapters folded in).

    CPT folder: the CPT model. SFT folder: the CPT model (or base) with the SFT adapter; with
    ``merge=False`` a ``PeftModel`` (adapter kept separate). Returns (model, tokenizer, manifest).
    ``trust_remote_code`` comes from the caller (a command-line flag) only, never from the
    folder's manifest: a folder written by someone else must not be able to run its own code.
    """
    from spectra_rec.align.model import default_device, default_dtype, load_base_model, resolve_dtype

    stage_dir = Path(stage_dir)
    manifest = read_align_manifest(stage_dir)
    kind = manifest.get("kind")
    device = device or default_device()
    trust = bool(trust_remote_code)
    if kind == "cpt":
        base = manifest["base"]
        if base["weights"] == "model":
            from transformers import AutoModelForCausalLM

            dtype = resolve_dtype(dtype) or (default_dtype(device) if base["kind"] == "hf" else None)
            verify_files(stage_dir / "model", manifest.get("files"), stage_dir)
            model = AutoModelForCausalLM.from_pretrained(
                str(stage_dir / "model"), dtype=dtype, trust_remote_code=trust
            )
            model.to(device)
        else:
            model, _ = load_base_model(base["path"], dtype=dtype, device=device, trust_remote_code=trust)
            verify_files(stage_dir / "adapter", manifest.get("files"), stage_dir)
            model = _with_adapter(model, stage_dir / "adapter", merge=True)
        tokenizer = load_tokenizer(stage_dir / "tokenizer")
    elif kind == "sft" and manifest["base"].get("weights") == "model":  # full SFT: the whole model
        from transformers import AutoModelForCausalLM

        model = AutoModelForCausalLM.from_pretrained(str(stage_dir / "model"), dtype=resolve_dtype(dtype))
        model.to(device)
        tokenizer = load_tokenizer(stage_dir / "tokenizer")
    elif kind == "sft":
        base = manifest["base"]
        if base["kind"] == "cpt":
            model, _, _ = load_stage_model(_resolve(stage_dir, base["dir"]), device, dtype, True, trust)
        else:
            model, _ = load_base_model(base["path"], dtype=dtype, device=device, trust_remote_code=trust)
        verify_files(stage_dir / "adapter", manifest.get("files"), stage_dir)
        model = _with_adapter(model, stage_dir / "adapter", merge=merge)
        tokenizer = load_tokenizer(stage_dir / "tokenizer")
    else:
        raise ConfigError(f"{stage_dir}: manifest kind {kind!r} is neither 'cpt' nor 'sft'")
    model.eval()
    return model, tokenizer, manifest


def _with_adapter(model, adapter_dir: Path, merge: bool):
    from peft import PeftModel

    if not (Path(adapter_dir) / "adapter_config.json").exists():
        raise DataError(f"{adapter_dir}: no adapter_config.json (an incomplete or damaged align folder)")
    try:
        peft_model = PeftModel.from_pretrained(model, str(adapter_dir), is_trainable=False)
    except (OSError, ValueError, RuntimeError, KeyError) as exc:  # safetensors raises its own error types too
        raise DataError(f"{adapter_dir}: cannot load the adapter ({type(exc).__name__}: {exc})") from None
    return peft_model.merge_and_unload() if merge else peft_model


def load_aligned(path: Path, device: str | None = None, dtype=None, merge: bool = False,
                 trust_remote_code: bool = False):
    """(model in eval mode, tokenizer, manifest) of an align folder (SFT: a ``PeftModel`` unless ``merge``).

    ``path`` is a stage folder (``runs/align/sft/<hash>`` or ``runs/align/cpt/<hash>``, the
    latter being the CPT-only model of the stage-wise analysis). The tokenizer's verbalizer
    and answer-letter ids are in ``manifest["verbalizer_ids"]`` / ``manifest["letter_ids"]``.
    """
    return load_stage_model(Path(path), device=device, dtype=dtype, merge=merge, trust_remote_code=trust_remote_code)


def save_adapter(peft_model, out_dir: Path) -> dict:
    """Write the adapter (safetensors + adapter_config.json); returns {file: sha256 prefix}."""
    out_dir = Path(out_dir)
    peft_model.save_pretrained(str(out_dir), safe_serialization=True)
    return {p.name: artifacts.file_digest(p) for p in sorted(out_dir.iterdir()) if p.is_file()}
