"""Category-level metrics (docs/formulas.md): pure numpy functions returning per-user values.

Averaging over users happens once, in :mod:`spectra_rec.evaluate`; rounding only in
:mod:`spectra_rec.report`. scipy is imported inside the functions that need it, so
``import spectra_rec.metrics`` stays instant.
"""

from spectra_rec.metrics.calibration import (
    BinSums,
    bucket_mass,
    category_bias,
    ece,
    ece_bins,
    ece_from_bins,
    reliability,
    top1_bins,
)
from spectra_rec.metrics.distribution import entropy, js_divergence, kl_divergence, max_abs_error, total_variation
from spectra_rec.metrics.exposure import exposure_entropy, topk_exposure
from spectra_rec.metrics.fairness import preference_groups, quartile_reduction, tail_preference
from spectra_rec.metrics.ranking import category_ndcg
from spectra_rec.metrics.stats import (
    bootstrap_ci,
    bootstrap_stat_ci,
    holm,
    paired_bootstrap_ci,
    paired_wilcoxon,
    resample_weights,
)
from spectra_rec.metrics.theory import dg_js_floor, outside_mass, theorem1_check, topk_mask, uniform_on_topk

__all__ = [
    "BinSums",
    "bootstrap_ci",
    "bootstrap_stat_ci",
    "bucket_mass",
    "category_bias",
    "category_ndcg",
    "dg_js_floor",
    "ece",
    "ece_bins",
    "ece_from_bins",
    "entropy",
    "exposure_entropy",
    "holm",
    "js_divergence",
    "kl_divergence",
    "max_abs_error",
    "outside_mass",
    "paired_bootstrap_ci",
    "paired_wilcoxon",
    "preference_groups",
    "quartile_reduction",
    "reliability",
    "resample_weights",
    "tail_preference",
    "theorem1_check",
    "top1_bins",
    "topk_exposure",
    "topk_mask",
    "total_variation",
    "uniform_on_topk",
]
