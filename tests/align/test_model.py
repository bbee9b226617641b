"""The tiny Qwen3, local model loading, LoRA invariants (real peft, real Trainer)."""

from __future__ import annotations


# Sleeping OpenMP workers: on a shared CPU, spinning workers made torch steps ~5x slower (see
# spectra_rec/align/cli.py). Effective only if set before torch loads, hence before its import.

import pytest
import torch

from spectra_rec.align.config import LORA_TARGETS, AlignConfig, LoraSettings, TrainConfig
from spectra_rec.align.model import ModelConfig, build_tiny_qwen3, load_base_model
from spectra_rec.align.train import Collator, ListDataset, train
from spectra_rec.errors import ConfigError
from spectra_rec.testing.tiny import TINY_MODEL, tiny_model_and_tokenizer
from spectra_rec.text import templates as T


@pytest.fixture(scope="module")
def tiny():
    return tiny_model_and_tokenizer()


def _batch(tokenizer):
    prompts = [
        "User profile: age 30.\nWatched, oldest first:\n- Item 3 (1953) [G0-s1]\n" + T.name_question(),
        T.yes_no_question("G1-s2"),
    ]
    enc = tokenizer(prompts, padding=True, return_tensors="pt")
    return enc["input_ids"], enc["attention_mask"]


def _logits(model, tokenizer):
    ids, mask = _batch(tokenizer)
    with torch.no_grad():
        return model(input_ids=ids, attention_mask=mask).logits


def test_tiny_model_is_a_seeded_qwen3_with_tied_embeddings(tiny):
    model, tok = tiny
    assert type(model).__name__ == "Qwen3ForCausalLM"
    assert model.config.tie_word_embeddings is True
    assert model.lm_head.weight.data_ptr() == model.model.embed_tokens.weight.data_ptr()
    assert model.config.vocab_size == len(tok)
    assert model.config.pad_token_id == tok.pad_token_id != tok.eos_token_id
    again = build_tiny_qwen3(tok, TINY_MODEL, seed=0)
    other = build_tiny_qwen3(tok, TINY_MODEL, seed=1)
    sd, sd2, sd3 = model.state_dict(), again.state_dict(), other.state_dict()
    assert all(torch.equal(sd[k], sd2[k]) for k in sd)
    assert not all(torch.equal(sd[k], sd3[k]) for k in sd)


def test_building_a_model_leaves_the_global_rng_alone(tiny):
    _, tok = tiny
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    build_tiny_qwen3(tok, TINY_MODEL, seed=7)
    assert torch.equal(torch.rand(3), expected)


@pytest.mark.parametrize("kwargs, field", [({"num_heads": 3, "num_kv_heads": 2}, "num_kv_heads"),
                                           ({"hidden_size": 0}, "hidden_size")])
def test_model_config_rejects_bad_values(kwargs, field):
    with pytest.raises(ConfigError, match=field):
        ModelConfig(**kwargs)


def test_load_base_model_reads_a_local_directory(tiny, tmp_path):
    model, tok = tiny
    model.save_pretrained(tmp_path / "m")
    tok.save_pretrained(tmp_path / "m")
    loaded, ltok = load_base_model(tmp_path / "m", dtype="float32", device="cpu")
    assert ltok.pad_token_id == tok.pad_token_id
    torch.testing.assert_close(_logits(loaded, ltok), _logits(model, tok), rtol=0, atol=0)
    with pytest.raises(ConfigError, match="config.json"):
        load_base_model(tmp_path, device="cpu")
    with pytest.raises(ConfigError, match="local model directory"):
        load_base_model(None)


def test_a_fresh_lora_adapter_leaves_logits_unchanged(tiny):
    from peft import get_peft_model

    model, tok = tiny
    before = _logits(model, tok)
    peft_model = get_peft_model(build_tiny_qwen3(tok, TINY_MODEL, seed=0), LoraSettings().peft_config())
    peft_model.eval()
    torch.testing.assert_close(_logits(peft_model, tok), before, rtol=0, atol=0)
    names = {n.split(".")[-1] for n, m in peft_model.named_modules() if hasattr(m, "lora_A")}
    assert names == set(LORA_TARGETS)


