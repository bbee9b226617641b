"""The alignment stage end to end on synthetic data: real tokenizer, real Qwen3, real Trainer, real peft."""

from __future__ import annotations


# Sleeping OpenMP workers: on a shared CPU, spinning workers made torch steps ~5x slower (see
# spectra_rec/align/cli.py). Effective only if set before torch loads, hence before its import.

import json
import time

import numpy as np
import pytest
import torch

from spectra_rec.align import pipeline
from spectra_rec.align.config import AlignConfig, LoraSettings, TrainConfig
from spectra_rec.align.io import load_aligned, load_stage_model
from spectra_rec.align.train import answer_nll, encode_examples, mean_answer_loss
from spectra_rec.data import load_dataset, split_dataset
from spectra_rec.data.synthetic import SyntheticConfig, make_synthetic
from spectra_rec.testing.data import leak_dataset
from spectra_rec.testing.tiny import TINY_MODEL
from spectra_rec.text import corpus as C
from spectra_rec.text import templates as T


STRONG = SyntheticConfig(n_users=120, n_items=150, n_l1=2, n_l2=3, mean_interactions=40, concentration=0.08, seed=4)
"""Strongly peaked users (Dirichlet 0.08 per category), K = 6."""


def quick_config(**kw) -> AlignConfig:
    base = dict(
        model=TINY_MODEL, vocab_size=400, max_length=256, val_fraction=0.1,
        sft=C.SFTConfig(context_items=6, refs_per_user=3, examples_per_ref=2),
        cpt_train=TrainConfig(max_steps=4, batch_size=4, logging_steps=1, save_steps=50),
        sft_train=TrainConfig(max_steps=4, batch_size=8, logging_steps=1, save_steps=50),
        lora=LoraSettings(r=4, alpha=8, dropout=0.0),
        sft_mode="lora",  # the adapter path real base models take (the planted-signal test covers full SFT)
    )
    return AlignConfig(**(base | kw))


@pytest.fixture(scope="module")
def strong(tmp_path_factory):
    ds = load_dataset(make_synthetic(tmp_path_factory.mktemp("strong") / "strong", STRONG))
    return ds, split_dataset(ds)


@pytest.fixture(scope="module")
def trained(strong, tmp_path_factory):
    """CPT (150 steps) then LoRA SFT (150 steps) of the tiny model on strongly peaked synthetic users.

    SFT is the default recipe (packed rows with the name readout loss and the history question) on
    the adapter path: the plain one-sampled-answer SFT of this size beat popularity for some seeds
    and not others (measured: seeds 1 and 2 lost), this recipe for each of seeds 0, 1 and 2.
    """
    runs = tmp_path_factory.mktemp("runs")
    cfg = quick_config(
        max_users=None,
        cpt_train=TrainConfig(max_steps=150, learning_rate=5e-3, batch_size=8, logging_steps=10, save_steps=1000),
        sft_train=TrainConfig(max_steps=150, learning_rate=5e-3, batch_size=16, logging_steps=10, save_steps=1000),
        sft=C.SFTConfig(context_items=12, refs_per_user=6, examples_per_ref=2,
                        mixture={"name": 0.5, "yes_no": 0.2, "choice": 0.2, "dg": 0.1},
                        readout_loss=("name",), history_weight=1.0),
        lora=LoraSettings(r=8, alpha=16, dropout=0.0),
        # fp32 on every CPU: bf16 autocast (auto-on where the CPU has native bf16) cost this tiny
        # 5e-3-learning-rate recipe its margin over popularity (per answer 1.718 against 1.465 in fp32).
        bf16=False,
    )
    t0 = time.perf_counter()
    sft_dir = pipeline.align(strong, cfg, runs=runs)
    return sft_dir, runs, cfg, time.perf_counter() - t0


