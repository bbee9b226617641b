"""Category priors: history priors and the validated prior table."""

from spectra_rec.priors.history import HISTORY_PRIORS, history_prior
from spectra_rec.priors.table import PriorTable

__all__ = ["HISTORY_PRIORS", "PriorTable", "history_prior"]
