"""Item-level evaluation of base vs fused rankings, overall and per head/mid/tail item slice.

One test case per evaluable user (target = first held-out item). Per case, with r the
target's 1-based rank among its candidates (ties count against the target; a target
missing from the candidate set has r = inf):
NDCG@k = 1/log2(r+1) if r <= k else 0;  HR@k = [r <= k];  MRR@k = 1/r if r <= k else 0.
Averages happen once, in :func:`summarize`. (normalization, w) are chosen on the dev
cohort; the reported cohort is disjoint from it. The default rule is the one-standard-error
rule: the smallest w whose dev NDCG is within one paired standard error of the best, so that a
dev maximum that is within noise of w = 0 (a few hundred dev users, 48 settings) is not taken.

:func:`evaluate_fusion` returns one :class:`FusionResult`: per candidate set the per-case
metrics, the summaries per slice, the lift with its CI and p-value, the sweep, and where its
(normalization, w) came from (:data:`W_SOURCES`). :mod:`fusion.report` only renders it. Metric
labels are ``NDCG@10``, ``HR@10``, ``MRR@10``, as in ``spectra-rec evaluate``.
"""

from __future__ import annotations

import logging
import warnings
from dataclasses import dataclass, field, replace
from typing import Callable, Iterable

import numpy as np

from fusion.blend import get_fusion_rule
from fusion.candidates import Candidates
from spectra_rec.data.split import SLICES
from spectra_rec.errors import DataWarning
from spectra_rec.metrics.stats import paired_bootstrap_ci, paired_wilcoxon

log = logging.getLogger(__name__)

METRICS = ("NDCG", "HR", "MRR")
"""Per-case metrics; labels are ``<metric>@<k>`` (``NDCG@10``) in every output."""


def metric_label(metric: str, k: int) -> str:
    """``NDCG@10``: the one label style of the fusion and the evaluation outputs."""
    return f"{metric}@{k}"


def target_rank(scores: np.ndarray, items: np.ndarray, targets: np.ndarray) -> np.ndarray:
    """1 + #(candidates scoring above the target) + #(other candidates tied with it); inf when absent."""
    is_t = items == targets[:, None]
    found = is_t.any(axis=1)
    s_t = np.where(found, scores[np.arange(len(scores)), is_t.argmax(axis=1)], np.nan)[:, None]
    valid = items >= 0
    above = ((scores > s_t) & valid).sum(axis=1)
    ties = ((scores == s_t) & valid & ~is_t).sum(axis=1)
    return np.where(found, 1.0 + above + ties, np.inf)


def ranking_metrics(rank: np.ndarray, k: int = 10) -> dict[str, np.ndarray]:
    """Per-case NDCG@k, HR@k and MRR@k of a single relevant item at ``rank``."""
    hit = rank <= k
    with np.errstate(divide="ignore"):
        return {
            metric_label("NDCG", k): np.where(hit, 1.0 / np.log2(rank + 1.0), 0.0),
            metric_label("HR", k): hit.astype(np.float64),
            metric_label("MRR", k): np.where(hit, 1.0 / rank, 0.0),
        }


def metric_names(k: int) -> list[str]:
    return [metric_label(m, k) for m in METRICS]


@dataclass(frozen=True, eq=False)
class CaseScores:
    """Everything needed to evaluate one candidate set: base scores and prior affinities per case."""

    candidates: Candidates
    base: np.ndarray
    aff: np.ndarray
    slices: np.ndarray
    """Slice (0 head, 1 mid, 2 tail) of each case's target item."""
    rule: str = "linear"
    """Fusion rule (a name in :data:`fusion.blend.FUSION_RULES`)."""

    def per_case(self, w: float, normalization: str, k: int = 10) -> dict[str, np.ndarray]:
        c = self.candidates
        fused = get_fusion_rule(self.rule)(self.base, self.aff, w, c.mask, normalization)
        return ranking_metrics(target_rank(fused, c.items, c.targets), k)


