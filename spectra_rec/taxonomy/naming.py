"""Short, prompt-safe category names from a group's dominant source categories and its typical titles.

A generated name is ``<Genre>-<TitleWord>`` (``Drama-Casablanca``, ``SciFi-Alien``), the style of
ml-100k's own ``Sci-Fi``: ASCII letters and digits around one hyphen, no whitespace (an item's
categories are one whitespace-separated token_seq field) and no comma, colon or newline, so it
cannot break the ``[cat1, cat2]`` item text, an ``A. name`` option line or a DG list. The default
tokenizer (``spectra_rec.align.tokenizer.build_tokenizer``) forces every pre-tokenized piece of a
category name into one token, so every generated name is exactly three tokens after the answer cue
(`` Drama``, ``-``, ``Casablanca``): the ``name`` readout sums three log-probs for every category
(no length bias between categories), no name is a token prefix of another, and the genre token is
shared by its categories. ``logit`` and ``hier`` ask yes/no questions and work with any name.
"""

from __future__ import annotations

import re
import unicodedata
from typing import Iterable, Sequence

import numpy as np

from spectra_rec.errors import DataError

SAFE_NAME = re.compile(r"^[A-Za-z0-9]+(-[A-Za-z0-9]+){0,3}$")
MAX_NAME_CHARS = 40
STOPWORDS = frozenset(
    "the a an and of in on to for with from at by is it its la le les el los das der die und et de del du "
    "part ii iii iv vi vii viii ix xi episode vol when what where who why how out into over about after before "
    "first last man men new old big little good bad day night time life love all one two you your my his her "
    "our they them this that there then are was were been not yes get got mrs mr dr don like meet around free "
    "home true return back up down off again story movie film".split()
)
"""Words too common or too short-lived to tell a category apart."""


def ascii_words(text: str) -> list[str]:
    """Letter-only words of ``text``, accents folded to ASCII (``Amélie`` -> ``Amelie``).

    Letters only: byte-level BPE pre-tokenizes a digit run apart from the letters around it, so a
    piece like ``G0S1`` would be four tokens, not one.
    """
    folded = unicodedata.normalize("NFKD", str(text)).encode("ascii", "ignore").decode()
    return [w for w in re.findall(r"[A-Za-z0-9]+", folded) if w.isalpha()]


def genre_word(category: str) -> str:
    """One word for a source category: ``Sci-Fi`` -> ``SciFi``, ``Children's`` -> ``Childrens``."""
    words = ascii_words(category.replace("'", ""))
    return "".join(w[:1].upper() + w[1:] for w in words) or "Misc"


def title_words(title: str) -> list[str]:
    """Distinctive words of a title, longest first: no year, no article, no stopword, at least 4 letters."""
    title = re.sub(r"\(\s*\d{4}\s*\)", " ", str(title))
    out = []
    for w in ascii_words(title):
        if len(w) < 4 or w.lower() in STOPWORDS:
            continue
        out.append(w[:1].upper() + w[1:].lower() if w.isupper() else w[:1].upper() + w[1:])
    # longest first: the longer word of a title is usually its distinctive one (Independence Day)
    return sorted(dict.fromkeys(out), key=len, reverse=True)


def unique_name(firsts: Sequence[str], seconds: Iterable[str], used: set[str]) -> str:
    """The first ``<first>-<second>`` not in ``used`` (firsts outer, seconds inner), else ``<first>-Group<A, B, ...>``."""
    seconds = list(dict.fromkeys(seconds))
    for first in firsts:
        for second in seconds:
            if second.lower() == first.lower():
                continue
            name = f"{first}-{second}"
            if name not in used and len(name) <= MAX_NAME_CHARS:
                return name
    n = 0
    while f"{firsts[0]}-Group{_letters(n)}" in used:
        n += 1
    return f"{firsts[0]}-Group{_letters(n)}"


def _letters(n: int) -> str:
    """0 -> A, 25 -> Z, 26 -> AA: a counter without digits (a digit would be a token of its own)."""
    out = ""
    n += 1
    while n:
        n, r = divmod(n - 1, 26)
        out = chr(65 + r) + out
    return out


def dominant(mass: np.ndarray, categories: Sequence[str], n: int = 3) -> list[tuple[str, float]]:
    """The ``n`` source categories with the largest share of ``mass`` (ties: category order)."""
    total = mass.sum()
    if total <= 0:
        return []
    order = np.argsort(-mass, kind="stable")[:n]
    return [(categories[j], float(mass[j] / total)) for j in order if mass[j] > 0]


def check_names(names: Sequence[str], what: str, others: Sequence[str] = ()) -> None:
    """Names must be prompt-safe and unique (also against ``others``, the L1 names); DataError naming both categories."""
    seen: dict[str, int] = {}
    for j, name in enumerate(names):
        if not isinstance(name, str) or not SAFE_NAME.match(name) or len(name) > MAX_NAME_CHARS:
            raise DataError(
                f"{what}: category {j} name {name!r} is not prompt-safe; expected 1-4 words of ASCII letters/digits "
                f"joined by single hyphens (no spaces: categories are whitespace-separated tokens), at most {MAX_NAME_CHARS} characters"
            )
        if name in seen:
            raise DataError(f"{what}: L2 name {name!r} collides (categories {seen[name]} and {j}); L2 names must be unique")
        seen[name] = j
    clash = sorted(set(names) & set(others))
    if clash:
        raise DataError(f"{what}: L2 name(s) {clash[:5]} collide with L1 names; L1 and L2 names must differ")
