"""A byte-level BPE tokenizer trained on the corpus, wrapped as a Hugging Face fast tokenizer.

The probes read single next-token logits, so every verbalizer (``Yes``, ``yes``, ``No``, ``no``)
and every answer letter (``A`` .. ``Z``) must be ONE token exactly as it follows the answer cue
(``"\\nAnswer:" + " Yes"``). Byte-level BPE pre-tokenizes ``" Yes"`` as its own word (``"ĠYes"``),
so after training we append merges that build each required word into one token (lowest
priority, after every learned merge): the word then always encodes as one token, and text
that never contains it is unchanged. ``check_single_tokens`` asserts it in context.

Special tokens: ``<|pad|>``, ``<|bos|>``, ``<|eos|>``, all distinct (a collator masks pad-id
labels, so pad must not be eos). ``tokenizer(text)`` prepends ``<|bos|>``; encode suffixes and
answers with ``add_special_tokens=False``.
"""

from __future__ import annotations

import json
import logging
from typing import Iterable, Sequence

from spectra_rec.text.templates import ANSWER_CUE, ANSWER_LETTERS, Verbalizers, answer

log = logging.getLogger(__name__)

PAD, BOS, EOS = "<|pad|>", "<|bos|>", "<|eos|>"
SPECIAL_TOKENS = (PAD, BOS, EOS)


class TokenizationError(ValueError):
    """A word that must be a single token is not one in its context."""


def required_words() -> tuple[str, ...]:
    """Words every tokenizer of the toolkit must encode as one token after the answer cue."""
    return tuple(dict.fromkeys(Verbalizers().all() + ANSWER_LETTERS))


def build_tokenizer(
    texts: Iterable[str],
    vocab_size: int = 4096,
    extra_words: Sequence[str] = (),
    model_max_length: int = 1024,
    min_frequency: int = 2,
):
    """Train a byte-level BPE on ``texts``; verbalizers, answer letters and ``extra_words`` become single tokens.

    ``extra_words`` (e.g. the category names) are forced to one token per pre-tokenized piece
    as they read after a space (``" Film-Noir"`` -> ``" Film"``, ``"-"``, ``"Noir"``), which
    keeps them cheap. The result may hold a few more than ``vocab_size`` tokens.
    """
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    if vocab_size < 300:
        raise ValueError(f"vocab_size must be >= 300 (256 bytes + specials + merges), got {vocab_size}")
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        min_frequency=min_frequency,
        special_tokens=list(SPECIAL_TOKENS),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(texts, trainer=trainer)
    words = [answer(w) for w in required_words()] + [answer(w) for w in extra_words]
    tok = _force_single_tokens(tok, words)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        pad_token=PAD,
        bos_token=BOS,
        eos_token=EOS,
        add_bos_token=True,
        add_eos_token=False,
        model_max_length=model_max_length,
        padding_side="right",
        clean_up_tokenization_spaces=False,
    )
    check_single_tokens(fast, required_words())
    log.info("tokenizer: %d tokens (target %d), %d forced words", len(fast), vocab_size, len(words))
    return fast


def _force_single_tokens(tok, words: Sequence[str]):
    """Append BPE merges so that each pre-tokenized piece of each word is one token."""
    from tokenizers import Tokenizer

    state = json.loads(tok.to_str())
    model = state["model"]
    vocab: dict[str, int] = model["vocab"]
    merges: list = model["merges"]
    as_pairs = bool(merges) and isinstance(merges[0], list)
    pieces: list[str] = []
    for w in words:
        for piece, _ in tok.pre_tokenizer.pre_tokenize_str(w):
            if piece not in pieces:
                pieces.append(piece)
    added = 0
    for piece in pieces:
        if piece in vocab:
            continue
        # Current encoding of the piece under the learned merges, then fold it left to right.
        current = Tokenizer.from_str(json.dumps(state))
        parts = [t for t in current.model.tokenize(piece)]
        parts = [p.value for p in parts]
        acc = parts[0]
        for nxt in parts[1:]:
            merged = acc + nxt
            merges.append([acc, nxt] if as_pairs else f"{acc} {nxt}")
            if merged not in vocab:
                vocab[merged] = len(vocab)
                added += 1
            acc = merged
    out = Tokenizer.from_str(json.dumps(state))
    if added:
        log.debug("forced %d merged tokens for %d pieces", added, len(pieces))
    return out


def check_single_tokens(tokenizer, words: Iterable[str], context: str = ANSWER_CUE) -> dict[str, int]:
    """Map each word to its token id, asserting it is ONE token right after ``context`` (as ``answer(word)``).

    Raises TokenizationError listing every word that splits, with its pieces.
    """
    ctx_ids = tokenizer(context, add_special_tokens=False)["input_ids"]
    out: dict[str, int] = {}
    bad: list[str] = []
    for w in words:
        ids = tokenizer(context + answer(w), add_special_tokens=False)["input_ids"]
        tail = ids[len(ctx_ids) :]
        if ids[: len(ctx_ids)] != ctx_ids or len(tail) != 1:
            bad.append(f"{w!r} -> {tokenizer.convert_ids_to_tokens(tail)}")
        else:
            out[w] = tail[0]
    if bad:
        raise TokenizationError(
            f"expected each word to be one token after {context!r} + ' ', but {len(bad)} split: " + "; ".join(bad)
        )
    if len(set(out.values())) != len(out):
        raise TokenizationError(f"distinct words share a token id: {out}")
    return out


def token_cost(tokenizer, words: Iterable[str]) -> dict[str, int]:
    """Number of tokens of each word as an answer (``" " + word``), for reporting category-name cost."""
    return {w: len(tokenizer(answer(w), add_special_tokens=False)["input_ids"]) for w in words}
