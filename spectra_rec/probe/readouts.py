"""SPECTRA readouts (docs/formulas.md; paper 3.2, A.4, B.6): token scores -> category distributions.

Each readout turns one user's history prefix into K scores s(c) and a distribution p:

- ``logit`` (likelihood probe): one yes/no prompt per category (shared history prefix +
  ``yes_no_question(c)``); s(c) = logsumexp(l[A]) - logsumexp(l[N]); p = softmax(s / tau).
- ``name`` (category-name likelihood): s(c) = sum of log p(tokens of " c") after the history and
  ``name_question()``; p = softmax(s / tau).
- ``choice`` (generative classification): one multi-choice prompt, s(c) = l[letter(c)],
  p = softmax(s / tau). K above the 26 answer letters uses *anchored blocks* (see
  :class:`ChoiceReadout`).
- ``hier`` (hierarchical): p(c1) from yes/no probes of the L1 names; branches chosen by
  ``all``, ``top:b`` (highest L1 mass) or ``tail:b`` (lowest, exploration); within a branch
  p(c2 | c1) = softmax over its children of s(c2) / tau_l2; p(c2) = p(c1) p(c2 | c1).

Scores use log-probabilities (what every backend returns); the softmax over one row's
logits is shift-invariant, so this equals the formulas on raw logits. The math lives in pure
numpy functions in ``readout_base`` (``yes_no_scores``, ``softmax``, ``select_branches``,
``chain_rule``), re-exported here.

This module completes the readout registry: it defines the four SPECTRA readouts and imports
the baselines' modules (``dg``, ``reranker``), each of which registers itself, so ``READOUTS``
and :func:`make_readout` see every built-in readout. A new readout is a ``@register_readout``
class with its config: everything the probe stage needs (cache key, defaults from the align
manifest, metadata, run summary) is a method of it.
"""

from __future__ import annotations

import logging
import numbers
from dataclasses import dataclass
from typing import Sequence

import numpy as np

from spectra_rec.errors import ConfigError
from spectra_rec.probe import dg, reranker  # noqa: F401  (the baselines register their readouts on import)
from spectra_rec.probe.prompts import SAMPLE_HISTORY, PromptBuilder, TokenizationError
from spectra_rec.probe.readout_base import (
    READOUTS,
    Readout,
    ReadoutConfig,
    UserResult,
    answer_ids,
    as_verbalizers,
    chain_rule,
    check_positive,
    logsumexp,
    parse_branches,
    register_readout,
    select_branches,
    softmax,
    yes_no_probe,
    yes_no_scores,
)
from spectra_rec.text import templates
from spectra_rec.text.templates import ANSWER_LETTERS, Verbalizers, choice_blocks

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class LogitConfig(ReadoutConfig):
    """Options of the yes/no likelihood probe."""

    verbalizers: Verbalizers = Verbalizers()
    """Affirmative words A and negative words N; s(c) = logsumexp(l[A]) - logsumexp(l[N])."""
    tau: float = 1.0
    """Softmax temperature, > 0."""

    def __post_init__(self):
        self._set("tau", check_positive("tau", self.tau))
        self._set("verbalizers", as_verbalizers(self.verbalizers))


@register_readout("logit")
class LogitReadout(Readout):
    """Likelihood (yes/no) probe: one prompt per category on a shared history prefix."""

    spectra = True
    fits_tau = True

    config_cls = LogitConfig

    def prepare(self, builder: PromptBuilder) -> None:
        cats = builder.dataset.categories
        questions = [templates.yes_no_question(c) for c in cats]
        self.suffixes = [builder.encode_suffix(q) for q in questions]
        self.token_ids = answer_ids(builder, SAMPLE_HISTORY + questions[0], self.config.verbalizers.all(), "verbalizer")
        builder.check_boundary(SAMPLE_HISTORY, questions[0], "yes/no probe")
        self.reserve = max(map(len, self.suffixes))

    def score(self, backend, histories):
        cfg = self.config
        s = yes_no_probe(backend, histories, self.suffixes, self.token_ids, len(cfg.verbalizers.affirmative))
        p = softmax(s, cfg.tau)
        return [UserResult(p[i], s[i]) for i in range(len(histories))]

    def answer_words(self):
        return {"verbalizer_ids": self.config.verbalizers.all()}

    def meta(self):
        key = self.config.key()
        return {"readout": self.name, "tau": key["tau"], "verbalizers": key["verbalizers"]}


