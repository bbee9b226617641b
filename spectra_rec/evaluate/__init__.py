"""Category-level evaluation of prior tables: ``spectra-rec evaluate`` and its library.

    config.py          EvalConfig (what to compute, on which cohort), EvalResult (per-user rows, summaries)
    metrics_table.py   the per-user and cohort metric rows: adding a metric is one row
    phases.py          bootstrap CIs, paired comparisons (Holm), bias, reliability, fairness, Theorem 1, strata
    run.py             evaluate / evaluate_arrays / load_priors / cohort_users / coarsen
    cli.py             the subcommand
"""

from spectra_rec.evaluate.config import BUCKETS, HELDOUT_TAG, EvalConfig, EvalResult, method_label
from spectra_rec.evaluate.metrics_table import COHORT_METRICS, USER_METRICS, CohortMetric, MetricContext, UserMetric
from spectra_rec.evaluate.run import coarsen, cohort_users, evaluate, evaluate_arrays, load_priors

__all__ = [
    "BUCKETS", "COHORT_METRICS", "HELDOUT_TAG", "USER_METRICS", "CohortMetric", "EvalConfig", "EvalResult",
    "MetricContext", "UserMetric", "coarsen", "cohort_users", "evaluate", "evaluate_arrays", "load_priors",
    "method_label",
]