def test_tiny_end_to_end_run_completes_and_caches(strong, tmp_path):
    cfg = quick_config(max_users=30)
    out = pipeline.align(strong, cfg, runs=tmp_path)
    assert out.parent == tmp_path / "align" / "sft"
    manifest = json.loads((out / "manifest.json").read_text())
    for key in ("base", "tokenizer", "data", "template_version", "seed", "training", "cpt", "verbalizer_ids",
                "letter_ids", "files"):
        assert key in manifest, key
    assert manifest["template_version"] == T.TEMPLATE_VERSION
    assert manifest["users"] == {"train": 27, "val": 3}
    assert manifest["training"]["steps"] == 4
    assert set(manifest["training"]["eval_loss_after"]) >= {"val", "val_name"}
    assert (out / "adapter" / "adapter_model.safetensors").exists()
    assert not any(p.name.endswith(".work") for p in (tmp_path / "align" / "sft").iterdir())
    # Same configuration: reused without training (same folder, same manifest).
    assert pipeline.align(strong, cfg, runs=tmp_path) == out
    assert json.loads((out / "manifest.json").read_text())["created"] == manifest["created"]
    # A different SFT setting reuses the CPT folder and writes a new SFT folder.
    out2 = pipeline.align(strong, quick_config(max_users=30, lora=LoraSettings(r=2, alpha=4)), runs=tmp_path)
    assert out2 != out and len(list((tmp_path / "align" / "cpt").iterdir())) == 1


def test_pipeline_never_trains_on_heldout_interactions(tmp_path, monkeypatch):
    """Decode every sequence the Trainer receives (CPT blocks, SFT rows, validation) and grep for held-out titles."""
    from spectra_rec.align import train as train_mod

    ds = leak_dataset(tmp_path / "leak")
    seen: list[str] = []
    real_train = train_mod.train

    def spy(model, tokenizer, train_set, eval_sets, *a, **kw):
        for rows in [train_set, *eval_sets.values()]:
            seen.extend(tokenizer.decode(r["input_ids"]) for r in rows.rows)
        return real_train(model, tokenizer, train_set, eval_sets, *a, **kw)

    monkeypatch.setattr(train_mod, "train", spy)
    cfg = quick_config(val_fraction=0.25, sft=C.SFTConfig(context_items=20, refs_per_user=6, examples_per_ref=4,
                                                          mixture={"name": 1, "yes_no": 1, "choice": 1, "dg": 1}))
    pipeline.align(ds, cfg, runs=tmp_path / "runs")
    assert len(seen) > 50
    text = "\n".join(seen)
    assert "Shared film" in text and "Question:" in text
    assert "Zecret" not in text
    tok_dir = next((tmp_path / "runs" / "align" / "sft").glob("*/tokenizer"))
    assert not any("Zecret" in t or "ecret" in t for t in json.loads((tok_dir / "tokenizer.json").read_text())["model"]["vocab"])


def test_saved_and_reloaded_adapter_gives_identical_logits(trained, strong):
    sft_dir, runs, cfg, _ = trained
    ds, split = strong
    model, tok, manifest = load_aligned(sft_dir)
    assert type(model).__name__.startswith("PeftModel")
    prompt = T.history_prefix(ds, 0, split.train_items(0), max_items=10)[0] + T.name_question()
    ids = tok(prompt, return_tensors="pt")["input_ids"]
    with torch.no_grad():
        a = model(input_ids=ids).logits
        b = load_aligned(sft_dir)[0](input_ids=ids).logits
        merged = load_aligned(sft_dir, merge=True)[0](input_ids=ids).logits
    torch.testing.assert_close(a, b, rtol=0, atol=0)
    torch.testing.assert_close(merged, a, rtol=1e-4, atol=1e-4)
    assert manifest["verbalizer_ids"]["Yes"] == tok.convert_tokens_to_ids("ĠYes")
    # The adapter changed the model: the CPT-only model gives different logits.
    cpt_model, _, cpt_manifest = load_stage_model(runs / "align" / "cpt" / manifest["cpt"]["hash"])
    assert cpt_manifest["kind"] == "cpt"
    with torch.no_grad():
        assert not torch.allclose(cpt_model(input_ids=ids).logits, a, atol=1e-3)


