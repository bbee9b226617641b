"""Fusion results as results.json, per-user CSV, results.md, PNG plots and a console table.

Renders a :class:`fusion.evaluate.FusionResult` and computes nothing of its own; this is the only
place that rounds (JSON keeps full precision).
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pandas as pd

from fusion.evaluate import metric_label, metric_names
from fusion.pipeline import FusionRun, config_dict
from spectra_rec import artifacts
from spectra_rec.data.split import SLICES

log = logging.getLogger(__name__)

SLICE_NAMES = ("overall", *SLICES)


def results_dict(run: FusionRun) -> dict:
    """The results.json payload: per candidate set, base / fused / lift per slice."""
    cfg = run.config
    res = run.result
    key = metric_label("NDCG", res.k)
    first = next(iter(res.sets.values()))
    out = {
        "model": cfg.model,
        "dataset": run.data.name,
        "prior": cfg.prior_label(),
        "prior_meta": run.prior.meta,
        "prior_uses_heldout": run.prior.uses_heldout,
        "w": first.w if res.one_choice else None,
        "normalization": first.normalization if res.one_choice else None,
        "w_selected_on": ("fixed by --w" if res.user_w is not None
                          else f"dev cohort, each candidate set on its own, {key}, {_RULES[res.selection]}"
                          if res.select_on == "each"
                          else f"dev cohort, {res.select_on}, {key}, {_RULES[res.selection]}"),
        "w_grid": list(res.w_grid),
        "cohorts": run.cohort_sizes,
        "backbone": {"folder": str(run.backbone.folder),
                     "recbole": {k: v for k, v in run.backbone.recbole_metrics.items() if k not in _TIMING_KEYS}},
        "candidates": {},
        "config": config_dict(cfg),
        "data": run.data_summary,
    }
    for name, r in res.sets.items():
        out["candidates"][name] = {
            "w": r.w,
            "normalization": r.normalization,
            "w_source": r.w_source,
            "base": r.summary["base"],
            "fused": r.summary["fused"],
            "lift": {s: _lift_entry(v, key) for s, v in r.lift.items()},
            "sweep": r.sweep,
            "info": r.info,
        }
    out["ceiling"] = ceiling_dict(run, out["candidates"]) if run.ceiling is not None else None
    return out


CEILING_NOTE = ("oracle prior: the user's held-out window itself (it contains the target item), fused under the "
                "same selection rule; a ceiling for this vocabulary, not a result")


def _lift_entry(v: dict, key: str) -> dict:
    return {key: v["relative"], "ci95": v["ci95"], f"{key}_absolute": v["absolute"], "p_value": v["p_value"], "n": v["n"]}


def ceiling_dict(run: FusionRun, prior_sets: dict) -> dict:
    """The oracle ceiling per candidate set, and the share of its lift the prior reaches (``room_used``)."""
    res = run.ceiling
    key = metric_label("NDCG", res.k)
    out = {"prior": "oracle", "uses_heldout": True, "note": CEILING_NOTE, "candidates": {}}
    for name, r in res.sets.items():
        lifts = {s: _lift_entry(v, key) for s, v in r.lift.items()}
        used = {}
        for s, v in lifts.items():
            top, got = v[key], prior_sets[name]["lift"][s][key]
            used[s] = float(got / top) if np.isfinite(top) and top > 0 and np.isfinite(got) else float("nan")
        out["candidates"][name] = {"w": r.w, "normalization": r.normalization, "w_source": r.w_source,
                                   "fused": r.summary["fused"], "lift": lifts, "room_used": used,
                                   "dev_ndcg_at_selected": r.info.get("dev_ndcg_at_selected")}
    return out


_TIMING_KEYS = ("train_seconds", "seconds_per_epoch")
"""Backbone figures that vary from run to run: in timing.json, so results.json is byte-identical for a seed."""


def timing_dict(run: FusionRun) -> dict:
    """timing.json: stage seconds and the backbone's training time (they differ between identical runs)."""
    return {"stages_s": {s: round(v, 3) for s, v in run.timing.items()},
            "backbone": {k: run.backbone.recbole_metrics.get(k) for k in _TIMING_KEYS}}


