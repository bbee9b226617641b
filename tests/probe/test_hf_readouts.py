"""HF backend and readouts on a real (tiny, random, sharpened) Qwen3: KV reuse parity, formulas, context fitting.

Every number here is read from the model's logits; the references are independent full
forward passes over the jointly tokenized template text.
"""

from __future__ import annotations

import re

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from spectra_rec.align.tokenizer import check_single_tokens  # noqa: E402
from spectra_rec.probe.backends import Prompt  # noqa: E402
from spectra_rec.probe.backends.hf import HFBackend  # noqa: E402
from spectra_rec.probe.prompts import ContextError, PromptBuilder, TokenizationError  # noqa: E402
from spectra_rec.probe.readouts import (  # noqa: E402
    ChoiceReadout,
    HierarchicalReadout,
    LogitReadout,
    NameReadout,
    softmax,
)
from spectra_rec.testing.tiny import probe_test_model, tiny_data  # noqa: E402
from spectra_rec.text import templates as T  # noqa: E402
from spectra_rec.text.templates import Verbalizers  # noqa: E402

PARITY_ATOL = 1e-4
"""float32 on CPU: cached (prefix KV + right-padded suffix batch) vs full recomputation."""


@pytest.fixture(scope="module")
def tiny():
    ds, split = tiny_data()
    model, tok = probe_test_model()
    return ds, split, model, tok


def full_logprobs(model, ids) -> torch.Tensor:
    """Reference: one unpadded, uncached forward pass; log-softmax over the vocabulary at every position."""
    with torch.inference_mode():
        return torch.log_softmax(model(input_ids=torch.tensor([list(ids)])).logits[0].float(), -1)


def lse(x):
    return float(torch.logsumexp(torch.as_tensor(x, dtype=torch.float64), 0))


def user_prompts(tok, ds, split, users, frame=lambda h: h):
    return [tuple(tok(frame(T.history_prefix(ds, u, split.train_items(u))[0]))["input_ids"]) for u in users]


# ---- backend ------------------------------------------------------------------------------
def test_cached_and_uncached_next_token_logprobs_agree(tiny):
    ds, split, model, tok = tiny
    prefixes = user_prompts(tok, ds, split, split.eval_users[:3])
    suffixes = [tuple(tok(T.yes_no_question(c), add_special_tokens=False)["input_ids"]) for c in ds.categories]
    suffixes.append(())  # an empty suffix reads the prefix's own last logits
    suffixes.append(tuple(tok(T.name_question() + " x y z", add_special_tokens=False)["input_ids"]))  # longer
    prompts = [Prompt(p, s) for p in prefixes for s in suffixes]
    ids = list(range(0, len(tok), 7))
    cached = HFBackend(model, tok, batch_size=3).next_token_logprobs(prompts, ids)  # several batches per user
    full = HFBackend(model, tok, reuse_prefix=False, batch_size=5).next_token_logprobs(prompts, ids)
    assert np.abs(cached - full).max() < PARITY_ATOL
    ref = full_logprobs(model, prompts[4].ids())[-1, ids].double().numpy()
    assert cached[4] == pytest.approx(ref, abs=PARITY_ATOL)
    assert np.ptp(cached[:, 0]) > 0.1  # the sharpened model's scores really differ between prompts