def _sft_rows(tok, n=8):
    rows = []
    for j in range(n):
        p = tok(f"Watched, oldest first:\n- Item {j} (1990) [G0-s1]\n" + T.name_question())["input_ids"]
        a = tok(T.answer("G0-s1"), add_special_tokens=False)["input_ids"] + [tok.eos_token_id]
        rows.append({"input_ids": p + a, "labels": [-100] * len(p) + a})
    return ListDataset(rows)


def test_lora_trains_only_adapter_parameters_and_save_reload_is_exact(tiny, tmp_path):
    from peft import PeftModel, get_peft_model

    from spectra_rec.align.io import save_adapter

    _, tok = tiny
    base = build_tiny_qwen3(tok, TINY_MODEL, seed=0)
    peft_model = get_peft_model(base, LoraSettings(r=4, alpha=8, dropout=0.0).peft_config())
    before = {n: p.detach().clone() for n, p in peft_model.named_parameters()}
    trainable = {n for n, p in peft_model.named_parameters() if p.requires_grad}
    assert trainable and all("lora_" in n for n in trainable)
    cfg = TrainConfig(max_steps=3, learning_rate=1e-2, batch_size=4, logging_steps=1, save_steps=100)
    summary = train(peft_model, tok, _sft_rows(tok), {}, cfg, tmp_path / "work", seed=0)
    assert summary["steps"] == 3
    changed = {n for n, p in peft_model.named_parameters() if not torch.equal(p, before[n])}
    assert changed and changed <= trainable
    assert any("lora_A" in n for n in changed) and any("lora_B" in n for n in changed)

    peft_model.eval()
    expected = _logits(peft_model, tok)
    files = save_adapter(peft_model, tmp_path / "adapter")
    assert "adapter_model.safetensors" in files and "adapter_config.json" in files
    reloaded = PeftModel.from_pretrained(build_tiny_qwen3(tok, TINY_MODEL, seed=0), tmp_path / "adapter")
    reloaded.eval()
    torch.testing.assert_close(_logits(reloaded, tok), expected, rtol=0, atol=0)
    assert not torch.allclose(_logits(build_tiny_qwen3(tok, TINY_MODEL, seed=0), tok), expected)


def test_collator_pads_right_and_masks_labels_by_position(tiny):
    _, tok = tiny
    rows = [{"input_ids": [1, 5, 6], "labels": [-100, 5, 6]}, {"input_ids": [1, 7], "labels": [-100, tok.eos_token_id]}]
    batch = Collator(tok.pad_token_id)(rows)
    assert batch["input_ids"].tolist() == [[1, 5, 6], [1, 7, tok.pad_token_id]]
    assert batch["labels"].tolist() == [[-100, 5, 6], [-100, tok.eos_token_id, -100]]


def test_right_padding_without_a_mask_gives_the_same_loss_as_unpadded(tiny):
    """The collator relies on this: causal attention keeps right padding from reaching real tokens."""
    model, tok = tiny
    rows = _sft_rows(tok, 3)
    rows.rows[0]["input_ids"] = rows.rows[0]["input_ids"] + [5, 6, 7]
    rows.rows[0]["labels"] = rows.rows[0]["labels"] + [-100, -100, -100]
    batch = Collator(tok.pad_token_id)(rows.rows)
    with torch.no_grad():
        padded = model(**batch).logits
        for j, r in enumerate(rows.rows):
            alone = model(input_ids=torch.tensor([r["input_ids"]])).logits[0]
            torch.testing.assert_close(padded[j, : len(r["input_ids"])], alone, rtol=1e-5, atol=1e-5)


def test_align_config_round_trips_and_validates():
    cfg = AlignConfig(max_users=50, lora=LoraSettings(r=4), cpt_train=TrainConfig(max_steps=3))
    assert AlignConfig.from_dict(cfg.to_dict()) == cfg
    with pytest.warns(UserWarning, match="future_key"):
        AlignConfig.from_dict(cfg.to_dict() | {"future_key": 1})
    with pytest.raises(ConfigError, match="cpt_mode"):
        AlignConfig(cpt_mode="lora")
    with pytest.raises(ConfigError, match="max_length"):
        AlignConfig(max_length=4096)
    assert AlignConfig().resolved_cpt_mode == "full"
    assert AlignConfig(base_model="/m").resolved_cpt_mode == "lora"
