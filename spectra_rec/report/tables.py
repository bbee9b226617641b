"""Markdown tables with CIs and significance marks (rounding happens here and nowhere else)."""

from __future__ import annotations

import math

DIGITS = 4
"""Decimals shown for metric values."""

MARK_LEGEND = (
    "Marks against the baseline: `*` p < 0.05, `**` p < 0.01, `***` p < 0.001 (paired Wilcoxon on per-user "
    "values, Holm-adjusted across method pairs for that metric); `+` the paired bootstrap 95% CI of the "
    "difference excludes 0 (cohort-level metrics). Brackets: 95% percentile bootstrap CI over user resamples."
)


def _isnan(x) -> bool:
    return x is None or (isinstance(x, float) and math.isnan(x))


def fmt(x, digits: int = DIGITS) -> str:
    if _isnan(x):
        return "n/a"
    if isinstance(x, (bool, int)) and not isinstance(x, float):
        return str(x)
    return f"{x:.{digits}f}"


def fmt_p(p) -> str:
    if _isnan(p):
        return "n/a"
    return "<1e-4" if p < 1e-4 else f"{p:.4f}"


def format_ci(entry: dict, digits: int = DIGITS) -> str:
    """``mean [low, high]``."""
    if entry is None:
        return "n/a"
    return f"{fmt(entry['mean'], digits)} [{fmt(entry['low'], digits)}, {fmt(entry['high'], digits)}]"


def sig_mark(p_holm, alpha: float = 0.05) -> str:
    """``***``/``**``/``*`` by Holm-adjusted p (thresholds 0.001, 0.01, alpha)."""
    if _isnan(p_holm):
        return ""
    if p_holm < 0.001:
        return "***"
    if p_holm < 0.01:
        return "**"
    return "*" if p_holm < alpha else ""


def md_table(header: list[str], rows: list[list]) -> str:
    out = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    out += ["| " + " | ".join(str(c) for c in r) + " |" for r in rows]
    return "\n".join(out)


def _pair(result, metric: str, lab: str) -> dict | None:
    for c in result.comparisons:
        if c["metric"] == metric and c["a"] == result.baseline and c["b"] == lab:
            return c
    return None


def _cohort_pair(result, metric: str, lab: str) -> dict | None:
    for c in result.cohort_comparisons:
        if c["metric"] == metric and c["b"] == lab:
            return c
    return None


def marked(result, metric: str, lab: str) -> str:
    """A summary cell with its significance mark against the baseline."""
    entry = result.summary.get(metric, {}).get(lab)
    cell = format_ci(entry)
    if lab == result.baseline:
        return cell + " (baseline)"
    c = _pair(result, metric, lab)
    if c is not None:
        return cell + sig_mark(c["p_holm"], result.config.get("alpha", 0.05))
    cc = _cohort_pair(result, metric, lab)
    if cc is not None and not _isnan(cc["low"]) and (cc["low"] > 0 or cc["high"] < 0):
        return cell + "+"
    return cell


def headline_metrics(result) -> list[str]:
    """JS, NDCG@5, NDCG@10, Entropy@3 (or the first exposure k), mass/tail: those present."""
    cfg = result.config
    ks = [k for k in (5, 10) if k in cfg["k"]] or list(cfg["k"])[-2:]
    ek = 3 if 3 in cfg["exposure_k"] else cfg["exposure_k"][0]
    return ["JS"] + [f"NDCG@{k}" for k in ks] + [f"Entropy@{ek}", "mass/tail"]


def headline_rows(result) -> list[list[str]]:
    metrics = headline_metrics(result)
    rows = [[m["label"]] + [marked(result, metric, m["label"]) for metric in metrics] for m in result.methods]
    ref = ["truth (held-out q)"] + [format_ci(result.reference[m]) if m in result.reference else "" for m in metrics]
    return rows + [ref]