@dataclass(frozen=True)
class NameConfig(ReadoutConfig):
    """Options of the category-name likelihood readout."""

    tau: float = 1.0
    """Softmax temperature, > 0."""

    def __post_init__(self):
        self._set("tau", check_positive("tau", self.tau))


@register_readout("name")
class NameReadout(Readout):
    """Category-name likelihood: s(c) = sum of log-probs of the tokens of " c" after ``name_question()``."""

    spectra = True
    fits_tau = True

    config_cls = NameConfig

    def frame(self, history_text: str) -> str:
        return history_text + templates.name_question()

    def prepare(self, builder: PromptBuilder) -> None:
        context = self.frame(SAMPLE_HISTORY)
        self.continuations = [
            builder.continuation(context, templates.answer(c), f"category name {c!r}") for c in builder.dataset.categories
        ]
        self.reserve = max(map(len, self.continuations))

    def score(self, backend, histories):
        K = len(self.continuations)
        prompts = [h.prompt() for h in histories for _ in range(K)]
        s = backend.continuation_logprobs(prompts, self.continuations * len(histories)).reshape(len(histories), K)
        p = softmax(s, self.config.tau)
        return [UserResult(p[i], s[i]) for i in range(len(histories))]

    def meta(self):
        return {"readout": self.name, "tau": self.config.tau, "name_tokens": [len(c) for c in self.continuations]}


@dataclass(frozen=True)
class ChoiceConfig(ReadoutConfig):
    """Options of the multi-choice readout."""

    tau: float = 1.0
    """Softmax temperature, > 0."""
    letters: tuple[str, ...] = ANSWER_LETTERS
    """Answer labels, >= 2 distinct; more categories than labels use anchored blocks."""
    anchor: int | str = 0
    """The anchor category of every block (index or name) when K exceeds the labels."""

    def __post_init__(self):
        self._set("tau", check_positive("tau", self.tau))
        letters = self.letters
        if not isinstance(letters, Sequence):
            raise ConfigError(f"answer letters must be a sequence of labels, got {letters!r}")
        if len(letters) < 2 or len(set(letters)) != len(letters):
            raise ConfigError(f"answer letters must be >= 2 distinct labels, got {list(letters)}")
        self._set("letters", tuple(letters))
        if isinstance(self.anchor, bool) or not isinstance(self.anchor, (str, numbers.Integral)):
            raise ConfigError(f"choice anchor must be a category index or name, got {self.anchor!r}")
        if not isinstance(self.anchor, str):
            self._set("anchor", int(self.anchor))


