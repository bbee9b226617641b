"""Induced vocabularies: real Faiss k-means, a real torch TopK SAE, leakage, names, bad input, and
the induced folder through the other stages (RecBole backbone, run_fusion with the oracle ceiling)."""

import json
import shutil
import subprocess
import sys
import warnings
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from spectra_rec.cli import main as cli
from spectra_rec.data import load_dataset, split_dataset
from spectra_rec.data.stage import DataConfig
from spectra_rec.data.synthetic import SyntheticConfig, make_synthetic
from spectra_rec.errors import ConfigError, DataError, DataWarning
from spectra_rec.taxonomy import METHODS, TaxonomyConfig
from spectra_rec.taxonomy.build import taxonomy_stage
from spectra_rec.taxonomy.naming import SAFE_NAME, check_names
from spectra_rec.taxonomy.sae import train_topk_sae

PLANTED = SyntheticConfig(n_users=150, n_items=120, n_l1=2, n_l2=3, mean_interactions=25, preferred_categories=1,
                          second_category_rate=0.0, category_names="words", seed=3)
"""Every user draws from one leaf only: items of a leaf co-occur, items of different leaves never do."""


@pytest.fixture(scope="module")
def planted_dir(tmp_path_factory):
    return make_synthetic(tmp_path_factory.mktemp("planted") / "planted", PLANTED, name="planted")


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    return tmp_path_factory.mktemp("runs")


@pytest.fixture(scope="module")
def embeddings_file(planted_dir, tmp_path_factory):
    """Item vectors in dataset order: the planted leaf's direction plus noise (what a trained backbone gives)."""
    ds = load_dataset(planted_dir)
    rng = np.random.default_rng(0)
    leaf = np.asarray(ds.membership.argmax(axis=1)).ravel()
    centers = rng.normal(size=(ds.K, 16))
    path = tmp_path_factory.mktemp("emb") / "item_emb.npy"
    np.save(path, centers[leaf] + 0.3 * rng.normal(size=(ds.n_items, 16)))
    return path


def _config(method, **kw):
    base = {"method": method, "k": 6, "sae_epochs": 150, "dim": 8}
    return TaxonomyConfig(**(base | kw))


def _build(dataset_dir, runs, method, out=None, embeddings=None, **kw):
    cfg = _config(method, embeddings=None if embeddings is None else str(embeddings), **kw)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DataWarning)
        return taxonomy_stage(cfg, DataConfig(dataset=str(dataset_dir)), runs, out=out)


def _purity(ds_src, ds_new) -> float:
    """Share of items whose induced category's majority planted leaf is their own leaf."""
    leaf = np.asarray(ds_src.membership.argmax(axis=1)).ravel()
    got = np.asarray(ds_new.membership.argmax(axis=1)).ravel()
    hits = 0
    for c in np.unique(got):
        members = leaf[got == c]
        hits += np.bincount(members).max()
    return hits / len(leaf)


# ---- contract: every registered method ------------------------------------------------------------


@pytest.mark.parametrize("method", sorted(METHODS))
def test_every_method_writes_a_loadable_dataset_folder(method, planted_dir, runs, embeddings_file, tmp_path):
    out = _build(planted_dir, runs, method, out=tmp_path / "vocab", embeddings=embeddings_file)
    src = load_dataset(planted_dir)
    new = load_dataset(out, category_field="taxon")
    manifest = json.loads((out / "manifest.json").read_text())
    assert new.K == manifest["K"] <= 6 and new.name == src.name
    # interactions are the source's, byte for byte; the old item fields are unchanged
    assert (out / "planted.inter").read_bytes() == (planted_dir / "planted.inter").read_bytes()
    old_lines = (planted_dir / "planted.item").read_text().splitlines()
    new_lines = (out / "planted.item").read_text().splitlines()
    assert [line.rsplit("\t", 1)[0] for line in new_lines] == old_lines
    assert new_lines[0].endswith("\ttaxon:token_seq")
    np.testing.assert_array_equal(new.item_ids, src.item_ids)
    # every item carries at least one category; the membership is 1/|cats(i)|
    per_item = np.diff(new.membership.indptr)
    assert (per_item >= 1).all()
    np.testing.assert_allclose(np.asarray(new.membership.sum(axis=1)).ravel(), 1.0)
    assert all(SAFE_NAME.match(c) for c in new.categories)
    desc = json.loads((out / "planted.descriptions.json").read_text())
    assert sorted(d["name"] for d in desc) == sorted(new.categories)
    assert [d["items"] for d in desc] == sorted((d["items"] for d in desc), reverse=True)
    sizes = dict(zip(new.categories, np.asarray((new.membership > 0).sum(axis=0)).ravel()))
    assert all(sizes[d["name"]] == d["items"] for d in desc)
    # deterministic: a fresh rebuild gives the same bytes
    again = taxonomy_stage(_config(method, embeddings=str(embeddings_file) if embeddings_file else None),
                           DataConfig(dataset=str(planted_dir)), runs, fresh=True, out=tmp_path / "again")
    assert (again / "planted.item").read_bytes() == (out / "planted.item").read_bytes()