def headline_table(result) -> str:
    """The console/README table: JS, NDCG@5, NDCG@10, top-3 exposure entropy, tail mass per method with CIs."""
    metrics = headline_metrics(result)
    header = ["method"] + [m.replace("Entropy@", "exposure entropy@") for m in metrics]
    rows = headline_rows(result)
    widths = [max(len(str(r[i])) for r in [header] + rows) for i in range(len(header))]
    line = lambda r: "  ".join(str(c).ljust(w) for c, w in zip(r, widths))  # noqa: E731
    cfg = result.config
    title = (f"{cfg.get('dataset', '')} | cohort {cfg['cohort']} ({result.n_users} users) | {cfg['truth']}-term truth"
             f"{' (first %d held-out)' % cfg['short_n'] if cfg['truth'] == 'short' else ''} | baseline {result.baseline}"
             f" | {cfg['n_boot']} bootstrap resamples")
    notes = [MARK_LEGEND]
    if any(m["uses_heldout"] for m in result.methods):
        notes.append("Methods tagged [uses held-out data] are diagnostics built from the evaluation window, not priors.")
    return "\n".join([title, line(header), line(["-" * w for w in widths])] + [line(r) for r in rows] + [""] + notes)


def _comparison_rows(result, metrics: list[str], baseline_only: bool = True) -> list[list]:
    rows = []
    for c in result.comparisons:
        if c["metric"] in metrics and (c["vs_baseline"] or not baseline_only):
            rows.append([c["metric"], c["a"], c["b"], fmt(c["mean_a"]), fmt(c["mean_b"]),
                         f"{fmt(c['diff'])} [{fmt(c['low'])}, {fmt(c['high'])}]",
                         f"{fmt(100 * c['relative'], 1)}% [{fmt(100 * c['rel_low'], 1)}, {fmt(100 * c['rel_high'], 1)}]",
                         fmt_p(c["p"]), fmt_p(c["p_holm"]) + sig_mark(c["p_holm"])])
    return rows


COMP_HEADER = ["metric", "a (baseline)", "b", "mean a", "mean b", "b - a [CI]", "b/a - 1 [CI]", "p", "p Holm"]


def _summary_table(result, metrics: list[str]) -> str:
    rows = [[m["label"]] + [marked(result, metric, m["label"]) for metric in metrics] for m in result.methods]
    if any(metric in result.reference for metric in metrics):
        rows.append(["truth (held-out q)"] + [format_ci(result.reference.get(metric)) if metric in result.reference
                                              else "" for metric in metrics])
    return md_table(["method"] + metrics, rows)


