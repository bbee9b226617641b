"""Induced category vocabularies: item clusters and SAE intents learned from the train windows.

``spectra-rec taxonomy`` writes a dataset folder (RecBole atomic files with a new token_seq
category field, ``<name>.taxonomy.json`` when two-level, ``<name>.descriptions.json``, a
manifest) that every other stage reads with the usual dataset flags.
"""

from spectra_rec.taxonomy.config import TaxonomyConfig
from spectra_rec.taxonomy.methods import METHODS, Induced, register_method

__all__ = ["METHODS", "Induced", "TaxonomyConfig", "register_method"]
