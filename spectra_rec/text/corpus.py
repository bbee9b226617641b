"""Training text from the train windows only: the CPT corpus and the SFT examples.

Everything here reads ``Split.train_items`` (never ``heldout_items``), and every string is
rendered by :mod:`spectra_rec.text.templates`, so SFT teaches exactly the formats the probes
read (docs/index.md, "Protocol").

- CPT documents: user traces (``history_prefix`` over chunks of the train window, in time
  order, with the user profile), item metadata (``Item: <title> (<year>) [<categories>]``)
  for items seen in some train window, and an item quiz per such item (questions about the
  item's own categories, in the answer format the probes read; no user-level target).
- SFT examples: reference points inside each train window; context = the last
  ``context_items`` interactions before the reference; target distribution f = normalized
  category mass of the interactions after the reference and still inside the train window
  (optionally only the next ``horizon``). One example is a (prompt, completion) pair; the loss
  covers the completion only. Formats:

  ``name``     completion = one category name drawn from f;
  ``yes_no``   a category with f(c) > 0 (drawn from f) -> " Yes", or one with f(c) = 0 -> " No";
               on a dataset with an L1 -> L2 taxonomy, a share ``taxonomy_rate`` asks instead what
               the hierarchical probe asks: about an L1 name (its mass = f summed over its
               children), or about an L2 category given its L1 parent (a branch the future enters);
  ``choice``   categories listed in dataset order with letters A.. (K > 26: the probe's
               anchored blocks, ``templates.choice_blocks``, the block drawn by its mass), completion
               = the letter of a category drawn from f restricted to the block;
  ``dg``       completion = the top-k categories of f (ties: context mass, then global train mass).

``heldout_examples`` builds the same formats with targets from the held-out window: it is for
evaluation only (tests and benchmarks) and is never used by training.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Callable, Iterator, Sequence

import numpy as np

from spectra_rec.errors import ConfigError, require_positive
from spectra_rec.text import templates as T

FORMATS = ("name", "yes_no", "choice", "dg")
READOUT_LOSSES = ("logit", "name", "choice")
"""Readouts SFT can train listwise on the target distribution (``SFTConfig.readout_loss``)."""


@dataclass(frozen=True)
class CorpusConfig:
    """How the CPT corpus is cut into documents."""

    items_per_doc: int = 24
    """Interactions per user-trace document (long train windows become several documents, in order)."""
    item_lines_per_doc: int = 32
    """Item-metadata lines per document."""
    include_items: bool = True
    """Add item-metadata documents (items that appear in some train window only)."""
    item_quiz: bool = True
    """Add one quiz document per such item: yes/no, multi-choice and name questions about the item's own
    categories. It teaches the answer slot and its tokens (" Yes", " B", " Drama") on item facts, so
    a from-scratch model meets them before SFT; it carries no user-level target."""

    def __post_init__(self):
        require_positive(self, "items_per_doc", "item_lines_per_doc")


@dataclass(frozen=True)
class SFTConfig:
    """Which SFT examples are drawn from the train windows."""

    context_items: int = 20
    """N: interactions before the reference time kept as context (the most recent N)."""
    history_summary: bool = False
    """Sum up the interactions older than the context in one line of category shares before the list
    (``templates.history_summary``): the prompt then tells the whole train window's category mix, not
    only the last N items'. The probe reads an aligned model's prompts the same way."""
    refs_per_user: int = 4
    """Reference points drawn per user (fewer when the window is short); each is the last one of its row."""
    refs_per_row: int = 1
    """Reference points that share one history prefix (packed readout SFT only): the drawn reference r and
    r - row_stride * j for j < refs_per_row, each reading the prefix up to its own reference, so one pass
    over the history trains several reference points (shorter contexts for the earlier ones)."""
    row_stride: int = 4
    """Interactions between consecutive reference points of one row."""
    examples_per_ref: int = 2
    """Examples drawn per reference point, each with a format from ``mixture``."""
    ref_range: tuple[float, float] = (0.0, 1.0)
    """Where in a train window of n interactions the rows' reference points are drawn: r in [lo * n, hi * n]
    (within min_context and min_future). Late points have a short future, as the held-out window the
    probe is scored on is the end of the sequence."""
    min_context: int = 1
    """Fewest interactions before a reference point."""
    min_future: int = 1
    """Fewest interactions after the reference point (inside the train window)."""
    horizon: int | None = None
    """Interactions after the reference that define the target; None = the rest of the train window."""
    target_lift: float = 0.0
    """beta: the target is f * pop^-beta renormalized (pop: the train-window category mass of all users), so
    SFT spends its gradient on how a user departs from the head genres; the probe's tables then read as a
    lift and need pop^beta back (fitted on dev). 0: the plain future mix."""
    mixture: dict = field(default_factory=lambda: {"name": 0.4, "yes_no": 0.3, "choice": 0.2, "dg": 0.1})
    """Format -> weight (normalized); formats: name, yes_no, choice, dg."""
    yes_rate: float = 0.5
    """Share of yes/no examples asked about a category with future mass (answer Yes)."""
    dg_k: int = 3
    """Length of DG ranked lists."""
    choice_order: str = "fixed"
    """``fixed``: categories in dataset order, letters A.. in order (what the probe reads); ``shuffled``."""
    taxonomy_rate: float = 0.5
    """With an L1 -> L2 taxonomy: share of yes/no examples about it (half L1 names, half L2 given L1)."""
    readout_loss: tuple[str, ...] = ()
    """Readouts (``logit``, ``name``, ``choice``) whose distribution, computed exactly as the probe reads it,
    is trained towards the whole target f at every reference point (a soft-target loss: one pass gives
    the gradient of every category); the sampled examples stay as language-model targets on the same
    prefix. Empty: plain SFT on the sampled examples only."""
    readout_weight: float = 1.0
    """Weight of the readout loss (KL(f || p) summed over ``readout_loss``) next to the answer-token loss."""
    history_weight: float = 0.0
    """Weight of an auxiliary loss on packed rows: KL(h || p) for ``templates.history_question``, read as the
    name readout reads, with h the category mix of the history in the prompt. Its target is exact (no
    sampling noise), so it teaches the model to gather the history's categories at the answer slot,
    which the readouts' noisy future targets alone teach slowly."""

    def __post_init__(self):
        require_positive(self, "context_items", "refs_per_user", "refs_per_row", "row_stride", "examples_per_ref",
                         "min_context", "min_future", "dg_k")
        if self.horizon is not None and self.horizon < 1:
            raise ConfigError(f"SFTConfig.horizon must be >= 1 or None, got {self.horizon}")
        unknown = sorted(set(self.mixture) - set(FORMATS))
        if unknown:
            raise ConfigError(f"SFTConfig.mixture has unknown format(s) {unknown}; known: {list(FORMATS)}")
        if any(w < 0 for w in self.mixture.values()) or sum(self.mixture.values()) <= 0:
            raise ConfigError(f"SFTConfig.mixture weights must be >= 0 with a positive sum, got {self.mixture}")
        for name in ("yes_rate", "taxonomy_rate"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ConfigError(f"SFTConfig.{name} must be in [0, 1], got {getattr(self, name)}")
        object.__setattr__(self, "readout_loss", tuple(self.readout_loss))
        bad = sorted(set(self.readout_loss) - set(READOUT_LOSSES))
        if bad:
            raise ConfigError(f"SFTConfig.readout_loss has unknown readout(s) {bad}; known: {list(READOUT_LOSSES)}")
        for name in ("readout_weight", "history_weight"):
            if not getattr(self, name) >= 0:
                raise ConfigError(f"SFTConfig.{name} must be >= 0, got {getattr(self, name)}")
        object.__setattr__(self, "ref_range", tuple(float(x) for x in self.ref_range))
        lo, hi = self.ref_range if len(self.ref_range) == 2 else (1.0, 0.0)
        if not 0.0 <= lo <= hi <= 1.0:
            raise ConfigError(f"SFTConfig.ref_range must be (lo, hi) with 0 <= lo <= hi <= 1, got {self.ref_range}")
        if self.history_weight > 0 and not self.readout_loss:
            raise ConfigError("SFTConfig.history_weight > 0 needs readout_loss: the history question rides on packed rows")
        if self.choice_order not in ("fixed", "shuffled"):
            raise ConfigError(f"SFTConfig.choice_order must be 'fixed' or 'shuffled', got {self.choice_order!r}")

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class Example:
    """One SFT example: the loss covers ``completion`` (and the eos the encoder appends) only."""

    user: int
    format: str
    prompt: str
    completion: str
    dropped: int = 0
    """Older context interactions left out (``context_items`` and the token budget together)."""
    ref: int = -1
    """Reference position in the user's train window: context = items[:ref], targets from items[ref:]
    (-1 for ``heldout_examples``: context = the whole train window, targets = the held-out window)."""


# ---------------------------------------------------------------------------------------------
# CPT corpus
# ---------------------------------------------------------------------------------------------


def train_item_set(split, users: Sequence[int] | None = None) -> np.ndarray:
    """Items that appear in the train window of ``users`` (all users by default)."""
    users = range(split.dataset.n_users) if users is None else users
    seen = np.zeros(split.dataset.n_items, dtype=bool)
    for u in users:
        seen[split.train_items(u)] = True
    return np.flatnonzero(seen)


def item_line(dataset, item: int) -> str:
    """Item metadata line of the CPT corpus."""
    return f"Item: {T.item_text(dataset, item)}"


def user_documents(dataset, split, user: int, items_per_doc: int) -> list[str]:
    """The user's train window as ``history_prefix`` documents of at most ``items_per_doc`` items, in order."""
    items = split.train_items(user)
    return [T.history_prefix(dataset, user, items[s : s + items_per_doc])[0] for s in range(0, len(items), items_per_doc)]


def cpt_documents(dataset, split, users: Sequence[int] | None = None, config: CorpusConfig | None = None,
                  seed: int = 0) -> list[str]:
    """The CPT corpus (train windows of ``users`` only), documents in a seeded shuffled order."""
    config = config or CorpusConfig()
    users = list(range(dataset.n_users)) if users is None else list(users)
    docs: list[str] = []
    for u in users:
        docs.extend(user_documents(dataset, split, u, config.items_per_doc))
    if config.include_items:
        items = train_item_set(split, users)
        lines = [item_line(dataset, i) for i in items]
        n = config.item_lines_per_doc
        docs.extend("\n".join(lines[s : s + n]) + "\n" for s in range(0, len(lines), n))
        if config.item_quiz:
            docs.extend(item_quiz_documents(dataset, items, np.random.default_rng([seed, 1])))
    rng = np.random.default_rng(seed)
    return [docs[j] for j in rng.permutation(len(docs))]


def item_quiz_documents(dataset, items: Sequence[int], rng: np.random.Generator) -> list[str]:
    """Per item with categories: its metadata line, then a yes/no (member or not, 50/50), a
    multi-choice (a block holding a member, dataset order) and a name question with answers."""
    K = dataset.K
    blocks = T.choice_blocks(K)
    docs = []
    for i in items:
        members = dataset.membership.getrow(int(i)).indices
        if len(members) == 0:
            continue
        lines = [item_line(dataset, int(i))]
        others = np.setdiff1d(np.arange(K), members)
        if len(others) and rng.random() < 0.5:
            lines.append(T.item_yes_no_question(dataset.categories[rng.choice(others)]) + T.answer("No"))
        else:
            lines.append(T.item_yes_no_question(dataset.categories[rng.choice(members)]) + T.answer("Yes"))
        c = int(rng.choice(members))
        holding = [b for b in blocks if c in b]
        # the anchor sits in every block; only then is there a block to draw
        block = holding[0] if len(holding) == 1 else holding[rng.choice(len(holding))]
        lines.append(T.item_choice_question([dataset.categories[k] for k in block])
                     + T.answer(T.ANSWER_LETTERS[block.index(c)]))
        lines.append(T.item_name_question() + T.answer(dataset.categories[int(rng.choice(members))]))
        docs.append("\n".join(lines) + "\n")
    return docs


def tokenizer_texts(dataset, split, users: Sequence[int] | None = None, config: CorpusConfig | None = None):
    """Texts a tokenizer is trained on: the CPT corpus plus every question the templates render."""
    yield from cpt_documents(dataset, split, users, config)
    questions = [T.name_question(), T.dg_question(3)]
    questions += [T.yes_no_question(c) for c in dataset.categories]
    for block in T.choice_blocks(dataset.K):
        questions.append(T.choice_question([dataset.categories[k] for k in block]))
    answers = [T.answer(w) for w in T.Verbalizers().all() + T.ANSWER_LETTERS]
    answers += [T.answer(c) for c in dataset.categories]
    for _ in range(4):  # the question formats are rare in the corpus but frequent in SFT
        yield from questions
        yield T.ANSWER_CUE.join(answers)


# ---------------------------------------------------------------------------------------------
# SFT examples
# ---------------------------------------------------------------------------------------------


def category_mass(dataset, items: Sequence[int]) -> np.ndarray:
    """sum over items of m(i, c): (K,)."""
    items = np.asarray(items, dtype=np.int64)
    if len(items) == 0:
        return np.zeros(dataset.K)
    return np.asarray(dataset.membership[items].sum(axis=0)).ravel()


def _normalize(mass: np.ndarray) -> np.ndarray | None:
    s = mass.sum()
    return mass / s if s > 0 else None


class _Renderer:
    """Renders the prompts of one (user, context) pair in every format."""

    def __init__(self, dataset, config: SFTConfig, global_mass: np.ndarray, fit: Callable | None):
        self.ds = dataset
        self.cfg = config
        self.global_mass = global_mass
        self.fit = fit
        tax = dataset.taxonomy
        self.l1_names = list(tax) if tax else []
        index = {c: k for k, c in enumerate(dataset.categories)}
        self.children = [np.array([index[c] for c in tax[n]]) for n in self.l1_names]

    def prefix(self, user: int, context: np.ndarray) -> tuple[str, int]:
        summary = self.cfg.history_summary
        if self.fit is not None:
            return self.fit(self.ds, user, context, self.cfg.context_items, summary)
        return T.history_prefix(self.ds, user, context, max_items=self.cfg.context_items, summary=summary)

    def draw(self, fmt: str, rng: np.random.Generator, f: np.ndarray, context_mass: np.ndarray):
        """(question, completion) for one format given the target distribution f."""
        ds, cfg, K = self.ds, self.cfg, self.ds.K
        cats = ds.categories
        if fmt == "name":
            return T.name_question(), T.answer(cats[rng.choice(K, p=f)])
        if fmt == "yes_no":
            if self.l1_names and rng.random() < cfg.taxonomy_rate:
                return self._taxonomy_yes_no(rng, f)
            pos = f > 0
            ask_yes = rng.random() < cfg.yes_rate
            if ask_yes or pos.all():
                return T.yes_no_question(cats[rng.choice(K, p=f)]), T.answer("Yes")
            neg = np.flatnonzero(~pos)
            return T.yes_no_question(cats[rng.choice(neg)]), T.answer("No")
        if fmt == "choice":
            blocks = [np.asarray(b) for b in T.choice_blocks(K)]
            block_mass = np.array([f[b].sum() for b in blocks])
            block = blocks[rng.choice(len(blocks), p=block_mass / block_mass.sum())]
            order = block if cfg.choice_order == "fixed" else rng.permutation(block)
            p = f[order] / f[order].sum()
            j = rng.choice(len(order), p=p)
            return T.choice_question([cats[k] for k in order]), T.answer(T.ANSWER_LETTERS[j])
        if fmt == "dg":
            k = min(cfg.dg_k, K)
            # Rank by future mass, then context mass, then global train mass, then dataset order.
            order = np.lexsort((np.arange(K), -self.global_mass, -context_mass, -f))
            return T.dg_question(k), T.dg_answer([cats[c] for c in order[:k]])
        raise ConfigError(f"unknown SFT format {fmt!r}; known: {list(FORMATS)}")

    def _taxonomy_yes_no(self, rng: np.random.Generator, f: np.ndarray):
        """The hierarchical probe's questions: an L1 name, or an L2 category given its L1 parent."""
        g = np.array([f[kids].sum() for kids in self.children])
        ask_yes = rng.random() < self.cfg.yes_rate
        if rng.random() < 0.5:
            if ask_yes or (g > 0).all():
                return T.yes_no_question(self.l1_names[rng.choice(len(g), p=g)]), T.answer("Yes")
            return T.yes_no_question(self.l1_names[rng.choice(np.flatnonzero(g == 0))]), T.answer("No")
        # p(c2 | c1) is only read inside branches, so the condition is a branch the future enters
        b = int(rng.choice(len(g), p=g))
        kids = self.children[b]
        fk = f[kids]
        if ask_yes or (fk > 0).all():
            c, ans = kids[rng.choice(len(kids), p=fk / fk.sum())], "Yes"
        else:
            c, ans = rng.choice(kids[fk == 0]), "No"
        return T.conditional_yes_no_question(self.l1_names[b], self.ds.categories[int(c)]), T.answer(ans)


def _mixture(config: SFTConfig) -> tuple[list[str], np.ndarray]:
    fmts = [f for f in FORMATS if config.mixture.get(f, 0) > 0]
    w = np.array([config.mixture[f] for f in fmts], dtype=float)
    return fmts, w / w.sum()


@dataclass(frozen=True)
class ReferencePoint:
    """One (user, reference point) of SFT: the shared history prefix, the target f and the sampled examples."""

    user: int
    ref: int
    prefix: str
    """The history prefix every question of this reference point follows."""
    target: np.ndarray
    """(K,) f: normalized category mass of the train-window interactions after the reference."""
    dropped: int
    questions: tuple[tuple[str, str, str], ...]
    """(format, question, completion) of the sampled examples."""
    row: int = -1
    """The reference of the row's last point: points of one user with the same ``row`` share a packed row,
    and each one's prefix is a prefix of the row's (-1: a row of its own)."""
    history: np.ndarray | None = None
    """(K,) normalized category mass of the context items the prefix shows (None: none categorized)."""


def reference_points(dataset, split, users: Sequence[int] | None = None, config: SFTConfig | None = None,
                     seed: int = 0, fit: Callable | None = None) -> Iterator[ReferencePoint]:
    """The reference points of ``users``' train windows with their sampled examples (seeded, in order).

    ``fit(dataset, user, items, max_items, summary) -> (prefix, dropped)`` may replace the plain
    ``history_prefix`` (e.g. :func:`spectra_rec.text.templates.fit_history_prefix` bound to a
    tokenizer and a token budget).
    """
    config = config or SFTConfig()
    users = list(range(dataset.n_users)) if users is None else list(users)
    rng = np.random.default_rng(seed)
    global_mass = split.category_train_mass
    render = _Renderer(dataset, config, global_mass, fit)
    pop = _normalize(np.asarray(global_mass, dtype=np.float64))
    lift = None  # pop^-beta; a category no user has in the train windows gets no target mass
    if config.target_lift and pop is not None:
        lift = np.where(pop > 0, np.power(np.maximum(pop, 1e-12), -config.target_lift), 0.0)
    fmts, weights = _mixture(config)
    for u in users:
        items = split.train_items(u)
        n = len(items)
        lo, hi = config.min_context, n - config.min_future  # reference r: context items[:r], future items[r:]
        if hi < lo:
            continue
        candidates = np.arange(lo, hi + 1)
        if config.ref_range != (0.0, 1.0):
            inside = candidates[(candidates >= config.ref_range[0] * n) & (candidates <= config.ref_range[1] * n)]
            # a window too short for the range: the point nearest to its middle
            mid = 0.5 * (config.ref_range[0] + config.ref_range[1]) * n
            candidates = inside if len(inside) else candidates[[int(np.argmin(np.abs(candidates - mid)))]]
        refs = np.sort(rng.choice(candidates, size=min(config.refs_per_user, len(candidates)), replace=False))
        summary = config.history_summary
        for r in refs:
            window = max(0, r - config.context_items)
            # with a summary the prefix gets the whole history before r: the items it drops are summed up
            prefix, dropped = render.prefix(u, items[0 if summary else window : r])
            start = (0 if summary else window) + dropped  # the row's prefix lists items[start:r]
            dropped = start - window  # context items the token budget dropped
            for j in range(config.refs_per_row - 1, -1, -1):  # the row's points in time order, r last
                rj = int(r - j * config.row_stride)
                if rj - start < config.min_context:
                    continue
                future = items[rj : n if config.horizon is None else min(n, rj + config.horizon)]
                f = _normalize(category_mass(dataset, future))
                if f is not None and lift is not None:
                    f = _normalize(f * lift)
                if f is None:  # no categorized item in the future window
                    continue
                context = items[start:rj]
                if rj == r:
                    text = prefix
                elif summary:  # every point of the row sums up the same older items, items[:start]
                    text = T.history_prefix(dataset, u, items[:rj], max_items=rj - start, summary=True)[0]
                else:
                    text = T.history_prefix(dataset, u, context)[0]
                # the history question's target: the category mix of everything the prompt tells
                context_mass = category_mass(dataset, items[:rj] if summary else context)
                qs = []
                for fmt in rng.choice(fmts, size=config.examples_per_ref, p=weights):
                    q, a = render.draw(str(fmt), rng, f, context_mass)
                    qs.append((str(fmt), q, a))
                yield ReferencePoint(int(u), rj, text, f, int(dropped), tuple(qs),
                                     row=int(r) if config.refs_per_row > 1 else -1, history=_normalize(context_mass))


def sft_examples(dataset, split, users: Sequence[int] | None = None, config: SFTConfig | None = None,
                 seed: int = 0, fit: Callable | None = None) -> list[Example]:
    """SFT examples from the train windows of ``users``; same inputs and seed, same examples.

    The examples of :func:`reference_points`, one (prompt, completion) pair each.
    """
    return [Example(rp.user, fmt, rp.prefix + q, a, rp.dropped, rp.ref)
            for rp in reference_points(dataset, split, users, config, seed, fit) for fmt, q, a in rp.questions]


def heldout_examples(dataset, split, users: Sequence[int] | None = None, config: SFTConfig | None = None,
                     formats: Sequence[str] = ("name",), per_user: int = 1, seed: int = 0,
                     fit: Callable | None = None) -> list[Example]:
    """EVALUATION ONLY: context = the end of the train window, targets from the held-out window.

    Never passed to training; tests and benchmarks use it to measure held-out loss.
    """
    config = config or SFTConfig()
    users = split.eval_users if users is None else users
    rng = np.random.default_rng(seed)
    render = _Renderer(dataset, config, split.category_train_mass, fit)
    out: list[Example] = []
    for u in users:
        context = split.train_items(u)
        f = _normalize(category_mass(dataset, split.heldout_items(u)))
        if f is None:
            continue
        prefix, dropped = render.prefix(u, context)
        context_mass = category_mass(dataset, context[-config.context_items :])
        for fmt in formats:
            for _ in range(per_user):
                q, a = render.draw(fmt, rng, f, context_mass)
                out.append(Example(int(u), fmt, prefix + q, a, dropped))
    return out


def iter_texts(examples: Sequence[Example]) -> Iterator[str]:
    """Full training strings (prompt + completion), e.g. for leakage checks."""
    for e in examples:
        yield e.prompt + e.completion