@register_readout("choice")
class ChoiceReadout(Readout):
    """Generative classification over answer letters, s(c) = l[letter(c)].

    K <= len(letters): one prompt lists every category. K > len(letters), *anchored blocks*:
    an anchor category (``anchor``, default the first) is option A of every block and the
    other K - 1 categories fill the remaining len(letters) - 1 options of consecutive blocks
    (ceil((K - 1) / (len(letters) - 1)) prompts, all on the user's cached history prefix).
    Within block b, s(c) = l_b[letter(c)] - l_b[letter(anchor)] and s(anchor) = 0: under the
    multinomial-logit (Luce) reading of the softmax, p(c) / p(anchor) is the same in any block
    that lists both, so the relative scores of all K categories share one scale and
    p = softmax(s / tau). With K <= len(letters) this is the single-prompt readout up to a
    constant shift of s, which the softmax ignores.
    """

    spectra = True
    fits_tau = True

    config_cls = ChoiceConfig

    def prepare(self, builder: PromptBuilder) -> None:
        cats = list(builder.dataset.categories)
        K = len(cats)
        anchor, letters = self.config.anchor, self.config.letters
        if isinstance(anchor, str):
            if anchor not in cats:
                raise ConfigError(f"choice anchor {anchor!r} is not one of the {K} categories")
            a = cats.index(anchor)
        else:
            a = anchor
        self.blocks = choice_blocks(K, len(letters), a)
        self.anchor = None if len(self.blocks) == 1 else a
        questions = [templates.choice_question([cats[c] for c in blk], letters) for blk in self.blocks]
        self.suffixes = [builder.encode_suffix(q) for q in questions]
        self.token_ids = answer_ids(builder, SAMPLE_HISTORY + questions[0], letters, "answer letter")
        builder.check_boundary(SAMPLE_HISTORY, questions[0], "multi-choice prompt")
        self.reserve = max(map(len, self.suffixes))
        self.K = K

    def score(self, backend, histories):
        prompts = [h.prompt(s) for h in histories for s in self.suffixes]
        lp = backend.next_token_logprobs(prompts, self.token_ids)
        lp = lp.reshape(len(histories), len(self.blocks), len(self.token_ids))
        out = []
        for i in range(len(histories)):
            s = np.full(self.K, np.nan)
            for b, blk in enumerate(self.blocks):
                row = lp[i, b, : len(blk)]
                s[blk] = row if self.anchor is None else row - row[0]
            out.append(UserResult(softmax(s, self.config.tau), s, {"n_prompts": len(self.blocks)}))
        return out

    def answer_words(self):
        return {"letter_ids": self.config.letters}

    def meta(self):
        scheme = "single" if self.anchor is None else "anchored-blocks"
        letters = self.config.letters
        return {
            "readout": self.name,
            "tau": self.config.tau,
            "letters": "".join(letters) if all(len(x) == 1 for x in letters) else list(letters),
            "scheme": scheme,
            "blocks": len(self.blocks),
            "anchor": self.anchor,
        }


L2_PROMPTS = ("conditional", "flat")
"""How the hierarchical readout asks about an L2 category: given its L1 parent, or on its own."""


@dataclass(frozen=True)
class HierConfig(ReadoutConfig):
    """Options of the hierarchical (L1 -> L2) readout."""

    taxonomy: tuple[tuple[str, tuple[str, ...]], ...] | None = None
    """L1 name -> its L2 categories (a mapping; stored as pairs); None: the dataset's taxonomy."""
    branches: str = "all"
    """L1 branches to expand per user: ``all``, ``top:b`` or ``tail:b``."""
    tau: float = 1.0
    """L1 softmax temperature, > 0."""
    tau_l2: float | None = None
    """Temperature of p(c2 | c1), > 0; None: ``tau``."""
    verbalizers: Verbalizers = Verbalizers()
    """Affirmative and negative answer words of both levels' yes/no probes."""
    unexpanded: str = "uniform"
    """Mass of a branch not expanded: ``uniform`` over its children, or ``zero``."""
    l2_prompt: str = "conditional"
    """Ask about an L2 category given its L1 parent (``conditional``) or on its own (``flat``)."""

    def __post_init__(self):
        parse_branches(self.branches)
        if self.unexpanded not in ("uniform", "zero"):
            raise ConfigError(f"unexpanded must be 'uniform' or 'zero', got {self.unexpanded!r}")
        if self.l2_prompt not in L2_PROMPTS:
            raise ConfigError(f"l2_prompt must be one of {list(L2_PROMPTS)}, got {self.l2_prompt!r}")
        self._set("tau", check_positive("tau", self.tau))
        if self.tau_l2 is not None:
            self._set("tau_l2", check_positive("tau_l2", self.tau_l2))
        self._set("verbalizers", as_verbalizers(self.verbalizers))
        if self.taxonomy is not None:
            tax = self.taxonomy
            try:
                pairs = tax.items() if hasattr(tax, "items") else tax
                pairs = tuple((str(l1), tuple(kids)) for l1, kids in pairs)
            except (TypeError, ValueError):
                raise ConfigError(f"taxonomy must map L1 names to lists of categories, got {type(tax).__name__}") \
                    from None
            self._set("taxonomy", pairs)

    def taxonomy_dict(self) -> dict[str, list[str]] | None:
        """The taxonomy as a mapping (None: the dataset's)."""
        return None if self.taxonomy is None else {l1: list(kids) for l1, kids in self.taxonomy}

    def key(self) -> dict:
        # A taxonomy keys as its mapping, the form it is given in (pairs are only the hashable storage).
        return super().key() | {"taxonomy": self.taxonomy_dict()}