def test_sft_lowers_heldout_category_loss_versus_cpt_only(trained, strong):
    """Held-out window targets (evaluation only): SFT's category-name loss beats the CPT-only model's,
    and beats the user-agnostic popularity prior (personalization, not just the answer format)."""
    sft_dir, runs, cfg, seconds = trained
    ds, split = strong
    model, tok, manifest = load_aligned(sft_dir, merge=True)
    cpt_model, _, _ = load_stage_model(runs / "align" / "cpt" / manifest["cpt"]["hash"])
    fit = pipeline.make_fit(tok, pipeline.prompt_budget(tok, ds, cfg))
    examples = C.heldout_examples(ds, split, config=cfg.sft, formats=("name",), per_user=3, seed=0, fit=fit)
    rows = encode_examples(tok, examples, cfg.max_length)
    sft_loss = mean_answer_loss(model, tok, rows)
    cpt_loss = mean_answer_loss(cpt_model, tok, rows)
    # Popularity baseline on the same targets, per example: -log share of the category in the train
    # windows, against the SFT model's NLL of the whole answer (name tokens + eos, so SFT pays extra).
    pop = split.category_train_mass / split.category_train_mass.sum()
    pop_nll = -np.log([pop[ds.categories.index(e.completion[1:])] for e in examples])
    sft_nll, _ = answer_nll(model, tok, rows)
    print(f"align {seconds:.0f}s; held-out name loss per token: CPT-only {cpt_loss:.3f}, SFT {sft_loss:.3f}; "
          f"per answer: SFT {sft_nll.mean():.3f}, popularity prior {pop_nll.mean():.3f}")
    assert sft_loss < cpt_loss - 0.5
    assert sft_nll.mean() < pop_nll.mean()
    # The manifest's validation loss (held-out users, train windows) fell as well.
    tr = manifest["training"]
    assert tr["eval_loss_after"]["val_name"] < tr["eval_loss_before"]["val_name"]


def test_training_resumes_from_the_last_checkpoint(tmp_path):
    from transformers import TrainerCallback

    from spectra_rec.align.train import ListDataset, train
    from spectra_rec.testing.tiny import tiny_model_and_tokenizer

    class Interrupt(TrainerCallback):
        def on_step_end(self, args, state, control, **kw):
            if state.global_step == 3:
                raise KeyboardInterrupt

    model, tok = tiny_model_and_tokenizer()
    rows = ListDataset([{"input_ids": tok(f"Item {j} (1990) [G0-s1]")["input_ids"],
                         "labels": tok(f"Item {j} (1990) [G0-s1]")["input_ids"]} for j in range(16)])
    cfg = TrainConfig(max_steps=4, batch_size=4, save_steps=2, logging_steps=1)
    with pytest.raises(KeyboardInterrupt):
        train(model, tok, rows, {}, cfg, tmp_path, seed=0, callbacks=[Interrupt()])
    model, tok = tiny_model_and_tokenizer()
    summary = train(model, tok, rows, {}, cfg, tmp_path, seed=0)
    assert summary["resumed_from"] == "checkpoint-2"
    assert summary["steps"] == 4


def test_cli_arguments_build_the_config(tmp_path):
    import argparse

    from spectra_rec.align import cli

    p = argparse.ArgumentParser()
    cli.add_arguments(p)
    args = p.parse_args(["--epochs", "0.2", "1", "--max-users", "50", "--lora-r", "8", "--context-items", "5",
                         "--mixture", '{"name": 1}', "--refs-per-row", "2", "--runs", str(tmp_path)])
    cfg = cli.config_from_args(args)
    assert cfg.sft.refs_per_row == 2
    assert (cfg.cpt_train.epochs, cfg.sft_train.epochs) == (0.2, 1.0)
    assert cfg.max_users == 50 and cfg.lora.r == 8 and cfg.cpt_lora.r == 8
    assert cfg.sft.context_items == 5 and cfg.sft.mixture == {"name": 1}
    assert cfg.base_model is None and cfg.resolved_cpt_mode == "full"
    assert not cfg.sft.history_summary
    assert cli.config_from_args(p.parse_args(["--history-summary"])).sft.history_summary


def test_history_summary_trains_packed_rows_and_the_probe_reads_it(synthetic, synthetic_split, tmp_path):
    from dataclasses import replace

    from spectra_rec.artifacts import config_hash, read_manifest
    from spectra_rec.probe.run import spectra_prior
    from spectra_rec.testing.tiny import quick_align_config

    plain = quick_align_config(sft=C.SFTConfig(context_items=4, refs_per_user=1, refs_per_row=2, examples_per_ref=1,
                                               readout_loss=("name",), history_weight=1.0))
    summed = replace(plain, sft=replace(plain.sft, history_summary=True))
    users, val = pipeline.select_users(synthetic_split, plain)
    key = lambda c: pipeline.sft_stage_config(synthetic, synthetic_split, c, users, val, None)  # noqa: E731
    # folders cached before the later options keep their hash
    assert "history_summary" not in key(plain)["sft"] and "target_lift" not in key(plain)["sft"]
    assert config_hash(key(plain)) != config_hash(key(summed))
    sft = pipeline.align((synthetic, synthetic_split), summed, tmp_path)
    m = read_manifest(sft)
    assert m["context"]["history_summary"] is True and np.isfinite(m["training"]["train_loss_last"])
    table = spectra_prior((synthetic, synthetic_split), runs=tmp_path, readout="name", adapter=sft, max_users=3,
                          progress=False)
    assert table.meta["history_summary"] is True and np.allclose(table.probs.sum(axis=1), 1.0)


