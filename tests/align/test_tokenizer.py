"""The toolkit tokenizer: single-token verbalizers and letters after the answer cue, distinct specials."""

from __future__ import annotations


# Sleeping OpenMP workers: on a shared CPU, spinning workers made torch steps ~5x slower (see
# spectra_rec/align/cli.py). Effective only if set before torch loads, hence before its import.

import pytest

from spectra_rec.align.tokenizer import (
    TokenizationError,
    build_tokenizer,
    check_single_tokens,
    required_words,
    token_cost,
)
from spectra_rec.testing.tiny import tiny_tokenizer
from spectra_rec.text import templates as T
from spectra_rec.text.corpus import tokenizer_texts


@pytest.fixture(scope="module")
def tok(synthetic, synthetic_split):
    return build_tokenizer(tokenizer_texts(synthetic, synthetic_split), vocab_size=600, extra_words=synthetic.categories)


def test_verbalizers_and_letters_are_single_tokens_after_the_cue(tok, synthetic):
    ids = check_single_tokens(tok, required_words())
    assert set(ids) == set(T.Verbalizers().all()) | set(T.ANSWER_LETTERS)
    assert len(set(ids.values())) == len(ids)
    # The id read after a real prompt is the same: encode a full yes/no prompt + answer.
    prefix = T.history_prefix(synthetic, 0, [0, 1, 2])[0] + T.yes_no_question(synthetic.categories[0])
    for word in ("Yes", "no", "A", "Z"):
        p = tok(prefix)["input_ids"]
        full = tok(prefix + T.answer(word))["input_ids"]
        assert full[: len(p)] == p and full[len(p) :] == [ids[word]]


def test_special_tokens_are_distinct_and_bos_is_prepended(tok):
    assert len({tok.pad_token_id, tok.bos_token_id, tok.eos_token_id}) == 3
    assert tok("Answer:")["input_ids"][0] == tok.bos_token_id
    assert tok("Answer:", add_special_tokens=False)["input_ids"][0] != tok.bos_token_id
    assert tok.model_max_length == 1024


def test_prefix_and_suffix_encode_like_the_whole_prompt(tok, synthetic):
    """Probes encode the history once and each question separately: the ids must concatenate."""
    prefix = T.history_prefix(synthetic, 3, [5, 6, 7, 8])[0]
    for suffix in (T.name_question(), T.choice_question(synthetic.categories), T.dg_question(3)):
        whole = tok(prefix + suffix)["input_ids"]
        parts = tok(prefix)["input_ids"] + tok(suffix, add_special_tokens=False)["input_ids"]
        assert whole == parts


def test_category_names_are_cheap(tok, synthetic):
    cost = token_cost(tok, synthetic.categories)
    assert max(cost.values()) <= 6, cost


def test_check_single_tokens_names_the_words_that_split(tok):
    with pytest.raises(TokenizationError, match="Supercalifragilistic"):
        check_single_tokens(tok, ["Yes", "Supercalifragilistic"])


def test_save_and_reload_keeps_ids(tok, tmp_path):
    from transformers import AutoTokenizer

    tok.save_pretrained(tmp_path / "tok")
    again = AutoTokenizer.from_pretrained(tmp_path / "tok")
    text = "User profile: age 30.\nQuestion: which category will the user choose next?\nAnswer: Yes"
    assert again(text)["input_ids"] == tok(text)["input_ids"]
    assert check_single_tokens(again, required_words()) == check_single_tokens(tok, required_words())
    assert (again.pad_token_id, again.bos_token_id, again.eos_token_id) == (tok.pad_token_id, tok.bos_token_id, tok.eos_token_id)


def test_a_tiny_vocabulary_still_forces_the_required_words():
    tok = build_tokenizer(["hello world"] * 10, vocab_size=300)
    check_single_tokens(tok, required_words())
    with pytest.raises(ValueError, match="vocab_size"):
        build_tokenizer(["x"], vocab_size=100)


def test_tiny_tokenizer_fixture_is_deterministic():
    a, b = tiny_tokenizer(), tiny_tokenizer()
    assert a.get_vocab() == b.get_vocab()