W_SOURCES = ("user", "dev", "borrowed")
"""Where a candidate set's (normalization, w) came from: ``--w`` (no sweep runs), its own dev
sweep, or the dev choice of the ``--select-on`` set."""


@dataclass(frozen=True)
class Choice:
    """A (normalization, w) setting and where it came from."""

    normalization: str
    w: float
    source: str
    """One of :data:`W_SOURCES`."""
    borrowed_from: str | None = None
    """The candidate set whose dev choice this is (``source == "borrowed"``)."""

    def __post_init__(self):
        if self.source not in W_SOURCES:
            raise ValueError(f"source must be one of {list(W_SOURCES)}, got {self.source!r}")
        if (self.source == "borrowed") != (self.borrowed_from is not None):
            raise ValueError("borrowed_from names the lending set exactly when source is 'borrowed'")


@dataclass(frozen=True, eq=False)
class SetResult:
    """Results of one candidate set: per-case metrics, their summaries and lift, and the sweep."""

    name: str
    normalization: str
    w: float
    base: dict[str, np.ndarray]
    fused: dict[str, np.ndarray]
    slices: np.ndarray
    test: np.ndarray
    """Boolean mask of cases in the reported (test) cohort."""
    users: np.ndarray
    """Dataset user index of each case."""
    targets: np.ndarray
    """Target item index of each case."""
    w_source: str = "dev"
    """Where (normalization, w) came from: one of :data:`W_SOURCES`."""
    summary: dict = field(default_factory=dict)
    """{"base" | "fused": :func:`summarize` of the test cohort} (means per slice, case counts)."""
    lift: dict = field(default_factory=dict)
    """:func:`lift` of NDCG@k on the test cohort, per slice."""
    sweep: dict = field(default_factory=dict)
    """{normalization: {"dev": [...], "test": {slice: [...]}}} mean NDCG@k per w; empty when w was given."""
    info: dict = field(default_factory=dict)


SELECTION_RULES = ("1se", "max")
"""How (normalization, w) is picked from the dev sweep: one-standard-error rule, or the plain maximum."""


def sweep(cases: CaseScores, w_grid, normalizations, dev: np.ndarray, test: np.ndarray, k: int = 10,
          dev_cases: dict | None = None) -> dict:
    """Mean NDCG@k per (normalization, w): on dev (selection) and on test per slice (curves).

    ``dev_cases``, when given, receives the per-case dev NDCG@k: {normalization: (len(w_grid), n_dev)}.
    """
    out = {}
    key = metric_label("NDCG", k)
    for norm in normalizations:
        dev_curve, test_curves = [], {s: [] for s in ("overall", *SLICES)}
        rows = []
        for w in w_grid:
            m = cases.per_case(w, norm, k)[key]
            rows.append(m[dev])
            dev_curve.append(float(m[dev].mean()) if dev.any() else float("nan"))
            test_curves["overall"].append(float(m[test].mean()) if test.any() else float("nan"))
            for s, name in enumerate(SLICES):
                sel = test & (cases.slices == s)
                test_curves[name].append(float(m[sel].mean()) if sel.any() else float("nan"))
        out[norm] = {"dev": dev_curve, "test": test_curves}
        if dev_cases is not None:
            dev_cases[norm] = np.array(rows)
    return out


