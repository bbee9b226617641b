"""The taxonomy stage: induce groups, add L1, name them, write a dataset folder (cached under runs/taxonomy/).

The folder holds the source's ``.inter`` (and ``.user``) unchanged, its ``.item`` with one more
token_seq field (``config.field``), ``<name>.taxonomy.json`` when two-level,
``<name>.descriptions.json`` (long descriptions: dominant source categories, typical titles) and
``manifest.json``. It keeps the source's dataset name, so RecBole YAML layers and every stage
read it like the source with ``--dataset DIR --category-field <field>``.
"""

from __future__ import annotations

import json
import logging
import shutil
from dataclasses import asdict
from pathlib import Path

import numpy as np
import scipy.sparse as sp

from spectra_rec import artifacts
from spectra_rec.data.dataset import Dataset, read_atomic
from spectra_rec.data.split import Split
from spectra_rec.data.stage import DataConfig, data_stage
from spectra_rec.errors import ConfigError, DataError
from spectra_rec.taxonomy.config import TaxonomyConfig
from spectra_rec.taxonomy.methods import METHODS, Context, Induced
from spectra_rec.taxonomy.naming import check_names, dominant, genre_word, title_words, unique_name

log = logging.getLogger(__name__)

LAYOUT_VERSION = 1
"""Bump when the files this stage writes change shape."""

N_TYPICAL = 5
"""Typical titles kept per category in the descriptions file."""


def taxonomy_stage(config: TaxonomyConfig, data: DataConfig = DataConfig(), runs: Path = Path("runs"),
                   fresh: bool = False, out: Path | None = None) -> Path:
    """Induce (or reuse) the vocabulary of ``config`` on ``data``; publish a copy at ``out`` when given.

    Returns the folder to pass as ``--dataset``: ``out``, or the cached stage folder.
    """
    ds, split, data_folder = data_stage(data, runs)
    if config.k > ds.n_items:
        raise ConfigError(f"--k must be between 2 and the number of items ({ds.n_items}), got {config.k}")
    item_path = Path(ds.source) / f"{ds.name}.item"
    header = item_path.read_text(encoding="utf-8").split("\n", 1)[0].split("\t")
    fields = [h.split(":", 1)[0] for h in header]
    if config.field in fields:
        raise ConfigError(f"--field {config.field!r} already exists in {item_path}; pick a new field name")
    l1_values = _l1_source(config, ds, item_path, fields)

    embeddings, emb_source = None, None
    if config.uses_embeddings:
        from spectra_rec.taxonomy.factors import find_backbone, load_embeddings

        path = Path(config.embeddings) if config.embeddings else find_backbone(runs, data_folder, config.model)
        embeddings, emb_source = load_embeddings(path, ds.n_items)
        log.info("item embeddings %s from %s", embeddings.shape, emb_source["file"])
    names_override = _read_names(Path(config.names)) if config.names else None

    cfg = asdict(config) | {"embeddings": emb_source and emb_source["digest"],
                            "names": names_override}
    stage_config = {"taxonomy": cfg, "data": asdict(data) | {"dataset_name": ds.name, "inputs": ds.input_digests()},
                    "layout": LAYOUT_VERSION}

    def build(tmp: Path) -> dict:
        ctx = Context(split, config, embeddings)
        induced = METHODS[config.method](ctx)
        vocab = name_vocabulary(induced, split, config, l1_values, names_override)
        write_folder(tmp, ds, vocab, config.field, header)
        sizes = np.bincount([g for gs in induced.groups for g in gs], minlength=induced.K)
        manifest = {
            "dataset": ds.name,
            "method": config.method,
            "field": config.field,
            "K": induced.K,
            "L1": len(vocab["taxonomy"]) if vocab["taxonomy"] else None,
            "categories_per_item": {"mean": float(np.mean([len(g) for g in induced.groups])),
                                    "max": int(max(len(g) for g in induced.groups))},
            "category_sizes": {"min": int(sizes.min()), "median": float(np.median(sizes)), "max": int(sizes.max())},
            "embeddings": emb_source,
            "reads": "train windows only",
            "use": f"--dataset DIR --category-field {config.field}",
        } | induced.info
        return manifest

    folder = artifacts.run_stage(runs, "taxonomy", stage_config, build, fresh=fresh, seed=config.seed)
    if out is None:
        return folder
    with artifacts.publishing(Path(out)) as tmp:
        for f in sorted(folder.iterdir()):
            shutil.copy2(f, tmp / f.name)
    return Path(out).absolute()


