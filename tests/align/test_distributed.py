"""Multi-process alignment: ``torchrun --nproc_per_node 2`` (DDP, gloo on CPU); bf16 and gradient checkpointing."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from spectra_rec import artifacts
from spectra_rec.align import pipeline
from spectra_rec.testing.tiny import quick_align_config

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_torchrun_two_processes_train_with_ddp_and_rank0_publishes(synthetic_dir, synthetic, synthetic_split, tmp_path):
    from spectra_rec.align.io import load_aligned
    from spectra_rec.probe import probe_prior

    cfg_file = tmp_path / "align.json"
    cfg_file.write_text(json.dumps(quick_align_config().to_dict()))
    runs = tmp_path / "runs"
    env = os.environ | {"PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"]
    proc = subprocess.run(torchrun + ["-m", "spectra_rec.cli", "align", "--dataset", str(synthetic_dir),
                                      "--config", str(cfg_file), "--runs", str(runs)],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    for stage in ("cpt", "sft"):
        folders = list((runs / "align" / stage).iterdir())
        assert len(folders) == 1 and artifacts.is_complete(folders[0]), folders  # one published folder, no work/tmp left
        m = artifacts.read_manifest(folders[0])
        assert m["training"]["world_size"] == 2  # really two DDP processes
        assert m["config"]["world_size"] == 2  # and in the cache key: a 2-process model is not a 1-process one
    sft = next((runs / "align" / "sft").iterdir())
    steps = artifacts.read_manifest(sft)["training"]
    assert steps["steps"] == 4 and steps["tokens_seen"] > 0
    # It loads and probes like a single-process result.
    model, tok, _ = load_aligned(sft, device="cpu", merge=True)
    table = probe_prior(synthetic, synthetic_split, model, tok, "choice", max_users=4, progress=False)
    assert table.probs.shape == (4, synthetic.K) and np.allclose(table.probs.sum(1), 1)
    assert pipeline.align(synthetic_dir.as_posix(), quick_align_config(), runs) != sft  # 1 process: another stage


def _cpu_bf16() -> bool:
    try:
        with torch.autocast("cpu", dtype=torch.bfloat16):
            torch.nn.functional.linear(torch.ones(2, 2), torch.ones(2, 2))
        return True
    except RuntimeError:
        return False


@pytest.mark.skipif(not _cpu_bf16(), reason="this CPU's torch cannot autocast to bf16")
def test_bf16_and_gradient_checkpointing_train_on_cpu_and_enter_manifest_and_key(synthetic, synthetic_split, tmp_path):
    from spectra_rec.align.io import load_aligned

    plain = quick_align_config()
    flagged = quick_align_config(bf16=True, gradient_checkpointing=True)
    sft = pipeline.align((synthetic, synthetic_split), flagged, tmp_path)
    m = artifacts.read_manifest(sft)
    assert m["training"]["bf16"] is True and m["training"]["gradient_checkpointing"] is True
    cpt = artifacts.read_manifest(next((tmp_path / "align" / "cpt").iterdir()))
    assert cpt["training"]["bf16"] is True and cpt["config"]["gradient_checkpointing"] is True
    assert m["config"]["bf16"] is True and m["config"]["gradient_checkpointing"] is True
    assert np.isfinite(m["training"]["train_loss_last"])
    users, val = pipeline.select_users(synthetic_split, plain)
    key = lambda c: artifacts.config_hash(pipeline.sft_stage_config(synthetic, synthetic_split, c, users, val, None))  # noqa: E731
    assert key(plain) != key(flagged)
    # the key holds the resolved precision: the default is the same model as its explicit setting on this CPU
    from spectra_rec.align.train import resolve_bf16

    cpt_key = lambda c: pipeline.cpt_stage_config(synthetic, synthetic_split, c, users, val)  # noqa: E731
    assert cpt_key(plain)["bf16"] is resolve_bf16(None)
    assert cpt_key(plain) == cpt_key(quick_align_config(bf16=resolve_bf16(None)))
    assert cpt_key(quick_align_config(bf16=True)) != cpt_key(quick_align_config(bf16=False))
    model, _, _ = load_aligned(sft, device="cpu", merge=True)
    assert next(model.parameters()).dtype == torch.float32  # weights are stored in fp32; bf16 was autocast only


def test_align_cli_flags_reach_the_config():
    import argparse

    from spectra_rec.align.cli import add_arguments, config_from_args

    p = argparse.ArgumentParser()
    add_arguments(p)
    cfg = config_from_args(p.parse_args(["--bf16", "--gradient-checkpointing"]))
    assert cfg.bf16 is True and cfg.gradient_checkpointing is True
    assert config_from_args(p.parse_args([])).bf16 is None
    assert config_from_args(p.parse_args(["--bf16", "off"])).bf16 is False
    assert config_from_args(p.parse_args(["--bf16", "auto"])).bf16 is None


@pytest.mark.parametrize("load, spin, env, expected", [
    (0.0, True, None, "default"),  # idle machine, training: the runtime's short spin
    (0.0, False, None, "PASSIVE"),  # idle machine, anything else: sleep at once
    (5.0, True, None, "PASSIVE"),  # busy cores: sleep at once, training too
    (0.0, True, "ACTIVE", "ACTIVE"),  # an explicit value wins
])
def test_openmp_wait_policy_spins_only_for_training_on_free_cores(monkeypatch, load, spin, env, expected):
    import os

    from spectra_rec.cli import quiet_openmp

    monkeypatch.delenv("OMP_WAIT_POLICY", raising=False)
    if env:
        monkeypatch.setenv("OMP_WAIT_POLICY", env)
    monkeypatch.setattr(os, "getloadavg", lambda: (load, load, load))
    monkeypatch.setattr(os, "cpu_count", lambda: 2)
    assert quiet_openmp(spin_when_idle=spin) == expected
    assert os.environ.get("OMP_WAIT_POLICY", "default") == expected
