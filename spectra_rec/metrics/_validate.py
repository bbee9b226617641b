"""Former name of :mod:`spectra_rec.metrics.validate`; import that module instead."""

from spectra_rec.metrics.validate import *  # noqa: F401,F403
