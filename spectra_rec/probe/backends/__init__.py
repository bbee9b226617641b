"""Inference backends: the few model operations every readout is built from.

A backend scores :class:`Prompt` objects (a shared, cacheable ``prefix`` plus a per-query
``suffix``, both token ids) with three operations:

- ``next_token_logprobs(prompts, token_ids)``: log-probabilities of ``token_ids`` at the
  position right after ``prefix + suffix`` -> array (n_prompts, n_token_ids);
- ``continuation_logprobs(prompts, continuations)``: sum of log-probabilities of each
  continuation's tokens after its prompt -> array (n_prompts,);
- ``generate(prompts, max_new_tokens, stop_ids)``: greedy decoding -> list of token-id lists.

Prompts that share a prefix should be passed consecutively: the HF backend encodes the
prefix once and reuses its KV cache; vLLM's automatic prefix caching does the same by block.
Backends are registered by name; heavy libraries are imported only when one is built.
"""

from __future__ import annotations

from spectra_rec.errors import ConfigError
from spectra_rec.probe.backends.base import Backend, Prompt


def _hf(model, tokenizer, **options):
    from spectra_rec.probe.backends.hf import HFBackend

    return HFBackend(model, tokenizer, **options)


def _vllm(model, tokenizer, **options):
    from spectra_rec.probe.backends.vllm import VLLMBackend

    return VLLMBackend(model, tokenizer, **options)


BACKENDS = {"hf": _hf, "vllm": _vllm}
"""name -> factory(model, tokenizer, **options)."""


def make_backend(name: str, model, tokenizer, **options) -> Backend:
    """Build the backend registered as ``name`` (``hf``: a loaded model; ``vllm``: a model path)."""
    if name not in BACKENDS:
        raise ConfigError(f"unknown backend {name!r}; registered: {sorted(BACKENDS)}")
    return BACKENDS[name](model, tokenizer, **options)


__all__ = ["BACKENDS", "Backend", "Prompt", "make_backend"]
