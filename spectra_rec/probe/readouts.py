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
numpy functions below (``yes_no_scores``, ``softmax``, ``select_branches``, ``chain_rule``).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Sequence

import numpy as np

from spectra_rec.errors import ConfigError
from spectra_rec.probe.prompts import SAMPLE_HISTORY, History, PromptBuilder, TokenizationError
from spectra_rec.text import templates
from spectra_rec.text.templates import ANSWER_LETTERS, Verbalizers, choice_blocks

log = logging.getLogger(__name__)


# ---- pure math -------------------------------------------------------------------
def logsumexp(x: np.ndarray, axis: int = -1) -> np.ndarray:
    x = np.asarray(x, dtype=np.float64)
    m = np.max(x, axis=axis, keepdims=True)
    m = np.where(np.isfinite(m), m, 0.0)
    return np.squeeze(m, axis=axis) + np.log(np.sum(np.exp(x - m), axis=axis))


def softmax(s: np.ndarray, tau: float = 1.0, axis: int = -1) -> np.ndarray:
    """softmax(s / tau) along ``axis``."""
    if not tau > 0:
        raise ConfigError(f"temperature tau must be > 0, got {tau}")
    z = np.asarray(s, dtype=np.float64) / tau
    z = z - np.max(z, axis=axis, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=axis, keepdims=True)


def yes_no_scores(logprobs: np.ndarray, n_affirmative: int) -> np.ndarray:
    """s = logsumexp(l[A]) - logsumexp(l[N]) over the last axis (the first ``n_affirmative`` columns are A)."""
    lp = np.asarray(logprobs, dtype=np.float64)
    return logsumexp(lp[..., :n_affirmative]) - logsumexp(lp[..., n_affirmative:])


def parse_branches(spec: str) -> tuple[str, int | None]:
    """``all`` | ``top:b`` | ``tail:b`` -> (mode, b)."""
    if spec == "all":
        return "all", None
    mode, _, b = str(spec).partition(":")
    if mode in ("top", "tail") and b.isdigit() and int(b) >= 1:
        return mode, int(b)
    raise ConfigError(f"branch selection must be 'all', 'top:b' or 'tail:b' with b >= 1, got {spec!r}")


def select_branches(p1: np.ndarray, spec: str) -> np.ndarray:
    """Indices of the L1 branches to expand for one user (ties broken by branch order)."""
    mode, b = parse_branches(spec)
    n = len(p1)
    if mode == "all" or b >= n:
        return np.arange(n)
    order = np.argsort(-np.asarray(p1) if mode == "top" else np.asarray(p1), kind="stable")
    return np.sort(order[:b])


def chain_rule(
    p1: np.ndarray,
    children: Sequence[Sequence[int]],
    expanded: Sequence[int],
    cond: dict[int, np.ndarray],
    K: int,
    unexpanded: str = "uniform",
) -> np.ndarray:
    """p(c2) = p(c1) p(c2 | c1) for expanded branches; unexpanded ones per ``unexpanded``.

    ``uniform`` spreads an unexpanded branch's mass evenly over its children (the L1 mass is
    kept); ``zero`` leaves them at 0 and renormalizes over the expanded branches.
    """
    p = np.zeros(K, dtype=np.float64)
    expanded = set(int(b) for b in expanded)
    for b, kids in enumerate(children):
        kids = np.asarray(kids, dtype=np.int64)
        if b in expanded:
            p[kids] = p1[b] * cond[b]
        elif unexpanded == "uniform":
            p[kids] = p1[b] / len(kids)
        elif unexpanded != "zero":
            raise ConfigError(f"unexpanded must be 'uniform' or 'zero', got {unexpanded!r}")
    total = p.sum()
    if not total > 0:
        raise ValueError("hierarchical readout: no probability mass on the expanded branches")
    return p / total


# ---- readout interface ---------------------------------------------------------------
@dataclass
class UserResult:
    """One user's readout: the distribution, the raw scores and readout-specific extras."""

    probs: np.ndarray
    """(K,) p(c), sums to 1."""
    scores: np.ndarray
    """(K,) raw s(c) (NaN where a category was not scored, e.g. an unexpanded branch)."""
    extra: dict = field(default_factory=dict)
    """Scalar columns saved with the raw scores (e.g. L1 probabilities, DG parse counts)."""


class Readout:
    """Base class: ``prepare`` once (tokenize suffixes, check answer tokens), then ``score`` users."""

    name = "readout"
    reserve = 0
    """Tokens the readout appends after the history prefix (longest suffix + continuation)."""

    def prepare(self, builder: PromptBuilder) -> None:
        raise NotImplementedError

    def frame(self, history_text: str) -> str:
        """The shared prefix text built around the user's history (default: the history itself)."""
        return history_text

    def score(self, backend, histories: Sequence[History]) -> list[UserResult]:
        raise NotImplementedError

    @property
    def method(self) -> str:
        return f"spectra-{self.name}"

    def meta(self) -> dict:
        return {"readout": self.name}


