"""A very small random Qwen3 and its tokenizer, built from a dataset's text, for fast tests.

    model, tokenizer = tiny_model_and_tokenizer()            # a seeded synthetic dataset
    model, tokenizer = tiny_model_and_tokenizer(dataset)     # any loaded Dataset

The model is real (``Qwen3ForCausalLM``, 2 layers, hidden 64), random and untrained: it is
for code-path and invariant tests (shapes, cache parity, LoRA identity), not for quality.
The tokenizer is the toolkit's real one: verbalizers and answer letters are single tokens.

Probe tests use :func:`probe_test_model`: the same model with *sharpened* weights. Initialized
with std 0.02, the tiny model's next-token distributions are nearly flat and every category
scores almost the same, so a parity test would pass trivially; ``sharpen`` redraws its matrices
with a larger std (seeded), which keeps the architecture, the tokenizer and the code path, and
makes scores spread by O(1).
"""

from __future__ import annotations

import tempfile
from functools import lru_cache
from pathlib import Path

from spectra_rec.align.model import ModelConfig

TINY_MODEL = ModelConfig(
    hidden_size=64, num_layers=2, num_heads=2, num_kv_heads=1, head_dim=32, intermediate_size=128,
    max_position_embeddings=1024, tie_word_embeddings=True,
)
"""2 layers, hidden 64: about 0.1M parameters besides the embedding."""

TINY_VOCAB = 512


def tiny_dataset(seed: int = 0):
    """A small seeded synthetic dataset (60 users x 120 items, K = 6), loaded from a temporary folder."""
    from spectra_rec.data import load_dataset
    from spectra_rec.data.synthetic import SyntheticConfig, make_synthetic

    with tempfile.TemporaryDirectory(prefix="spectra-tiny-") as tmp:
        cfg = SyntheticConfig(n_users=60, n_items=120, n_l1=2, n_l2=3, mean_interactions=20, seed=seed)
        return load_dataset(make_synthetic(Path(tmp) / "tiny", cfg))


def tiny_tokenizer(dataset=None, vocab_size: int = TINY_VOCAB, seed: int = 0):
    """The toolkit tokenizer trained on ``dataset``'s train-window text (category names forced cheap)."""
    from spectra_rec.data import split_dataset

    dataset = dataset if dataset is not None else _cached_dataset(seed)
    return _tokenizer_for(dataset, split_dataset(dataset), vocab_size)


def _tokenizer_for(dataset, split, vocab_size: int):
    from spectra_rec.align.tokenizer import build_tokenizer
    from spectra_rec.text.corpus import tokenizer_texts

    return build_tokenizer(
        tokenizer_texts(dataset, split), vocab_size=vocab_size, extra_words=dataset.categories,
        model_max_length=TINY_MODEL.max_position_embeddings,
    )


@lru_cache(maxsize=4)
def _cached_dataset(seed: int):
    return tiny_dataset(seed)


def tiny_model_and_tokenizer(dataset=None, seed: int = 0, config: ModelConfig = TINY_MODEL,
                             vocab_size: int = TINY_VOCAB):
    """(``Qwen3ForCausalLM`` in eval mode, tokenizer); same dataset and seed, same weights and vocabulary."""
    from spectra_rec.align.model import build_tiny_qwen3

    tokenizer = tiny_tokenizer(dataset, vocab_size, seed)
    model = build_tiny_qwen3(tokenizer, config, seed=seed)
    model.eval()
    return model, tokenizer


def quick_align_config(**changes):
    """An AlignConfig that aligns the tiny model in seconds (4 CPT + 4 SFT steps on 40 users), for tests."""
    from spectra_rec.align.config import AlignConfig, LoraSettings, TrainConfig
    from spectra_rec.text.corpus import SFTConfig

    base = dict(
        model=TINY_MODEL, vocab_size=400, max_length=256, val_fraction=0.1, max_users=40,
        sft=SFTConfig(context_items=6, refs_per_user=2, examples_per_ref=2),
        cpt_train=TrainConfig(max_steps=4, batch_size=4, learning_rate=5e-3, logging_steps=1, save_steps=50),
        sft_train=TrainConfig(max_steps=4, batch_size=8, learning_rate=5e-2, logging_steps=1, save_steps=50),
        lora=LoraSettings(r=8, alpha=16, dropout=0.0),
    )
    return AlignConfig(**(base | changes))


# ---- probe test model ----------------------------------------------------------------
def sharpen(model, std: float = 0.3, seed: int = 0):
    """Redraw every weight matrix of ``model`` from N(0, std^2) (seeded; norms and biases kept)."""
    import torch

    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for _, p in sorted(model.named_parameters(), key=lambda kv: kv[0]):
            if p.dim() > 1:
                p.copy_(torch.randn(p.shape, generator=gen, dtype=torch.float32).to(p.dtype) * std)
    return model.eval()


def probe_test_model(dataset=None, seed: int = 0, std: float = 0.3, config=None):
    """(model, tokenizer): the toolkit's tiny Qwen3 for ``dataset`` with sharpened random weights.

    With ``dataset=None`` (the tiny synthetic dataset of this module) the pair
    is built once per process and shared: treat it as read-only.
    """
    if dataset is None and config is None:
        return _default(seed, std)
    model, tokenizer = tiny_model_and_tokenizer(dataset, seed=seed, config=config or TINY_MODEL)
    return sharpen(model, std, seed), tokenizer


@lru_cache(maxsize=2)
def _default(seed: int, std: float):
    model, tokenizer = tiny_model_and_tokenizer(None, seed=seed)
    return sharpen(model, std, seed), tokenizer


@lru_cache(maxsize=2)
def tiny_data(seed: int = 0):
    """(dataset, split) of the tiny synthetic dataset the default test model was built for."""
    from spectra_rec.data import split_dataset

    ds = tiny_dataset(seed)  # deterministic: the same data the default model's tokenizer was built on
    return ds, split_dataset(ds)
