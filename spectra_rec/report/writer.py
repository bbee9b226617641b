"""Write an evaluation report folder: report.md, CSVs, JSON, PNG figures, manifest."""

from __future__ import annotations

import logging
import math
from pathlib import Path

import pandas as pd

from spectra_rec import artifacts
from spectra_rec.report.tables import markdown_report

log = logging.getLogger(__name__)


def _clean(obj):
    """NaN/inf -> None so the JSON is valid; numpy scalars and arrays via lists."""
    import numpy as np

    if isinstance(obj, dict):
        return {str(k): _clean(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_clean(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return _clean(obj.tolist())
    if isinstance(obj, (np.floating, float)):
        f = float(obj)
        return f if math.isfinite(f) else None
    if isinstance(obj, np.integer):
        return int(obj)
    if isinstance(obj, np.bool_):
        return bool(obj)
    return obj


def write_report(result, out_dir, manifest: dict | None = None, figures: bool = True) -> dict:
    """Write the report of ``result`` into ``out_dir``; returns {name: path}."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths: dict = {}
    fig_rel: dict = {}
    if figures:
        from spectra_rec.report.figures import FIGURES

        for name, draw in FIGURES.items():
            try:
                paths[f"{name}.png"] = draw(result, out / f"{name}.png")
                fig_rel[name] = f"{name}.png"
            except Exception as exc:  # a figure must never cost the tables
                log.warning("figure %s failed: %s", name, exc)
    paths["report.md"] = artifacts.write_text(out / "report.md", markdown_report(result, fig_rel))
    tmp = out / ".per_user.csv.tmp"
    result.per_user.to_csv(tmp, index=False, float_format="%.8g")
    tmp.replace(out / "per_user.csv")
    paths["per_user.csv"] = out / "per_user.csv"
    summary_rows = [{"metric": metric, "method": lab} | entry
                    for metric, by in result.summary.items() for lab, entry in by.items()]
    summary_rows += [{"metric": metric, "method": "truth (held-out q)"} | entry for metric, entry in result.reference.items()]
    tables = {
        "summary.csv": summary_rows,
        "comparisons.csv": result.comparisons + [c | {"cohort_metric": True} for c in result.cohort_comparisons],
        "category_bias.csv": result.bias,
        "fairness.csv": [{"method": lab, **g} for lab, o in result.fairness["methods"].items() for g in o["groups"]],
        "strata.csv": result.strata,
    }
    for name, rows in tables.items():
        if rows:
            tmp = out / f".{name}.tmp"
            pd.DataFrame(rows).to_csv(tmp, index=False, float_format="%.8g")
            tmp.replace(out / name)
            paths[name] = out / name
    paths["results.json"] = artifacts.write_json(out / "results.json", _clean(result.to_dict()))
    if manifest is not None:
        paths["manifest.json"] = artifacts.write_json(out / "manifest.json", _clean(manifest | {"files": sorted(paths)}))
    return paths