def test_base_model_directory_lora_cpt_then_sft_and_sft_only(strong, tmp_path):
    """``--base-model PATH``: a local HF directory (here the tiny Qwen3 saved to disk) gets LoRA CPT + LoRA SFT;
    ``stage='sft'`` skips CPT (the SFT-only ablation)."""
    from spectra_rec.testing.tiny import tiny_model_and_tokenizer

    ds, split = strong
    model, tok = tiny_model_and_tokenizer(ds)
    model.save_pretrained(tmp_path / "base")
    tok.save_pretrained(tmp_path / "base")
    cfg = quick_config(base_model=str(tmp_path / "base"), max_users=20)
    assert cfg.resolved_cpt_mode == "lora"
    out = pipeline.align(strong, cfg, runs=tmp_path / "runs", device="cpu")
    m = json.loads((out / "manifest.json").read_text())
    assert m["base"]["kind"] == "cpt"
    cpt = json.loads((tmp_path / "runs" / "align" / "cpt" / m["cpt"]["hash"] / "manifest.json").read_text())
    assert cpt["base"] == {"kind": "hf", "path": str((tmp_path / "base").resolve()), "weights": "adapter"}
    aligned, atok, _ = load_aligned(out, device="cpu")
    ids = atok("Watched, oldest first:\n" + T.name_question(), return_tensors="pt")["input_ids"]
    with torch.no_grad():
        assert not torch.allclose(aligned(input_ids=ids).logits, model(input_ids=ids).logits, atol=1e-4)

    sft_only = pipeline.align(strong, cfg, runs=tmp_path / "runs", stage="sft", device="cpu")
    m2 = json.loads((sft_only / "manifest.json").read_text())
    assert m2["base"] == {"kind": "hf", "path": str((tmp_path / "base").resolve()), "weights": "adapter"}
    assert m2["cpt"] is None
    assert load_aligned(sft_only, device="cpu")[2]["kind"] == "sft"


def test_spectra_rec_align_command_runs_end_to_end(synthetic_dir, tmp_path, capsys):
    from spectra_rec.cli import main

    rc = main(["align", "--dataset", str(synthetic_dir), "--max-users", "20", "--max-steps", "2",
               "--batch-size", "4", "--runs", str(tmp_path)])
    assert rc == 0
    out = capsys.readouterr().out
    assert "sft folder:" in out and "validation loss" in out
    sft = next((tmp_path / "align" / "sft").iterdir())
    # the default SFT of the from-scratch model is a full fine-tune on packed readout rows
    assert (sft / "model" / "model.safetensors").exists() and not (sft / "adapter").exists()
    m = json.loads((sft / "manifest.json").read_text())
    assert m["base"]["weights"] == "model" and m["examples"]["readout_loss"] == ["logit", "name", "choice"]
    assert "val_readouts" in m["training"]["eval_loss_after"]


def test_resuming_from_the_final_checkpoint_trains_nothing_more(tmp_path):
    # a run killed after its last checkpoint but before publishing resumes at max_steps
    from spectra_rec.align.train import ListDataset, train
    from spectra_rec.testing.tiny import tiny_model_and_tokenizer

    model, tok = tiny_model_and_tokenizer()
    rows = ListDataset([{"input_ids": tok(f"Item {j} (1990) [G0-s1]")["input_ids"],
                         "labels": tok(f"Item {j} (1990) [G0-s1]")["input_ids"]} for j in range(16)])
    cfg = TrainConfig(max_steps=5, batch_size=4, save_steps=2, logging_steps=1)  # the last save is the end of training
    first = train(model, tok, rows, {}, cfg, tmp_path, seed=0)
    weights = {k: v.clone() for k, v in model.state_dict().items()}
    model, tok = tiny_model_and_tokenizer()
    again = train(model, tok, rows, {}, cfg, tmp_path, seed=0)
    assert again["resumed_from"] == "checkpoint-5"
    assert first["steps"] == again["steps"] == 5
    for k, v in model.state_dict().items():
        torch.testing.assert_close(v, weights[k], rtol=0, atol=1e-6)