def test_prefix_is_prefilled_once_per_user(tiny):
    ds, split, model, tok = tiny
    prefixes = user_prompts(tok, ds, split, split.eval_users[:2])
    suffixes = [tuple(tok(T.yes_no_question(c), add_special_tokens=False)["input_ids"]) for c in ds.categories]
    common = tok("Question: will the user's next item be in the category", add_special_tokens=False)["input_ids"]
    assert all(s[: len(common)] == tuple(common) for s in suffixes)
    k = next(j for j in range(min(map(len, suffixes))) if len({s[j] for s in suffixes}) > 1)
    assert k >= len(common)  # (" G" may be shared too)
    prompts = [Prompt(p, s) for p in prefixes for s in suffixes]
    plain = HFBackend(model, tok, batch_size=4, share_suffix_start=False)
    a = plain.next_token_logprobs(prompts, [1, 2])
    assert plain.stats["prefill_calls"] == 2
    assert plain.stats["suffix_calls"] == 2 * int(np.ceil(len(suffixes) / 4))
    assert plain.stats["prefill_tokens"] == sum(map(len, prefixes))
    assert plain.stats["suffix_tokens"] == 2 * sum(map(len, suffixes))
    shared = HFBackend(model, tok, batch_size=4)  # the questions' common start is prefilled once per user
    b = shared.next_token_logprobs(prompts, [1, 2])
    assert shared.stats["prefill_tokens"] == sum(map(len, prefixes)) + 2 * k
    assert shared.stats["suffix_tokens"] == 2 * (sum(map(len, suffixes)) - len(suffixes) * k)
    assert a == pytest.approx(b, abs=PARITY_ATOL)


def test_prefix_extension_matches_a_fresh_prefill(tiny):
    ds, split, model, tok = tiny
    (p,) = user_prompts(tok, ds, split, split.eval_users[:1])
    longer = p + tuple(tok("Given: the next item is in G0.\n", add_special_tokens=False)["input_ids"])
    suffix = tuple(tok(T.yes_no_question(ds.categories[0]), add_special_tokens=False)["input_ids"])
    be = HFBackend(model, tok)
    be.next_token_logprobs([Prompt(p, suffix)], [3])
    extended = be.next_token_logprobs([Prompt(longer, suffix)], [3, 4])
    assert be.stats["prefix_extensions"] == 1
    fresh = HFBackend(model, tok).next_token_logprobs([Prompt(longer, suffix)], [3, 4])
    assert extended == pytest.approx(fresh, abs=PARITY_ATOL)
    # a sibling prefix (same history, another continuation) reuses the cached part by cropping
    sibling = p + tuple(tok("Given: the next item is in G1.\n", add_special_tokens=False)["input_ids"])
    cropped = be.next_token_logprobs([Prompt(sibling, suffix)], [3, 4])
    assert be.stats["prefix_extensions"] == 2 and be.stats["prefill_calls"] == 3
    assert be.stats["prefill_tokens"] < len(p) + len(longer) - len(p) + len(sibling)
    assert cropped == pytest.approx(HFBackend(model, tok).next_token_logprobs([Prompt(sibling, suffix)], [3, 4]),
                                    abs=PARITY_ATOL)


def test_continuation_logprobs_match_a_full_forward(tiny):
    ds, split, model, tok = tiny
    (p,) = user_prompts(tok, ds, split, split.eval_users[:1], frame=lambda h: h + T.name_question())
    conts = [tuple(tok(T.answer(c), add_special_tokens=False)["input_ids"]) for c in ds.categories]
    conts.append(tuple(tok(" Yes", add_special_tokens=False)["input_ids"]))  # single token
    prompts = [Prompt(p) for _ in conts]
    cached = HFBackend(model, tok, batch_size=2).continuation_logprobs(prompts, conts)
    full = HFBackend(model, tok, reuse_prefix=False).continuation_logprobs(prompts, conts)
    assert cached == pytest.approx(full, abs=PARITY_ATOL)
    for j, c in enumerate(conts):
        lp = full_logprobs(model, p + c)
        ref = sum(float(lp[len(p) - 1 + t, c[t]]) for t in range(len(c)))
        assert cached[j] == pytest.approx(ref, abs=PARITY_ATOL)


def test_greedy_generation_matches_transformers_generate(tiny):
    ds, split, model, tok = tiny
    (p,) = user_prompts(tok, ds, split, split.eval_users[:1], frame=lambda h: h + T.dg_question(3))
    cached = HFBackend(model, tok).generate([Prompt(p)], max_new_tokens=12)
    full = HFBackend(model, tok, reuse_prefix=False).generate([Prompt(p)], max_new_tokens=12)
    with torch.inference_mode():
        ref = model.generate(torch.tensor([list(p)]), max_new_tokens=12, do_sample=False, eos_token_id=None,
                             pad_token_id=tok.pad_token_id)[0, len(p):].tolist()
    assert cached == full == [ref]