def select(sweep_result: dict, w_grid, dev_cases: dict | None = None, rule: str = "max") -> tuple[str, float, float]:
    """(normalization, w, dev NDCG): ``max`` = the best dev mean (ties: smaller w, then first normalization);
    ``1se`` = the smallest w with mean(d) <= sd(d)/sqrt(n), d = best - candidate per dev case."""
    if rule not in SELECTION_RULES:
        raise ValueError(f"selection rule must be one of {list(SELECTION_RULES)}, got {rule!r}")
    best = (None, None, -np.inf)
    for norm, curves in sweep_result.items():
        for w, v in zip(w_grid, curves["dev"]):
            if v > best[2] + 1e-12:
                best = (norm, float(w), v)
    if rule == "max" or best[0] is None:
        return best
    if dev_cases is None:
        raise ValueError("the 1se rule needs the per-case dev values (dev_cases)")
    ref = dev_cases[best[0]][list(w_grid).index(best[1])]
    n = ref.size
    for j in np.argsort(np.asarray(w_grid, dtype=float), kind="stable"):
        for norm in sweep_result:
            d = ref - dev_cases[norm][j]
            se = d.std(ddof=1) / np.sqrt(n) if n > 1 else 0.0
            if d.mean() <= se + 1e-12:
                return norm, float(w_grid[j]), float(sweep_result[norm]["dev"][j])
    return best


def summarize(values: dict[str, np.ndarray], mask: np.ndarray, slices: np.ndarray) -> dict:
    """Mean of each metric and the case count, overall and per slice (empty slice: NaN + warning)."""
    out = {}
    for s, name in [(-1, "overall"), *enumerate(SLICES)]:
        sel = mask if s < 0 else mask & (slices == s)
        n = int(sel.sum())
        if n == 0:
            warnings.warn(f"slice {name!r} has no test cases; its metrics are NaN", DataWarning, stacklevel=2)
        out[name] = {m: (float(v[sel].mean()) if n else float("nan")) for m, v in values.items()} | {"n": n}
    return out


def lift(base: np.ndarray, fused: np.ndarray, mask: np.ndarray, slices: np.ndarray, n_boot: int, seed: int) -> dict:
    """Per slice: relative lift mean(fused)/mean(base) - 1 with its paired bootstrap 95% CI, the absolute
    difference, and the paired Wilcoxon p. The relative lift is NaN when the base mean is 0."""
    out = {}
    for s, name in [(-1, "overall"), *enumerate(SLICES)]:
        sel = mask if s < 0 else mask & (slices == s)
        b, f = base[sel], fused[sel]
        nan2 = [float("nan")] * 2
        if len(b) == 0:
            out[name] = {"relative": float("nan"), "ci95": nan2, "absolute": float("nan"), "p_value": float("nan"), "n": 0}
            continue
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DataWarning)
            p = paired_wilcoxon(b, f)
            ci = paired_bootstrap_ci(b, f, n_boot=n_boot, seed=seed, stat="ratio") if b.mean() > 0 else nan2
        out[name] = {
            "relative": float(f.mean() / b.mean() - 1.0) if b.mean() > 0 else float("nan"),
            "ci95": list(ci),
            "absolute": float(f.mean() - b.mean()),
            "p_value": p,
            "n": int(len(b)),
        }
    return out


