"""Direct-generation (DG) baseline (docs/formulas.md; paper A.3).

From the same fine-tuned model, greedy-decode a ranked list of k categories after
``dg_question(k)``, parse it, and set p_DG = 1/k on the listed categories, 0 elsewhere
(uniform on the top-k). Nothing is dropped silently: per user the parse records the pieces
that were empty (``invalid``), not a category (``unknown``), repeated (``duplicate``), beyond
the k-th (``extra``), a list shorter than k (``short``: p = 1/n on the n listed) and a
decode that hit ``max_new_tokens`` (``truncated``). A user with no valid category gets the
uniform distribution and ``fallback = 1``. Totals go into the run's metadata.

Parsing splits on ``LIST_SEPARATOR`` and rejoins neighbouring pieces greedily (longest first),
so category names that contain a comma (Yelp's "Active Life, Sports & Recreation") parse.
"""

from __future__ import annotations

import numbers
from dataclasses import dataclass
from typing import Sequence

import numpy as np

from spectra_rec.errors import ConfigError
from spectra_rec.probe.prompts import SAMPLE_HISTORY, PromptBuilder
from spectra_rec.probe.readout_base import Readout, ReadoutConfig, UserResult, register_readout
from spectra_rec.text import templates

COUNTERS = ("invalid", "unknown", "duplicate", "extra", "short", "truncated", "fallback")
"""Per-user parse counters saved with the raw outputs and summed in the metadata."""


@dataclass(frozen=True)
class ParsedList:
    """A decoded DG list, parsed against the category vocabulary."""

    categories: tuple[int, ...]
    """Valid, distinct categories in decoded order, at most k."""
    invalid: int = 0
    unknown: int = 0
    duplicate: int = 0
    extra: int = 0
    unknown_names: tuple[str, ...] = ()


def parse_dg(text: str, categories: Sequence[str], k: int) -> ParsedList:
    """Parse ``" Drama, Comedy, Action"`` (text after the answer cue; cut at the first newline)."""
    index = {c: j for j, c in enumerate(categories)}
    line = text.split("\n", 1)[0].strip()
    sep = templates.LIST_SEPARATOR.strip() or ","
    pieces = [p.strip() for p in line.split(sep)] if line else [""]
    chosen: list[int] = []
    invalid = unknown = duplicate = extra = 0
    unknown_names: list[str] = []
    i = 0
    while i < len(pieces):
        match = None
        for j in range(len(pieces), i, -1):  # longest run of pieces that names a category
            name = (sep + " ").join(pieces[i:j]) if j - i > 1 else pieces[i]
            if name in index:
                match = (j, index[name])
                break
        if match is None:
            if pieces[i] == "":
                invalid += 1
            else:
                unknown += 1
                unknown_names.append(pieces[i])
            i += 1
            continue
        i, c = match
        if c in chosen:
            duplicate += 1
        elif len(chosen) >= k:
            extra += 1
        else:
            chosen.append(c)
    return ParsedList(tuple(chosen), invalid, unknown, duplicate, extra, tuple(unknown_names))


def dg_distribution(parsed: ParsedList, K: int) -> np.ndarray:
    """Uniform on the listed categories (1/k for a full list); uniform over all K when none is valid."""
    p = np.zeros(K, dtype=np.float64)
    if parsed.categories:
        p[list(parsed.categories)] = 1.0 / len(parsed.categories)
    else:
        p[:] = 1.0 / K
    return p


def _check_count(value, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
        raise ConfigError(f"{what} must be an integer >= 1, got {value!r}")
    return int(value)


@dataclass(frozen=True)
class DGConfig(ReadoutConfig):
    """Options of the direct-generation baseline."""

    k: int = 5
    """List length to decode and parse (p = 1/k on a full list)."""
    max_new_tokens: int | None = None
    """Decode budget; None: k x (longest category name + separator) + 4 tokens."""

    def __post_init__(self):
        self._set("k", _check_count(self.k, "DG list length k"))
        if self.max_new_tokens is not None:
            self._set("max_new_tokens", _check_count(self.max_new_tokens, "max_new_tokens"))


def sft_dg_k(manifest: dict) -> int | None:
    """The DG list length an align folder's SFT was trained with (None when its manifest does not say)."""
    sft = (manifest.get("config") or {}).get("sft") or {}
    return int(sft["dg_k"]) if sft.get("dg_k") is not None else None


@register_readout("dg")
class DGReadout(Readout):
    """Greedy-decode ``k`` categories after ``dg_question(k)``; p_DG uniform on the parsed list."""

    config_cls = DGConfig

    @property
    def k(self) -> int:
        return self.config.k

    @classmethod
    def manifest_defaults(cls, manifest: dict) -> dict:
        # Decode the list length SFT taught; probing another k reads an untrained format.
        k = sft_dg_k(manifest)
        return {} if k is None else {"k": k}

    @property
    def method(self) -> str:
        return "dg"

    def frame(self, history_text: str) -> str:
        return history_text + templates.dg_question(self.k)

    def prepare(self, builder: PromptBuilder) -> None:
        cats = builder.dataset.categories
        if self.k > len(cats):
            raise ConfigError(f"DG list length k = {self.k} exceeds the {len(cats)} categories")
        context = self.frame(SAMPLE_HISTORY)
        longest = max(len(builder.continuation(context, templates.answer(c), f"category {c!r}")) for c in cats)
        sep = len(builder.encode_suffix(templates.LIST_SEPARATOR))
        self.max_new_tokens = self.config.max_new_tokens or self.k * (longest + sep) + 4
        self.reserve = self.max_new_tokens
        eos = builder.tokenizer.eos_token_id
        self.stop_ids = [int(eos)] if eos is not None else []
        self.tokenizer = builder.tokenizer
        self.categories = list(cats)

    def score(self, backend, histories):
        prompts = [h.prompt() for h in histories]
        gens = backend.generate(prompts, self.max_new_tokens, stop_ids=self.stop_ids, stop_strings=["\n"])
        out = []
        for gen in gens:
            text = self.tokenizer.decode(gen, skip_special_tokens=True)
            parsed = parse_dg(text, self.categories, self.k)
            p = dg_distribution(parsed, len(self.categories))
            ranks = np.full(len(self.categories), np.nan)
            ranks[list(parsed.categories)] = np.arange(1, len(parsed.categories) + 1)
            extra = {
                "invalid": parsed.invalid,
                "unknown": parsed.unknown,
                "duplicate": parsed.duplicate,
                "extra": parsed.extra,
                "short": int(0 < len(parsed.categories) < self.k),
                "truncated": int(len(gen) >= self.max_new_tokens and "\n" not in text),
                "fallback": int(not parsed.categories),
                "n_listed": len(parsed.categories),
                "text": text.split("\n", 1)[0],
            }
            out.append(UserResult(p, ranks, extra))
        return out

    def meta(self):
        return {
            "readout": self.name,
            "k": self.k,
            "max_new_tokens": getattr(self, "max_new_tokens", self.config.max_new_tokens),
            "scores": "1-based rank in the decoded list (NaN: not listed)",
            "distribution": "uniform on the parsed list (1/k for a full list); uniform over all K when empty",
        }

    @classmethod
    def summarize(cls, extras) -> dict:
        """Totals of the parse counters over users (``extras``: a DataFrame of per-user extras)."""
        out = {f"{c}_total": int(extras[c].sum()) for c in COUNTERS if c in extras}
        out |= {f"{c}_users": int((extras[c] > 0).sum()) for c in COUNTERS if c in extras}
        out["users"] = int(len(extras))
        return out
