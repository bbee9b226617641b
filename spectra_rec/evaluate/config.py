"""What ``spectra-rec evaluate`` computes (:class:`EvalConfig`) and what it returns (:class:`EvalResult`)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Mapping

import numpy as np
import pandas as pd

from spectra_rec.errors import ConfigError, require_positive

BUCKETS = ("head", "mid", "tail")
HELDOUT_TAG = " [uses held-out data]"
"""Appended to the label of every prior built from held-out data (the oracle)."""


# ---------------------------------------------------------------------------- configuration
@dataclass(frozen=True)
class EvalConfig:
    """What to compute and on which cohort (every field is written into the report's manifest)."""

    truth: str = "long"
    """Ground truth: ``long`` (whole held-out window) or ``short`` (its first ``short_n`` interactions)."""
    short_n: int = 5
    """Held-out interactions in the short-term truth."""
    k: tuple[int, ...] = (1, 3, 5, 10)
    """Cut-offs for category NDCG@k."""
    exposure_k: tuple[int, ...] = (3, 5)
    """Cut-offs for top-k exposure entropy."""
    n_bins: int = 10
    """Equal-width bins on [0, 1] for ECE and the reliability diagram."""
    n_boot: int = 1000
    """Bootstrap resamples of users for every CI."""
    alpha: float = 0.05
    """CI level is 1 - alpha; significance marks use Holm-adjusted p < alpha."""
    seed: int = 0
    """Seed of the bootstrap resamples."""
    baseline: str | None = None
    """Method every comparison is made against; default: ``dg`` if present, else ``popularity``, else the first."""
    cohort: str = "test"
    """``test`` (reported cohort), ``dev`` (tuning cohort) or ``all`` evaluable users."""
    dev_fraction: float = 0.2
    """Share of evaluable users in the dev cohort (seeded by ``cohort_seed``)."""
    cohort_seed: int = 0
    """Seed of the dev/test user split (the same split fusion uses)."""
    activity_strata: int = 5
    """User-activity strata by train-history length (value quantiles); 0 turns the sweep off."""
    fairness_groups: int = 4
    """Tail-preference groups (quartiles)."""
    theory_k: int | None = None
    """List length k of the Theorem 1 check; default: the baseline's typical support size if it is sparse, else 3."""
    merge_map: tuple[tuple[str, str], ...] = ()
    """Taxonomy coarsening (source -> target pairs), applied to prior and truth by summing columns."""

    def __post_init__(self):
        if self.truth not in ("long", "short"):
            raise ConfigError(f"EvalConfig.truth must be 'long' or 'short', got {self.truth!r}")
        if self.cohort not in ("test", "dev", "all"):
            raise ConfigError(f"EvalConfig.cohort must be 'test', 'dev' or 'all', got {self.cohort!r}")
        for name in ("k", "exposure_k"):
            vals = getattr(self, name)
            if not vals or any(isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 1 for v in vals):
                raise ConfigError(f"EvalConfig.{name} must be a non-empty list of integers >= 1, got {vals!r}")
            object.__setattr__(self, name, tuple(int(v) for v in vals))
        require_positive(self, "short_n", "n_bins", "n_boot", "fairness_groups")
        if self.activity_strata < 0:
            raise ConfigError(f"EvalConfig.activity_strata must be >= 0, got {self.activity_strata}")
        if not 0 < self.alpha < 1:
            raise ConfigError(f"EvalConfig.alpha must be in (0, 1), got {self.alpha}")
        if not 0 < self.dev_fraction < 1:
            raise ConfigError(f"EvalConfig.dev_fraction must be in (0, 1), got {self.dev_fraction}")
        if self.theory_k is not None and self.theory_k < 1:
            raise ConfigError(f"EvalConfig.theory_k must be >= 1, got {self.theory_k}")
        mm = self.merge_map.items() if isinstance(self.merge_map, Mapping) else self.merge_map
        object.__setattr__(self, "merge_map", tuple((str(a), str(b)) for a, b in mm))

    def to_dict(self) -> dict:
        d = asdict(self)
        d["merge_map"] = dict(self.merge_map)
        return d


# ---------------------------------------------------------------------------- result
@dataclass
class EvalResult:
    """Per-user rows and unrounded summaries of one evaluation (keys are method labels)."""

    config: dict
    methods: list[dict]
    """One entry per method: name, label (oracle-like tables carry HELDOUT_TAG), uses_heldout, source."""
    baseline: str
    """Label of the baseline method."""
    categories: list[str]
    buckets: list[str]
    n_users: int
    per_user: pd.DataFrame
    """One row per (user, method): every per-user metric plus the user's truth-side columns."""
    summary: dict
    """summary[metric][label] = {mean, low, high}; metric labels come from parameters (``NDCG@10``, ``ECE/head``)."""
    reference: dict
    """Truth-side values of the same metrics (``mass/tail`` of q, ``Entropy@3`` of q's top-3 lists)."""
    comparisons: list[dict]
    """Per metric and method pair (a, b): mean b - a with paired CI, Wilcoxon p, Holm p across pairs."""
    cohort_comparisons: list[dict]
    """Cohort metrics (entropy, ECE) against the baseline: difference with a paired bootstrap CI."""
    bias: list[dict]
    """Per method and category: mean p, mean q, bias with CI; |error| Wilcoxon vs baseline with Holm across categories."""
    reliability: dict
    fairness: dict
    theory: dict
    strata: list[dict]
    variants: dict = field(default_factory=dict)
    """Nested results of robustness variants (taxonomy coarsening)."""
    timing: dict = field(default_factory=dict)

    def label(self, name: str) -> str:
        for m in self.methods:
            if name in (m["name"], m["label"]):
                return m["label"]
        raise KeyError(f"no method {name!r}; methods: {[m['label'] for m in self.methods]}")

    def to_dict(self) -> dict:
        """Everything except the per-user rows, JSON-ready (NaN stays NaN; the writer maps it to null)."""
        out = {
            k: getattr(self, k)
            for k in ("config", "methods", "baseline", "categories", "buckets", "n_users", "summary", "reference",
                      "comparisons", "cohort_comparisons", "bias", "reliability", "fairness", "theory", "strata")
        }  # timing goes to timing.json: results.json is byte-identical for the same inputs and seed
        out["variants"] = {k: v.to_dict() for k, v in self.variants.items()}
        return out



def method_label(name: str, uses_heldout: bool) -> str:
    """The label every output uses for a method; held-out diagnostics say so."""
    return name + HELDOUT_TAG if uses_heldout else name
