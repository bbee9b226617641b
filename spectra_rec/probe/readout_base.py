"""What every readout is built from: the shared math, the readout interface, its frozen config and the registry.

The math (docs/formulas.md) is pure numpy: ``logsumexp``, ``softmax``, ``yes_no_scores``,
``parse_branches``, ``select_branches``, ``chain_rule``. A readout subclasses :class:`Readout`,
declares its options as a frozen :class:`ReadoutConfig` dataclass (validated at construction,
hashable, the source of its cache key) and registers itself::

    @register_readout("mine")
    class MyReadout(Readout):
        config_cls = MyConfig

This module imports no readout; ``spectra_rec.probe.readouts`` imports the built-in ones, so
importing it fills the registry.
"""

from __future__ import annotations

import dataclasses
import numbers
from dataclasses import dataclass, field
from typing import Sequence

import numpy as np

from spectra_rec.errors import ConfigError
from spectra_rec.probe.prompts import History, PromptBuilder
from spectra_rec.text import templates


# ---- pure math -------------------------------------------------------------------
def logsumexp(x: np.ndarray, axis: int = -1) -> np.ndarray:
    """log sum_i exp(x_i) along ``axis``, shifted by the maximum (an all -inf row gives -inf)."""
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


# ---- configs -------------------------------------------------------------------------
def check_positive(name: str, value) -> float:
    """``float(value)``, refusing a value that is not > 0 with a message naming the option."""
    if not isinstance(value, numbers.Real) or isinstance(value, bool) or not value > 0:
        raise ConfigError(f"{name} must be > 0, got {value}")
    return float(value)


def as_verbalizers(value) -> templates.Verbalizers:
    """A ``Verbalizers`` from itself or its key form ``{"affirmative": [...], "negative": [...]}``."""
    if isinstance(value, dict):
        try:
            value = templates.Verbalizers(**{k: tuple(v) for k, v in value.items()})
        except TypeError:
            raise ConfigError(f"verbalizers must have the keys affirmative and negative, got {sorted(value)}") from None
    if not isinstance(value, templates.Verbalizers):
        raise ConfigError(f"verbalizers must be a Verbalizers, got {type(value).__name__}")
    if not value.affirmative or not value.negative:
        raise ConfigError(f"verbalizers need at least one affirmative and one negative word, got {value}")
    return templates.Verbalizers(tuple(value.affirmative), tuple(value.negative))