def _read_names(path: Path) -> list[str]:
    try:
        names = json.loads(path.read_text())
    except FileNotFoundError:
        raise DataError(f"--names {path}: no such file (expected a JSON list of category names)") from None
    except json.JSONDecodeError as exc:
        raise DataError(f"--names {path}: not valid JSON ({exc})") from None
    if not isinstance(names, list):
        raise DataError(f"--names {path}: expected a JSON list of names, got {type(names).__name__}")
    return names


def _l1_source(config: TaxonomyConfig, ds: Dataset, item_path: Path, fields: list[str]):
    """What the L1 level is built from: None (flat), an int K1, or (values, (n_items, V) membership)."""
    if config.l1 is None or isinstance(config.l1, int):
        return config.l1
    if config.l1 == "taxonomy":
        if ds.taxonomy is None:
            raise ConfigError("--l1 taxonomy needs a taxonomy over the source categories (--taxonomy FILE or "
                              f"{ds.name}.taxonomy.json in the dataset folder)")
        parent = {c: l1 for l1, children in ds.taxonomy.items() for c in children}
        values = list(ds.taxonomy)
        rows = [values.index(parent[c]) for c in ds.categories]
        to_l1 = sp.csr_matrix((np.ones(ds.K), (np.arange(ds.K), rows)), shape=(ds.K, len(values)))
        return values, ds.membership @ to_l1
    if config.l1 == ds.category_field:
        return list(ds.categories), ds.membership
    if config.l1 not in fields:
        raise ConfigError(f"--l1 {config.l1!r}: no such field in {item_path} (fields: {fields}); "
                          "give an integer K1, 'taxonomy' or a token_seq field")
    items = read_atomic(item_path, fields=("item_id", config.l1)).set_index("item_id").loc[list(ds.item_ids)]
    lists = [s.split() for s in items[config.l1].to_numpy()]
    values = sorted({v for vs in lists for v in vs})
    if not values:
        raise DataError(f"{item_path}: field {config.l1!r} (--l1) holds no values")
    index = {v: j for j, v in enumerate(values)}
    r, c, x = [], [], []
    for i, vs in enumerate(lists):
        vs = list(dict.fromkeys(vs))
        for v in vs:
            r.append(i), c.append(index[v]), x.append(1.0 / len(vs))
    return values, sp.csr_matrix((x, (r, c)), shape=(ds.n_items, len(values)))


def group_matrix(groups: list[list[int]], K: int) -> sp.csr_matrix:
    """(n_items, K) membership of the induced groups: m(i, c) = 1/|groups(i)|."""
    r = [i for i, gs in enumerate(groups) for _ in gs]
    c = [g for gs in groups for g in gs]
    x = [1.0 / len(gs) for gs in groups for _ in gs]
    return sp.csr_matrix((x, (r, c)), shape=(len(groups), K))