@pytest.mark.parametrize("method", ["cooc", "embedding"])
def test_clusters_recover_the_planted_leaves(method, planted_dir, runs, embeddings_file, tmp_path):
    out = _build(planted_dir, runs, method, out=tmp_path / "v", embeddings=embeddings_file)
    assert _purity(load_dataset(planted_dir), load_dataset(out, category_field="taxon")) >= 0.9


@pytest.mark.parametrize("method", sorted(METHODS))
def test_heldout_interactions_change_nothing_in_the_vocabulary(method, planted_dir, runs, embeddings_file, tmp_path):
    """Every held-out interaction is replaced by another item (same user, same time, so the same train
    windows): the induced folder's item file, taxonomy and descriptions are byte-identical."""
    ds = load_dataset(planted_dir)
    split = split_dataset(ds)
    changed = tmp_path / "changed" / "planted"
    shutil.copytree(planted_dir, changed)
    rng = np.random.default_rng(1)
    lines = (planted_dir / "planted.inter").read_text().splitlines()
    held = set()
    order = np.lexsort((ds.inter_item, ds.inter_time, ds.inter_user))
    for row, train in zip(order, split.is_train):
        if not train:
            held.add(int(row))
    rows = [lines[0]]
    for r, line in enumerate(lines[1:]):
        u, i, rating, t = line.split("\t")
        if r in held:
            i = f"i{rng.integers(ds.n_items)}"
        rows.append("\t".join((u, i, rating, t)))
    (changed / "planted.inter").write_text("\n".join(rows) + "\n")
    moved = split_dataset(load_dataset(changed))
    assert (moved.item[~moved.is_train] != split.item[~split.is_train]).mean() > 0.5  # the change is real
    np.testing.assert_array_equal(moved.item[moved.is_train], split.item[split.is_train])

    a = _build(planted_dir, runs, method, out=tmp_path / "a", embeddings=embeddings_file, l1=2)
    b = _build(changed, runs, method, out=tmp_path / "b", embeddings=embeddings_file, l1=2)
    for f in ("planted.item", "planted.taxonomy.json", "planted.descriptions.json"):
        assert (a / f).read_bytes() == (b / f).read_bytes(), f


# ---- SAE ------------------------------------------------------------------------------------------


def test_topk_sae_codes_dead_and_duplicate_features_match_their_definitions():
    rng = np.random.default_rng(0)
    X = rng.normal(size=(300, 12))
    res = train_topk_sae(X, n_features=20, topk=3, epochs=60, seed=0, duplicate_cosine=0.5)
    assert res.codes.shape == (300, 20) and (res.codes >= 0).all()
    assert ((res.codes > 0).sum(axis=1) <= 3).all()
    np.testing.assert_array_equal(res.dead, np.flatnonzero((res.codes > 0).sum(axis=0) == 0))
    np.testing.assert_allclose(np.linalg.norm(res.decoder, axis=1), 1.0, atol=1e-5)
    live = [f for f in range(20) if f not in set(res.dead)]
    expected = {(a, b) for ai, a in enumerate(live) for b in live[ai + 1:]
                if res.decoder[a] @ res.decoder[b] >= 0.5}
    assert {(a, b) for a, b, _ in res.duplicates} == expected
    assert 0.0 < res.explained <= 1.0
    again = train_topk_sae(X, n_features=20, topk=3, epochs=60, seed=0, duplicate_cosine=0.5)
    np.testing.assert_array_equal(again.codes, res.codes)  # seeded: same codes


