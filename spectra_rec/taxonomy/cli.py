"""``spectra-rec taxonomy``: induce a finer category vocabulary from the train windows.

    spectra-rec taxonomy --dataset ml-100k --method cooc --k 50 --out runs/vocab/cooc50
    spectra-rec taxonomy --dataset ml-100k --method cooc --k 200 --l1 20 --out runs/vocab/cooc200
    spectra-rec taxonomy --dataset ml-100k --method sae --k 50 --l1 class --out runs/vocab/sae50
    python run_fusion.py --dataset runs/vocab/cooc50 --category-field taxon
"""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path

from spectra_rec.data.cli import add_data_arguments, data_config
from spectra_rec.taxonomy.config import TaxonomyConfig
from spectra_rec.taxonomy.methods import METHODS

log = logging.getLogger(__name__)


def _l1(value: str):
    return int(value) if value.lstrip("-").isdigit() else value


def add_arguments(p: argparse.ArgumentParser) -> None:
    add_data_arguments(p)
    d = TaxonomyConfig()
    p.add_argument("--method", default=d.method, choices=sorted(METHODS),
                   help="cooc: k-means on train co-occurrence factors; embedding: k-means on a backbone's item "
                        "embeddings; sae: TopK sparse-autoencoder intents (an item can carry several)")
    p.add_argument("--k", type=int, default=d.k, help="number of L2 categories (clusters or SAE features)")
    p.add_argument("--l1", type=_l1, metavar="FIELD|K1|taxonomy",
                   help="two-level taxonomy: L1 = the dominant value of an item field (e.g. class), K1 coarser "
                        "clusters, or the source taxonomy's L1 (default: flat)")
    p.add_argument("--field", default=d.field, help="name of the new token_seq category field")
    p.add_argument("--out", type=Path, help="dataset folder to write (default: the cached folder under runs/taxonomy/)")
    p.add_argument("--embeddings", metavar="FILE|DIR",
                   help="embedding / --sae-input embedding: an (n_items, d) .npy in dataset item order or a backbone "
                        "folder (default: the cached --model backbone of this dataset under --runs)")
    p.add_argument("--model", default=d.model, help="which cached backbone to read embeddings from")
    p.add_argument("--dim", type=int, default=d.dim, help="co-occurrence factor dimension")
    p.add_argument("--sae-input", default=d.sae_input, choices=["cooc", "embedding"])
    p.add_argument("--sae-topk", type=int, default=d.sae_topk, help="active SAE features (intents) per item")
    p.add_argument("--sae-epochs", type=int, default=d.sae_epochs)
    p.add_argument("--names", metavar="JSON", help="a JSON list of L2 names replacing the generated ones "
                                                  "(largest category first, as in the descriptions file)")
    p.add_argument("--seed", type=int, default=d.seed)
    p.add_argument("--runs", type=Path, default=Path("runs"))
    p.add_argument("--fresh", action="store_true", help="recompute even if cached")


def run(args) -> int:
    import warnings

    from spectra_rec.errors import DataWarning
    from spectra_rec.taxonomy.build import taxonomy_stage

    config = TaxonomyConfig(method=args.method, k=args.k, l1=args.l1, field=args.field, dim=args.dim,
                            sae_input=args.sae_input, sae_topk=args.sae_topk, sae_epochs=args.sae_epochs,
                            embeddings=args.embeddings, model=args.model, names=args.names, seed=args.seed)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DataWarning)  # the source dataset's own warnings were shown by `data`
        folder = taxonomy_stage(config, data_config(args), args.runs, args.fresh, args.out)
    manifest = json.loads((folder / "manifest.json").read_text())
    line = f"{manifest['method']}: K = {manifest['K']}"
    if manifest.get("L1"):
        line += f" in {manifest['L1']} L1 groups"
    if "sae" in manifest:
        s = manifest["sae"]
        line += f"; SAE {s['n_dead']}/{s['features']} dead, {s['n_duplicates']} duplicate pair(s)"
    print(line)
    print(f"{folder}  (use: --dataset {folder} --category-field {manifest['field']})")
    return 0
