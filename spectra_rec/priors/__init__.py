"""Category priors: history priors, the validated prior table, and the one resolver of prior specs."""

from spectra_rec.priors.history import HISTORY_PRIORS, history_prior
from spectra_rec.priors.registry import SPECTRA_PRIORS, SpectraOptions, prior_names, resolve_prior
from spectra_rec.priors.table import PriorTable

__all__ = ["HISTORY_PRIORS", "SPECTRA_PRIORS", "PriorTable", "SpectraOptions", "history_prior", "prior_names",
           "resolve_prior"]