def name_vocabulary(induced: Induced, split: Split, config: TaxonomyConfig, l1_values, names_override=None) -> dict:
    """Names, L1 parents and descriptions of the induced groups.

    Returns {"names": [K], "taxonomy": {L1: [L2, ...]} or None, "descriptions": [...], "order": [K]}:
    ``order`` lists the groups by size (largest first), the order of ``--names`` and of the descriptions.
    """
    ds = split.dataset
    counts = split.item_train_counts.astype(np.float64)
    G = group_matrix(induced.groups, induced.K)
    weight = sp.diags(counts + 1.0)  # +1: a group of cold items still has dominant categories
    src_mass = np.asarray((G.T @ weight @ ds.membership).todense())
    sizes = np.asarray((G > 0).sum(axis=0)).ravel()
    order = [int(j) for j in np.argsort(-sizes, kind="stable")]
    titles = ds.item_titles if ds.item_titles is not None else np.array([f"item {t}" for t in ds.item_ids], dtype=object)
    score = induced.typicality * np.log1p(counts)[:, None]  # typical and not obscure
    typical = {}
    for c in range(induced.K):
        members = np.flatnonzero(G[:, c].toarray().ravel() > 0)
        typical[c] = [int(i) for i in members[np.argsort(-score[members, c], kind="stable")]]

    names: list[str | None] = [None] * induced.K
    used: set[str] = set()
    for c in order:
        dom = dominant(src_mass[c], ds.categories)
        firsts = [genre_word(g) for g, _ in dom] or ["Misc"]
        seconds = [w for i in typical[c][:20] for w in title_words(titles[i])]
        names[c] = unique_name(firsts, seconds, used)
        used.add(names[c])
    if names_override is not None:
        if len(names_override) != induced.K:
            raise DataError(f"--names: {len(names_override)} names for {induced.K} categories (one per category, "
                            "in the order of the descriptions file: largest first)")
        for j, c in enumerate(order):
            names[c] = names_override[j]
    check_names(names, "--names" if names_override is not None else "generated names")

    parent_of, l1_names = None, None
    if isinstance(l1_values, int):
        parent_of, l1_names = _l1_clusters(induced, l1_values, config.seed, src_mass, typical, titles, ds, set(names))
    elif l1_values is not None:
        values, M1 = l1_values
        mass1 = np.asarray((G.T @ weight @ M1).todense()) if sp.issparse(M1) else G.T @ weight @ M1
        parent_of = [int(np.argmax(mass1[c])) for c in range(induced.K)]
        l1_names = list(values)
    taxonomy = None
    if parent_of is not None:
        check_names(names, "taxonomy", others=l1_names)
        taxonomy = {}
        l1_size = np.bincount(parent_of, weights=sizes, minlength=len(l1_names))
        for p in np.argsort(-l1_size, kind="stable"):
            children = [names[c] for c in order if parent_of[c] == p]
            if children:
                taxonomy[l1_names[p]] = children

    descriptions = []
    for c in order:
        dom = dominant(src_mass[c], ds.categories)
        tops = [str(titles[i]) for i in typical[c][:N_TYPICAL]]
        entry = {
            "name": names[c],
            "l1": None if parent_of is None else l1_names[parent_of[c]],
            "items": int(sizes[c]),
            "train_interactions": int(G[:, c].toarray().ravel().astype(bool) @ counts),
            "dominant": [{"category": g, "share": round(s, 4)} for g, s in dom],
            "typical_titles": tops,
            "description": (f"{int(sizes[c])} items, mostly " + ", ".join(f"{g} ({s:.0%})" for g, s in dom)
                            + "; typical: " + "; ".join(tops)),
        }
        descriptions.append(entry)
    return {"names": names, "taxonomy": taxonomy, "descriptions": descriptions, "order": order, "groups": induced.groups}


def _l1_clusters(induced: Induced, k1: int, seed: int, src_mass, typical, titles, ds: Dataset, used: set[str]):
    """L1 groups by k-means over the L2 directions; each named from its dominant categories and titles."""
    from spectra_rec.taxonomy.cluster import kmeans

    if k1 >= induced.K:
        raise ConfigError(f"--l1 {k1}: must be below the number of non-empty L2 categories ({induced.K})")
    assign, _ = kmeans(induced.centroids, k1, seed=seed)
    present = sorted(set(int(a) for a in assign))
    remap = {a: j for j, a in enumerate(present)}
    parent_of = [remap[int(a)] for a in assign]
    names = []
    for p in range(len(present)):
        kids = [c for c in range(induced.K) if parent_of[c] == p]
        mass = src_mass[kids].sum(axis=0)
        dom = dominant(mass, ds.categories)
        firsts = [genre_word(g) for g, _ in dom] or ["Misc"]
        seconds = [genre_word(g) for g, _ in dom[1:]]
        biggest = sorted(kids, key=lambda c: -len(typical[c]))
        seconds += [w for c in biggest for i in typical[c][:3] for w in title_words(titles[i])]
        name = unique_name(firsts, seconds, used)
        used.add(name)
        names.append(name)
    return parent_of, names


def write_folder(tmp: Path, ds: Dataset, vocab: dict, field: str, header: list[str]) -> None:
    """The dataset folder: .inter/.user copied, .item with ``field`` appended, taxonomy and descriptions JSON."""
    src = Path(ds.source)
    for suffix in (".inter", ".user"):
        if (src / f"{ds.name}{suffix}").exists():
            shutil.copyfile(src / f"{ds.name}{suffix}", tmp / f"{ds.name}{suffix}")
    id_col = [h.split(":", 1)[0] for h in header].index("item_id")
    value = {str(ds.item_ids[i]): " ".join(vocab["names"][g] for g in gs) for i, gs in enumerate(vocab["groups"])}
    lines = (src / f"{ds.name}.item").read_text(encoding="utf-8").split("\n")
    out = ["\t".join(header) + f"\t{field}:token_seq"]
    for line in lines[1:]:
        if not line.strip():
            continue
        tokens = line.split("\t")
        out.append(f"{line}\t{value[tokens[id_col]]}")
    artifacts.write_text(tmp / f"{ds.name}.item", "\n".join(out) + "\n")
    if vocab["taxonomy"] is not None:
        artifacts.write_json(tmp / f"{ds.name}.taxonomy.json", vocab["taxonomy"])
    artifacts.write_json(tmp / f"{ds.name}.descriptions.json", vocab["descriptions"])