@register_readout("hier")
class HierarchicalReadout(Readout):
    """L1 -> L2 probing with the chain rule (exact when the taxonomy is a partition and L1 mass is consistent).

    L1: yes/no probes of the L1 names on the user's history prefix, p(c1) = softmax(s1 / tau).
    L2: yes/no probes of the leaves in the chosen branches on the *same* prefix (its KV cache
    is reused: the HF backend keeps the user's prefix state between the two passes), within a
    branch p(c2 | c1) = softmax(s2 / tau_l2). ``l2_prompt="conditional"`` (default, what SFT
    teaches on a taxonomy) asks "if the next item is in c1, will it be in c2?", whose
    L1-conditional start is shared by a branch's children; ``"flat"`` asks the flat question
    about c2 alone. ``l1_scores`` lets a caller supply L1 scores
    (e.g. the log of a flat readout's L1 marginals), which makes the chain rule reproduce
    that flat distribution exactly when every branch is expanded.
    """

    spectra = True
    cli_exclude = ("taxonomy",)  # --taxonomy is the dataset's file: SFT and the probe share it

    config_cls = HierConfig

    @property
    def tau_l2(self) -> float:
        """The temperature of p(c2 | c1): ``tau_l2``, or ``tau`` when not given."""
        cfg = self.config
        return cfg.tau if cfg.tau_l2 is None else cfg.tau_l2

    def prepare(self, builder: PromptBuilder) -> None:
        cats = list(builder.dataset.categories)
        taxonomy = self.config.taxonomy_dict()
        taxonomy = taxonomy if taxonomy is not None else builder.dataset.taxonomy
        if not taxonomy:
            raise ConfigError(
                f"hierarchical readout needs an L1 -> L2 taxonomy: dataset {builder.dataset.name!r} has none; "
                "pass taxonomy= (or --taxonomy FILE.json)"
            )
        index = {c: k for k, c in enumerate(cats)}
        seen: dict[str, str] = {}
        unknown = []
        for l1, kids in taxonomy.items():
            if not kids:
                raise ConfigError(f"taxonomy: L1 {l1!r} has no children")
            for c in kids:
                if c not in index:
                    unknown.append(c)
                elif c in seen:
                    raise ConfigError(f"taxonomy: category {c!r} is under both {seen[c]!r} and {l1!r} (not a partition)")
                seen[c] = l1
        missing = [c for c in cats if c not in seen]
        if unknown or missing:
            raise ConfigError(
                f"taxonomy must partition the dataset's {len(cats)} categories: "
                f"unknown L2 names {unknown[:10]}, categories under no L1 {missing[:10]}"
            )
        self.l1_names = list(taxonomy)
        self.children = [[index[c] for c in taxonomy[l1]] for l1 in self.l1_names]
        l1_q = [templates.yes_no_question(n) for n in self.l1_names]
        if self.config.l2_prompt == "flat":
            l2_q = [templates.yes_no_question(c) for c in cats]
        else:
            parent = {c: self.l1_names[b] for b, kids in enumerate(self.children) for c in kids}
            l2_q = [templates.conditional_yes_no_question(parent[k], c) for k, c in enumerate(cats)]
        self.l1_suffixes = [builder.encode_suffix(q) for q in l1_q]
        self.l2_suffixes = [builder.encode_suffix(q) for q in l2_q]
        words = self.config.verbalizers.all()
        self.token_ids = answer_ids(builder, SAMPLE_HISTORY + l1_q[0], words, "verbalizer")
        if answer_ids(builder, SAMPLE_HISTORY + l2_q[0], words, "verbalizer") != self.token_ids:
            raise TokenizationError("verbalizer tokens differ between the L1 and L2 questions")
        builder.check_boundary(SAMPLE_HISTORY, l1_q[0], "hierarchical probe")
        self.reserve = max(map(len, self.l1_suffixes + self.l2_suffixes))
        self.K = len(cats)

    def score(self, backend, histories, l1_scores: np.ndarray | None = None):
        cfg = self.config
        n_aff = len(cfg.verbalizers.affirmative)
        # Users go in groups whose prefix states the backend keeps alive across the L1 and L2 passes.
        group = max(1, int(getattr(backend, "max_live_prefixes", len(histories)) or 1))
        out: list[UserResult] = []
        for g in range(0, len(histories), group):
            hs = list(histories[g : g + group])
            s1 = (
                yes_no_probe(backend, hs, self.l1_suffixes, self.token_ids, n_aff)
                if l1_scores is None
                else np.asarray(l1_scores, dtype=np.float64)[g : g + group]
            )
            p1 = softmax(s1, cfg.tau)
            chosen = [select_branches(p1[i], cfg.branches) for i in range(len(hs))]
            prompts, where = [], []
            for i, h in enumerate(hs):
                for b in chosen[i]:
                    for c in self.children[b]:
                        prompts.append(h.prompt(self.l2_suffixes[c]))
                        where.append((i, c))
            lp = backend.next_token_logprobs(prompts, self.token_ids) if prompts else np.zeros((0, len(self.token_ids)))
            s2_flat = yes_no_scores(lp, n_aff)
            s2 = np.full((len(hs), self.K), np.nan)
            for (i, c), v in zip(where, s2_flat):
                s2[i, c] = v
            for i in range(len(hs)):
                cond = {int(b): softmax(s2[i, self.children[b]], self.tau_l2) for b in chosen[i]}
                p = chain_rule(p1[i], self.children, chosen[i], cond, self.K, cfg.unexpanded)
                extra = {f"L1:{n}": float(p1[i, j]) for j, n in enumerate(self.l1_names)}
                extra["n_branches"] = int(len(chosen[i]))
                extra["n_prompts"] = int(len(self.l1_names) + sum(len(self.children[b]) for b in chosen[i]))
                out.append(UserResult(p, s2[i], extra))
        return out

    def answer_words(self):
        return {"verbalizer_ids": self.config.verbalizers.all()}

    def meta(self):
        cfg = self.config
        return {
            "readout": self.name,
            "tau": cfg.tau,
            "tau_l2": self.tau_l2,
            "branches": cfg.branches,
            "unexpanded": cfg.unexpanded,
            "l2_prompt": cfg.l2_prompt,
            "l1": self.l1_names if hasattr(self, "l1_names") else None,
            "verbalizers": cfg.key()["verbalizers"],
        }