def test_too_long_prompt_raises(tiny):
    ds, split, model, tok = tiny
    be = HFBackend(model, tok)
    with pytest.raises(ValueError, match="context"):
        be.next_token_logprobs([Prompt(tuple([5] * (be.max_length + 1)))], [1])


# ---- prompts --------------------------------------------------------------------------------
def test_history_keeps_the_most_recent_train_items_to_fit(tiny):
    ds, split, model, tok = tiny
    u = int(split.eval_users[np.argmax(split.n_train[split.eval_users])])
    items = split.train_items(u)
    whole = PromptBuilder(ds, split, tok, 10_000).history(u)
    assert whole.dropped == 0 and whole.n_items == len(items)
    budget = len(whole.ids) - 20
    h = PromptBuilder(ds, split, tok, budget).history(u, reserve=5)
    assert len(h.ids) <= budget - 5 and h.dropped > 0 and h.n_items + h.dropped == len(items)
    assert h.text == T.history_prefix(ds, u, items[h.dropped:])[0]  # the newest items kept
    one_more = T.history_prefix(ds, u, items[h.dropped - 1:])[0]
    assert len(tok(one_more)["input_ids"]) > budget - 5  # and as many as fit
    capped = PromptBuilder(ds, split, tok, 10_000, max_items=3).history(u)
    assert capped.n_items == 3 and capped.dropped == len(items) - 3


def test_bare_question_that_does_not_fit_is_a_clear_error(tiny):
    ds, split, model, tok = tiny
    u = int(split.eval_users[0])
    with pytest.raises(ContextError, match="even with no history items"):
        PromptBuilder(ds, split, tok, 12).history(u, reserve=4)


def test_prompts_hold_train_window_items_only(tiny):
    ds, split, model, tok = tiny
    builder = PromptBuilder(ds, split, tok, 10_000)
    for u in split.eval_users[:20]:
        text = builder.history(int(u)).text
        shown = [int(x) for x in re.findall(r"- Item (\d+) \(", text)]
        assert shown == [int(str(ds.item_ids[i])[1:]) for i in split.train_items(u)]  # in order, nothing else


def test_answer_word_that_splits_is_named(tiny):
    ds, split, model, tok = tiny
    builder = PromptBuilder(ds, split, tok, 1024)
    with pytest.raises(TokenizationError, match="Absolutely"):
        LogitReadout(Verbalizers(("Yes", "Absolutely"), ("No",))).prepare(builder)


# ---- readouts ---------------------------------------------------------------------------------
def histories(ds, split, tok, readout, users, max_length=1024):
    builder = PromptBuilder(ds, split, tok, max_length)
    readout.prepare(builder)
    return [builder.history(int(u), readout.frame, readout.reserve) for u in users]


def test_logit_readout_matches_the_formula_and_uncached_scores(tiny):
    ds, split, model, tok = tiny
    ro = LogitReadout(tau=0.7)
    users = split.eval_users[:3]
    hs = histories(ds, split, tok, ro, users)
    cached = ro.score(HFBackend(model, tok, batch_size=4), hs)
    full = ro.score(HFBackend(model, tok, reuse_prefix=False), hs)
    ids = check_single_tokens(tok, Verbalizers().all())
    for i, u in enumerate(users):
        assert cached[i].scores == pytest.approx(full[i].scores, abs=PARITY_ATOL)
        assert cached[i].probs == pytest.approx(full[i].probs, abs=PARITY_ATOL)
        assert cached[i].probs.sum() == pytest.approx(1.0, abs=1e-12)
        s = []
        for c in ds.categories:
            text = T.history_prefix(ds, int(u), split.train_items(u))[0] + T.yes_no_question(c)
            lp = full_logprobs(model, tok(text)["input_ids"])[-1]
            s.append(lse([lp[ids["Yes"]], lp[ids["yes"]]]) - lse([lp[ids["No"]], lp[ids["no"]]]))
        assert cached[i].scores == pytest.approx(s, abs=PARITY_ATOL)
        assert cached[i].probs == pytest.approx(softmax(np.array(s), 0.7), abs=PARITY_ATOL)
    assert np.ptp(cached[0].probs) > 0.01


