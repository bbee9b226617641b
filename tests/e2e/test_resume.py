"""Runs survive a SIGKILL: every stage is killed in a subprocess, rerun, and compared with an uninterrupted run.

Each test starts the stage in a fresh Python process, waits until it has written part of its
output (a seeded random extra delay moves the kill point around inside that window), sends
SIGKILL, reruns the stage here, and checks three things: the rerun completes, no temporary,
partial or work folder is left under ``runs/`` (or next to the output folder), and the
artifacts equal those of an uninterrupted run. Equality is byte-for-byte except for training
resumed from a checkpoint (CPT, SFT), where the weights are compared within a stated float
tolerance, and RecBole retraining, compared exactly as arrays.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest

from spectra_rec.testing.tiny import tiny_data

REPO = Path(__file__).resolve().parents[2]
RNG = np.random.default_rng(13)
"""Seeded: the extra delay after each kill point is the same on every run of the suite."""


def _env() -> dict:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(REPO) + os.pathsep + env.get("PYTHONPATH", "")
    env["OMP_NUM_THREADS"] = env.get("OMP_NUM_THREADS") or "1"
    env["TQDM_DISABLE"] = "1"
    return env


@contextlib.contextmanager
def subprocess_threads():
    """This process's torch on the killed subprocess's thread count (``_env``): the same reduction order, the same floats."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(int(_env()["OMP_NUM_THREADS"]))
    try:
        yield
    finally:
        torch.set_num_threads(before)