def test_sae_items_carry_several_intents_and_the_manifest_reports_features(planted_dir, runs, tmp_path):
    out = _build(planted_dir, runs, "sae", out=tmp_path / "sae", sae_topk=2, k=8)
    new = load_dataset(out, category_field="taxon")
    m = json.loads((out / "manifest.json").read_text())["sae"]
    assert m["features"] == 8 and m["n_dead"] == len(m["dead_features"]) == 8 - new.K
    per_item = np.diff(new.membership.indptr)
    assert per_item.max() <= 2 and (per_item == 2).any()
    assert m["n_duplicates"] == len(m["duplicates"])


def test_sae_with_more_than_half_its_features_dead_warns_with_the_count(planted_dir, runs, tmp_path, caplog):
    ds = load_dataset(planted_dir)
    rng = np.random.default_rng(0)
    two = rng.normal(size=(2, 8))  # two directions only: a 1-sparse code needs two features
    emb = two[np.arange(ds.n_items) % 2] + 0.01 * rng.normal(size=(ds.n_items, 8))
    np.save(tmp_path / "two.npy", emb)
    with caplog.at_level("WARNING"):
        out = _build(planted_dir, runs, "sae", out=tmp_path / "o", embeddings=tmp_path / "two.npy",
                     sae_input="embedding", k=12, sae_topk=1)
    m = json.loads((out / "manifest.json").read_text())["sae"]
    assert m["n_dead"] > 6
    assert f"sae: {m['n_dead']} of 12 features are dead (more than half)" in caplog.text


# ---- L1 levels and names --------------------------------------------------------------------------


def test_l1_from_the_source_field_is_each_categorys_dominant_source_category(planted_dir, runs, tmp_path):
    out = _build(planted_dir, runs, "cooc", out=tmp_path / "h", l1="class")
    src, new = load_dataset(planted_dir), load_dataset(out, category_field="taxon")
    assert new.taxonomy is not None and set(new.taxonomy) <= set(src.categories)
    counts = split_dataset(src).item_train_counts + 1.0  # train popularity (+1) weights each member
    for l1, children in new.taxonomy.items():
        for c in children:
            members = np.flatnonzero(new.membership[:, new.categories.index(c)].toarray().ravel() > 0)
            mass = sum(counts[i] * src.membership[i].toarray().ravel() for i in members)  # one cluster per item
            assert src.categories[int(np.argmax(mass))] == l1


def test_l1_from_the_source_taxonomy_is_the_parent_of_the_dominant_source_category(planted_dir, runs, tmp_path):
    out = _build(planted_dir, runs, "cooc", out=tmp_path / "t", l1="taxonomy")
    src, new = load_dataset(planted_dir), load_dataset(out, category_field="taxon")
    parent = {c: l1 for l1, kids in src.taxonomy.items() for c in kids}
    desc = {d["name"]: d for d in json.loads((out / "planted.descriptions.json").read_text())}
    for l1, children in new.taxonomy.items():
        assert l1 in src.taxonomy
        for c in children:
            assert parent[desc[c]["dominant"][0]["category"]] == l1 == desc[c]["l1"]


def test_l1_clusters_give_a_two_level_taxonomy_that_the_loader_and_hier_read(planted_dir, runs, tmp_path):
    out = _build(planted_dir, runs, "cooc", out=tmp_path / "h2", l1=2)
    new = load_dataset(out, category_field="taxon")
    assert len(new.taxonomy) == 2 and sum(map(len, new.taxonomy.values())) == new.K
    check_names(list(new.categories), "test", others=list(new.taxonomy))
    # the hierarchical readout probes it on a real (tiny, random) Qwen3: top-1 branch per user
    from spectra_rec.probe.backends.hf import HFBackend
    from spectra_rec.probe.prompts import PromptBuilder
    from spectra_rec.probe.readouts import HierarchicalReadout
    from spectra_rec.testing.tiny import tiny_model_and_tokenizer

    split = split_dataset(new)
    model, tok = tiny_model_and_tokenizer(new)
    backend = HFBackend(model, tok, batch_size=new.K)
    builder = PromptBuilder(new, split, tok, backend.max_length, 10)
    readout = HierarchicalReadout(branches="top:1")
    readout.prepare(builder)
    users = split.eval_users[:4]
    res = readout.score(backend, [builder.history(int(u), readout.frame, readout.reserve) for u in users])
    for r in res:
        assert r.probs.shape == (new.K,) and r.probs.sum() == pytest.approx(1.0)
        assert r.extra["n_branches"] == 1
        assert r.extra["n_prompts"] - len(new.taxonomy) in {len(v) for v in new.taxonomy.values()}