_RULES = {"1se": "one-standard-error rule", "max": "best dev mean"}


def choice_text(results: dict) -> str:
    """``w=0.05 (minmax)``, or one such choice per candidate set when they differ."""
    if results["w"] is not None:
        return f"w={results['w']} ({results['normalization']})"
    return "w per candidate set: " + ", ".join(
        f"{name} {c['w']} ({c['normalization']})" for name, c in results["candidates"].items())


def per_user_frame(run: FusionRun) -> pd.DataFrame:
    frames = []
    dataset_user_ids, dataset_item_ids = run.data.user_ids, run.data.item_ids
    for name, r in run.sets.items():
        df = pd.DataFrame(
            {
                "candidates": name,
                "user_id": dataset_user_ids[r.users],
                "cohort": np.where(r.test, "test", "dev"),
                "target_item": dataset_item_ids[r.targets],
                "slice": np.asarray(SLICES)[r.slices],
            }
        )
        for m in metric_names(run.config.k):
            df[f"base_{m}"] = r.base[m]
            df[f"fused_{m}"] = r.fused[m]
        frames.append(df)
    return pd.concat(frames, ignore_index=True)


def _fmt(x, digits=4):
    return "nan" if x is None or (isinstance(x, float) and np.isnan(x)) else f"{x:.{digits}f}"


def table_rows(results: dict, k: int) -> list[dict]:
    key = metric_label("NDCG", k)
    rows = []
    for name, c in results["candidates"].items():
        for s in SLICE_NAMES:
            lf = c["lift"][s]
            rows.append(
                {
                    "candidates": name,
                    "slice": s,
                    "n": c["base"][s]["n"],
                    f"base {key}": _fmt(c["base"][s][key]),
                    f"fused {key}": _fmt(c["fused"][s][key]),
                    "lift": "nan" if np.isnan(lf[key]) else f"{lf[key]:+.1%}",
                    "95% CI": "nan" if np.isnan(lf["ci95"][0]) else f"[{lf['ci95'][0]:+.1%}, {lf['ci95'][1]:+.1%}]",
                    "abs diff": "nan" if np.isnan(lf[f"{key}_absolute"]) else f"{lf[f'{key}_absolute']:+.4f}",
                    "p": _fmt(lf["p_value"], 3) if not lf["p_value"] < 1e-3 else f"{lf['p_value']:.1e}",
                }
            )
            ceiling = (results.get("ceiling") or {}).get("candidates", {}).get(name)
            if ceiling is not None:
                cl = ceiling["lift"][s]
                rows[-1][CEILING_COLUMN] = "nan" if np.isnan(cl[key]) else (
                    f"{cl[key]:+.1%} [{cl['ci95'][0]:+.1%}, {cl['ci95'][1]:+.1%}] w={ceiling['w']}")
    return rows


CEILING_COLUMN = "oracle ceiling† lift [CI] w"


def ceiling_footnote(results: dict) -> str:
    return f"† {CEILING_NOTE}." if results.get("ceiling") else ""


def markdown(results: dict, k: int) -> str:
    rows = table_rows(results, k)
    cols = list(rows[0])
    lines = [
        f"# Fusion: {results['model']} + {results['prior']} prior on {results['dataset']}",
        "",
        f"{choice_text(results)}, selected on {results['w_selected_on']}; "
        f"reported cohort: {results['cohorts']['test']} users (dev: {results['cohorts']['dev']}).",
    ]
    if results["prior_uses_heldout"]:
        lines.append("**The prior reads held-out data (oracle diagnostic): not a legitimate result.**")
    rb = results["backbone"]["recbole"].get("test", {})
    lines += [
        f"Backbone's own RecBole test NDCG@10 (full ranking): {_fmt(rb.get('ndcg@10'))}, HR@10 {_fmt(rb.get('hit@10'))}.",
        "",
        "| " + " | ".join(cols) + " |",
        "|" + "---|" * len(cols),
    ]
    lines += ["| " + " | ".join(str(r[c]) for c in cols) + " |" for r in rows]
    if results.get("ceiling"):
        lines += ["", ceiling_footnote(results)]
    return "\n".join(lines) + "\n"