def test_name_readout_sums_name_token_logprobs(tiny):
    ds, split, model, tok = tiny
    ro = NameReadout()
    u = int(split.eval_users[1])
    (res,) = ro.score(HFBackend(model, tok), histories(ds, split, tok, ro, [u]))
    prompt = T.history_prefix(ds, u, split.train_items(u))[0] + T.name_question()
    for j, c in enumerate(ds.categories):
        p_ids = tok(prompt)["input_ids"]
        ids = tok(prompt + T.answer(c))["input_ids"]
        lp = full_logprobs(model, ids)
        ref = sum(float(lp[t - 1, ids[t]]) for t in range(len(p_ids), len(ids)))
        assert res.scores[j] == pytest.approx(ref, abs=PARITY_ATOL)
    assert res.probs == pytest.approx(softmax(res.scores), abs=1e-12)


def test_choice_readout_reads_answer_letters(tiny):
    ds, split, model, tok = tiny
    ro = ChoiceReadout()
    u = int(split.eval_users[2])
    (res,) = ro.score(HFBackend(model, tok), histories(ds, split, tok, ro, [u]))
    text = T.history_prefix(ds, u, split.train_items(u))[0] + T.choice_question(ds.categories)
    lp = full_logprobs(model, tok(text)["input_ids"])[-1]
    letters = check_single_tokens(tok, T.ANSWER_LETTERS[: ds.K])
    ref = np.array([float(lp[letters[L]]) for L in T.ANSWER_LETTERS[: ds.K]])
    assert res.scores == pytest.approx(ref, abs=PARITY_ATOL)
    assert ro.meta()["scheme"] == "single" and res.extra["n_prompts"] == 1


@pytest.fixture(scope="module")
def k60(tmp_path_factory):
    """Synthetic data with K = 60 categories (3 x 20) and a tiny model whose tokenizer covers them."""
    from spectra_rec.data import load_dataset, split_dataset
    from spectra_rec.data.synthetic import SyntheticConfig, make_synthetic

    cfg = SyntheticConfig(n_users=12, n_items=90, n_l1=3, n_l2=20, mean_interactions=10, seed=3)
    ds = load_dataset(make_synthetic(tmp_path_factory.mktemp("k60") / "k60", cfg))
    split = split_dataset(ds)
    model, tok = probe_test_model(ds, seed=1)
    return ds, split, model, tok


def test_choice_readout_with_60_categories_uses_anchored_blocks(k60):
    ds, split, model, tok = k60
    assert ds.K == 60
    ro = ChoiceReadout(anchor=ds.categories[7])
    users = split.eval_users[:2]
    hs = histories(ds, split, tok, ro, users)
    assert [len(b) for b in ro.blocks] == [26, 26, 10]  # anchor + 25, anchor + 25, anchor + 9
    assert all(b[0] == 7 for b in ro.blocks)
    assert sorted({c for b in ro.blocks for c in b}) == list(range(60))
    cached = ro.score(HFBackend(model, tok, batch_size=2), hs)
    full = ro.score(HFBackend(model, tok, reuse_prefix=False), hs)
    letters = check_single_tokens(tok, T.ANSWER_LETTERS)
    for i, u in enumerate(users):
        res = cached[i]
        assert res.probs == pytest.approx(full[i].probs, abs=PARITY_ATOL)
        assert res.probs.sum() == pytest.approx(1.0, abs=1e-12) and np.isfinite(res.scores).all()
        assert res.scores[7] == 0.0 and res.extra["n_prompts"] == 3
        # s(c) = l_b[letter(c)] - l_b[letter(anchor)] in c's block, from an independent full forward
        hist = T.history_prefix(ds, int(u), split.train_items(u))[0]
        for blk in ro.blocks:
            text = hist + T.choice_question([ds.categories[c] for c in blk])
            lp = full_logprobs(model, tok(text)["input_ids"])[-1]
            for j, c in enumerate(blk):
                ref = float(lp[letters[T.ANSWER_LETTERS[j]]] - lp[letters["A"]])
                assert res.scores[c] == pytest.approx(ref, abs=PARITY_ATOL)


