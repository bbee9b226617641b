"""The per-user chronological split and everything derived from it (docs/index.md, "Protocol").

Each user's interactions in time order (ties broken by item index): the first ``ratio``
share (at least 1) is the train window, the rest is held out. Item slices, category
buckets and history priors read the train side only; ground truth reads the held-out side.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from functools import cached_property

import numpy as np
import scipy.sparse as sp

from spectra_rec.data.dataset import Dataset
from spectra_rec.errors import ConfigError, DataWarning

SLICES = ("head", "mid", "tail")


@dataclass(frozen=True, eq=False)
class Split:
    """Interactions sorted by (user, time, item) with a train/held-out flag per row."""

    dataset: Dataset
    ratio: float
    user: np.ndarray
    item: np.ndarray
    time: np.ndarray
    is_train: np.ndarray
    ptr: np.ndarray
    """CSR pointer: user u's interactions are rows ptr[u]:ptr[u+1]."""
    n_train: np.ndarray
    """Train-window length per user."""

    # ---- per-user sequences -------------------------------------------------
    def train_items(self, u: int) -> np.ndarray:
        return self.item[self.ptr[u] : self.ptr[u] + self.n_train[u]]

    def heldout_items(self, u: int) -> np.ndarray:
        return self.item[self.ptr[u] + self.n_train[u] : self.ptr[u + 1]]

    def train_times(self, u: int) -> np.ndarray:
        return self.time[self.ptr[u] : self.ptr[u] + self.n_train[u]]

    @cached_property
    def n_heldout(self) -> np.ndarray:
        return np.diff(self.ptr) - self.n_train

    @cached_property
    def eval_users(self) -> np.ndarray:
        """Users with a non-empty held-out window (the evaluable cohort)."""
        return np.flatnonzero(self.n_heldout > 0)

    @cached_property
    def targets(self) -> np.ndarray:
        """The first held-out item of each user (-1 when the window is empty)."""
        out = np.full(self.dataset.n_users, -1, dtype=np.int64)
        u = self.eval_users
        out[u] = self.item[self.ptr[u] + self.n_train[u]]
        return out

    def position(self) -> np.ndarray:
        """Each row's 0-based position within its user's sequence."""
        return np.arange(len(self.user)) - self.ptr[self.user]

    # ---- category mass ------------------------------------------------------
    def _mass(self, rows: np.ndarray) -> np.ndarray:
        """Per-user sum of m(i, c) over the selected interaction rows: (n_users, K)."""
        ds = self.dataset
        counts = sp.csr_matrix(
            (np.ones(rows.sum()), (self.user[rows], self.item[rows])), shape=(ds.n_users, ds.n_items)
        )
        return np.asarray((counts @ ds.membership).todense())

    @cached_property
    def train_mass(self) -> np.ndarray:
        """Unnormalized category counts of each user's train window."""
        return self._mass(self.is_train)

    def recent_train_mass(self, window: int) -> np.ndarray:
        """Unnormalized category counts of each user's last ``window`` train interactions."""
        if isinstance(window, bool) or not isinstance(window, (int, np.integer)) or window < 1:
            raise ConfigError(f"context window must be an integer >= 1, got {window!r}")
        return self._mass(self.is_train & (self.position() >= self.n_train[self.user] - window))

    def ground_truth(self, n: int | None = None, users: np.ndarray | None = None) -> np.ndarray:
        """q_u(c) = sum over held-out interactions of m(i, c), normalized; ``n`` keeps the first n (short-term)."""
        if n is not None and n < 1:
            raise ConfigError(f"short-term window n must be >= 1, got {n}")
        rows = ~self.is_train
        if n is not None:
            rows &= (self.position() - self.n_train[self.user]) < n
        users = self.eval_users if users is None else np.asarray(users, dtype=np.int64)
        empty = users[self.n_heldout[users] == 0]
        if len(empty):
            # a truth made up for a user with nothing held out would silently score as uniform
            raise ConfigError(
                f"ground truth requested for {len(empty)} user(s) with an empty held-out window, "
                f"e.g. {list(self.dataset.user_ids[empty[:5]])}; use split.eval_users"
            )
        mass = self._mass(rows)[users]
        blank = mass.sum(axis=1) == 0
        if blank.any():
            warnings.warn(
                f"{int(blank.sum())} user(s) have only uncategorized held-out items; their ground truth is uniform",
                DataWarning,
                stacklevel=2,
            )
        return normalize_rows(mass, what="held-out ground truth")

    # ---- popularity ---------------------------------------------------------
    @cached_property
    def item_train_counts(self) -> np.ndarray:
        return np.bincount(self.item[self.is_train], minlength=self.dataset.n_items)

    @cached_property
    def item_slice(self) -> np.ndarray:
        """Per item 0=head, 1=mid, 2=tail: thirds by item count of items ranked by train popularity."""
        counts = self.item_train_counts
        out = thirds_by_rank(counts)
        out[counts == 0] = 2  # never seen in training: tail
        return out

    @cached_property
    def category_train_mass(self) -> np.ndarray:
        return self.train_mass.sum(axis=0)

    @cached_property
    def category_bucket(self) -> np.ndarray:
        """Per category 0=head, 1=mid, 2=tail: thirds of categories ranked by train-window mass."""
        return thirds_by_rank(self.category_train_mass)

    # ---- cohorts ------------------------------------------------------------
    def cohorts(self, dev_fraction: float = 0.2, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
        """A seeded split of the evaluable users into (dev, test); w and other knobs are chosen on dev."""
        if not 0.0 < dev_fraction < 1.0:
            raise ConfigError(f"dev_fraction must be in (0, 1), got {dev_fraction}")
        users = self.eval_users
        rng = np.random.default_rng(seed)
        perm = rng.permutation(users)
        n_dev = max(1, int(round(dev_fraction * len(users))))
        if len(users) >= 2 and n_dev >= len(users):  # fewer users cannot fill both cohorts anyway
            raise ConfigError(f"dev_fraction {dev_fraction} of {len(users)} evaluable users leaves no test cohort")
        return np.sort(perm[:n_dev]), np.sort(perm[n_dev:])

    def summary(self) -> dict:
        slices = np.bincount(self.item_slice, minlength=3)
        target_slices = np.bincount(self.item_slice[self.targets[self.eval_users]], minlength=3)
        buckets = np.bincount(self.category_bucket, minlength=3)
        return {
            "ratio": self.ratio,
            "train_interactions": int(self.is_train.sum()),
            "heldout_interactions": int((~self.is_train).sum()),
            "eval_users": int(len(self.eval_users)),
            "item_slices": dict(zip(SLICES, map(int, slices))),
            "target_slices": dict(zip(SLICES, map(int, target_slices))),
            "category_buckets": {
                s: [self.dataset.categories[k] for k in np.flatnonzero(self.category_bucket == b)]
                for b, s in enumerate(SLICES)
            }
            | {"sizes": dict(zip(SLICES, map(int, buckets)))},
        }


def thirds_by_rank(values: np.ndarray) -> np.ndarray:
    """0 head, 1 mid, 2 tail: thirds by count of entries ranked by value, descending (ties: lower index first)."""
    values = np.asarray(values, dtype=float)
    order = np.argsort(-values, kind="stable")
    n = len(values)
    rank = np.empty(n, dtype=np.int64)
    rank[order] = np.arange(n)
    return np.minimum(rank * 3 // max(n, 1), 2)


def normalize_rows(mass: np.ndarray, what: str = "distribution") -> np.ndarray:
    """Rows divided by their sums; all-zero rows (no categorized item) become uniform."""
    mass = np.asarray(mass, dtype=np.float64)
    sums = mass.sum(axis=1, keepdims=True)
    K = mass.shape[1]
    with np.errstate(invalid="ignore", divide="ignore"):
        out = np.where(sums > 0, mass / np.where(sums > 0, sums, 1.0), 1.0 / K)
    return out


def split_dataset(ds: Dataset, ratio: float = 0.8) -> Split:
    """Per-user chronological split: the first ``floor(ratio * n)`` (at least 1) interactions train."""
    if not 0.0 < ratio < 1.0:
        raise ConfigError(f"split ratio must be in (0, 1), got {ratio}")
    order = np.lexsort((ds.inter_item, ds.inter_time, ds.inter_user))
    user, item, time = ds.inter_user[order], ds.inter_item[order], ds.inter_time[order]
    counts = np.bincount(user, minlength=ds.n_users)
    ptr = np.concatenate([[0], np.cumsum(counts)])
    # floor(ratio * n) as meant in decimal: 0.29 * 100 is 28.999999999999996 in floating point,
    # so a product within 1e-9 below an integer counts as that integer.
    n_train = np.where(counts > 0, np.maximum(1, np.floor(ratio * counts + 1e-9).astype(np.int64)), 0)
    pos = np.arange(len(user)) - ptr[user]
    is_train = pos < n_train[user]
    return Split(ds, ratio, user, item, time, is_train, ptr, n_train)
