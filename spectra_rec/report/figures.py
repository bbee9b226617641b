"""PNG figures (matplotlib, Agg backend, imported on first use)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

BUCKET_COLOURS = {"head": "#d95f02", "mid": "#7570b3", "tail": "#1b9e77"}


def _plt():
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    return plt


def _save(fig, path: Path) -> Path:
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    _plt().close(fig)
    return path


def _err(entries):
    mean = np.array([e["mean"] for e in entries], dtype=float)
    lo = np.array([e["low"] for e in entries], dtype=float)
    hi = np.array([e["high"] for e in entries], dtype=float)
    # percentile bounds of a constant column can miss the mean by rounding: never a negative error bar
    return mean, np.clip(np.nan_to_num(np.vstack([mean - lo, hi - mean])), 0, None)


def js_by_method(result, path: Path) -> Path:
    plt = _plt()
    labels = [m["label"] for m in result.methods]
    mean, err = _err([result.summary["JS"][lab] for lab in labels])
    fig, ax = plt.subplots(figsize=(7, 0.5 * len(labels) + 1.5))
    colours = ["#999999" if lab == result.baseline else "#1f77b4" for lab in labels]
    ax.barh(range(len(labels)), mean, xerr=err, color=colours, capsize=3)
    ax.set_yticks(range(len(labels)), labels)
    ax.invert_yaxis()
    ax.set_xlabel("mean JS divergence to held-out q (base 2), 95% bootstrap CI")
    ax.set_title(f"JS by method (baseline in grey; {result.n_users} users)")
    return _save(fig, path)


def category_bias(result, path: Path) -> Path:
    plt = _plt()
    labels = [m["label"] for m in result.methods]
    cats = result.categories
    order = sorted(range(len(cats)), key=lambda c: (("head", "mid", "tail").index(result.buckets[c]),
                                                     -next(r["true"] for r in result.bias if r["category"] == cats[c])))
    fig, axes = plt.subplots(len(labels), 1, figsize=(max(7, 0.45 * len(cats)), 2.2 * len(labels) + 0.8),
                             sharex=True, squeeze=False)
    for ax, lab in zip(axes[:, 0], labels):
        rows = {r["category"]: r for r in result.bias if r["method"] == lab}
        entries = [{"mean": rows[cats[c]]["bias"], "low": rows[cats[c]]["low"], "high": rows[cats[c]]["high"]}
                   for c in order]
        mean, err = _err(entries)
        ax.bar(range(len(order)), mean, yerr=err, capsize=2,
               color=[BUCKET_COLOURS[result.buckets[c]] for c in order])
        ax.axhline(0, color="black", lw=0.6)
        ax.set_ylabel("bias")
        ax.set_title(lab, fontsize=9, loc="left")
    axes[-1, 0].set_xticks(range(len(order)), [cats[c] for c in order], rotation=60, ha="right", fontsize=8)
    handles = [plt.Rectangle((0, 0), 1, 1, color=c) for c in BUCKET_COLOURS.values()]
    axes[0, 0].legend(handles, list(BUCKET_COLOURS), fontsize=8, ncol=3, loc="upper right")
    fig.suptitle("Per-category bias mean p - mean q (95% CI), coloured by bucket", fontsize=10)
    return _save(fig, path)


def reliability(result, path: Path) -> Path:
    plt = _plt()
    fig, axes = plt.subplots(1, 2, figsize=(10, 4.5))
    for ax, key, title in zip(axes, ("ECE", "ECE/top1"), ("all (user, category) pairs", "top-1 category per user")):
        ax.plot([0, 1], [0, 1], color="grey", lw=0.8, ls="--")
        for lab, rel in result.reliability.items():
            r = rel.get(key)
            if r is None:
                continue
            x = np.array(r["mean_pred"], dtype=float)
            y = np.array(r["mean_true"], dtype=float)
            ok = np.isfinite(x) & np.isfinite(y)
            ece = result.summary.get(key, {}).get(lab, {}).get("mean", float("nan"))
            ax.plot(x[ok], y[ok], marker="o", ms=3, label=f"{lab} (ECE {ece:.3f})")
        ax.set_xlabel("mean predicted probability (bin)")
        ax.set_ylabel("mean true share q")
        ax.set_title(f"Reliability: {title}", fontsize=10)
        ax.legend(fontsize=7)
    return _save(fig, path)


def fairness_quartiles(result, path: Path) -> Path:
    plt = _plt()
    methods = result.fairness["methods"]
    fig, ax = plt.subplots(figsize=(8, 4.5))
    n_groups = len(result.fairness["group_sizes"])
    width = 0.8 / max(len(methods), 1)
    for i, (lab, out) in enumerate(methods.items()):
        entries = [{"mean": g["reduction"], "low": g["low"], "high": g["high"]} for g in out["groups"]]
        mean, err = _err(entries)
        ax.bar(np.arange(n_groups) + i * width - 0.4 + width / 2, mean, width, yerr=err, capsize=2,
               label=f"{lab} (Q4/Q1 {out['ratio_last_first']:.2f})")
    ax.axhline(0, color="black", lw=0.6)
    if not methods:
        ax.text(0.5, 0.5, "no method besides the baseline", transform=ax.transAxes, ha="center")
    ax.set_xticks(range(n_groups), [f"Q{g + 1}\n(n={n})" for g, n in enumerate(result.fairness["group_sizes"])])
    ax.set_ylabel(f"JS reduction vs {result.fairness['baseline']}")
    ax.set_xlabel("tail-preference quartile (Q1 head-leaning ... Q4 tail-leaning)")
    if methods:
        ax.legend(fontsize=7)
    ax.set_title("Per-quartile JS reduction (95% CI)", fontsize=10)
    return _save(fig, path)


def exposure_entropy(result, path: Path) -> Path:
    plt = _plt()
    ks = result.config["exposure_k"]
    labels = [m["label"] for m in result.methods]
    fig, ax = plt.subplots(figsize=(8, 4.5))
    width = 0.8 / len(labels)
    for i, lab in enumerate(labels):
        mean, err = _err([result.summary[f"Entropy@{k}"][lab] for k in ks])
        ax.bar(np.arange(len(ks)) + i * width - 0.4 + width / 2, mean, width, yerr=err, capsize=2, label=lab)
    for j, k in enumerate(ks):
        ref = result.reference.get(f"Entropy@{k}")
        if ref:
            ax.hlines(ref["mean"], j - 0.4, j + 0.4, color="black", ls="--", lw=1,
                      label="truth (held-out q)" if j == 0 else None)
    ax.axhline(np.log2(len(result.categories)), color="grey", lw=0.6, ls=":", label="log2 K (max)")
    ax.set_xticks(range(len(ks)), [f"top-{k}" for k in ks])
    ax.set_ylabel("exposure entropy (bits)")
    ax.legend(fontsize=7)
    ax.set_title("Top-k exposure entropy (95% CI)", fontsize=10)
    return _save(fig, path)


FIGURES = {
    "js_by_method": js_by_method,
    "category_bias": category_bias,
    "reliability": reliability,
    "fairness_quartiles": fairness_quartiles,
    "exposure_entropy": exposure_entropy,
}