def evaluate_set(
    cases: CaseScores,
    dev: np.ndarray,
    test: np.ndarray,
    w_grid,
    normalizations,
    choice: Choice | None = None,
    k: int = 10,
    selection: str = "1se",
    n_boot: int = 1000,
    seed: int = 0,
) -> SetResult:
    """Per-case base and fused metrics, their summaries and lift, at a (normalization, w) that is
    chosen on the dev sweep (``choice`` None), borrowed from another set, or given by the user.

    A user's choice runs no sweep at all; a borrowed one sweeps for the curves and the paper-style
    figure only. ``selection`` is the selection rule (:data:`SELECTION_RULES`).
    """
    key = metric_label("NDCG", k)
    sw: dict = {}
    dev_cases: dict = {}
    if choice is None or choice.source != "user":
        sw = sweep(cases, w_grid, normalizations, dev, test, k, dev_cases)
    if choice is None:
        norm, w, dev_best = select(sw, w_grid, dev_cases, selection)
        choice = Choice(norm, float(w), "dev")
    else:
        dev_best = float("nan")
    base = cases.per_case(0.0, choice.normalization, k)
    fused = cases.per_case(choice.w, choice.normalization, k)
    paper_style = None
    if sw:
        # Paper-style figure, labelled as such: the best w chosen on the reported cohort itself.
        curve = sw[choice.normalization]["test"]["overall"]
        best_i = int(np.nanargmax(curve)) if np.isfinite(curve).any() else 0
        paper_style = {
            "w": float(w_grid[best_i]),
            key: curve[best_i],
            "note": "chosen on the reported cohort (optimistic; for comparison with the paper only)",
        }
    info = {
        "dev_ndcg_at_selected": dev_best,
        "selection_rule": {"dev": selection, "user": "fixed", "borrowed": "borrowed"}[choice.source],
        "dev_best_max_rule": dict(zip(("normalization", "w", key), select(sw, w_grid))) if choice.source == "dev" else None,
        "best_w_on_test_paper_style": paper_style,
    } | ({"borrowed_from": choice.borrowed_from} if choice.borrowed_from else {}) | cases.candidates.info
    c = cases.candidates
    summary = {"base": summarize(base, test, cases.slices), "fused": summarize(fused, test, cases.slices)}
    lifted = lift(base[key], fused[key], test, cases.slices, n_boot, seed)
    return SetResult(c.name, choice.normalization, float(choice.w), base, fused, cases.slices, test, c.users,
                     c.targets, choice.source, summary, lifted, sw, info)


@dataclass(frozen=True, eq=False)
class FusionResult:
    """One fusion evaluation: a :class:`SetResult` per candidate set, and how w was chosen."""

    sets: dict[str, SetResult]
    k: int
    w_grid: tuple[float, ...]
    selection: str
    """Selection rule used on the dev sweeps (:data:`SELECTION_RULES`)."""
    select_on: str
    """``each`` or the candidate set whose dev choice every set borrows."""
    user_w: float | None
    """The w the user fixed (``--w``), else None."""
    rule: str = "linear"
    """Fusion rule."""

    @property
    def one_choice(self) -> bool:
        """Whether every candidate set uses the same (normalization, w)."""
        return len({(r.w, r.normalization) for r in self.sets.values()}) == 1


def evaluate_fusion(
    names: Iterable[str],
    build_cases: Callable[[str], CaseScores],
    dev: np.ndarray,
    test: np.ndarray,
    w_grid,
    normalizations,
    w: float | None = None,
    select_on: str = "each",
    selection: str = "1se",
    k: int = 10,
    n_boot: int = 1000,
    seed: int = 0,
    rule: str = "linear",
) -> FusionResult:
    """Evaluate every candidate set (``build_cases(name)`` is called once per set, one at a time, so only
    one set's matrices are in memory). A user's ``w`` (with the first normalization) applies to every
    set and no sweep runs; otherwise each set chooses on its dev cases, or, with ``select_on`` a set
    name, that set chooses and the others borrow its choice. ``rule`` is the fusion rule, applied to
    every set."""
    get_fusion_rule(rule)  # an unknown name fails before any set is built
    names = list(names)
    order = names if select_on == "each" or w is not None else [select_on] + [n for n in names if n != select_on]
    user = Choice(normalizations[0], float(w), "user") if w is not None else None
    lent: Choice | None = None
    sets: dict[str, SetResult] = {}
    for name in order:
        cases = build_cases(name)
        if cases.rule != rule:
            cases = replace(cases, rule=rule)
        choice = user or lent
        res = evaluate_set(cases, dev, test, w_grid, normalizations, choice, k, selection, n_boot, seed)
        if user is None and select_on != "each" and lent is None:
            lent = Choice(res.normalization, res.w, "borrowed", borrowed_from=name)
        sets[name] = res
        log.info("%s: w=%.2f (%s, %s)", name, res.w, res.normalization, res.w_source)
    return FusionResult({n: sets[n] for n in names}, k, tuple(w_grid), selection, select_on, w, rule)
