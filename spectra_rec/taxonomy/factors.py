"""Item vectors induced vocabularies are learned from: train-window co-occurrence factors or backbone embeddings.

Only train-window interactions are read (``split.is_train``), so held-out interactions cannot
move an induced vocabulary; ``tests/test_taxonomy.py`` checks it.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import scipy.sparse as sp

from spectra_rec import artifacts
from spectra_rec.data.split import Split
from spectra_rec.errors import ConfigError, DataError

log = logging.getLogger(__name__)


def train_matrix(split: Split) -> sp.csr_matrix:
    """Binary (n_users, n_items) matrix of the train windows (a repeated interaction counts once)."""
    ds = split.dataset
    rows = split.is_train
    X = sp.csr_matrix((np.ones(int(rows.sum())), (split.user[rows], split.item[rows])), shape=(ds.n_users, ds.n_items))
    X.data[:] = 1.0
    return X


def cooc_factors(split: Split, dim: int, seed: int = 0) -> np.ndarray:
    """(n_items, d) unit rows: truncated SVD of the item-item PPMI co-occurrence of the train windows.

    PPMI(i, j) = max(0, log(C_ij * N / (C_i C_j))), C = X^T X without its diagonal, N = sum C;
    factors are U sqrt(S). Items never seen in training get zero rows (no evidence to place them).
    """
    from scipy.sparse.linalg import svds

    X = train_matrix(split)
    C = (X.T @ X).tocsr().astype(np.float64)
    C.setdiag(0.0)
    C.eliminate_zeros()
    n_items = C.shape[0]
    total = C.sum()
    if total == 0:
        raise DataError("the train windows hold no two items of one user: no co-occurrence to factorize")
    marg = np.asarray(C.sum(axis=1)).ravel()
    coo = C.tocoo()
    pmi = np.log(coo.data * total / (marg[coo.row] * marg[coo.col]))
    keep = pmi > 0
    P = sp.csr_matrix((pmi[keep], (coo.row[keep], coo.col[keep])), shape=C.shape)
    d = int(min(dim, n_items - 2))
    if d < 1:
        raise DataError(f"{n_items} items are too few for co-occurrence factors")
    v0 = np.random.default_rng(seed).standard_normal(n_items)  # ARPACK's start vector: seeded, so runs agree
    U, S, _ = svds(P, k=d, v0=v0)
    order = np.argsort(-S)
    F = U[:, order] * np.sqrt(S[order])
    F = _canonical_signs(F)
    return unit_rows(F)


def _canonical_signs(F: np.ndarray) -> np.ndarray:
    """Flip each component so its largest-magnitude entry is positive (SVD signs are arbitrary)."""
    idx = np.abs(F).argmax(axis=0)
    signs = np.sign(F[idx, np.arange(F.shape[1])])
    signs[signs == 0] = 1.0
    return F * signs


def unit_rows(X: np.ndarray) -> np.ndarray:
    """Rows scaled to unit L2 norm; zero rows stay zero."""
    X = np.asarray(X, dtype=np.float64)
    norms = np.linalg.norm(X, axis=1, keepdims=True)
    return np.where(norms > 0, X / np.where(norms > 0, norms, 1.0), 0.0)


def load_embeddings(path: Path, n_items: int) -> tuple[np.ndarray, dict]:
    """An (n_items, d) float matrix from a .npy file or a backbone folder's ``item_emb.npy`` (digest-checked).

    Returns the matrix and where it came from (file, digest). Rows are in dataset item order.
    """
    path = Path(path)
    source = {"file": str(path)}
    if path.is_dir():
        file = path / "item_emb.npy"
        if not file.exists():
            raise DataError(f"--embeddings {path}: a folder must hold item_emb.npy (a backbone folder under runs/backbone/)")
        recorded = {}
        if artifacts.is_complete(path):
            recorded = artifacts.read_manifest(path).get("array_digests") or {}
        digest = artifacts.file_digest(file)
        if "item_emb.npy" in recorded and recorded["item_emb.npy"] != digest:
            raise DataError(f"--embeddings {file}: does not match the digest recorded in {path / artifacts.MANIFEST}")
        source = {"file": str(file), "backbone": str(path)}
        path = file
    elif not path.is_file():
        raise DataError(f"--embeddings {path}: no such file (expected an (n_items, d) .npy or a backbone folder)")
    try:
        E = np.load(path, allow_pickle=False)
    except (ValueError, OSError, EOFError) as exc:
        raise DataError(f"--embeddings {path}: not a readable .npy array ({exc})") from None
    if E.ndim != 2 or not np.issubdtype(E.dtype, np.number):
        raise DataError(f"--embeddings {path}: expected a 2-D numeric (n_items, d) array, got shape {E.shape} {E.dtype}")
    if E.shape[0] != n_items:
        raise DataError(f"--embeddings {path}: {E.shape[0]} rows, expected one per item of the dataset ({n_items}), "
                        "in dataset item order")
    if not np.isfinite(E).all():
        raise DataError(f"--embeddings {path}: holds NaN or infinite values")
    source["digest"] = artifacts.file_digest(path)
    return E.astype(np.float64), source


def find_backbone(runs: Path, data_folder: Path, model: str) -> Path:
    """The cached backbone folder of ``model`` trained on the data stage ``data_folder`` (newest if several)."""
    found = []
    for manifest in sorted(Path(runs, "backbone").glob(f"*/{artifacts.MANIFEST}")):
        try:
            m = json.loads(manifest.read_text())
        except (OSError, json.JSONDecodeError):
            continue
        cfg = m.get("config") or {}
        if cfg.get("data") == Path(data_folder).name and (cfg.get("backbone") or {}).get("model") == model:
            found.append((m.get("created", ""), manifest.parent))
    if not found:
        raise ConfigError(
            f"--embeddings not given and no cached {model} backbone of this dataset under {Path(runs) / 'backbone'}; "
            f"train one (python run_fusion.py --dataset ... --model {model}) or pass --embeddings FILE.npy"
        )
    return sorted(found)[-1][1]