def test_generated_names_are_three_tokens_each_for_the_default_tokenizer(planted_dir, runs, tmp_path):
    """The tokenizer the align stage builds forces each name piece to one token: every name is
    `` <Genre>``, ``-``, ``<Word>`` after the answer cue, so no name is a token prefix of another."""
    from spectra_rec.testing.tiny import tiny_tokenizer
    from spectra_rec.text.templates import ANSWER_CUE, answer

    out = _build(planted_dir, runs, "cooc", out=tmp_path / "n", k=6)
    new = load_dataset(out, category_field="taxon")
    tok = tiny_tokenizer(new)
    ctx = tok("Question: which category?" + ANSWER_CUE)["input_ids"]
    seqs = []
    for c in new.categories:
        full = tok("Question: which category?" + ANSWER_CUE + answer(c))["input_ids"]
        assert full[: len(ctx)] == ctx
        seqs.append(tuple(full[len(ctx):]))
        assert len(seqs[-1]) == 3, (c, tok.convert_ids_to_tokens(list(seqs[-1])))
    assert len(set(seqs)) == len(seqs)


# ---- bad input: one line, exit 2 ------------------------------------------------------------------


def _cli_error(argv, capsys) -> str:
    assert cli(argv) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "Traceback" not in err
    return err


def test_bad_inputs_are_one_line_errors_naming_the_argument(planted_dir, runs, tmp_path, capsys):
    base = ["taxonomy", "--dataset", str(planted_dir), "--runs", str(runs), "--dim", "8"]
    assert "--k must be an integer >= 2" in _cli_error(base + ["--k", "1"], capsys)
    assert "--k must be between 2 and the number of items (120), got 500" in _cli_error(base + ["--k", "500"], capsys)
    np.save(tmp_path / "short.npy", np.zeros((7, 4)))
    err = _cli_error(base + ["--method", "embedding", "--embeddings", str(tmp_path / "short.npy")], capsys)
    assert "short.npy: 7 rows, expected one per item of the dataset (120)" in err
    (tmp_path / "names.json").write_text(json.dumps(["Same-Name"] * 6))
    err = _cli_error(base + ["--k", "6", "--names", str(tmp_path / "names.json")], capsys)
    assert "L2 name 'Same-Name' collides (categories" in err
    (tmp_path / "bad.json").write_text(json.dumps([f"Bad, name {j}" for j in range(6)]))
    assert "is not prompt-safe" in _cli_error(base + ["--k", "6", "--names", str(tmp_path / "bad.json")], capsys)
    assert "--l1 'nosuch': no such field" in _cli_error(base + ["--l1", "nosuch"], capsys)
    assert "--field 'class' already exists" in _cli_error(base + ["--field", "class"], capsys)
    err = _cli_error(base + ["--method", "embedding", "--runs", str(tmp_path / "empty-runs")], capsys)
    assert "no cached SASRec backbone of this dataset" in err


def test_user_names_replace_the_generated_ones_in_size_order(planted_dir, runs, tmp_path, capsys):
    first = _build(planted_dir, runs, "cooc", out=tmp_path / "g")
    desc = json.loads((first / "planted.descriptions.json").read_text())
    names = [f"Leaf-N{j}" for j in range(len(desc))]
    (tmp_path / "names.json").write_text(json.dumps(names))
    out = _build(planted_dir, runs, "cooc", out=tmp_path / "u", names=str(tmp_path / "names.json"))
    renamed = json.loads((out / "planted.descriptions.json").read_text())
    assert [d["name"] for d in renamed] == names
    assert [d["items"] for d in renamed] == [d["items"] for d in desc]


# ---- end to end: RecBole backbone, embeddings from its cache, run_fusion with the ceiling ----------

TINY = {"hidden_size": 16, "inner_size": 32, "n_layers": 1, "n_heads": 1, "train_batch_size": 256}