def to_json(value):
    """Options as plain JSON values (dataclasses such as Verbalizers become dicts, tuples lists)."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {k: to_json(v) for k, v in dataclasses.asdict(value).items()}
    if isinstance(value, dict):
        return {str(k): to_json(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [to_json(v) for v in value]
    return value


@dataclass(frozen=True)
class ReadoutConfig:
    """Base of a readout's options: a frozen, hashable dataclass whose :meth:`key` is the readout's cache key.

    Subclasses validate in ``__post_init__`` (``ConfigError`` naming the option) and store
    normalized values (floats, tuples), so equal options give equal configs and equal keys.
    """

    def key(self) -> dict:
        """Every option as a plain JSON value, defaults included (explicit defaults share the cache)."""
        return {f.name: to_json(getattr(self, f.name)) for f in dataclasses.fields(self)}

    @classmethod
    def from_key(cls, key: dict) -> "ReadoutConfig":
        """The config whose :meth:`key` is ``key`` (the round trip of a stage manifest)."""
        return cls(**key)

    def _set(self, name: str, value) -> None:
        # Normalizing a frozen dataclass's field in __post_init__ goes through object.__setattr__.
        object.__setattr__(self, name, value)


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
    """Base class: ``prepare`` once (tokenize suffixes, check answer tokens), then ``score`` users.

    Options come as keyword (or positional, in field order) arguments or as ``config=``, an
    instance of the class's ``config_cls``; they live in ``self.config`` only.
    """

    name = "readout"
    config_cls: type[ReadoutConfig] = ReadoutConfig
    reserve = 0
    """Tokens the readout appends after the history prefix (longest suffix + continuation)."""
    spectra = False
    """A SPECTRA readout (``spectra-rec probe --readout``, ``spectra-<name>`` priors); False: a baseline."""
    fits_tau = False
    """Its distribution is softmax(s / tau) of one score vector, so ``--tau auto`` can fit tau."""
    cli_exclude: tuple[str, ...] = ()
    """Config fields that no ``spectra-rec probe`` flag sets (a flag of the same name means something else)."""

    def __init__(self, *args, config: ReadoutConfig | None = None, **options):
        if config is None:
            config = self.make_config(*args, **options)
        elif args or options:
            raise ConfigError(f"{self.name} readout: give options or config=, not both")
        elif not isinstance(config, self.config_cls):
            raise ConfigError(f"{self.name} readout: config must be a {self.config_cls.__name__}, "
                              f"got {type(config).__name__}")
        self.config = config

    @classmethod
    def make_config(cls, *args, **options) -> ReadoutConfig:
        """The readout's config from its options, an unknown option named with the known ones."""
        names = [f.name for f in dataclasses.fields(cls.config_cls)]
        unknown = sorted(set(options) - set(names))
        if unknown or len(args) > len(names):
            given = unknown or [f"{len(args)} positional arguments"]
            raise ConfigError(f"{cls.name} readout: unknown option(s) {given}; its options are {names}")
        return cls.config_cls(*args, **options)

    @classmethod
    def cli_options(cls, flags: dict) -> dict:
        """Options from parsed flags named like the config's fields (``--tau-l2`` sets ``tau_l2``); unset flags are left out."""
        return {f.name: flags[f.name] for f in dataclasses.fields(cls.config_cls)
                if f.name not in cls.cli_exclude and flags.get(f.name) is not None}

    @classmethod
    def manifest_defaults(cls, manifest: dict) -> dict:
        """Options an align folder's manifest implies (what SFT trained), used where the caller gave none."""
        return {}

    @classmethod
    def summarize(cls, extras) -> dict | None:
        """Totals over users of the per-user extras (a DataFrame), saved in the metadata; None: nothing to add."""
        return None

    def prepare(self, builder: PromptBuilder) -> None:
        raise NotImplementedError

    def frame(self, history_text: str) -> str:
        """The shared prefix text built around the user's history (default: the history itself)."""
        return history_text

    def score(self, backend, histories: Sequence[History]) -> list[UserResult]:
        raise NotImplementedError

    def answer_words(self) -> dict[str, Sequence[str]]:
        """Answer words per align-manifest key (``verbalizer_ids``, ``letter_ids``), in ``token_ids`` order."""
        return {}

    @property
    def method(self) -> str:
        return f"spectra-{self.name}"

    def meta(self) -> dict:
        return {"readout": self.name}


def answer_ids(builder: PromptBuilder, context: str, words: Sequence[str], what: str) -> list[int]:
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


# ---- registry --------------------------------------------------------------------------
READOUTS: dict[str, type[Readout]] = {}
"""name -> readout class; filled by :func:`register_readout` as the readout modules are imported."""


def register_readout(name: str):
    """Class decorator: register a :class:`Readout` subclass under ``name`` (once; its ``name`` is set)."""

    def deco(cls: type[Readout]) -> type[Readout]:
        if not (isinstance(cls, type) and issubclass(cls, Readout)):
            raise TypeError(f"register_readout({name!r}): {cls!r} is not a Readout subclass")
        if not (isinstance(cls.config_cls, type) and issubclass(cls.config_cls, ReadoutConfig)):
            raise TypeError(f"register_readout({name!r}): {cls.__name__}.config_cls is not a ReadoutConfig")
        if name in READOUTS and READOUTS[name] is not cls:
            raise ValueError(f"readout {name!r} is already registered ({READOUTS[name].__name__})")
        cls.name = name
        READOUTS[name] = cls
        return cls

    return deco


__all__ = [
    "READOUTS", "Readout", "ReadoutConfig", "UserResult", "answer_ids", "as_verbalizers", "chain_rule",
    "check_positive", "logsumexp", "parse_branches", "register_readout", "select_branches", "softmax", "to_json",
    "yes_no_probe", "yes_no_scores",
]