def _answer_ids(builder: PromptBuilder, context: str, words: Sequence[str], what: str) -> list[int]:
    """The single token of ``answer(w)`` after ``context`` for each word (checked in context, distinct)."""
    ids = [builder.single_token(context, templates.answer(w), f"{what} {w!r}") for w in words]
    if len(set(ids)) != len(ids):
        dup = [w for w, i in zip(words, ids) if ids.count(i) > 1]
        raise ConfigError(f"{what}s {dup} map to the same token; each answer word needs its own token")
    return ids


def yes_no_probe(
    backend, histories: Sequence[History], suffixes: Sequence[Sequence[int]], token_ids: Sequence[int], n_aff: int
) -> np.ndarray:
    """(n_users, n_suffixes) yes/no scores, one backend call with the queries grouped by user."""
    prompts = [h.prompt(s) for h in histories for s in suffixes]
    lp = backend.next_token_logprobs(prompts, token_ids)
    return yes_no_scores(lp.reshape(len(histories), len(suffixes), len(token_ids)), n_aff)


class LogitReadout(Readout):
    """Likelihood (yes/no) probe: one prompt per category on a shared history prefix."""

    name = "logit"

    def __init__(self, verbalizers: Verbalizers = Verbalizers(), tau: float = 1.0):
        if not tau > 0:
            raise ConfigError(f"tau must be > 0, got {tau}")
        if not verbalizers.affirmative or not verbalizers.negative:
            raise ConfigError(f"verbalizers need at least one affirmative and one negative word, got {verbalizers}")
        self.verbalizers = verbalizers
        self.tau = float(tau)

    def prepare(self, builder: PromptBuilder) -> None:
        cats = builder.dataset.categories
        questions = [templates.yes_no_question(c) for c in cats]
        self.suffixes = [builder.encode_suffix(q) for q in questions]
        self.token_ids = _answer_ids(builder, SAMPLE_HISTORY + questions[0], self.verbalizers.all(), "verbalizer")
        builder.check_boundary(SAMPLE_HISTORY, questions[0], "yes/no probe")
        self.reserve = max(map(len, self.suffixes))

    def score(self, backend, histories):
        s = yes_no_probe(backend, histories, self.suffixes, self.token_ids, len(self.verbalizers.affirmative))
        p = softmax(s, self.tau)
        return [UserResult(p[i], s[i]) for i in range(len(histories))]

    def meta(self):
        return {
            "readout": self.name,
            "tau": self.tau,
            "verbalizers": {"affirmative": list(self.verbalizers.affirmative), "negative": list(self.verbalizers.negative)},
        }


class NameReadout(Readout):
    """Category-name likelihood: s(c) = sum of log-probs of the tokens of " c" after ``name_question()``."""

    name = "name"

    def __init__(self, tau: float = 1.0):
        if not tau > 0:
            raise ConfigError(f"tau must be > 0, got {tau}")
        self.tau = float(tau)

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
        p = softmax(s, self.tau)
        return [UserResult(p[i], s[i]) for i in range(len(histories))]

    def meta(self):
        return {"readout": self.name, "tau": self.tau, "name_tokens": [len(c) for c in self.continuations]}


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

    name = "choice"

    def __init__(self, tau: float = 1.0, letters: Sequence[str] = ANSWER_LETTERS, anchor: int | str = 0):
        if not tau > 0:
            raise ConfigError(f"tau must be > 0, got {tau}")
        if len(letters) < 2 or len(set(letters)) != len(letters):
            raise ConfigError(f"answer letters must be >= 2 distinct labels, got {list(letters)}")
        self.tau = float(tau)
        self.letters = tuple(letters)
        self.anchor_arg = anchor

    def prepare(self, builder: PromptBuilder) -> None:
        cats = list(builder.dataset.categories)
        K = len(cats)
        if isinstance(self.anchor_arg, str):
            if self.anchor_arg not in cats:
                raise ConfigError(f"choice anchor {self.anchor_arg!r} is not one of the {K} categories")
            a = cats.index(self.anchor_arg)
        else:
            a = int(self.anchor_arg)
        self.blocks = choice_blocks(K, len(self.letters), a)
        self.anchor = None if len(self.blocks) == 1 else a
        questions = [templates.choice_question([cats[c] for c in blk], self.letters) for blk in self.blocks]
        self.suffixes = [builder.encode_suffix(q) for q in questions]
        self.token_ids = _answer_ids(builder, SAMPLE_HISTORY + questions[0], self.letters, "answer letter")
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
            out.append(UserResult(softmax(s, self.tau), s, {"n_prompts": len(self.blocks)}))
        return out

    def meta(self):
        scheme = "single" if self.anchor is None else "anchored-blocks"
        return {
            "readout": self.name,
            "tau": self.tau,
            "letters": "".join(self.letters) if all(len(x) == 1 for x in self.letters) else list(self.letters),
            "scheme": scheme,
            "blocks": len(self.blocks),
            "anchor": self.anchor,
        }