def markdown_report(result, figures: dict | None = None) -> str:
    """The whole report.md: headline, alignment, ranking, long tail, calibration, bias, fairness, theory, strata."""
    cfg = result.config
    figures = figures or {}
    ks = [f"NDCG@{k}" for k in cfg["k"]]
    eks = [f"Entropy@{k}" for k in cfg["exposure_k"]]
    parts = [
        f"# Category-level evaluation: {cfg.get('dataset', '')}",
        "",
        f"- cohort: `{cfg['cohort']}` ({result.n_users} users; dev fraction {cfg['dev_fraction']}, seed {cfg['cohort_seed']})",
        f"- truth: {cfg['truth']}-term" + (f" (first {cfg['short_n']} held-out interactions)" if cfg["truth"] == "short" else
                                             " (whole held-out window)"),
        f"- categories: {len(result.categories)}; buckets by train-window mass: "
        + ", ".join(f"{b} {result.buckets.count(b)}" for b in ("head", "mid", "tail")),
        f"- baseline: `{result.baseline}`; bootstrap: {cfg['n_boot']} user resamples, seed {cfg['seed']}; "
        f"ECE bins: {cfg['n_bins']}",
        "- methods: " + ", ".join(f"`{m['label']}`" + (f" ({m['source']})" if m["source"] != m["name"] else "")
                                  for m in result.methods),
    ]
    if any(m["uses_heldout"] for m in result.methods):
        parts.append("- **Methods tagged [uses held-out data] read the evaluation window (diagnostics only; "
                     "their numbers are not achievable by a prior).**")
    parts += ["", "## Headline", "", md_table(
        ["method"] + [m for m in headline_metrics(result)], headline_rows(result)), "", MARK_LEGEND, ""]

    parts += ["## Distributional alignment (JS, base 2; TV)", "", _summary_table(result, ["JS", "TV"]), ""]
    if "js_by_method" in figures:
        parts += [f"![JS by method]({figures['js_by_method']})", ""]
    parts += ["Against the baseline:", "", md_table(COMP_HEADER, _comparison_rows(result, ["JS", "TV"])), ""]

    parts += ["## Category ranking (NDCG@k, graded gains q, ties in p averaged)", "", _summary_table(result, ks), "",
              md_table(COMP_HEADER, _comparison_rows(result, ks)), ""]

    parts += ["## Long tail: per-bucket mass and exposure entropy", "",
              _summary_table(result, ["mass/head", "mass/mid", "mass/tail"]), "",
              "Top-k exposure entropy (bits) of the cohort's top-k category lists (ties at the cut shared):", "",
              _summary_table(result, eks), ""]
    if "exposure_entropy" in figures:
        parts += [f"![exposure entropy]({figures['exposure_entropy']})", ""]

    ece_keys = [k for k in ("ECE", "ECE/head", "ECE/mid", "ECE/tail", "ECE/top1") if k in result.summary]
    parts += ["## Calibration (ECE: aggregate, bucket-stratified, top-1)", "",
              f"Equal-width bins ({cfg['n_bins']}) over (user, category) pairs; top-1 uses each user's argmax category "
              "(q averaged over tied maxima). A constant prediction (uniform) has aggregate ECE 0 by construction "
              "(all pairs share one bin whose mean q is 1/K), which is why the bucket-stratified ECE matters.", "",
              _summary_table(result, ece_keys), ""]
    cc = [[c["metric"], c["b"], f"{fmt(c['diff'])} [{fmt(c['low'])}, {fmt(c['high'])}]"]
          for c in result.cohort_comparisons]
    if cc:
        parts += ["Cohort metrics minus the baseline's (paired bootstrap CI):", "",
                  md_table(["metric", "method", "difference [CI]"], cc), ""]
    if "reliability" in figures:
        parts += [f"![reliability]({figures['reliability']})", ""]

    parts += ["## Per-category bias (mean p - mean q)", ""]
    if "category_bias" in figures:
        parts += [f"![per-category bias]({figures['category_bias']})", ""]
    for m in result.methods:
        lab = m["label"]
        rows = [r for r in result.bias if r["method"] == lab]
        if lab != result.baseline:
            wins = sum(r["win"] for r in rows)
            losses = sum(1 for r in rows if r["abs_err"] > r["abs_err_base"] and r["p_holm"] < cfg["alpha"])
            parts += [f"### {lab}: lower per-user |error| than `{result.baseline}` on {wins} of {len(rows)} categories "
                      f"({losses} significantly worse; paired Wilcoxon, Holm across categories)", ""]
        else:
            parts += [f"### {lab} (baseline)", ""]
        parts += [md_table(
            ["category", "bucket", "mean p", "mean q", "bias [CI]", "mean abs err", "p Holm vs baseline"],
            [[r["category"], r["bucket"], fmt(r["pred"]), fmt(r["true"]),
              f"{fmt(r['bias'])} [{fmt(r['low'])}, {fmt(r['high'])}]", fmt(r["abs_err"]),
              fmt_p(r["p_holm"]) + sig_mark(r["p_holm"], cfg["alpha"])] for r in rows]), ""]

    fair = result.fairness
    parts += ["## Cross-user fairness by tail preference", "",
              f"Tail preference = q mass on tail-bucket categories; quartiles by value (sizes "
              f"{fair['group_sizes']}, mean tail preference "
              f"{[fmt(x) for x in fair['group_tail_preference']]}). Reduction = JS(`{fair['baseline']}`) - JS(method); "
              "paired Wilcoxon within each quartile, Holm across quartiles.", ""]
    if "fairness_quartiles" in figures:
        parts += [f"![fairness quartiles]({figures['fairness_quartiles']})", ""]
    rows = []
    for lab, out in fair["methods"].items():
        for g in out["groups"]:
            rows.append([lab, g["group"], g["n"], fmt(g["js_base"]), fmt(g["js_method"]),
                         f"{fmt(g['reduction'])} [{fmt(g['low'])}, {fmt(g['high'])}]",
                         f"{fmt(100 * g['relative'], 1)}%", fmt_p(g["p"]), fmt_p(g["p_holm"]) + sig_mark(g["p_holm"])])
        rows.append([lab, "Q4/Q1", "", "", "",
                     f"{fmt(out['ratio_last_first'], 3)} [{fmt(out.get('ratio_low'), 3)}, {fmt(out.get('ratio_high'), 3)}]",
                     "", "", ""])
    if rows:
        parts += [md_table(["method", "quartile", "n", "JS baseline", "JS method", "reduction [CI]", "relative", "p",
                            "p Holm"], rows), ""]

    th = result.theory
    parts += ["## Theorem 1 check (per user)", ""]
    if "skipped" in th:
        parts += [f"Skipped: {th['skipped']}.", ""]
    else:
        parts += [f"DG role: `{th['baseline']}`, k = {th['k']}. eps = max_c |p - q|, gap = q_(k) - q_(k+1); favourable "
                  "when gap > 2 eps and the baseline's top-k differs from the true top-k.", ""]
        fl = th.get("baseline_floor")
        if fl and fl["sparse"]:
            parts += [f"Lemma 1 floor for `{th['baseline']}` (sparse support): mean true mass outside its list "
                      f"{format_ci(fl['outside_mass'])}; mean JS floor h(delta/2) - h(delta)/2 {format_ci(fl['js_floor'])};"
                      f" share of users with JS at or above the floor {fmt(fl['share_js_at_or_above_floor'])}.", ""]
        rows = [[lab, format_ci(r["favourable_fraction"]), r["n_favourable"], fmt(r["dg_miss_fraction"]),
                 fmt(r["gap_exceeds_2eps_fraction"]), fmt(r["eps_mean"]), fmt(r["p_recovers_true_topk_on_favourable"]),
                 fmt(r["mass_p_on_favourable"]), fmt(r["mass_dg_on_favourable"])] for lab, r in th["methods"].items()]
        parts += [md_table(["method", "favourable fraction [CI]", "n favourable", "DG-miss share", "gap > 2 eps share",
                            "mean eps", "p recovers true top-k (favourable)", "M_k(p) (fav.)", "M_k(DG) (fav.)"], rows),
                  ""]

    if result.strata:
        nd = next((r.get("NDCG_metric") for r in result.strata if r.get("NDCG_metric")), "NDCG")
        parts += ["## User-activity strata (train-history length, value quantiles)", "",
                  f"Reduction = JS(`{result.baseline}`) - JS(method); Holm across strata per method.", "",
                  md_table(["stratum", "history length", "n", "method", "JS [CI]", nd, "reduction [CI]", "p Holm"],
                           [[r["stratum"], f"{r['history_min']}-{r['history_max']}", r["n"], r["method"],
                             f"{fmt(r['JS'])} [{fmt(r['JS_low'])}, {fmt(r['JS_high'])}]", fmt(r["NDCG"]),
                             f"{fmt(r['reduction'])} [{fmt(r['red_low'])}, {fmt(r['red_high'])}]",
                             fmt_p(r.get("p_holm")) + sig_mark(r.get("p_holm"))] for r in result.strata]), ""]

    for name, v in result.variants.items():
        parts += [f"## Robustness variant: {v.config.get('variant', name)}", "",
                  "Category-level numbers are not comparable across taxonomies (the unit changes); compare methods "
                  "within the variant.", "", md_table(["method"] + headline_metrics(v), headline_rows(v)), "",
                  md_table(COMP_HEADER, _comparison_rows(v, ["JS"] + [f"NDCG@{k}" for k in v.config["k"]])), ""]

    parts += ["## All method pairs", "", md_table(COMP_HEADER, _comparison_rows(
        result, ["JS", "TV"] + ks, baseline_only=False)), ""]
    parts += [f"_Evaluation time: {result.timing.get('seconds', float('nan')):.2f} s._", ""]
    return "\n".join(parts)
