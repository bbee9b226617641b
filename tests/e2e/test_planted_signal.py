"""Planted-signal proof: the real CPT -> SFT -> probe path recovers strong, known per-user preferences.

The planted dataset prints every item's category in the prompt and keeps each user on a few of
K = 8 categories, so reading the history is enough (UHF reaches JS ~0.08). Before SFT trained the
readouts on the whole future distribution, every readout sat at popularity level (JS ~0.37-0.43).
The controls show that the check fails when the history never reaches the prompt or when the
probe reads the wrong position; the side-by-side test fails when SFT and the probe render or
tokenize a prompt differently.
"""

from __future__ import annotations

import numpy as np
import pytest

from spectra_rec.align import pipeline
from spectra_rec.align import readout_sft as R
from spectra_rec.errors import ConfigError
from spectra_rec.testing.planted import PLANTED_WORDS, planted_align_config, planted_dataset, probe_and_score
from spectra_rec.text import corpus as C
from spectra_rec.text import templates as T

READOUTS = ("logit", "name", "choice")


@pytest.fixture(scope="module")
def planted(tmp_path_factory):
    data = planted_dataset(tmp_path_factory.mktemp("planted"), PLANTED_WORDS)
    cfg = planted_align_config()
    model_dir = pipeline.align(data, cfg, runs=tmp_path_factory.mktemp("runs"))
    return data, cfg, model_dir


@pytest.fixture(scope="module")
def scores(planted):
    data, cfg, model_dir = planted
    return probe_and_score(data, model_dir, READOUTS, max_items=cfg.sft.context_items)


def test_every_readout_recovers_the_planted_preferences(scores):
    pop = scores["popularity"]["js"]
    print({m: {k: round(v, 3) for k, v in s.items()} for m, s in scores.items()})
    assert scores["uhf"]["js"] < 0.5 * pop  # the signal is there to read
    for r in READOUTS:
        assert scores[r]["js"] <= 0.5 * pop, (r, scores[r], pop)
        assert scores[r]["corr"] >= 0.7, (r, scores[r])
        # per-user spread: the readouts differ across users about as much as the truth does
        assert scores[r]["std"] >= 0.5 * scores["truth"]["std"], (r, scores[r])


def test_the_check_fails_when_the_history_never_reaches_the_prompt(planted, scores):
    data, cfg, model_dir = planted
    blind = probe_and_score(data, model_dir, READOUTS, max_items=0)
    for r in READOUTS:
        assert blind[r]["js"] > 0.5 * scores["popularity"]["js"], (r, blind[r])
        # Only the user-profile line still differs between users, and a prompt with no items is one SFT
        # never showed: what spread is left (measured: logit std 0.039 against the truth's 0.194) is
        # not the users' preferences, so it correlates with the truth less than the global shape does.
        assert blind[r]["std"] < 0.25 * scores["truth"]["std"], (r, blind[r])
        assert blind[r]["corr"] < scores["popularity"]["corr"], (r, blind[r], scores["popularity"])


def test_the_check_fails_when_the_probe_reads_the_wrong_position(planted, scores, monkeypatch):
    """Prompts cut one token short ("...Answer" instead of "...Answer:"): the answer is read a position early.

    The recovery check then fails: some readout falls apart. Which one depends on the training run: the yes/no readout on this
    toolkit's last two versions (JS 0.42 and 0.25 against the 0.19 bound), the choice readout on an
    earlier one (0.26); the name readout survives (about 0.12), the model already carrying part of
    its answer at the "Answer" token.
    """
    data, cfg, model_dir = planted
    monkeypatch.setattr(T, "ANSWER_CUE", "\nAnswer")
    early = probe_and_score(data, model_dir, READOUTS, max_items=cfg.sft.context_items)
    assert any(early[r]["js"] > 0.5 * scores["popularity"]["js"] for r in READOUTS), early


def _packed_row(planted, user: int, **sft):
    """(model, tokenizer, spec, reference points, packed row) of ``user``'s first SFT row."""
    from dataclasses import replace

    from spectra_rec.align.io import load_aligned

    (ds, split), cfg, model_dir = planted
    model, tok, _ = load_aligned(model_dir, device="cpu", merge=True)
    spec = R.readout_spec(tok, ds)
    fit = pipeline.make_fit(tok, pipeline.prompt_budget(tok, ds, cfg))  # the prefixes SFT trains on
    points = list(C.reference_points(ds, split, [user], replace(cfg.sft, **sft), seed=0, fit=fit))
    # the user's first row with the most points (a row near the window's start may hold fewer)
    groups = R.group_rows(points)
    pick = max(range(len(groups)), key=lambda g: (len(groups[g]), -g))
    rows = R.pack_reference_points(tok, spec, groups[pick], READOUTS, cfg.max_length, history=True).rows
    return model, tok, spec, groups[pick], rows[0]


