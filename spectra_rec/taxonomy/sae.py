"""A TopK sparse autoencoder over item vectors: an item's active features are its intents.

z = TopK_a(ReLU(W_e (x - b_d) + b_e)),  x_hat = W_d^T z + b_d,  loss = mean ||x - x_hat||^2,
decoder rows kept at unit norm (so activations, not decoder scale, carry the magnitude). CPU,
seeded, deterministic for a given thread count. A feature that fires on no training item is
dead; two live features whose decoder rows have cosine >= a threshold are duplicates.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np

log = logging.getLogger(__name__)


@dataclass(frozen=True, eq=False)
class SAEResult:
    """A trained SAE's item codes and feature diagnostics."""

    codes: np.ndarray
    """(n, F) non-negative activations, at most ``topk`` non-zero per row."""
    decoder: np.ndarray
    """(F, d) unit decoder directions."""
    dead: np.ndarray
    """Indices of features active on no training row."""
    duplicates: list[tuple[int, int, float]]
    """(feature, feature, decoder cosine) pairs of live features at or above the threshold."""
    mse: float
    """Final reconstruction MSE on the (standardized) training rows."""
    explained: float
    """1 - MSE / variance of the standardized rows."""


def train_topk_sae(X: np.ndarray, n_features: int, topk: int, epochs: int = 400, lr: float = 3e-3,
                   batch: int = 256, seed: int = 0, duplicate_cosine: float = 0.9) -> SAEResult:
    """Train a TopK SAE on rows of ``X`` (standardized inside) and encode them."""
    import torch

    X = np.asarray(X, dtype=np.float64)
    mu, sd = X.mean(axis=0), X.std() or 1.0
    Z = torch.from_numpy(((X - mu) / sd).astype(np.float32))
    n, d = Z.shape
    gen = torch.Generator().manual_seed(int(seed))
    W_d = torch.randn(n_features, d, generator=gen)
    W_d = W_d / W_d.norm(dim=1, keepdim=True)
    W_d.requires_grad_(True)
    W_e = W_d.detach().T.clone().requires_grad_(True)  # tied initialisation: fewer features start dead
    b_e = torch.zeros(n_features, requires_grad=True)
    b_d = torch.zeros(d, requires_grad=True)
    params = [W_e, b_e, W_d, b_d]
    opt = torch.optim.Adam(params, lr=lr)

    def encode(x):
        pre = torch.relu((x - b_d) @ W_e + b_e)
        val, idx = pre.topk(topk, dim=1)
        return torch.zeros_like(pre).scatter(1, idx, val)

    for _ in range(epochs):
        perm = torch.randperm(n, generator=gen)
        for s in range(0, n, batch):
            x = Z[perm[s:s + batch]]
            loss = ((encode(x) @ W_d + b_d - x) ** 2).sum(dim=1).mean()
            opt.zero_grad()
            loss.backward()
            opt.step()
            with torch.no_grad():
                W_d /= W_d.norm(dim=1, keepdim=True).clamp_min(1e-12)
    with torch.no_grad():
        codes = encode(Z)
        err = float(((codes @ W_d + b_d - Z) ** 2).sum(dim=1).mean())
        var = float(((Z - Z.mean(dim=0)) ** 2).sum(dim=1).mean())
    codes = codes.numpy().astype(np.float64)
    D = W_d.detach().numpy().astype(np.float64)
    fires = (codes > 0).any(axis=0)
    dead = np.flatnonzero(~fires)
    live = np.flatnonzero(fires)
    cos = D[live] @ D[live].T
    duplicates = [(int(live[a]), int(live[b]), float(cos[a, b]))
                  for a in range(len(live)) for b in range(a + 1, len(live)) if cos[a, b] >= duplicate_cosine]
    return SAEResult(codes, D, dead, duplicates, err, 1.0 - err / var if var > 0 else float("nan"))