def test_hierarchical_all_branches_reproduces_flat_probing_exactly(k60):
    """Partition taxonomy + every branch expanded + L1 mass = the flat readout's L1 marginals -> p_hier = p_flat."""
    ds, split, model, tok = k60
    users = split.eval_users[:2]
    flat_ro = LogitReadout()
    flat = flat_ro.score(HFBackend(model, tok), histories(ds, split, tok, flat_ro, users))
    hier = HierarchicalReadout(branches="all", l2_prompt="flat")
    hs = histories(ds, split, tok, hier, users)
    p_flat = np.array([r.probs for r in flat])
    l1_marginal = np.array([[p[kids].sum() for kids in hier.children] for p in p_flat])
    res = hier.score(HFBackend(model, tok), hs, l1_scores=np.log(l1_marginal))
    assert np.array([r.probs for r in res]) == pytest.approx(p_flat, abs=1e-9)
    # L2 probes on the same prefix give the flat yes/no scores
    assert np.array([r.scores for r in res]) == pytest.approx(np.array([r.scores for r in flat]), abs=PARITY_ATOL)


def test_hierarchical_chain_rule_with_model_l1_probes(k60):
    ds, split, model, tok = k60
    users = split.eval_users[:2]
    hier = HierarchicalReadout(branches="all", tau=1.3, tau_l2=0.8, l2_prompt="flat")
    hs = histories(ds, split, tok, hier, users)
    be = HFBackend(model, tok)
    res = hier.score(be, hs)
    assert be.stats["prefill_calls"] == len(users)  # the L2 pass reused each user's L1 prefix
    assert be.stats["prefix_hits"] >= len(users)
    flat_ro = LogitReadout()
    flat = flat_ro.score(HFBackend(model, tok), histories(ds, split, tok, flat_ro, users))
    for r, f in zip(res, flat):
        p1 = np.array([r.extra[f"L1:{n}"] for n in hier.l1_names])
        assert p1.sum() == pytest.approx(1.0)
        for b, kids in enumerate(hier.children):
            assert r.probs[kids].sum() == pytest.approx(p1[b], abs=1e-12)
            assert r.probs[kids] / p1[b] == pytest.approx(softmax(f.scores[kids], 0.8), abs=PARITY_ATOL)
    # L1 scores are the model's yes/no probes of the L1 names
    u = int(users[0])
    hist = T.history_prefix(ds, u, split.train_items(u))[0]
    ids = check_single_tokens(tok, Verbalizers().all())
    s1 = []
    for n in hier.l1_names:
        lp = full_logprobs(model, tok(hist + T.yes_no_question(n))["input_ids"])[-1]
        s1.append(lse([lp[ids["Yes"]], lp[ids["yes"]]]) - lse([lp[ids["No"]], lp[ids["no"]]]))
    assert [res[0].extra[f"L1:{n}"] for n in hier.l1_names] == pytest.approx(softmax(np.array(s1), 1.3), abs=1e-4)


