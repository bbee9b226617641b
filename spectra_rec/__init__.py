"""spectra-rec: LLM category priors (SPECTRA) and their fusion into rankers."""
__version__ = "0.1.0"
