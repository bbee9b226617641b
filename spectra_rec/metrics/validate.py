"""Input checks shared by the metric functions (errors name the argument and the bad value)."""

from __future__ import annotations

import warnings

import numpy as np

from spectra_rec.errors import DataWarning

#: tolerance on row sums of a category distribution
ROW_SUM_ATOL = 1e-6


def as_vector(x, name: str, allow_empty: bool = False) -> np.ndarray:
    """``x`` as a finite 1-D float array, or ValueError naming ``name``."""
    arr = np.asarray(x, dtype=float)
    if arr.ndim != 1:
        raise ValueError(f"{name}: expected a 1-D array of per-user values, got shape {arr.shape}")
    if arr.size == 0 and not allow_empty:
        raise ValueError(f"{name}: expected at least one value, got an empty array")
    bad = ~np.isfinite(arr)
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise ValueError(f"{name}: expected finite values, got {arr[i]} at position {i} ({int(bad.sum())} non-finite)")
    return arr


def as_pair(a, b, name_a: str = "a", name_b: str = "b", allow_empty: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """Two finite 1-D arrays of the same length (paired per-user values)."""
    a = as_vector(a, name_a, allow_empty)
    b = as_vector(b, name_b, allow_empty)
    if a.shape != b.shape:
        raise ValueError(f"{name_a} and {name_b}: expected paired arrays of equal length, got {a.size} and {b.size}")
    return a, b


def as_distributions(x, name: str, atol: float = ROW_SUM_ATOL) -> np.ndarray:
    """``x`` as a 2-D (users x categories) array of rows that are probability distributions."""
    arr = np.asarray(x, dtype=float)
    if arr.ndim == 1:
        arr = arr[None, :]
    if arr.ndim != 2:
        raise ValueError(f"{name}: expected a (users x categories) array, got shape {arr.shape}")
    if arr.shape[1] == 0:
        raise ValueError(f"{name}: expected at least one category column, got shape {arr.shape}")
    bad = ~np.isfinite(arr)
    if bad.any():
        r, c = (int(v) for v in np.argwhere(bad)[0])
        raise ValueError(f"{name}: expected finite probabilities, got {arr[r, c]} at row {r}, column {c}")
    if (arr < 0).any():
        r, c = (int(v) for v in np.argwhere(arr < 0)[0])
        raise ValueError(f"{name}: expected non-negative probabilities, got {arr[r, c]} at row {r}, column {c}")
    sums = arr.sum(axis=1)
    off = unnormalized_rows(sums, atol)
    if off.size:
        raise ValueError(
            f"{name}: expected every row to sum to 1 (tolerance {atol}), row {off[0]} sums to {sums[off[0]]:.6g} "
            f"({off.size} rows unnormalized)"
        )
    return arr


def unnormalized_rows(sums: np.ndarray, atol: float) -> np.ndarray:
    """Indices of the rows whose sum is more than ``atol`` away from 1 (shared with the prior table's checks)."""
    return np.flatnonzero(np.abs(np.asarray(sums) - 1.0) > atol)


def as_pq(p, q, name_p: str = "p", name_q: str = "q") -> tuple[np.ndarray, np.ndarray]:
    """Predicted and true distributions with matching shapes."""
    p = as_distributions(p, name_p)
    q = as_distributions(q, name_q)
    if p.shape != q.shape:
        raise ValueError(f"{name_p} and {name_q}: expected the same (users x categories) shape, got {p.shape} and {q.shape}")
    return p, q


def check_k(k, name: str = "k") -> int:
    """A positive integer cut-off (clipped to the number of categories by the caller if needed)."""
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)):
        raise ValueError(f"{name}: expected a positive integer, got {k!r}")
    if k < 1:
        raise ValueError(f"{name}: expected k >= 1, got {k}")
    return int(k)


def check_alpha(alpha, name: str = "alpha") -> float:
    a = float(alpha)
    if not 0.0 < a < 1.0:
        raise ValueError(f"{name}: expected a level in (0, 1), got {alpha!r}")
    return a


def check_positive_int(v, name: str) -> int:
    if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 1:
        raise ValueError(f"{name}: expected a positive integer, got {v!r}")
    return int(v)


def warn_degenerate(message: str) -> None:
    warnings.warn(message, DataWarning, stacklevel=3)
