"""vLLM backend: a clear error without vllm/CUDA (runs everywhere); hf == vllm distributions (CUDA only)."""

from __future__ import annotations

import importlib.util

import numpy as np
import pytest

from spectra_rec.probe.backends import make_backend

HAS_VLLM = importlib.util.find_spec("vllm") is not None


def _cuda() -> bool:
    try:
        import torch

        return torch.cuda.is_available()
    except ImportError:
        return False


@pytest.mark.skipif(HAS_VLLM and _cuda(), reason="vllm and CUDA are present")
def test_missing_vllm_or_cuda_is_a_clear_error():
    with pytest.raises((ImportError, RuntimeError), match="--backend hf"):
        make_backend("vllm", "/nonexistent/model", None)


@pytest.mark.gpu
@pytest.mark.skipif(not (HAS_VLLM and _cuda()), reason="needs vllm and a CUDA GPU")
@pytest.mark.parametrize("readout", ["logit", "name", "choice"])
def test_hf_and_vllm_give_the_same_distributions(tmp_path, readout):
    from spectra_rec.align.model import ModelConfig
    from spectra_rec.probe import probe_prior
    from spectra_rec.probe.backends.hf import HFBackend
    from spectra_rec.probe.testing import probe_test_model, tiny_data

    ds, split = tiny_data()
    cfg = ModelConfig(hidden_size=128, num_layers=2, num_heads=2, num_kv_heads=1, head_dim=64,
                      intermediate_size=256, max_position_embeddings=1024)
    model, tok = probe_test_model(ds, config=cfg, std=0.1)
    path = tmp_path / "model"
    model.save_pretrained(path)
    tok.save_pretrained(path)
    hf = probe_prior(ds, split, model.to("cuda"), tok, readout, max_users=8, progress=False,
                     backend=HFBackend(model, tok))
    vl = probe_prior(ds, split, None, tok, readout, max_users=8, progress=False,
                     backend=make_backend("vllm", str(path), str(path), dtype="float32",
                                          gpu_memory_utilization=0.3, enforce_eager=True))
    assert np.abs(hf.probs - vl.probs).max() < 2e-3