def console_table(results: dict, k: int) -> str:
    rows = table_rows(results, k)
    cols = list(rows[0])
    widths = {c: max(len(c), *(len(str(r[c])) for r in rows)) for c in cols}
    line = "  ".join(c.ljust(widths[c]) for c in cols)
    out = [line, "-" * len(line)]
    out += ["  ".join(str(r[c]).ljust(widths[c]) for c in cols) for r in rows]
    if results.get("ceiling"):
        out.append(ceiling_footnote(results))
    return "\n".join(out)


def plots(results: dict, out: Path, k: int) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    key = metric_label("NDCG", k)
    paths = []
    sets = results["candidates"]
    swept = {name: c for name, c in sets.items() if c["sweep"]}
    if swept:  # a w given with --w runs no sweep: no curves to draw
        paths.append(_sweep_plot(results, swept, out, k))
    _slices_plot(results, sets, out, k, key)
    paths.append(out / "slices.png")
    return paths


def _sweep_plot(results: dict, sets: dict, out: Path, k: int) -> Path:
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(sets), figsize=(4.5 * len(sets), 3.6), squeeze=False)
    for ax, (name, c) in zip(axes[0], sets.items()):
        curves = c["sweep"][c["normalization"]]["test"]
        for s in SLICE_NAMES:
            ax.plot(results["w_grid"], curves[s], marker="o", ms=3, label=s)
        ax.axvline(c["w"], color="grey", ls="--", lw=1)
        ax.set_title(f"{name} ({c['normalization']})")
        ax.set_xlabel("w (prior weight)")
        ax.set_ylabel(f"NDCG@{k} (test cohort)")
    axes[0][0].legend(fontsize=8)
    fig.suptitle(f"{results['model']} + {results['prior']}: NDCG@{k} vs w")
    fig.tight_layout()
    fig.savefig(out / "sweep.png", dpi=110)
    plt.close(fig)
    return out / "sweep.png"


def _slices_plot(results: dict, sets: dict, out: Path, k: int, key: str) -> None:
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(sets), figsize=(4.5 * len(sets), 3.6), squeeze=False)
    x = np.arange(len(SLICE_NAMES))
    for ax, (name, c) in zip(axes[0], sets.items()):
        base = [c["base"][s][key] for s in SLICE_NAMES]
        fused = [c["fused"][s][key] for s in SLICE_NAMES]
        ax.bar(x - 0.2, base, 0.4, label="base")
        ax.bar(x + 0.2, fused, 0.4, label=f"fused (w={c['w']})")
        ax.set_xticks(x, [f"{s}\n(n={c['base'][s]['n']})" for s in SLICE_NAMES], fontsize=8)
        ax.set_title(name)
        ax.set_ylabel(f"NDCG@{k}")
    axes[0][0].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out / "slices.png", dpi=110)
    plt.close(fig)


def write_report(run: FusionRun, out: Path) -> dict:
    """Write results.json, timing.json, per_user.csv, results.md and the PNGs; return the results dict."""
    results = results_dict(run)
    k = run.config.k
    with artifacts.publishing(out) as tmp:  # the folder appears complete or not at all
        artifacts.write_json(tmp / "results.json", results)
        artifacts.write_json(tmp / "timing.json", timing_dict(run))
        per_user_frame(run).to_csv(tmp / "per_user.csv", index=False, float_format="%.6g")
        artifacts.write_text(tmp / "results.md", markdown(results, k))
        plots(results, tmp, k)
    return results
