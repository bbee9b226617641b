"""``spectra-rec probe --backend vllm``: a real align folder, served merged (the ``runs/merged`` stage) and as
base + LoRA, equals the hf backend's table. Skips without vllm (``make test-vllm`` runs it on the CPU build)."""

from __future__ import annotations

import importlib.util
import json

import numpy as np
import pytest

HAS_VLLM = importlib.util.find_spec("vllm") is not None
pytestmark = [pytest.mark.vllm, pytest.mark.skipif(not HAS_VLLM, reason="needs vllm (make test-vllm)")]
TOL = 2e-3


def test_cli_serves_a_merged_align_folder_as_its_own_stage(synthetic_dir, tmp_path, capsys):
    """A real align folder -> ``spectra-rec probe --backend vllm --merge-lora``: same table as hf, merged model
    under runs/merged/<hash>/, the published align folder untouched."""
    from spectra_rec.align.pipeline import align
    from spectra_rec.cli import main
    from spectra_rec.priors.table import PriorTable
    from spectra_rec.testing.tiny import quick_align_config

    runs = tmp_path / "runs"
    sft = align(str(synthetic_dir), quick_align_config(sft_mode="lora"), runs)  # a --base-model's adapter path
    before = sorted(p.relative_to(sft) for p in sft.rglob("*"))
    common = ["--dataset", str(synthetic_dir), "--adapter", str(sft), "--max-users", "6", "--runs", str(runs),
              "--readout", "choice", "--no-progress"]
    assert main(["probe", *common, "--out", str(tmp_path / "hf.parquet")]) == 0
    assert main(["probe", *common, "--backend", "vllm", "--merge-lora", "--dtype", "fp32",
                 "--out", str(tmp_path / "vl.parquet")]) == 0
    assert main(["probe", *common, "--backend", "vllm", "--dtype", "fp32", "--out", str(tmp_path / "lora.parquet")]) == 0
    hf, vl, lora = (PriorTable.load(tmp_path / f"{n}.parquet") for n in ("hf", "vl", "lora"))
    assert vl.user_ids.tolist() == hf.user_ids.tolist() == lora.user_ids.tolist()
    merged_diff, lora_diff = np.abs(hf.probs - vl.probs).max(), np.abs(hf.probs - lora.probs).max()
    print(f"hf vs vllm on an align folder: merged {merged_diff:.1e}, base + LoRA {lora_diff:.1e}")
    assert merged_diff <= TOL
    assert lora_diff <= TOL  # base (the CPT model) + the SFT adapter via enable_lora
    merged = list((runs / "merged").glob("*/model/config.json"))
    assert len(merged) == 1 and json.loads((merged[0].parents[1] / "manifest.json").read_text())["kind"] == "merged"
    assert sorted(p.relative_to(sft) for p in sft.rglob("*")) == before  # nothing written into the align folder


def test_cli_serves_a_fully_fine_tuned_align_folder_directly(synthetic_dir, tmp_path):
    """The default from-scratch alignment fine-tunes SFT in full: vLLM serves its ``model/`` as it is."""
    from spectra_rec.align.pipeline import align
    from spectra_rec.cli import main
    from spectra_rec.priors.table import PriorTable
    from spectra_rec.testing.tiny import quick_align_config

    runs = tmp_path / "runs"
    sft = align(str(synthetic_dir), quick_align_config(sft_mode="full"), runs)
    assert (sft / "model" / "config.json").exists() and not (sft / "adapter").exists()
    common = ["--dataset", str(synthetic_dir), "--adapter", str(sft), "--max-users", "6", "--runs", str(runs),
              "--readout", "logit", "--no-progress"]
    assert main(["probe", *common, "--out", str(tmp_path / "hf.parquet")]) == 0
    assert main(["probe", *common, "--backend", "vllm", "--dtype", "fp32", "--out", str(tmp_path / "vl.parquet")]) == 0
    hf, vl = PriorTable.load(tmp_path / "hf.parquet"), PriorTable.load(tmp_path / "vl.parquet")
    assert vl.user_ids.tolist() == hf.user_ids.tolist()
    diff = np.abs(hf.probs - vl.probs).max()
    print(f"hf vs vllm on a fully fine-tuned align folder: {diff:.1e}")
    assert diff <= TOL
