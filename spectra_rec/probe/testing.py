"""A tiny random model whose logits actually differ between prompts, for probe tests and benchmarks.

The toolkit's tiny Qwen3 (``spectra_rec.testing.tiny``) is initialized with std 0.02, so its
next-token distributions are nearly flat and every category scores almost the same: a parity
test would pass trivially. ``sharpen`` redraws its matrices with a larger std (seeded), which
keeps the architecture, the tokenizer and the code path, and makes scores spread by O(1).
"""

from __future__ import annotations

from functools import lru_cache


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

    With ``dataset=None`` (the tiny synthetic dataset of ``spectra_rec.testing.tiny``) the pair
    is built once per process and shared: treat it as read-only.
    """
    if dataset is None and config is None:
        return _default(seed, std)
    from spectra_rec.testing.tiny import TINY_MODEL, tiny_model_and_tokenizer

    model, tokenizer = tiny_model_and_tokenizer(dataset, seed=seed, config=config or TINY_MODEL)
    return sharpen(model, std, seed), tokenizer


@lru_cache(maxsize=2)
def _default(seed: int, std: float):
    from spectra_rec.testing.tiny import tiny_model_and_tokenizer

    model, tokenizer = tiny_model_and_tokenizer(None, seed=seed)
    return sharpen(model, std, seed), tokenizer


@lru_cache(maxsize=2)
def tiny_data(seed: int = 0):
    """(dataset, split) of the tiny synthetic dataset the default test model was built for."""
    from spectra_rec.data import split_dataset
    from spectra_rec.testing.tiny import tiny_dataset

    ds = tiny_dataset(seed)  # deterministic: the same data the default model's tokenizer was built on
    return ds, split_dataset(ds)