@pytest.fixture(scope="module")
def syn_dir(tmp_path_factory):
    return make_synthetic(tmp_path_factory.mktemp("syn") / "syn",
                          SyntheticConfig(n_users=120, n_items=150, mean_interactions=25, seed=5))


def _fusion(dataset, runs, **kw):
    from fusion.pipeline import FusionConfig

    base = dict(model="SASRec", dataset=str(dataset), prior="uhf", epochs=1, runs=runs, n_boot=100,
                backbone_overrides=TINY)
    return FusionConfig(**(base | kw))


def test_run_fusion_on_an_induced_folder_reports_the_oracle_ceiling(syn_dir, tmp_path):
    from fusion.pipeline import run_fusion
    from fusion.report import CEILING_COLUMN, console_table, write_report

    runs = tmp_path / "runs"
    # the embedding method reads the cached backbone of the source dataset without importing RecBole
    run_fusion(_fusion(syn_dir, runs, w=0.0, candidate_sets=("neg99",), ceiling=False))
    code = ("import sys; from spectra_rec.cli import main; "
            f"rc = main(['taxonomy', '--dataset', {str(syn_dir)!r}, '--runs', {str(runs)!r}, '--method', "
            f"'embedding', '--k', '8', '--l1', '2', '--out', {str(tmp_path / 'vocab')!r}]); "
            "assert 'recbole' not in sys.modules; sys.exit(rc)")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          cwd=Path(__file__).resolve().parents[2])
    assert proc.returncode == 0, proc.stderr[-2000:]
    vocab = tmp_path / "vocab"
    manifest = json.loads((vocab / "manifest.json").read_text())
    assert manifest["embeddings"]["backbone"].startswith(str(runs / "backbone"))

    cfg = _fusion(vocab, runs, category_field="taxon", out=tmp_path / "fused")
    run = run_fusion(cfg)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DataWarning)
        results = write_report(run, cfg.out)
    assert run.data.K == manifest["K"]
    ceiling = json.loads((cfg.out / "results.json").read_text())["ceiling"]
    assert ceiling["uses_heldout"] is True and "held-out" in ceiling["note"]
    table = console_table(results, 10)
    assert CEILING_COLUMN in table and "oracle prior: the user's held-out window itself" in table
    assert "oracle prior" in (cfg.out / "results.md").read_text()

    # the ceiling is exactly what the oracle prior gets as the run's own prior (same selection rule)
    oracle = run_fusion(replace(cfg, prior="oracle", out=tmp_path / "oracle"))
    for name, c in ceiling["candidates"].items():
        r = oracle.sets[name]
        assert (c["w"], c["normalization"]) == (r.w, r.normalization)
        for s, v in c["lift"].items():
            assert v["NDCG@10"] == pytest.approx(r.lift[s]["relative"], nan_ok=True)
            prior_lift = results["candidates"][name]["lift"][s]["NDCG@10"]
            if v["NDCG@10"] > 0:
                assert c["room_used"][s] == pytest.approx(prior_lift / v["NDCG@10"])
    assert oracle.ceiling is oracle.result

    # switching it off removes the one field and changes nothing else
    off = run_fusion(replace(cfg, ceiling=False, out=tmp_path / "off"))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DataWarning)
        plain = write_report(off, tmp_path / "off")
    assert plain["ceiling"] is None
    strip = lambda d: {k: v for k, v in d.items() if k not in ("ceiling", "config")}  # noqa: E731
    assert json.dumps(strip(plain), default=str) == json.dumps(strip(results), default=str)
    assert {k: v for k, v in plain["config"].items() if k not in ("ceiling", "out")} == \
        {k: v for k, v in results["config"].items() if k not in ("ceiling", "out")}


def test_config_refuses_bad_values_naming_the_field():
    with pytest.raises(ConfigError, match="--method 'nope' unknown; options"):
        TaxonomyConfig(method="nope")
    with pytest.raises(ConfigError, match=r"--l1 K1 must be an integer in \[2, --k\)"):
        TaxonomyConfig(k=10, l1=10)
    with pytest.raises(ConfigError, match="--sae-topk must be below --k"):
        TaxonomyConfig(k=4, sae_topk=4)
    with pytest.raises(DataError, match="collides"):
        check_names(["A-B", "A-B"], "x")
