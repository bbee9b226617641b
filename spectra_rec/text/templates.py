"""Versioned prompt templates: the one place that decides how users, items and questions read.

Training text (CPT corpus, SFT examples) and inference prompts (probes, DG, reranker) are
built only from these functions, so SFT teaches exactly the formats inference reads.
Bump ``TEMPLATE_VERSION`` whenever a rendered string changes; every artifact records it.

Every question ends with ``ANSWER_CUE``; the answer follows after one space
(``" Yes"``, ``" B"``, ``" Drama"``, ``" Drama, Comedy, Action"``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np

from spectra_rec.errors import ConfigError

TEMPLATE_VERSION = "spectra-v2"

ANSWER_CUE = "\nAnswer:"
ANSWER_LETTERS = tuple("ABCDEFGHIJKLMNOPQRSTUVWXYZ")
"""Single-token answer labels for multi-choice prompts (K > 26: anchored blocks, :func:`choice_blocks`)."""


def choice_blocks(K: int, n_letters: int = len(ANSWER_LETTERS), anchor: int = 0) -> list[list[int]]:
    """Category indices listed by each multi-choice prompt (option j gets letter j).

    K <= n_letters: one block, all categories in dataset order. Otherwise *anchored blocks*:
    ``anchor`` is the first option of every block and the other categories, in dataset order,
    fill the remaining n_letters - 1 options of consecutive blocks. SFT's choice examples list
    the same blocks (target: a category drawn from f restricted to the block), so that
    p(c) / p(anchor) is what every block learns and the probe can chain blocks on one scale.
    """
    if K < 1 or n_letters < 2:
        raise ConfigError(f"choice blocks need K >= 1 and >= 2 letters, got K={K}, letters={n_letters}")
    if K <= n_letters:
        return [list(range(K))]
    if not 0 <= anchor < K:
        raise ConfigError(f"choice anchor index {anchor} is not in [0, {K})")
    others = [c for c in range(K) if c != anchor]
    return [[anchor] + others[i : i + n_letters - 1] for i in range(0, K - 1, n_letters - 1)]


@dataclass(frozen=True)
class Verbalizers:
    """Affirmative and negative answer words of the yes/no probe (each must be one token after the cue)."""

    affirmative: tuple[str, ...] = ("Yes", "yes")
    negative: tuple[str, ...] = ("No", "no")

    def all(self) -> tuple[str, ...]:
        return self.affirmative + self.negative


def answer(text: str) -> str:
    """The completion that follows ``ANSWER_CUE``: one space, then the answer."""
    return " " + text


def item_text(dataset, item: int) -> str:
    """``Toy Story (1995) | Animation, Children's, Comedy``.

    Every category name follows a space, so it is the same tokens as in the questions and answers
    (``" Drama"``). After a bracket, a byte-level BPE reads the first name as another token
    (``"[Drama"`` -> ``"["``, ``"Drama"``): the model then has to learn that two ids mean one
    category before it can carry the history's categories into its answer.
    """
    title = str(dataset.item_titles[item]) if dataset.item_titles is not None else f"item {dataset.item_ids[item]}"
    year = dataset.item_years[item] if dataset.item_years is not None else None
    cats = ", ".join(dataset.item_categories(item))
    year_part = f" ({year})" if year not in (None, "") else ""
    return f"{title}{year_part} | {cats}" if cats else f"{title}{year_part}"


def user_text(dataset, user: int) -> str:
    """``age 24, gender M, occupation technician`` (empty when the dataset has no user features)."""
    if dataset.users is None:
        return ""
    token = dataset.user_ids[user]
    if token not in dataset.users.index:
        return ""
    row = dataset.users.loc[token]
    fields = [c for c in ("age", "gender", "occupation") if c in row.index]
    return ", ".join(f"{c} {row[c]}" for c in fields)


def history_summary(dataset, items: Sequence[int]) -> str:
    """``Earlier, 143 items: Drama 31%, Comedy 22%, Action 9%`` (empty for no items).

    The category mix of ``items`` (each item's unit mass split over its categories), in whole
    percent, largest first; categories under half a percent are left out.
    """
    items = list(items)
    if not items:
        return ""
    mass = np.asarray(dataset.membership[np.asarray(items, dtype=np.int64)].sum(axis=0), dtype=np.float64).ravel()
    total = mass.sum()
    if total <= 0:
        return f"Earlier, {len(items)} items."
    share = np.rint(100.0 * mass / total).astype(int)
    order = sorted(np.flatnonzero(share > 0), key=lambda k: (-mass[k], k))
    mix = ", ".join(f"{dataset.categories[k]} {share[k]}%" for k in order)
    return f"Earlier, {len(items)} items: {mix}."


def history_prefix(dataset, user: int, items: Sequence[int], max_items: int | None = None,
                   summary: bool = False) -> tuple[str, int]:
    """The shared user-history prefix of every prompt; keeps the most recent ``max_items``.

    ``summary``: the dropped older items are not lost but summed up in one line before the list
    (:func:`history_summary`), so a short list still tells the whole history's category mix.
    Returns the text and how many older items were dropped (callers log it).
    """
    items = list(items)
    dropped = 0
    if max_items is not None and len(items) > max_items:
        dropped = len(items) - max_items
    older, items = items[:dropped], items[dropped:]
    lines = []
    profile = user_text(dataset, user)
    if profile:
        lines.append(f"User profile: {profile}.")
    if summary and older:
        lines.append(history_summary(dataset, older))
    lines.append("Watched, oldest first:")
    lines.extend(f"- {item_text(dataset, i)}" for i in items)
    return "\n".join(lines) + "\n", dropped


def yes_no_question(category: str) -> str:
    """Suffix of the likelihood probe for one category."""
    return f"Question: will the user's next item be in the category {category}?{ANSWER_CUE}"


def conditional_yes_no_question(parent: str, category: str) -> str:
    """Hierarchical L2 probe: the yes/no question about ``category`` given the next item is in L1 ``parent``.

    The children of one parent share the text up to their name, so the backend encodes that
    L1-conditional start once per branch (paper B.6: "the L2 prompts share an L1-conditional prefill").
    """
    return f"Question: if the user's next item is in {parent}, will it be in the category {category}?{ANSWER_CUE}"


def name_question() -> str:
    """Suffix of the category-name readout and of SFT category-name targets."""
    return f"Question: which category will the user choose next?{ANSWER_CUE}"


def history_question() -> str:
    """SFT's auxiliary question about the history shown (its target is the prompt's own category mix)."""
    return f"Question: which category has the user watched most?{ANSWER_CUE}"


def _options(categories: Sequence[str], letters: Sequence[str], question: str) -> str:
    """``Options:`` + ``letters[j]. categories[j]`` lines + the question and the answer cue."""
    if len(categories) > len(letters):
        raise ValueError(f"{len(categories)} categories but only {len(letters)} answer letters")
    options = "\n".join(f"{letters[j]}. {c}" for j, c in enumerate(categories))
    return f"Options:\n{options}\nQuestion: {question}{ANSWER_CUE}"


def choice_question(categories: Sequence[str], letters: Sequence[str] = ANSWER_LETTERS) -> str:
    """Multi-choice suffix listing ``letters[j]. categories[j]``."""
    return _options(categories, letters, "which option will the user choose next?")


def dg_question(k: int) -> str:
    """Suffix of the direct-generation baseline: a ranked list of k categories."""
    return f"Question: list the {k} categories the user will choose next, most likely first.{ANSWER_CUE}"


def dg_answer(categories: Sequence[str]) -> str:
    """``" Drama, Comedy, Action"``; the DG parser splits on ``LIST_SEPARATOR``."""
    return answer(LIST_SEPARATOR.join(categories))


LIST_SEPARATOR = ", "


def reranker_prompt(history: str, category: str) -> str:
    """Qwen3-Reranker pointwise format: judge whether the document (a category) meets the query (the user)."""
    return (
        "<|im_start|>system\nJudge whether the Document meets the requirements based on the Query and the "
        'Instruct provided. Note that the answer can only be "yes" or "no".<|im_end|>\n'
        "<|im_start|>user\n<Instruct>: Given a user's viewing history, judge whether the user will choose an item "
        f"of this category next\n<Query>: {history.strip()}\n<Document>: {category}<|im_end|>\n"
        "<|im_start|>assistant\n<think>\n\n</think>\n\n"
    )


def fit_history_prefix(
    dataset,
    user: int,
    items: Sequence[int],
    count_tokens,
    max_tokens: int,
    max_items: int | None = None,
    summary: bool = False,
) -> tuple[str, int]:
    """``history_prefix`` keeping the most recent items whose rendered prefix fits ``max_tokens``.

    ``count_tokens(text) -> int`` is the model's token count (e.g. ``len(tokenizer(text).input_ids)``).
    Returns the text and how many older items were dropped in all (``max_items`` and the budget
    together; callers log it). When even one item does not fit, the newest item is kept.
    """
    items = list(items)
    total = len(items)
    n = total if max_items is None else min(total, max_items)

    def render(kept: int) -> str:
        return history_prefix(dataset, user, items, max_items=kept, summary=summary)[0]

    text = render(n)
    if n <= 1 or count_tokens(text) <= max_tokens:
        return text, total - n
    lo, hi = 1, n - 1  # the largest kept count in [lo, hi] whose prefix fits (lo is the floor)
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if count_tokens(render(mid)) <= max_tokens:
            lo = mid
        else:
            hi = mid - 1
    return render(lo), total - lo


# ---- item quiz (CPT corpus): teaches the answer slot and its tokens on item facts, not user targets ----


def item_yes_no_question(category: str) -> str:
    """Item-fact question of the CPT corpus (follows ``Item: <item_text>``)."""
    return f"Question: is this item in the category {category}?{ANSWER_CUE}"


def item_name_question() -> str:
    return f"Question: name a category of this item.{ANSWER_CUE}"


def item_choice_question(categories: Sequence[str], letters: Sequence[str] = ANSWER_LETTERS) -> str:
    return _options(categories, letters, "which option is a category of this item?")