PROBE_READOUTS = tuple(name for name, cls in READOUTS.items() if cls.spectra)
"""The SPECTRA readouts (``spectra-rec probe --readout``), in registration order; ``dg`` and ``rerank`` are the baselines."""
AUTO_TAU_READOUTS = tuple(name for name, cls in READOUTS.items() if cls.fits_tau)
"""Readouts whose distribution is softmax(s / tau) of one score vector (``--tau auto``; hier has two temperatures)."""


def make_readout(name: str | Readout, **options) -> Readout:
    """The readout registered as ``name`` built from ``options`` (a readout instance is returned as is)."""
    if isinstance(name, Readout):
        if options:
            raise ConfigError(f"readout options {sorted(options)} given with a readout instance")
        return name
    return readout_class(name)(**options)


def readout_class(name: str) -> type[Readout]:
    """The readout class registered as ``name``."""
    if name not in READOUTS:
        raise ConfigError(f"unknown readout {name!r}; registered: {sorted(READOUTS)}")
    return READOUTS[name]


def readout_key(name: str, options: dict) -> dict:
    """The readout's options with defaults filled in as plain JSON (its part of the probe stage's cache key)."""
    return readout_class(name).make_config(**options).key()


__all__ = [
    "L2_PROMPTS",
    "AUTO_TAU_READOUTS",
    "PROBE_READOUTS",
    "READOUTS",
    "ChoiceConfig",
    "ChoiceReadout",
    "HierConfig",
    "HierarchicalReadout",
    "LogitConfig",
    "LogitReadout",
    "NameConfig",
    "NameReadout",
    "Readout",
    "ReadoutConfig",
    "UserResult",
    "chain_rule",
    "choice_blocks",
    "logsumexp",
    "make_readout",
    "parse_branches",
    "readout_class",
    "readout_key",
    "register_readout",
    "select_branches",
    "softmax",
    "yes_no_probe",
    "yes_no_scores",
]