def test_hierarchical_conditional_l2_prompts_match_full_text_passes(k60):
    """Default L2 prompt: "if the next item is in c1, will it be in c2?", scored with the prefix cache
    and the branch's shared question start, equal to an uncached forward pass of the whole text."""
    ds, split, model, tok = k60
    u = int(split.eval_users[0])
    hier = HierarchicalReadout(branches="top:1", tau_l2=0.7)
    be = HFBackend(model, tok)
    (res,) = hier.score(be, histories(ds, split, tok, hier, [u]))
    assert hier.meta()["l2_prompt"] == "conditional"
    p1 = np.array([res.extra[f"L1:{n}"] for n in hier.l1_names])
    b = int(np.argmax(p1))
    hist = T.history_prefix(ds, u, split.train_items(u))[0]
    ids = check_single_tokens(tok, Verbalizers().all())
    ref = []
    for c in hier.children[b]:
        text = hist + T.conditional_yes_no_question(hier.l1_names[b], ds.categories[c])
        assert ("is in " + hier.l1_names[b]) in text
        lp = full_logprobs(model, tok(text)["input_ids"])[-1]
        ref.append(lse([lp[ids["Yes"]], lp[ids["yes"]]]) - lse([lp[ids["No"]], lp[ids["no"]]]))
    assert res.scores[hier.children[b]] == pytest.approx(ref, abs=PARITY_ATOL)
    assert res.probs[hier.children[b]] / p1[b] == pytest.approx(softmax(np.array(ref), 0.7), abs=PARITY_ATOL)
    # the conditional scores are not the flat ones: the L1 condition is in the prompt
    flat = HierarchicalReadout(branches="top:1", tau_l2=0.7, l2_prompt="flat")
    (res_flat,) = flat.score(HFBackend(model, tok), histories(ds, split, tok, flat, [u]))
    assert not np.allclose(res_flat.scores[hier.children[b]], ref, atol=1e-3)
    with pytest.raises(ValueError, match="l2_prompt must be one of"):
        HierarchicalReadout(l2_prompt="nested")


def test_hierarchical_top_and_tail_branches(k60):
    ds, split, model, tok = k60
    users = split.eval_users[:2]
    top = HierarchicalReadout(branches="top:1", unexpanded="zero")
    tail = HierarchicalReadout(branches="tail:1", unexpanded="uniform")
    res_top = top.score(HFBackend(model, tok), histories(ds, split, tok, top, users))
    res_tail = tail.score(HFBackend(model, tok), histories(ds, split, tok, tail, users))
    for rt, rl in zip(res_top, res_tail):
        p1 = np.array([rt.extra[f"L1:{n}"] for n in top.l1_names])
        best, worst = int(np.argmax(p1)), int(np.argmin(p1))
        assert rt.probs[top.children[best]].sum() == pytest.approx(1.0)  # zero: only the chosen branch
        assert rt.extra["n_prompts"] == 3 + 20
        assert np.isnan(rt.scores).sum() == 40
        for b, kids in enumerate(tail.children):
            if b != worst:  # unexpanded: its L1 mass spread evenly
                assert rl.probs[kids] == pytest.approx(np.full(len(kids), p1[b] / len(kids)), abs=1e-12)
        assert np.isfinite(rl.scores[tail.children[worst]]).all()


def test_hierarchical_needs_a_partition(tiny):
    ds, split, model, tok = tiny
    builder = PromptBuilder(ds, split, tok, 1024)
    bad = {"G0": ["G0-s0", "G0-s1"], "G1": ["G0-s1", "G1-s0", "G1-s1", "G1-s2", "G0-s2"]}
    with pytest.raises(ValueError, match="not a partition"):
        HierarchicalReadout(taxonomy=bad).prepare(builder)
    with pytest.raises(ValueError, match="under no L1"):
        HierarchicalReadout(taxonomy={"G0": ["G0-s0"]}).prepare(builder)


def test_history_with_a_summary_lists_the_newest_items_and_sums_up_the_rest(tiny):
    ds, split, model, tok = tiny
    u = int(split.eval_users[np.argmax(split.n_train[split.eval_users])])
    items = split.train_items(u)
    h = PromptBuilder(ds, split, tok, 10_000, max_items=3, history_summary=True).history(u)
    assert h.n_items == 3 and h.dropped == len(items) - 3
    assert h.text == T.history_prefix(ds, u, items, max_items=3, summary=True)[0]
    assert T.history_summary(ds, items[: h.dropped]) in h.text