def run_and_kill(code: str, ready, tmp: Path, jitter: float = 0.0, timeout: float = 300.0) -> None:
    """Run ``code`` in a new interpreter; SIGKILL it once ``ready()`` holds (plus a seeded delay up to ``jitter`` s).

    Keep ``jitter`` well below the stage's remaining run time: on an idle machine the tiny CPT's 12 steps
    take about 0.4 s, and a kill that lands after the last checkpoint tests another case."""
    log_path = tmp / f"killed-{time.monotonic_ns()}.log"
    with log_path.open("w") as log:
        proc = subprocess.Popen([sys.executable, "-c", textwrap.dedent(code)], cwd=tmp, env=_env(),
                                stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + timeout
        try:
            while proc.poll() is None and time.monotonic() < deadline:
                if ready():
                    time.sleep(float(RNG.uniform(0, jitter)))
                    proc.send_signal(signal.SIGKILL)
                    proc.wait()
                    break
                time.sleep(0.002)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    if proc.returncode != -signal.SIGKILL:
        pytest.fail(f"the stage ended (rc {proc.returncode}) before the kill point:\n{log_path.read_text()[-3000:]}")


def leftovers(*roots: Path) -> list[str]:
    """Temporary, partial or work folders and files left anywhere under ``roots``."""
    marks = (".tmp-", ".old-", ".work", ".parts")
    return sorted(str(p) for r in roots if Path(r).exists() for p in Path(r).rglob("*") if any(m in p.name for m in marks))


def exists(pattern: str, root: Path):
    return lambda: any(True for _ in Path(root).glob(pattern))


# ---- data -----------------------------------------------------------------------------------------
def test_data_stage_killed_while_writing_reruns_to_identical_files(tmp_path):
    pytest.importorskip("recbole")  # ml-100k ships inside RecBole's wheel
    from spectra_rec.data.stage import DataConfig, data_stage

    runs, ref_runs = tmp_path / "runs", tmp_path / "ref"
    run_and_kill(f"""
        from spectra_rec.data.stage import DataConfig, data_stage
        data_stage(DataConfig("ml-100k"), {str(runs)!r})
    """, exists("data/.*.tmp-*", runs), tmp_path)
    _, _, folder = data_stage(DataConfig("ml-100k"), runs)
    _, _, ref = data_stage(DataConfig("ml-100k"), ref_runs)
    assert leftovers(runs) == []
    assert folder.name == ref.name
    for name in ("split.parquet", "item_slices.csv", "category_buckets.csv", "summary.json"):
        assert (folder / name).read_bytes() == (ref / name).read_bytes(), name


# ---- backbone -------------------------------------------------------------------------------------
TINY_GRU = {"embedding_size": 16, "hidden_size": 16, "train_batch_size": 256}


@pytest.fixture(scope="module")
def syn_dir(tmp_path_factory):
    from spectra_rec.data.synthetic import SyntheticConfig, make_synthetic

    return make_synthetic(tmp_path_factory.mktemp("syn") / "syn",
                          SyntheticConfig(n_users=120, n_items=150, mean_interactions=25, seed=5))


@pytest.mark.filterwarnings("ignore")
def test_backbone_killed_after_its_first_checkpoint_retrains_to_the_same_arrays(tmp_path, syn_dir):
    pytest.importorskip("recbole")
    from fusion.backbones import BackboneConfig, backbone_stage
    from spectra_rec.data.stage import DataConfig, data_stage

    runs, ref_runs = tmp_path / "runs", tmp_path / "ref"
    run_and_kill(f"""
        from fusion.backbones import BackboneConfig, backbone_stage
        from spectra_rec.data.stage import DataConfig, data_stage
        ds, split, folder = data_stage(DataConfig({str(syn_dir)!r}), {str(runs)!r})
        backbone_stage(split, folder, BackboneConfig("GRU4Rec", epochs=2, overrides={TINY_GRU!r}), {str(runs)!r})
    """, exists("backbone/.*.tmp-*/model.pth", runs), tmp_path, jitter=0.2)
    cfg = BackboneConfig("GRU4Rec", epochs=2, overrides=TINY_GRU)
    _, split, folder = data_stage(DataConfig(str(syn_dir)), runs)
    got = backbone_stage(split, folder, cfg, runs)
    _, split, folder = data_stage(DataConfig(str(syn_dir)), ref_runs)
    ref = backbone_stage(split, folder, cfg, ref_runs)
    assert leftovers(runs) == []
    assert got.folder.name == ref.folder.name
    # RecBole restarts the stage from scratch (it has no mid-training resume); same seed, same machine:
    # the exported arrays are identical.
    np.testing.assert_array_equal(got.user_repr, ref.user_repr)
    np.testing.assert_array_equal(got.item_emb, ref.item_emb)
    manifest = json.loads((got.folder / "manifest.json").read_text())
    assert len(manifest["model_sha256"]) == 64


# ---- CPT and SFT ------------------------------------------------------------------------------------
def _align_config():
    from spectra_rec.align.config import AlignConfig, LoraSettings, TrainConfig
    from spectra_rec.testing.tiny import TINY_MODEL
    from spectra_rec.text.corpus import SFTConfig

    return AlignConfig(
        model=TINY_MODEL, vocab_size=512, max_users=24, max_length=256, val_fraction=0.1,
        sft=SFTConfig(context_items=6, refs_per_user=3, examples_per_ref=2),
        cpt_train=TrainConfig(max_steps=12, batch_size=4, logging_steps=1, save_steps=3),
        sft_train=TrainConfig(max_steps=12, batch_size=8, logging_steps=1, save_steps=3),
        lora=LoraSettings(r=4, alpha=8, dropout=0.0),
        sft_mode="lora",  # the adapter path of a real --base-model: its checkpoints and files are what is tested
    )


ALIGN_CODE = """
    from spectra_rec.align.pipeline import align
    from spectra_rec.testing.tiny import tiny_data
    import tests.e2e.test_resume as t
    align(tiny_data(), t._align_config(), {runs!r})
"""


@pytest.fixture(scope="module")
def reference_align(tmp_path_factory):
    """An uninterrupted CPT + SFT run of the tiny model (12 steps each, checkpoints every 3)."""
    from spectra_rec.align.pipeline import align

    runs = tmp_path_factory.mktemp("ref-align")
    sft = align(tiny_data(), _align_config(), runs)
    cpt = next((runs / "align" / "cpt").iterdir())
    return runs, cpt, sft


def _tensors(path: Path) -> dict:
    from safetensors.numpy import load_file

    return load_file(str(path))


def _assert_close_weights(a: Path, b: Path, atol: float) -> None:
    ta, tb = _tensors(a), _tensors(b)
    assert ta.keys() == tb.keys()
    for k in ta:
        np.testing.assert_allclose(ta[k], tb[k], rtol=0, atol=atol, err_msg=k)


RESUME_ATOL = 1e-5
"""HF Trainer resume restores weights, optimizer, scheduler and RNG states, and the train order is a
function of (seed, epoch) (spectra_rec.align.train), so a resumed run takes the same batches. The
weights then match the uninterrupted run to float32 rounding, not bit for bit (a resumed step
can run its reductions in another order). Stated tolerance: 1e-5 absolute on every weight, 1e-4
relative on each validation loss."""


def test_cpt_killed_mid_training_resumes_past_a_half_written_checkpoint(tmp_path, reference_align, caplog):
    from spectra_rec.align.pipeline import align

    ref_runs, ref_cpt, _ = reference_align
    runs = tmp_path / "runs"
    ckpts = "align/cpt/.*.work/checkpoints/checkpoint-*/trainer_state.json"
    run_and_kill(ALIGN_CODE.format(runs=str(runs)), exists(ckpts, runs), tmp_path, jitter=0.05)
    # A kill during a later save leaves a higher-numbered checkpoint without its trainer state
    # (the Trainer writes that file last): the rerun must skip it, not crash on it.
    (done,) = [p.parent for p in runs.glob(ckpts)]
    step = int(done.name.split("-")[1])
    half = done.with_name(f"checkpoint-{step + 3}")
    shutil.copytree(done, half)
    (half / "trainer_state.json").unlink()
    weights = next(half.glob("*.safetensors"))
    weights.write_bytes(weights.read_bytes()[:100])
    with caplog.at_level(logging.INFO):
        cpt = align(tiny_data(), _align_config(), runs, stage="cpt")
    assert f"removing incomplete checkpoint {half}" in caplog.text
    assert f"resuming from {done}" in caplog.text
    assert leftovers(runs) == []
    assert cpt.name == ref_cpt.name
    _assert_close_weights(cpt / "model" / "model.safetensors", ref_cpt / "model" / "model.safetensors", RESUME_ATOL)
    got, ref = (json.loads((d / "manifest.json").read_text())["training"] for d in (cpt, ref_cpt))
    assert got["resumed_from"] == done.name and got["steps"] == ref["steps"] == 12
    assert got["eval_loss_before"] == ref["eval_loss_before"] != {}  # kept from the first, killed run
    assert 0 < got["tokens_this_run"] < got["tokens_seen"] == ref["tokens_seen"]  # tokens/s of this run only


def test_sft_killed_mid_training_resumes_to_the_same_adapter(tmp_path, reference_align, caplog):
    from spectra_rec.align.pipeline import align

    ref_runs, ref_cpt, ref_sft = reference_align
    runs = tmp_path / "runs"
    shutil.copytree(ref_cpt, runs / "align" / "cpt" / ref_cpt.name)  # CPT done: the kill lands in SFT
    ckpts = "align/sft/.*.work/checkpoints/checkpoint-*/trainer_state.json"
    run_and_kill(ALIGN_CODE.format(runs=str(runs)), exists(ckpts, runs), tmp_path, jitter=0.05)
    with caplog.at_level(logging.INFO):
        sft = align(tiny_data(), _align_config(), runs)
    assert "resuming from" in caplog.text
    assert leftovers(runs) == []
    assert sft.name == ref_sft.name
    _assert_close_weights(sft / "adapter" / "adapter_model.safetensors",
                          ref_sft / "adapter" / "adapter_model.safetensors", RESUME_ATOL)
    got, ref = (json.loads((d / "manifest.json").read_text())["training"] for d in (sft, ref_sft))
    assert got["steps"] == ref["steps"] == 12 and got["eval_loss_before"] == ref["eval_loss_before"]
    for name, loss in ref["eval_loss_after"].items():
        assert got["eval_loss_after"][name] == pytest.approx(loss, rel=1e-4), name


# ---- probe ------------------------------------------------------------------------------------------
def test_probe_killed_mid_cohort_resumes_from_the_users_written(tmp_path, reference_align, caplog):
    """The partial files survive the kill (they used to live in the stage's per-process temp folder)."""
    from spectra_rec.probe.run import spectra_prior

    _, _, sft = reference_align
    ds, split = tiny_data()
    runs, ref_runs = tmp_path / "runs", tmp_path / "ref"
    kw = dict(adapter=sft, progress=False)
    run_and_kill(f"""
        from spectra_rec.probe.run import spectra_prior
        from spectra_rec.testing.tiny import tiny_data
        ds, split = tiny_data()
        spectra_prior(ds, split, {str(runs)!r}, "logit", adapter={str(sft)!r}, progress=False)
    """, exists("probe/.*/prior.parquet.parts/shard-*/chunk-*.parquet", runs), tmp_path, jitter=0.05)
    with caplog.at_level(logging.INFO), subprocess_threads():
        got = spectra_prior(ds, split, runs, "logit", **kw)
        ref = spectra_prior(ds, split, ref_runs, "logit", **kw)
    assert "resuming," in caplog.text and "users already done" in caplog.text
    done = int(caplog.text.split("resuming, ")[1].split(" of")[0])
    assert done > 0
    assert leftovers(runs) == []
    np.testing.assert_array_equal(got.probs, ref.probs)
    (a,), (b,) = (list((r / "probe").glob("*/prior.parquet")) for r in (runs, ref_runs))
    assert a.read_bytes() == b.read_bytes()  # a resumed table is byte-identical to an uninterrupted one


# ---- fusion and evaluate ----------------------------------------------------------------------------
FUSION_CODE = """
    from fusion.pipeline import FusionConfig, run_fusion
    from fusion.report import write_report
    import tests.e2e.test_resume as t
    cfg = t._fusion_config({syn!r}, {runs!r}, {out!r})
    write_report(run_fusion(cfg), cfg.out)
"""


def _fusion_config(syn_dir, runs, out, **kw):
    from fusion.pipeline import FusionConfig

    return FusionConfig(**(dict(model="GRU4Rec", dataset=str(syn_dir), prior="uhf", epochs=2, runs=Path(runs), out=Path(out),
                                n_boot=50, backbone_overrides=TINY_GRU) | kw))


@pytest.mark.filterwarnings("ignore")
def test_fusion_killed_while_reporting_leaves_no_partial_folder_and_reruns_byte_identical(tmp_path, syn_dir):
    """Also the determinism check: a --fresh rerun (data, backbone and prior recomputed) gives the same bytes."""
    pytest.importorskip("recbole")
    from fusion.pipeline import run_fusion
    from fusion.report import write_report

    runs, out = tmp_path / "runs", tmp_path / "out"
    cfg = _fusion_config(syn_dir, runs, out)
    write_report(run_fusion(cfg), out)
    reference = (out / "results.json").read_bytes()
    per_user = (out / "per_user.csv").read_bytes()
    shutil.rmtree(out)
    run_and_kill(FUSION_CODE.format(syn=str(syn_dir), runs=str(runs), out=str(out)),
                 exists(".out.tmp-*/results.json", tmp_path), tmp_path, jitter=0.05)
    assert not out.exists()  # never a half-written folder under the final name
    write_report(run_fusion(_fusion_config(syn_dir, runs, out, fresh=True)), out)
    assert leftovers(runs, tmp_path) == []
    assert (out / "results.json").read_bytes() == reference
    assert (out / "per_user.csv").read_bytes() == per_user


def test_evaluate_killed_while_reporting_reruns_to_the_same_results(tmp_path, syn_dir):
    from spectra_rec.cli import main

    runs, out = tmp_path / "runs", tmp_path / "report"
    args = ["evaluate", "--dataset", str(syn_dir), "--priors", "uhf", "markov", "popularity", "--n-boot", "50",
            "--runs", str(runs), "--out", str(out)]
    assert main(args) == 0
    reference = (out / "results.json").read_bytes()
    shutil.rmtree(out)
    run_and_kill(f"""
        from spectra_rec.cli import main
        main({args!r})
    """, exists(".report.tmp-*/*.png", tmp_path), tmp_path, jitter=0.05)
    assert not out.exists()
    assert main(args) == 0
    assert leftovers(runs, tmp_path) == []
    assert (out / "results.json").read_bytes() == reference


# ---- damaged align folders ---------------------------------------------------------------------------
def test_damaged_align_folders_give_one_line_errors_naming_the_file(tmp_path, reference_align):
    from spectra_rec.align.io import load_aligned
    from spectra_rec.errors import DataError

    ref_runs, _, ref_sft = reference_align
    cases = {}
    for what in ("no tokenizer", "damaged adapter", "truncated adapter"):
        runs = tmp_path / what.replace(" ", "-")
        shutil.copytree(ref_runs / "align", runs / "align")  # the SFT folder points at its CPT folder
        cases[what] = runs / "align" / "sft" / ref_sft.name
    shutil.rmtree(cases["no tokenizer"] / "tokenizer")
    weights = cases["damaged adapter"] / "adapter" / "adapter_model.safetensors"
    data = bytearray(weights.read_bytes())
    data[-5] ^= 0xFF  # one flipped byte: safetensors would load it silently
    weights.write_bytes(bytes(data))
    weights = cases["truncated adapter"] / "adapter" / "adapter_model.safetensors"
    weights.write_bytes(weights.read_bytes()[:64])
    expected = {"no tokenizer": "tokenizer folder is missing", "damaged adapter": "does not match the digest",
                "truncated adapter": "does not match the digest"}
    for what, folder in cases.items():
        with pytest.raises(DataError, match=expected[what]) as info:
            load_aligned(folder, device="cpu", merge=True)
        assert str(folder) in str(info.value) and "\n" not in str(info.value), what