L2_PROMPTS = ("conditional", "flat")
"""How the hierarchical readout asks about an L2 category: given its L1 parent, or on its own."""


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

    name = "hier"

    def __init__(
        self,
        taxonomy: dict[str, Sequence[str]] | None = None,
        branches: str = "all",
        tau: float = 1.0,
        tau_l2: float | None = None,
        verbalizers: Verbalizers = Verbalizers(),
        unexpanded: str = "uniform",
        l2_prompt: str = "conditional",
    ):
        parse_branches(branches)
        if unexpanded not in ("uniform", "zero"):
            raise ConfigError(f"unexpanded must be 'uniform' or 'zero', got {unexpanded!r}")
        if l2_prompt not in L2_PROMPTS:
            raise ConfigError(f"l2_prompt must be one of {list(L2_PROMPTS)}, got {l2_prompt!r}")
        self.l2_prompt = l2_prompt
        for name, t in (("tau", tau), ("tau_l2", tau_l2 if tau_l2 is not None else tau)):
            if not t > 0:
                raise ConfigError(f"{name} must be > 0, got {t}")
        self.taxonomy_arg = taxonomy
        self.branches = branches
        self.tau = float(tau)
        self.tau_l2 = float(tau if tau_l2 is None else tau_l2)
        self.verbalizers = verbalizers
        self.unexpanded = unexpanded
        self.l1_override = None

    def prepare(self, builder: PromptBuilder) -> None:
        cats = list(builder.dataset.categories)
        taxonomy = self.taxonomy_arg if self.taxonomy_arg is not None else builder.dataset.taxonomy
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
        if self.l2_prompt == "flat":
            l2_q = [templates.yes_no_question(c) for c in cats]
        else:
            parent = {c: self.l1_names[b] for b, kids in enumerate(self.children) for c in kids}
            l2_q = [templates.conditional_yes_no_question(parent[k], c) for k, c in enumerate(cats)]
        self.l1_suffixes = [builder.encode_suffix(q) for q in l1_q]
        self.l2_suffixes = [builder.encode_suffix(q) for q in l2_q]
        self.token_ids = _answer_ids(builder, SAMPLE_HISTORY + l1_q[0], self.verbalizers.all(), "verbalizer")
        if _answer_ids(builder, SAMPLE_HISTORY + l2_q[0], self.verbalizers.all(), "verbalizer") != self.token_ids:
            raise TokenizationError("verbalizer tokens differ between the L1 and L2 questions")
        builder.check_boundary(SAMPLE_HISTORY, l1_q[0], "hierarchical probe")
        self.reserve = max(map(len, self.l1_suffixes + self.l2_suffixes))
        self.K = len(cats)

    def score(self, backend, histories, l1_scores: np.ndarray | None = None):
        n_aff = len(self.verbalizers.affirmative)
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
            p1 = softmax(s1, self.tau)
            chosen = [select_branches(p1[i], self.branches) for i in range(len(hs))]
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
                p = chain_rule(p1[i], self.children, chosen[i], cond, self.K, self.unexpanded)
                extra = {f"L1:{n}": float(p1[i, j]) for j, n in enumerate(self.l1_names)}
                extra["n_branches"] = int(len(chosen[i]))
                extra["n_prompts"] = int(len(self.l1_names) + sum(len(self.children[b]) for b in chosen[i]))
                out.append(UserResult(p, s2[i], extra))
        return out

    def meta(self):
        return {
            "readout": self.name,
            "tau": self.tau,
            "tau_l2": self.tau_l2,
            "branches": self.branches,
            "unexpanded": self.unexpanded,
            "l2_prompt": self.l2_prompt,
            "l1": self.l1_names if hasattr(self, "l1_names") else None,
            "verbalizers": {"affirmative": list(self.verbalizers.affirmative), "negative": list(self.verbalizers.negative)},
        }


def _dg(**kw):
    from spectra_rec.probe.dg import DGReadout

    return DGReadout(**kw)


def _rerank(**kw):
    from spectra_rec.probe.reranker import RerankerReadout

    return RerankerReadout(**kw)


READOUTS = {
    "logit": LogitReadout,
    "name": NameReadout,
    "choice": ChoiceReadout,
    "hier": HierarchicalReadout,
    "dg": _dg,
    "rerank": _rerank,
}
"""name -> readout factory(**options)."""

PROBE_READOUTS = ("logit", "name", "choice", "hier")
"""The SPECTRA readouts (``spectra-rec probe --readout``); ``dg`` and ``rerank`` are the baselines."""


def make_readout(name: str | Readout, **options) -> Readout:
    if isinstance(name, Readout):
        if options:
            raise ConfigError(f"readout options {sorted(options)} given with a readout instance")
        return name
    if name not in READOUTS:
        raise ConfigError(f"unknown readout {name!r}; registered: {sorted(READOUTS)}")
    return READOUTS[name](**options)


__all__ = [
    "PROBE_READOUTS",
    "READOUTS",
    "ChoiceReadout",
    "HierarchicalReadout",
    "LogitReadout",
    "NameReadout",
    "Readout",
    "UserResult",
    "chain_rule",
    "choice_blocks",
    "make_readout",
    "select_branches",
    "softmax",
    "yes_no_scores",
]
