"""The default small Qwen3 model (random init, trained from scratch here) and loading of any local causal LM."""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass
from pathlib import Path

from spectra_rec.errors import ConfigError, require_positive

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ModelConfig:
    """Shape of the from-scratch Qwen3 model (the CPU default)."""

    hidden_size: int = 128
    """Width of the residual stream."""
    num_layers: int = 4
    """Number of decoder layers."""
    num_heads: int = 2
    """Query heads; num_heads * head_dim need not equal hidden_size in Qwen3."""
    num_kv_heads: int = 1
    """Key/value heads (grouped-query attention); must divide num_heads."""
    head_dim: int = 64
    """Per-head width (64 or 128 keeps vLLM attention backends happy)."""
    intermediate_size: int = 512
    """MLP width (SwiGLU: gate, up, down projections)."""
    max_position_embeddings: int = 1024
    """Longest sequence the rotary embedding is configured for (the tokenizer's model_max_length)."""
    rope_theta: float = 10000.0
    """Rotary base frequency."""
    tie_word_embeddings: bool = True
    """Share input embeddings and output head (Qwen3Config defaults to False: set explicitly)."""

    def __post_init__(self):
        require_positive(
            self, "hidden_size", "num_layers", "num_heads", "num_kv_heads", "head_dim", "intermediate_size",
            "max_position_embeddings",
        )
        if self.num_heads % self.num_kv_heads:
            raise ConfigError(
                f"ModelConfig.num_kv_heads ({self.num_kv_heads}) must divide num_heads ({self.num_heads})"
            )

    def to_dict(self) -> dict:
        return asdict(self)


def qwen3_config(tokenizer, cfg: ModelConfig):
    """A ``Qwen3Config`` for ``cfg`` whose vocabulary and special ids come from ``tokenizer``."""
    from transformers import Qwen3Config

    return Qwen3Config(
        vocab_size=len(tokenizer),
        hidden_size=cfg.hidden_size,
        intermediate_size=cfg.intermediate_size,
        num_hidden_layers=cfg.num_layers,
        num_attention_heads=cfg.num_heads,
        num_key_value_heads=cfg.num_kv_heads,
        head_dim=cfg.head_dim,
        max_position_embeddings=cfg.max_position_embeddings,
        rope_theta=cfg.rope_theta,
        tie_word_embeddings=cfg.tie_word_embeddings,
        pad_token_id=tokenizer.pad_token_id,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        attention_dropout=0.0,
        use_cache=True,
    )


def build_tiny_qwen3(tokenizer, cfg: ModelConfig | None = None, seed: int = 0):
    """A randomly initialized ``Qwen3ForCausalLM`` (float32) sized by ``cfg``; same seed, same weights."""
    import torch
    from transformers import Qwen3ForCausalLM

    cfg = cfg or ModelConfig()
    config = qwen3_config(tokenizer, cfg)
    with seeded(seed):
        model = Qwen3ForCausalLM(config)
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    model.generation_config.bos_token_id = tokenizer.bos_token_id
    n = sum(p.numel() for p in model.parameters())
    log.info("tiny qwen3: %.2fM parameters (%s)", n / 1e6, cfg)
    return model.to(torch.float32)


class seeded:
    """Fork the torch RNG, seed it, restore it on exit (library code leaves global state alone)."""

    def __init__(self, seed: int):
        self.seed = seed

    def __enter__(self):
        import torch

        self._fork = torch.random.fork_rng(devices=[])
        self._fork.__enter__()
        torch.manual_seed(self.seed)

    def __exit__(self, *exc):
        return self._fork.__exit__(*exc)


def default_device() -> str:
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def native_cpu_bf16() -> bool:
    """Whether this CPU computes bfloat16 natively (AVX512-BF16 or AMX); elsewhere torch emulates it, slower than fp32."""
    import torch

    return bool(torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported())


def default_dtype(device: str):
    """bf16 on CUDA devices that support it, float32 otherwise."""
    import torch

    if str(device).startswith("cuda") and torch.cuda.is_available() and torch.cuda.is_bf16_supported():
        return torch.bfloat16
    return torch.float32


def resolve_dtype(dtype):
    import torch

    if dtype is None or isinstance(dtype, torch.dtype):
        return dtype
    names = {"bf16": torch.bfloat16, "bfloat16": torch.bfloat16, "fp16": torch.float16, "float16": torch.float16,
             "fp32": torch.float32, "float32": torch.float32}
    if dtype not in names:
        raise ConfigError(f"unknown dtype {dtype!r}; expected one of {sorted(names)}")
    return names[dtype]


def load_base_model(path_or_none: str | Path | None, dtype=None, device: str | None = None,
                    trust_remote_code: bool = False):
    """Load a local Hugging Face causal LM directory (model + tokenizer), bf16 + CUDA when available.

    ``path_or_none=None`` is not a model: the default tiny model is built by the training stage
    (it needs the corpus for its tokenizer); calling this with None raises a ConfigError.
    Remote code runs only with ``trust_remote_code=True``.
    """
    from transformers import AutoModelForCausalLM, AutoTokenizer

    if path_or_none is None:
        raise ConfigError("load_base_model needs a local model directory; the default tiny model is built, not loaded")
    path = Path(path_or_none)
    if not path.is_dir() or not (path / "config.json").exists():
        raise ConfigError(f"--base-model {str(path)!r} is not a local Hugging Face model directory (no config.json)")
    device = device or default_device()
    dtype = resolve_dtype(dtype) or default_dtype(device)
    tokenizer = AutoTokenizer.from_pretrained(path, trust_remote_code=trust_remote_code)
    if tokenizer.pad_token is None:
        # A collator masks pad-id labels: pad must not be eos. Add a dedicated pad token.
        tokenizer.add_special_tokens({"pad_token": "<|pad|>"})
        log.warning("%s: tokenizer had no pad token; added '<|pad|>' (embedding resized)", path)
    model = AutoModelForCausalLM.from_pretrained(path, dtype=dtype, trust_remote_code=trust_remote_code)
    if len(tokenizer) > model.get_input_embeddings().weight.shape[0]:
        model.resize_token_embeddings(len(tokenizer))
    if tokenizer.pad_token_id == tokenizer.eos_token_id:
        log.warning("%s: pad token equals eos; eos labels will be masked in SFT", path)
    model.config.pad_token_id = tokenizer.pad_token_id
    model.to(device)
    log.info("loaded %s (%s, %s, %.1fM parameters)", path, dtype, device,
             sum(p.numel() for p in model.parameters()) / 1e6)
    return model, tokenizer