@pytest.mark.parametrize("refs_per_row", [1, 3])
def test_sft_rows_and_probe_prompts_are_the_same_tokens(planted, refs_per_row):
    """One user's packed SFT row next to the probe's prompts for the same history, token for token.

    With several reference points in the row, each point's questions see the history up to that point only.
    """
    from spectra_rec.probe.prompts import PromptBuilder
    from spectra_rec.probe.readouts import make_readout

    (ds, split), cfg, _ = planted
    _, tok, spec, points, row = _packed_row(planted, 0, refs_per_row=refs_per_row)
    assert len(points) == refs_per_row == len(row["refs"])
    builder = PromptBuilder(ds, split, tok, 10_000, max_items=None)
    start = max(0, points[-1].ref - cfg.sft.context_items) + points[-1].dropped  # the row's first item shown
    for rp, ref in zip(points, row["refs"]):
        # the probe's history prefix for the reference point's context items
        context = split.train_items(0)[start: rp.ref]
        probe_prefix = builder.encode_prefix(T.history_prefix(ds, 0, context)[0])
        for name in ("logit", "choice"):
            ro = make_readout(name)
            ro.prepare(builder)
            reads = ref["reads"]["yn" if name == "logit" else "ch"]
            for q, at in zip(ro.suffixes, reads):
                tokens, pos = R.visible(row, at)
                assert tuple(tokens) == tuple(probe_prefix) + tuple(q)  # the same tokens, read at the last one ...
                assert pos == list(range(len(tokens)))  # ... at the same positions
            assert list(ro.token_ids[: len(spec.affirmative + spec.negative)] if name == "logit" else ro.token_ids) == \
                list(spec.affirmative + spec.negative if name == "logit" else spec.letters)
        name_ro = make_readout("name")
        name_ro.prepare(builder)
        assert [tuple(c) for c in name_ro.continuations] == [tuple(n) for n in spec.names]
        # the name question block, read where the probe reads the first name token
        tokens, _ = R.visible(row, ref["reads"]["nm"][0][0])
        assert tuple(tokens) == tuple(probe_prefix) + spec.name_question
        # the auxiliary history question sees the same prefix; its target is that prefix's category mix
        tokens, _ = R.visible(row, ref["reads"]["hs"][0][0])
        assert tuple(tokens) == tuple(probe_prefix) + spec.history_question
        mass = C.category_mass(ds, context)
        np.testing.assert_allclose(ref["history"], mass / mass.sum(), rtol=1e-6)
    # the yes/no questions share their stem: it is in the row once per reference point (and once per sampled
    # yes/no example, a block of its own), not once per category
    stem = list(spec.yes_no[0][: spec.yes_no_stem])
    assert len(stem) > 3

    def count(ids):
        return sum(list(ids[j : j + len(stem)]) == stem for j in range(len(ids)))

    sampled = sum(count(tok(q, add_special_tokens=False)["input_ids"]) for rp in points for _, q, _ in rp.questions)
    assert count(row["input_ids"]) == refs_per_row + sampled


@pytest.mark.parametrize("refs_per_row", [1, 3])
def test_packed_rows_match_unpacked_prompts_numerically(planted, refs_per_row):
    """The segment-tree mask makes each question see only its prefix and itself: its logits equal the lone prompt's.

    The row goes through ``decoder_states``, the block-by-block attention SFT trains with.
    """
    import torch

    model, tok, _, _, row = _packed_row(planted, 1, refs_per_row=refs_per_row)
    batch = R.PackedCollator(tok.pad_token_id)([row])
    with torch.no_grad():
        packed = model.get_output_embeddings()(R.decoder_states(model, batch))[0]
        for ref in row["refs"]:
            for at in ref["reads"]["yn"][:3] + ref["reads"]["ch"] + [ref["reads"]["nm"][0][0]]:
                tokens, _ = R.visible(row, at)
                alone = model(input_ids=torch.tensor([tokens])).logits[0, -1]
                torch.testing.assert_close(packed[at], alone, rtol=1e-4, atol=1e-4)


def test_planted_generator_rejects_more_preferred_categories_than_k():
    from spectra_rec.data.synthetic import SyntheticConfig

    with pytest.raises(ConfigError, match=r"preferred_categories \(9\).*K = n_l1 \* n_l2 = 8"):
        SyntheticConfig(n_l1=2, n_l2=4, preferred_categories=9)
