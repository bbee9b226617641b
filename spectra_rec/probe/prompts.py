"""Token-level prompts: the templates of ``spectra_rec.text.templates`` turned into token ids.

Every prompt is ``history prefix (+ question) | suffix | answer``. Only the train window of a
user (``split.train_items(u)``) ever reaches a prompt. When a prompt would exceed the model's
context, the oldest items are dropped (the most recent are kept) and the count is reported;
when even a history with no items does not fit, :class:`ContextError` says by how much.

Answer words (verbalizers, answer letters) are checked to be exactly one token *in context*
(byte-level BPE splits " Yes" differently from "Yes"); a failure names the word.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Callable, Sequence

from spectra_rec.probe.backends.base import Prompt
from spectra_rec.text import templates

log = logging.getLogger(__name__)

SAMPLE_HISTORY = "Watched, oldest first:\n"
"""A stand-in history used to check answer tokens before any user is probed (only the prompt's end matters)."""


class ContextError(ValueError):
    """A prompt cannot fit the model's context window."""


class TokenizationError(ValueError):
    """An answer word is not a single token in context, or a prompt does not split at its boundary."""


@dataclass(frozen=True, eq=False)
class History:
    """One user's shared prompt prefix."""

    user: int
    ids: tuple[int, ...]
    text: str
    n_items: int
    """Train-window items shown."""
    dropped: int
    """Oldest train-window items left out to fit the context."""

    def prompt(self, suffix: Sequence[int] = ()) -> Prompt:
        return Prompt(self.ids, tuple(suffix))


class PromptBuilder:
    """Tokenize templates for one (dataset, split, tokenizer, context length)."""

    def __init__(self, dataset, split, tokenizer, max_length: int, max_items: int | None = None,
                 history_summary: bool = False):
        if max_items is not None and max_items < 0:
            raise ValueError(f"max_items must be >= 0 or None, got {max_items}")
        self.dataset = dataset
        self.split = split
        self.tokenizer = tokenizer
        self.max_length = int(max_length)
        self.max_items = max_items
        self.history_summary = bool(history_summary)
        """Sum up the items older than the shown ones in one line (as the adapter's SFT prompts did)."""
        self._checked_boundaries: set[str] = set()

    # ---- tokenization ------------------------------------------------------------
    def encode_prefix(self, text: str) -> tuple[int, ...]:
        """A prompt's beginning: the tokenizer's own special tokens (e.g. BOS) included."""
        return tuple(self.tokenizer(text, add_special_tokens=True)["input_ids"])

    def encode_suffix(self, text: str) -> tuple[int, ...]:
        return tuple(self.tokenizer(text, add_special_tokens=False)["input_ids"])

    def continuation(self, context: str, text: str, what: str) -> tuple[int, ...]:
        """The tokens of ``text`` as they follow ``context`` (the joint tokenization's tail)."""
        ctx = self.encode_prefix(context)
        full = self.encode_prefix(context + text)
        if full[: len(ctx)] != ctx:
            raise TokenizationError(
                f"{what}: tokenizing {text!r} after {context[-30:]!r} changes the context's own tokens "
                f"(a merge across the boundary); end the context with a separator the tokenizer keeps"
            )
        rest = full[len(ctx) :]
        if not rest:
            raise TokenizationError(f"{what}: {text!r} adds no tokens after {context[-30:]!r}")
        return rest

    def single_token(self, context: str, text: str, what: str) -> int:
        """The one token id of ``text`` after ``context``; a clear error naming ``what`` otherwise."""
        ids = self.continuation(context, text, what)
        if len(ids) != 1:
            pieces = self.tokenizer.convert_ids_to_tokens(list(ids))
            raise TokenizationError(
                f"{what}: {text!r} after {context[-30:]!r} is {len(ids)} tokens {pieces}, not one; "
                "pick another word or make it a single token of the tokenizer (build_tokenizer(extra_words=...))"
            )
        return ids[0]

    def check_boundary(self, prefix_text: str, suffix_text: str, what: str) -> None:
        """Warn once per ``what`` when prefix and suffix tokenized apart differ from the joint tokenization."""
        if what in self._checked_boundaries:
            return
        self._checked_boundaries.add(what)
        joint = self.encode_prefix(prefix_text + suffix_text)
        split = self.encode_prefix(prefix_text) + self.encode_suffix(suffix_text)
        if joint != split:
            log.warning(
                "%s: tokenizing the prompt's prefix and suffix apart differs from tokenizing it whole "
                "(%d vs %d tokens); scores use the split tokenization",
                what,
                len(split),
                len(joint),
            )

    # ---- per-user prefix -----------------------------------------------------------
    def history(self, user: int, frame: Callable[[str], str] = lambda h: h, reserve: int = 0) -> History:
        """``frame(history_text)`` tokenized, keeping the most recent train items that fit ``reserve`` more tokens.

        ``reserve`` is the longest suffix (+ continuation or generated tokens) the readout appends.
        """
        items = self.split.train_items(user)
        n = len(items) if self.max_items is None else min(len(items), self.max_items)
        budget = self.max_length - reserve

        def build(m: int) -> tuple[tuple[int, ...], str, int]:
            text, dropped = templates.history_prefix(self.dataset, user, items, max_items=m,
                                                     summary=self.history_summary)
            framed = frame(text)
            return self.encode_prefix(framed), framed, dropped

        ids, text, dropped = build(n)
        if len(ids) > budget:
            empty_ids, _, _ = build(0)
            if len(empty_ids) > budget:
                raise ContextError(
                    f"user {self.dataset.user_ids[user]!r}: even with no history items the prompt needs "
                    f"{len(empty_ids)} + {reserve} tokens, more than the model's context of {self.max_length}"
                )
            lo, hi = 0, n - 1  # largest m in [lo, hi] that fits; m = 0 fits
            while lo < hi:
                mid = (lo + hi + 1) // 2
                if len(build(mid)[0]) <= budget:
                    lo = mid
                else:
                    hi = mid - 1
            ids, text, dropped = build(lo)
        return History(user, ids, text, len(items) - dropped, dropped)
