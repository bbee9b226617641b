"""Reranker baseline (docs/formulas.md): pointwise yes/no relevance in the Qwen3-Reranker format.

Each (user history, category) pair is judged with ``templates.reranker_prompt``; the answer
token follows the prompt directly (``yes`` / ``no``, no leading space, as Qwen3-Reranker reads
it). Relevance r(c) = softmax([l_no, l_yes])[yes] = sigmoid(s(c)) with s = l_yes - l_no. (When a
tokenizer splits ``yes``/``no`` into several tokens, s = log p("yes") - log p("no") over the
answer's tokens, with a warning.) The
category distribution is ``normalize="sum"``: p = r / sum(r) (default), or ``"softmax"``:
p = softmax(s / tau). The model must not be aligned on the data (a base model, the CPT-only
stage, Qwen3-Reranker itself, or a random-weight model in tests); ``spectra-rec rerank``
refuses an SFT adapter.

Everything before the category (system block, instruction, the user's history) is the
shared prefix, so the HF backend encodes it once per user.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np

from spectra_rec.errors import ConfigError
from spectra_rec.probe.prompts import PromptBuilder, TokenizationError
from spectra_rec.probe.readout_base import Readout, ReadoutConfig, UserResult, check_positive, register_readout, softmax
from spectra_rec.text import templates

log = logging.getLogger(__name__)

_SENTINEL = "\x00CATEGORY\x00"


def _split_template(history_text: str) -> tuple[str, str, str]:
    """(shared head, text before the category, text after it); the space before the category
    travels with it, as byte-level BPE tokenizes " Drama" as one piece."""
    text = templates.reranker_prompt(history_text, _SENTINEL)
    if text.count(_SENTINEL) != 1:
        raise ValueError("reranker_prompt must contain the category exactly once")
    head, tail = text.split(_SENTINEL)
    shared = head.rstrip(" ")
    return shared, head[len(shared) :], tail


@dataclass(frozen=True)
class RerankConfig(ReadoutConfig):
    """Options of the reranker baseline."""

    normalize: str = "sum"
    """``sum``: p = r / sum(r) of the relevance r = sigmoid(s); ``softmax``: p = softmax(s / tau)."""
    tau: float = 1.0
    """Temperature of ``normalize="softmax"``, > 0."""
    yes: str = "yes"
    """The relevant answer word."""
    no: str = "no"
    """The irrelevant answer word."""

    def __post_init__(self):
        if self.normalize not in ("sum", "softmax"):
            raise ConfigError(f"normalize must be 'sum' or 'softmax', got {self.normalize!r}")
        self._set("tau", check_positive("tau", self.tau))
        for name in ("yes", "no"):
            if not isinstance(getattr(self, name), str) or not getattr(self, name):
                raise ConfigError(f"reranker answer {name} must be a non-empty string, got {getattr(self, name)!r}")


@register_readout("rerank")
class RerankerReadout(Readout):
    """Pointwise yes/no relevance per category, normalized into a distribution."""

    config_cls = RerankConfig

    @property
    def words(self) -> tuple[str, str]:
        return self.config.yes, self.config.no

    @property
    def method(self) -> str:
        return "qwen3-reranker"

    def frame(self, history_text: str) -> str:
        return _split_template(history_text)[0]

    def prepare(self, builder: PromptBuilder) -> None:
        cats = builder.dataset.categories
        _, lead, tail = _split_template("")
        self.suffixes = [builder.encode_suffix(lead + c + tail) for c in cats]
        sample = templates.reranker_prompt("Watched, oldest first:", cats[0])
        try:
            ids = [builder.single_token(sample, w, f"reranker answer {w!r}") for w in self.words]
            self.token_ids, self.continuations = ids, None
            if ids[0] == ids[1]:
                raise ConfigError(f"reranker answers {self.words} map to the same token")
        except TokenizationError as exc:
            # Not single tokens in this vocabulary (Qwen3's has them; a small BPE may not):
            # score each answer word by its sequence log-probability instead.
            log.warning("%s; scoring the reranker answers by their sequence log-probability", exc)
            self.token_ids = None
            self.continuations = [builder.continuation(sample, w, f"reranker answer {w!r}") for w in self.words]
        builder.check_boundary(self.frame("Watched, oldest first:\n"), lead + cats[0] + tail, "reranker prompt")
        self.reserve = max(map(len, self.suffixes)) + (max(map(len, self.continuations)) if self.continuations else 0)

    def score(self, backend, histories):
        K = len(self.suffixes)
        prompts = [h.prompt(s) for h in histories for s in self.suffixes]
        if self.continuations is None:
            lp = backend.next_token_logprobs(prompts, self.token_ids).reshape(len(histories), K, 2)
        else:
            pairs = [p for p in prompts for _ in (0, 1)]
            lp = backend.continuation_logprobs(pairs, self.continuations * len(prompts)).reshape(len(histories), K, 2)
        s = lp[..., 0] - lp[..., 1]
        if self.config.normalize == "sum":
            r = 1.0 / (1.0 + np.exp(-s))
            p = r / r.sum(axis=1, keepdims=True)
        else:
            p = softmax(s, self.config.tau)
        return [UserResult(p[i], s[i]) for i in range(len(histories))]

    def meta(self):
        return {
            "readout": self.name,
            "format": "Qwen3-Reranker pointwise yes/no",
            "answers": list(self.words),
            "normalize": self.config.normalize,
            "tau": self.config.tau,
            "answer_scoring": "next-token" if getattr(self, "continuations", None) is None else "sequence",
            "scores": "log-odds log p(yes) - log p(no); relevance = sigmoid(score)",
        }
