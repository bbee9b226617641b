"""Reranker baseline: Qwen3-Reranker prompt format, yes/no relevance from random-weight (not aligned) models."""

from __future__ import annotations

import json
import logging

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from spectra_rec.probe.backends.hf import HFBackend  # noqa: E402
from spectra_rec.probe.prompts import PromptBuilder  # noqa: E402
from spectra_rec.probe.reranker import RerankerReadout  # noqa: E402
from spectra_rec.testing.tiny import probe_test_model, sharpen, tiny_data  # noqa: E402
from spectra_rec.text import templates as T  # noqa: E402


def full_logprobs(model, ids):
    with torch.inference_mode():
        return torch.log_softmax(model(input_ids=torch.tensor([list(ids)])).logits[0].float(), -1)


@pytest.fixture(scope="module")
def yes_no_model():
    """A random tiny Qwen3 whose tokenizer has "yes" and "no" as single tokens after the reranker prompt."""
    from spectra_rec.align.model import build_tiny_qwen3
    from spectra_rec.align.tokenizer import build_tokenizer
    from spectra_rec.testing.tiny import TINY_MODEL
    from spectra_rec.text.corpus import tokenizer_texts

    ds, split = tiny_data()
    texts = list(tokenizer_texts(ds, split))
    texts += [T.reranker_prompt("", c) + w for c in ds.categories for w in ("yes", "no")] * 20
    tok = build_tokenizer(texts, vocab_size=700, extra_words=ds.categories)
    return ds, split, sharpen(build_tiny_qwen3(tok, TINY_MODEL, seed=2), seed=2), tok


def prepared(ds, split, tok, ro):
    builder = PromptBuilder(ds, split, tok, 1024)
    ro.prepare(builder)
    return builder


def test_prompt_is_the_qwen3_reranker_format(yes_no_model):
    ds, split, model, tok = yes_no_model
    ro = RerankerReadout()
    builder = prepared(ds, split, tok, ro)
    assert ro.continuations is None  # single-token answers: next-token path
    u = int(split.eval_users[0])
    h = builder.history(u, ro.frame, ro.reserve)
    assert h.text.startswith("<|im_start|>system\nJudge whether the Document meets the requirements")
    for c, suffix in zip(ds.categories, ro.suffixes):
        full = T.reranker_prompt(T.history_prefix(ds, u, split.train_items(u))[0], c)
        assert h.ids + suffix == tuple(tok(full)["input_ids"])


@pytest.mark.parametrize("normalize", ["sum", "softmax"])
def test_relevance_scores_read_yes_and_no(yes_no_model, normalize):
    ds, split, model, tok = yes_no_model
    ro = RerankerReadout(normalize=normalize, tau=0.5)
    builder = prepared(ds, split, tok, ro)
    users = split.eval_users[:2]
    res = ro.score(HFBackend(model, tok, batch_size=4), [builder.history(int(u), ro.frame, ro.reserve) for u in users])
    yes, no = (tok.convert_tokens_to_ids(w) for w in ("yes", "no"))
    for r, u in zip(res, users):
        hist = T.history_prefix(ds, int(u), split.train_items(u))[0]
        s = []
        for c in ds.categories:
            lp = full_logprobs(model, tok(T.reranker_prompt(hist, c))["input_ids"])[-1]
            s.append(float(lp[yes] - lp[no]))
        s = np.array(s)
        assert r.scores == pytest.approx(s, abs=1e-4)
        if normalize == "sum":
            rel = 1 / (1 + np.exp(-s))
            assert r.probs == pytest.approx(rel / rel.sum(), abs=1e-5)
        else:
            e = np.exp((s - s.max()) / 0.5)
            assert r.probs == pytest.approx(e / e.sum(), abs=1e-5)
    assert np.ptp(res[0].probs) > 1e-3


def test_multi_token_answers_use_sequence_logprobs(caplog):
    ds, split = tiny_data()
    model, tok = probe_test_model()  # its small BPE splits "no" into "n", "o"
    ro = RerankerReadout()
    with caplog.at_level(logging.WARNING):
        builder = prepared(ds, split, tok, ro)
    assert "sequence log-probability" in caplog.text and ro.continuations is not None
    u = int(split.eval_users[3])
    (r,) = ro.score(HFBackend(model, tok), [builder.history(u, ro.frame, ro.reserve)])
    hist = T.history_prefix(ds, u, split.train_items(u))[0]
    for j, c in enumerate(ds.categories):
        prompt = tok(T.reranker_prompt(hist, c))["input_ids"]
        logp = {}
        for w in ("yes", "no"):
            ids = tok(T.reranker_prompt(hist, c) + w)["input_ids"]
            lp = full_logprobs(model, ids)
            logp[w] = sum(float(lp[t - 1, ids[t]]) for t in range(len(prompt), len(ids)))
        assert r.scores[j] == pytest.approx(logp["yes"] - logp["no"], abs=1e-4)


def test_cli_refuses_an_adapter_aligned_on_the_data(tmp_path, capsys, synthetic_dir):
    from spectra_rec.cli import main

    sft = tmp_path / "sft"
    sft.mkdir()
    (sft / "manifest.json").write_text(json.dumps({"kind": "sft"}))
    code = main(["rerank", "--dataset", str(synthetic_dir), "--adapter", str(sft), "--runs", str(tmp_path / "runs")])
    assert code == 2 and "aligned on the data" in capsys.readouterr().err


def test_cli_random_model(tmp_path, capsys, synthetic_dir):
    from spectra_rec.cli import main
    from spectra_rec.priors.table import PriorTable

    out = tmp_path / "r.csv"
    code = main(["rerank", "--dataset", str(synthetic_dir), "--random", "--max-users", "3", "--max-items", "4",
                 "--out", str(out), "--runs", str(tmp_path / "runs"), "--no-progress"])
    assert code == 0 and capsys.readouterr().out.strip() == str(out)
    table = PriorTable.load(out)
    assert table.method == "qwen3-reranker" and table.probs.shape == (3, 12)
    assert table.meta["normalize"] == "sum" and "random" in table.meta["model"]
