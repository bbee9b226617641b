"""``--tau auto``: fit a readout's softmax temperature on the dev cohort.

p_u = softmax(s_u / tau) for the flat readouts (logit, name, choice); tau is chosen to minimise
the mean per-user JS(p_u, q_u) to the long-term held-out truth over the *dev* cohort users (the
seeded cohort ``spectra-rec evaluate --cohort dev`` reports on; the test cohort is never read).
The search is a log-spaced grid over [1/32, 32] refined by golden-section search around the
best grid point. The fitted tau, the objective and the dev JS at tau = 1 and at the fit go into
the prior table's metadata (``tau``, ``tau_fit``).
"""

from __future__ import annotations

import math

import numpy as np

from spectra_rec.errors import ConfigError
from spectra_rec.probe.readouts import AUTO_TAU_READOUTS


def parse_tau(text) -> float | str:
    """``"auto"`` or a float > 0 (the ``--tau`` flag)."""
    if isinstance(text, str) and text.strip().lower() == "auto":
        return "auto"
    try:
        tau = float(text)
    except (TypeError, ValueError):
        raise ConfigError(f"--tau must be a number > 0 or 'auto', got {text!r}") from None
    if not tau > 0 or not math.isfinite(tau):
        raise ConfigError(f"--tau must be a number > 0 or 'auto', got {text!r}")
    return tau


def tempered(scores: np.ndarray, tau: float) -> np.ndarray:
    """softmax(s / tau) per row."""
    z = np.asarray(scores, dtype=np.float64) / tau
    z = z - z.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


def fit_tau(scores: np.ndarray, q: np.ndarray, readout: str, grid: int = 41) -> dict:
    """The tau minimising mean JS(softmax(s_u / tau), q_u) over the rows given (the dev cohort).

    Returns {"tau", "objective", "dev_users", "dev_js", "dev_js_tau1"}. A clear ConfigError
    names the readout when there are no rows or a score is not finite.
    """
    from spectra_rec.metrics.distribution import js_divergence

    scores = np.asarray(scores, dtype=np.float64)
    q = np.asarray(q, dtype=np.float64)
    if scores.ndim != 2 or len(scores) == 0:
        raise ConfigError(f"--tau auto ({readout} readout): the dev cohort is empty; no user to fit tau on")
    if scores.shape != q.shape:
        raise ConfigError(f"--tau auto ({readout} readout): scores {scores.shape} and truth {q.shape} differ in shape")
    bad = ~np.isfinite(scores)
    if bad.any():
        rows = np.flatnonzero(bad.any(axis=1))
        raise ConfigError(
            f"--tau auto ({readout} readout): {int(bad.sum())} score(s) are NaN or infinite "
            f"({len(rows)} dev user row(s), e.g. row {int(rows[0])}); cannot fit a temperature"
        )

    def objective(log_tau: float) -> float:
        return float(js_divergence(tempered(scores, math.exp(log_tau)), q).mean())

    lo, hi = math.log(1 / 32), math.log(32)
    xs = np.linspace(lo, hi, grid)
    vals = [objective(x) for x in xs]
    j = int(np.argmin(vals))
    a, b = xs[max(j - 1, 0)], xs[min(j + 1, grid - 1)]
    g = (math.sqrt(5) - 1) / 2
    c, d = b - g * (b - a), a + g * (b - a)
    fc, fd = objective(c), objective(d)
    for _ in range(30):
        if fc < fd:
            b, d, fd = d, c, fc
            c = b - g * (b - a)
            fc = objective(c)
        else:
            a, c, fc = c, d, fd
            d = a + g * (b - a)
            fd = objective(d)
    best = min([(vals[j], xs[j]), (fc, c), (fd, d)])
    return {"tau": round(math.exp(best[1]), 5), "objective": "mean dev JS", "dev_users": int(len(scores)),
            "dev_js": round(best[0], 6), "dev_js_tau1": round(objective(0.0), 6)}


def auto_tau_table(table_path, split, readout: str, out_path, dev_fraction: float = 0.2, cohort_seed: int = 0):
    """Fit tau on the dev-cohort rows of a probed table's raw scores; write softmax(s / tau) for every row to ``out_path``.

    ``table_path`` is a prior table written by the probe at tau = 1, with its raw scores beside it
    (``<stem>.scores.parquet``). Returns the new PriorTable.
    """
    from pathlib import Path

    import pandas as pd

    from spectra_rec.priors.table import PriorTable

    if readout not in AUTO_TAU_READOUTS:
        raise ConfigError(f"--tau auto supports the {list(AUTO_TAU_READOUTS)} readouts, not {readout!r}")
    table_path = Path(table_path)
    table = PriorTable.load(table_path)
    scores_path = table_path.with_name(table_path.stem + ".scores.parquet")
    if not scores_path.exists():
        raise ConfigError(f"--tau auto: no raw scores next to {table_path} (expected {scores_path.name})")
    raw = pd.read_parquet(scores_path).set_index("user_id")
    cats = list(table.categories)
    s_all = raw.loc[[str(u) for u in table.user_ids], [f"s:{c}" for c in cats]].to_numpy(np.float64)
    dev, _ = split.cohorts(dev_fraction, cohort_seed)
    ds = split.dataset
    row_of = {str(u): i for i, u in enumerate(table.user_ids)}
    dev = np.array([u for u in dev if str(ds.user_ids[u]) in row_of], dtype=np.int64)
    rows = np.array([row_of[str(ds.user_ids[u])] for u in dev], dtype=np.int64)
    q = split.ground_truth(users=dev) if len(dev) else np.zeros((0, len(cats)))
    fit = fit_tau(s_all[rows] if len(rows) else np.zeros((0, len(cats))), q, readout)
    probs = tempered(s_all, fit["tau"])
    meta = dict(table.meta) | {"tau": fit["tau"], "tau_fit": fit | {"dev_fraction": dev_fraction,
                                                                   "cohort_seed": cohort_seed}}
    out = PriorTable(table.user_ids, table.categories, probs, meta)
    out.save(out_path)
    return PriorTable.load(out_path)
