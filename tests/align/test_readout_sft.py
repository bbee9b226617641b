"""Packed SFT: the block-by-block attention against the dense segment-tree mask it replaces, and the step's loss scale."""

from __future__ import annotations

import pytest
import torch

from spectra_rec.align import readout_sft as R


def _dense_states(model, batch):
    return model.get_decoder()(input_ids=batch["input_ids"], attention_mask=R.dense_mask(batch),
                               position_ids=batch["position_ids"], use_cache=False).last_hidden_state


def _row(parents, seg_lengths, vocab, gen):
    """A packed row with the given segment tree: segment s has seg_lengths[s] random tokens; positions follow the tree."""
    ids, pos, seg = [], [], []
    depth_end = {}
    for s, (parent, n) in enumerate(zip(parents, seg_lengths)):
        p0 = depth_end.get(parent, 0) if parent >= 0 else 0
        ids += torch.randint(5, vocab, (n,), generator=gen).tolist()
        pos += list(range(p0, p0 + n))
        seg += [s] * n
        depth_end[s] = p0 + n
    return {"input_ids": ids, "labels": [-100] * len(ids), "position_ids": pos, "segments": seg, "parents": parents}


def test_blocks_of_a_row_with_three_cuts():
    # trunk: segments 0-2 (the prefix cut twice); then questions under cut 0, under cut 2 (with a child), under cut 1
    parents = [-1, 0, 1, 0, 2, 4, 1]
    segments = [0] * 3 + [1] * 2 + [2] * 2 + [3] * 4 + [4] * 3 + [5] * 2 + [6] * 5
    assert R.attention_blocks(parents, segments) == (7, [(7, 11, 3), (11, 16, 7), (16, 21, 5)])
    # a plain row is all trunk
    assert R.attention_blocks([-1], [0] * 9) == (9, [])


def test_a_trunk_that_is_not_a_leading_run_falls_back_to_one_block():
    assert R.attention_blocks([-1, 0, 0], [0, 0, 2, 1]) == (0, [(0, 4, 0)])


def test_block_attention_equals_the_dense_tree_mask_with_gradients():
    """Mixed rows (3 cuts, 1 cut, a plain row; different lengths, so pads): states and gradients match the dense mask."""
    from spectra_rec.testing.tiny import tiny_model_and_tokenizer

    model, tok = tiny_model_and_tokenizer()
    gen = torch.Generator().manual_seed(0)
    V = len(tok)
    rows = [
        _row([-1, 0, 1, 0, 3, 3, 1, 6, 2, 8], [12, 5, 4, 6, 3, 2, 7, 3, 5, 2], V, gen),
        _row([-1, 0, 1, 1, 0], [20, 4, 6, 2, 3], V, gen),
        {"input_ids": torch.randint(5, V, (17,), generator=gen).tolist(), "labels": [1] * 17},
    ]
    batch = R.PackedCollator(tok.pad_token_id)(rows)
    assert len(batch["tree_groups"]) > 1
    lengths = [len(r["input_ids"]) for r in rows]
    weights = torch.randn(batch["input_ids"].shape + (model.config.hidden_size,), generator=gen)
    grads = []
    for states in (_dense_states, R.decoder_states):
        model.zero_grad()
        h = states(model, batch)
        real = torch.cat([h[b, :n] for b, n in enumerate(lengths)])
        (real * torch.cat([weights[b, :n] for b, n in enumerate(lengths)])).sum().backward()
        grads.append((real.detach(), torch.cat([p.grad.flatten() for p in model.parameters() if p.grad is not None])))
    torch.testing.assert_close(grads[1][0], grads[0][0], rtol=1e-5, atol=1e-5)
    g_block, g_dense = grads[1][1], grads[0][1]
    # the same sums in another order: float32 rounding only
    assert float((g_block - g_dense).norm() / g_dense.norm()) < 1e-5
    assert model.config._attn_implementation == "sdpa"  # restored after the block


def test_only_sdpa_models_run_the_block_attention(monkeypatch):
    """SDPA models go through the registered block attention; eager attention keeps the dense mask (same states)."""
    from transformers import AttentionInterface

    from spectra_rec.testing.tiny import tiny_model_and_tokenizer

    model, tok = tiny_model_and_tokenizer()
    gen = torch.Generator().manual_seed(1)
    batch = R.PackedCollator(tok.pad_token_id)([_row([-1, 0, 0], [8, 3, 4], len(tok), gen)])
    calls = []
    R.decoder_states(model, batch)  # registers the block attention
    real = AttentionInterface._global_mapping[R.TREE_ATTENTION]
    monkeypatch.setitem(AttentionInterface._global_mapping, R.TREE_ATTENTION,
                        lambda *a, **kw: calls.append(1) or real(*a, **kw))
    with torch.no_grad():
        R.decoder_states(model, batch)
        assert len(calls) == model.config.num_hidden_layers
        model.config._attn_implementation = "eager"
        try:
            torch.testing.assert_close(R.decoder_states(model, batch), _dense_states(model, batch))
        finally:
            model.config._attn_implementation = "sdpa"
    assert len(calls) == model.config.num_hidden_layers


def test_gradient_accumulation_gives_the_mean_over_the_step(tmp_path):
    """4 rows x 2 micro-steps trains and logs as 8 rows x 1: the packed loss is not counted twice.

    transformers takes a custom loss as already scaled for accumulation when the model's forward
    accepts **kwargs; the packed trainer opts out, so the step's loss is the mean of its micro-batches.
    """
    from spectra_rec.align.config import TrainConfig
    from spectra_rec.align.train import ListDataset, train
    from spectra_rec.testing.tiny import tiny_model_and_tokenizer

    _, tok = tiny_model_and_tokenizer()
    gen = torch.Generator().manual_seed(0)
    rows = [{"input_ids": torch.randint(5, len(tok), (20,), generator=gen).tolist(),
             "labels": torch.randint(5, len(tok), (20,), generator=gen).tolist()} for _ in range(8)]
    result = {}
    for batch_size, accum in ((8, 1), (4, 2)):
        model, _ = tiny_model_and_tokenizer()
        model.train()
        cfg = TrainConfig(max_steps=1, batch_size=batch_size, grad_accum=accum, learning_rate=1e-3, warmup_ratio=0.0,
                          logging_steps=1)
        summary = train(model, tok, ListDataset(rows), {}, cfg, tmp_path / f"{batch_size}x{accum}", seed=0,
                        collator=R.PackedCollator(tok.pad_token_id), bf16=False,
                        trainer_class=lambda base: R.trainer_class(None, 0.0, base))
        result[batch_size, accum] = summary["curve"][0]["loss"]
    # equal-length rows: the mean of the two micro-batch means is the mean over all 8 rows
    assert result[4, 2] == pytest.approx(result[8, 1], rel=1e-4)


def test_trees_the_blocks_cannot_express_fall_back_to_one_block():
    # segment 4 hangs under segment 2, but segment 3 (under another trunk segment) comes between them
    assert R.attention_blocks([-1, 0, 0, 1, 2], [0, 1, 2, 3, 4]) == (0, [(0, 5, 0)])
    # ... while siblings under one trunk segment share a block, whatever their order
    assert R.attention_blocks([-1, 0, 0, 2, 0], [0, 0, 1, 2, 2, 4, 3]) == (3, [(3, 7, 2)])
    # a segment's tokens in two runs
    assert R.attention_blocks([-1, 0, 0], [0, 1, 2, 1]) == (0, [(0, 4, 0)])
