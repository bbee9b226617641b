"""The configuration of one induced vocabulary."""

from __future__ import annotations

import re
from dataclasses import dataclass

from spectra_rec.errors import ConfigError

FIELD_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


@dataclass(frozen=True)
class TaxonomyConfig:
    """How a vocabulary is induced from the train windows (``spectra-rec taxonomy``)."""

    method: str = "cooc"
    """A name in :data:`spectra_rec.taxonomy.methods.METHODS`: ``cooc``, ``embedding`` or ``sae``."""
    k: int = 50
    """Number of L2 categories asked for (clusters, or SAE features); empty clusters and dead
    features are dropped, so the vocabulary can come out smaller (the manifest says so)."""
    l1: str | int | None = None
    """Two-level taxonomy: an int K1 clusters the L2 centroids into K1 groups; ``"taxonomy"`` uses the
    L1 of the source dataset's taxonomy; any other string names an item field (token_seq) whose
    dominant value becomes the L1 group. None: a flat vocabulary (no taxonomy file)."""
    field: str = "taxon"
    """The token_seq item field written with the new categories (must not exist in the .item file)."""
    dim: int = 64
    """Dimension of the co-occurrence factors (truncated SVD of the item-item PPMI matrix)."""
    niter: int = 50
    """k-means iterations (Faiss)."""
    nredo: int = 3
    """k-means restarts; the lowest objective is kept."""
    sae_input: str = "cooc"
    """What the SAE encodes: ``cooc`` factors or backbone ``embedding`` rows."""
    sae_topk: int = 2
    """Active features per item (TopK): an item carries at most this many intents."""
    sae_epochs: int = 400
    """SAE training epochs over the warm items."""
    sae_lr: float = 3e-3
    """Adam learning rate of the SAE."""
    sae_batch: int = 256
    """SAE minibatch size."""
    duplicate_cosine: float = 0.9
    """Two live SAE features whose decoder directions have at least this cosine are reported as duplicates."""
    embeddings: str | None = None
    """``embedding`` (and ``sae_input='embedding'``): an (n_items, d) .npy in dataset item order, or a
    backbone folder holding ``item_emb.npy``; None looks for a cached backbone of the dataset under runs/."""
    model: str = "SASRec"
    """Which cached backbone to look for when ``embeddings`` is None."""
    names: str | None = None
    """Optional JSON list of L2 names (in the order of the generated categories) replacing the generated ones."""
    seed: int = 0
    """Seed of the factors, k-means and the SAE."""

    def __post_init__(self):
        from spectra_rec.taxonomy.methods import METHODS

        if self.method not in METHODS:
            raise ConfigError(f"--method {self.method!r} unknown; options: {sorted(METHODS)}")
        if isinstance(self.k, bool) or not isinstance(self.k, int) or self.k < 2:
            raise ConfigError(f"--k must be an integer >= 2 (and at most the number of items), got {self.k!r}")
        if isinstance(self.l1, int) and not isinstance(self.l1, bool):
            if not 2 <= self.l1 < self.k:
                raise ConfigError(f"--l1 K1 must be an integer in [2, --k) = [2, {self.k}), got {self.l1}")
        elif self.l1 is not None and not (isinstance(self.l1, str) and FIELD_NAME.match(self.l1)):
            raise ConfigError(f"--l1 must be an integer K1, 'taxonomy' or an item field name, got {self.l1!r}")
        if not FIELD_NAME.match(self.field):
            raise ConfigError(f"--field must be a plain field name (letters, digits, _), got {self.field!r}")
        for name in ("dim", "niter", "nredo", "sae_topk", "sae_epochs", "sae_batch"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ConfigError(f"TaxonomyConfig.{name} must be an integer >= 1, got {value!r}")
        if self.sae_input not in ("cooc", "embedding"):
            raise ConfigError(f"--sae-input must be 'cooc' or 'embedding', got {self.sae_input!r}")
        if self.sae_topk >= self.k:
            raise ConfigError(f"--sae-topk must be below --k ({self.k}), got {self.sae_topk}")
        if not self.sae_lr > 0:
            raise ConfigError(f"--sae-lr must be > 0, got {self.sae_lr}")
        if not 0.0 < self.duplicate_cosine <= 1.0:
            raise ConfigError(f"duplicate_cosine must be in (0, 1], got {self.duplicate_cosine}")

    @property
    def uses_embeddings(self) -> bool:
        return self.method == "embedding" or (self.method == "sae" and self.sae_input == "embedding")
