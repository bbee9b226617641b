"""Vocabularies x priors x candidate sets on ml-100k: how much room a category prior has, and how much it uses.

    python benchmarks/taxonomy_experiment.py                       # genres, cooc K=50, cooc K=200 (20 L1), SAE K=50
    python benchmarks/taxonomy_experiment.py --priors oracle uhf uhf-decay markov
    python benchmarks/taxonomy_experiment.py --spectra cooc50=runs/probe/<hash>/prior.parquet
    python benchmarks/taxonomy_experiment.py --only-vocab          # just build the vocabularies

One SASRec backbone (``run_fusion.py``'s, cached under runs/backbone/) scores every row: the
backbone only sees interactions, so it is the same for every vocabulary (its cache key holds the
data stage's hash, which covers the category field and the .item file, so ``run_fusion.py
--dataset <vocab folder>`` would train its own copy; this script reuses the genre one, after
checking that users, items and train windows are identical). Candidate sets and base scores are
built once and shared by every (vocabulary, prior); only the prior affinity changes.

Every w and normalization is chosen on the dev cohort by ``run_fusion.py``'s rule (one standard
error, each candidate set on its own); every figure is the test cohort's NDCG@10 lift with its
paired bootstrap 95% CI. The oracle rows read the held-out window (it holds the target item):
they are the ceiling of what a category prior can add with that vocabulary, not results. The
questions-per-user column is the probe cost of a SPECTRA readout at that K: flat yes/no asks K
questions, hier top:2 asks L1 + the children of two branches (at most the two largest).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import warnings
from dataclasses import replace
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

VOCABS = {
    "genres": None,
    "cooc50": {"method": "cooc", "k": 50},
    "cooc200-hier": {"method": "cooc", "k": 200, "l1": 20},
    "sae50": {"method": "sae", "k": 50},
}
"""Vocabulary label -> TaxonomyConfig fields (None: the dataset's own genres)."""


def build_vocab(label: str, runs: Path) -> Path | None:
    from spectra_rec.data.stage import DataConfig
    from spectra_rec.taxonomy import TaxonomyConfig
    from spectra_rec.taxonomy.build import taxonomy_stage

    spec = VOCABS[label]
    if spec is None:
        return None
    return taxonomy_stage(TaxonomyConfig(**spec), DataConfig(), runs, out=runs / "vocab" / label)


def questions(ds, branches: int = 2) -> str:
    if ds.taxonomy is None:
        return f"{ds.K} flat"
    sizes = sorted((len(v) for v in ds.taxonomy.values()), reverse=True)
    return f"{ds.K} flat / {len(sizes)}+<={sum(sizes[:branches])} hier"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--vocab", nargs="+", default=list(VOCABS), choices=list(VOCABS))
    ap.add_argument("--priors", nargs="+", default=["oracle", "uhf", "uhf-decay"])
    ap.add_argument("--spectra", nargs="*", default=[], metavar="VOCAB=TABLE",
                    help="SPECTRA prior tables probed on a vocabulary (rows labelled 'spectra')")
    ap.add_argument("--candidates", nargs="+", default=["neg99", "neg999", "retrieval"])
    ap.add_argument("--model", default="SASRec")
    ap.add_argument("--n-boot", type=int, default=1000)
    ap.add_argument("--runs", type=Path, default=Path("runs"))
    ap.add_argument("--out", type=Path, default=Path("runs/taxonomy_experiment"))
    ap.add_argument("--only-vocab", action="store_true", help="build the vocabularies and stop")
    args = ap.parse_args(argv)

    from spectra_rec.cli import quiet_openmp, setup_logging

    quiet_openmp()
    setup_logging()
    from spectra_rec.data import load_dataset, split_dataset
    from spectra_rec.errors import DataWarning

    warnings.simplefilter("ignore", DataWarning)
    folders = {v: build_vocab(v, args.runs) for v in args.vocab}
    if args.only_vocab:
        for v, f in folders.items():
            print(v, f)
        return 0

    from fusion.backbones import backbone_stage
    from fusion.evaluate import evaluate_fusion
    from fusion.pipeline import FusionConfig, build_cases, cohorts
    from fusion.blend import affinity
    from spectra_rec.data.stage import DataConfig, data_stage
    from spectra_rec.priors.history import history_prior
    from spectra_rec.priors.table import PriorTable

    cfg = FusionConfig(model=args.model, runs=args.runs, n_boot=args.n_boot, candidate_sets=tuple(args.candidates))
    ds0, split0, folder0 = data_stage(DataConfig(), args.runs)
    t0 = time.perf_counter()
    backbone = backbone_stage(split0, folder0, cfg.backbone_config(), args.runs)
    log_backbone = f"{backbone.folder} (valid NDCG@10 {backbone.recbole_metrics.get('valid', {}).get('ndcg@10')})"
    dev, test = cohorts(split0, cfg)
    users = np.concatenate([dev, test])
    is_test = np.concatenate([np.zeros(len(dev), bool), np.ones(len(test), bool)])
    uniform = np.full((len(users), ds0.K), 1.0 / ds0.K)
    shared = {name: build_cases(name, split0, backbone, uniform, users, cfg) for name in cfg.candidate_sets}
    spectra = dict(s.split("=", 1) for s in args.spectra)

    rows = []
    for label, folder in folders.items():
        ds = ds0 if folder is None else load_dataset(folder, category_field="taxon")
        split = split0 if folder is None else split_dataset(ds)
        if not (np.array_equal(ds.item_ids, ds0.item_ids) and np.array_equal(ds.user_ids, ds0.user_ids)
                and np.array_equal(split.item[split.is_train], split0.item[split0.is_train])):
            raise SystemExit(f"{folder}: users, items or train windows differ from ml-100k's; the backbone cannot be shared")
        tables = {p: history_prior(split, p) for p in args.priors}
        if label in spectra:
            tables["spectra"] = PriorTable.load(spectra[label], categories=ds.categories)
        for prior, table in tables.items():
            P = table.matrix(ds, users)

            def cases(name, P=P, ds=ds):
                c = shared[name]
                return replace(c, aff=affinity(P, ds.membership, c.candidates.items))

            res = evaluate_fusion(cfg.candidate_sets, cases, ~is_test, is_test, cfg.w_grid, cfg.normalizations,
                                  select_on="each", selection=cfg.selection, k=cfg.k, n_boot=cfg.n_boot, seed=cfg.seed)
            for name, r in res.sets.items():
                rows.append({
                    "vocabulary": label, "K": ds.K, "prior": prior, "uses_heldout": bool(table.uses_heldout),
                    "candidates": name, "w": r.w, "normalization": r.normalization,
                    "base": {s: r.summary["base"][s]["NDCG@10"] for s in ("overall", "mid")},
                    "lift": {s: {"relative": r.lift[s]["relative"], "ci95": r.lift[s]["ci95"],
                                 "p_value": r.lift[s]["p_value"], "n": r.lift[s]["n"]} for s in ("overall", "mid")},
                    "questions_per_user": questions(ds),
                })
            print(f"  {label} / {prior}: " + ", ".join(
                f"{n} {r.lift['overall']['relative']:+.1%} (w={r.w})" for n, r in res.sets.items()), flush=True)

    def cell(r, s):
        lf = r["lift"][s]
        return f"{lf['relative']:+.1%} [{lf['ci95'][0]:+.1%}, {lf['ci95'][1]:+.1%}]"

    header = ["vocabulary", "K", "prior", "candidates", "w (dev)", "overall lift [95% CI]", "mid lift [95% CI]",
              "questions/user"]
    table_rows = [[r["vocabulary"], str(r["K"]), r["prior"] + (" †" if r["uses_heldout"] else ""), r["candidates"],
                   f"{r['w']} {r['normalization']}", cell(r, "overall"), cell(r, "mid"), r["questions_per_user"]]
                  for r in rows]
    widths = [max(len(h), *(len(t[j]) for t in table_rows)) for j, h in enumerate(header)]
    print(f"\nSASRec backbone {log_backbone}; test cohort {len(test)} users (mid: "
          f"{rows[0]['lift']['mid']['n'] if rows else 0}), dev {len(dev)}; NDCG@10 lift over the backbone")
    print("  ".join(h.ljust(w) for h, w in zip(header, widths)))
    print("-" * (sum(widths) + 2 * len(widths)))
    for t in table_rows:
        print("  ".join(c.ljust(w) for c, w in zip(t, widths)))
    print("† oracle: the held-out window itself (it holds the target item); a ceiling, not a result")
    print(f"({time.perf_counter() - t0:.0f} s after the vocabularies)")

    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "results.json").write_text(json.dumps({"backbone": str(backbone.folder), "test_users": int(len(test)),
                                                      "dev_users": int(len(dev)), "rows": rows}, indent=1))
    md = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    md += ["| " + " | ".join(t) + " |" for t in table_rows]
    (args.out / "results.md").write_text("\n".join(md) + "\n\n† oracle: reads the held-out window (a ceiling).\n")
    print(f"written: {args.out}/results.json, results.md")
    return 0


if __name__ == "__main__":
    sys.exit(main())
