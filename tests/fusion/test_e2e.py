"""End to end: RecBole really trains tiny backbones on synthetic data; Faiss really retrieves."""

import json
import warnings

import numpy as np
import pandas as pd
import pytest

from fusion.backbones import BackboneConfig, backbone_stage, load_recbole_model
from fusion.candidates import retrieval_candidates
from fusion.pipeline import FusionConfig, run_fusion
from fusion.report import write_report
from spectra_rec.data.stage import DataConfig, data_stage
from spectra_rec.data.synthetic import SyntheticConfig, make_synthetic
from spectra_rec.errors import ConfigError, DataWarning, PriorTableError
from spectra_rec.priors.table import PriorTable

TINY = {
    "SASRec": {"hidden_size": 16, "inner_size": 32, "n_layers": 1, "n_heads": 1, "train_batch_size": 256},
    "GRU4Rec": {"embedding_size": 16, "hidden_size": 16, "train_batch_size": 256},
}


@pytest.fixture(scope="module")
def syn_dir(tmp_path_factory):
    return make_synthetic(
        tmp_path_factory.mktemp("syn"), SyntheticConfig(n_users=120, n_items=150, mean_interactions=25, seed=5)
    )


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    return tmp_path_factory.mktemp("runs")


def _config(syn_dir, runs, model="SASRec", **kw):
    base = dict(model=model, dataset=str(syn_dir), prior="uhf", epochs=1, runs=runs, n_boot=100,
                backbone_overrides=TINY[model])
    return FusionConfig(**(base | kw))


@pytest.fixture(scope="module")
def sasrec(syn_dir, runs):
    cfg = _config(syn_dir, runs, out=runs / "out-sasrec")
    run = run_fusion(cfg)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DataWarning)
        results = write_report(run, cfg.out)
    return cfg, run, results


def test_results_json_has_the_documented_schema_and_files(sasrec):
    cfg, run, results = sasrec
    on_disk = json.loads((cfg.out / "results.json").read_text())
    for key in ("model", "dataset", "prior", "w", "w_grid", "candidates"):
        assert key in on_disk
    assert on_disk["model"] == "SASRec" and on_disk["prior"] == "uhf"
    assert 0.0 in on_disk["w_grid"] and 1.0 in on_disk["w_grid"]
    for cset in ("neg99", "neg999", "retrieval"):
        c = on_disk["candidates"][cset]
        for side in ("base", "fused"):
            for s in ("overall", "head", "mid", "tail"):
                assert set(c[side][s]) >= {"NDCG@10", "HR@10", "MRR@10", "n"}
        for s in ("overall", "head", "mid", "tail"):
            assert set(c["lift"][s]) >= {"NDCG@10", "ci95", "p_value"}
        n = c["base"]
        assert n["overall"]["n"] == n["head"]["n"] + n["mid"]["n"] + n["tail"]["n"] == run.cohort_sizes["test"]
    for f in ("results.md", "per_user.csv", "sweep.png", "slices.png"):
        assert (cfg.out / f).stat().st_size > 0
    timing = json.loads((cfg.out / "timing.json").read_text())  # run-to-run figures live outside results.json
    assert {"data", "backbone", "prior", "candidates", "evaluate"} <= set(timing["stages_s"])
    assert "train_seconds" not in on_disk["backbone"]["recbole"] and timing["backbone"]["train_seconds"] >= 0
    assert not [p.name for p in cfg.out.parent.iterdir() if ".tmp-" in p.name or ".old-" in p.name]


def test_reported_cohort_is_disjoint_from_the_dev_cohort_that_chose_w(sasrec):
    cfg, run, _ = sasrec
    df = pd.read_csv(cfg.out / "per_user.csv", dtype={"user_id": str})
    one = df[df.candidates == "neg99"]
    dev, test = set(one.user_id[one.cohort == "dev"]), set(one.user_id[one.cohort == "test"])
    assert dev and test and not dev & test


def test_summary_means_equal_per_user_csv(sasrec):
    cfg, _, results = sasrec
    df = pd.read_csv(cfg.out / "per_user.csv")
    sel = (df.candidates == "neg999") & (df.cohort == "test") & (df.slice == "head")
    assert results["candidates"]["neg999"]["fused"]["head"]["NDCG@10"] == pytest.approx(df[sel]["fused_NDCG@10"].mean())


def test_w0_reproduces_the_base_metrics_case_by_case(syn_dir, runs, sasrec):
    run = run_fusion(_config(syn_dir, runs, w=0.0))
    for r in run.sets.values():
        for m in r.base:
            assert np.array_equal(r.base[m], r.fused[m])


@pytest.fixture(scope="module")
def gru4rec(syn_dir, runs):
    return run_fusion(_config(syn_dir, runs, model="GRU4Rec", w=0.0))


@pytest.mark.parametrize("model", ["SASRec", "GRU4Rec"])
def test_backbones_beat_a_random_ranker_on_synthetic_data(model, syn_dir, runs):
    """Neg99: a random ranker puts the target at each of the 100 ranks with probability 1/100, so its
    expected NDCG@10 is sum_{r=1..10} 1/100 / log2(r + 1) = 0.045 and its HR@10 is 0.1.

    One epoch of the tiny models (the other tests' setting) is not enough: measured here, NDCG@10
    0.047 (SASRec), barely above random. Six epochs at learning rate 0.01 learn the data (about 0.3)."""
    overrides = TINY[model] | {"learning_rate": 0.01, "stopping_step": 100}
    run = run_fusion(_config(syn_dir, runs, model=model, epochs=6, w=0.0, candidate_sets=("neg99",),
                             backbone_overrides=overrides))
    r = run.sets["neg99"]
    random_ndcg = sum(1 / 100 / np.log2(rank + 1) for rank in range(1, 11))
    ndcg, hr = r.base["NDCG@10"][r.test], r.base["HR@10"][r.test]
    assert ndcg.mean() > 2 * random_ndcg and hr.mean() > 0.2, (ndcg.mean(), hr.mean())
    from scipy.stats import wilcoxon

    assert wilcoxon(ndcg - random_ndcg, alternative="greater").pvalue < 1e-3


@pytest.mark.parametrize("name", ["SASRec", "GRU4Rec"])
def test_exact_faiss_matches_recbole_full_sort_predict(name, syn_dir, runs, sasrec, gru4rec):
    import torch

    run = sasrec[1] if name == "SASRec" else gru4rec
    ds, split, _ = data_stage(DataConfig(dataset=str(syn_dir)), runs)
    model, rdata, rconfig, test_data = load_recbole_model(run.backbone.folder, split, BackboneConfig(name, 1, overrides=TINY[name]))
    batch = next(iter(test_data))[0]
    with torch.no_grad():
        rb_scores = model.full_sort_predict(batch).numpy()
    users = ds.user_index(rdata.id2token(rdata.uid_field, batch[rdata.uid_field].numpy()))
    rb_items = rdata.token2id(rdata.iid_field, list(ds.item_ids))
    ours = run.backbone.full_scores(users)
    np.testing.assert_allclose(ours, rb_scores[:, rb_items], rtol=1e-4, atol=1e-4)
    # Faiss IndexFlatIP top-N == full sorting of RecBole's scores (train items removed from both)
    cands = retrieval_candidates(split, users, run.backbone.user_repr, run.backbone.item_emb, top_n=20)
    for r, u in enumerate(users):
        s = rb_scores[r, rb_items].copy()
        s[split.train_items(u)] = -np.inf
        expected = np.argsort(-s, kind="stable")[:20]
        got = cands.items[r]
        # equal as sets up to float ties at the cut-off
        assert len(set(expected) ^ set(got)) <= 2 * int(np.isclose(s[expected[-1]], s[np.argsort(-s)[20]]))


def test_warm_rerun_reuses_the_backbone(syn_dir, runs, sasrec):
    _, run, _ = sasrec
    manifest = json.loads((run.backbone.folder / "manifest.json").read_text())
    again = run_fusion(_config(syn_dir, runs))
    assert again.backbone.folder == run.backbone.folder
    assert json.loads((run.backbone.folder / "manifest.json").read_text())["created"] == manifest["created"]


def test_corrupt_cached_backbone_is_retrained_with_a_warning(syn_dir, runs):
    ds, split, folder = data_stage(DataConfig(dataset=str(syn_dir)), runs)
    cfg = BackboneConfig("GRU4Rec", epochs=1, overrides=TINY["GRU4Rec"])
    first = backbone_stage(split, folder, cfg, runs)
    good = (first.folder / "item_emb.npy").read_bytes()
    flipped = bytearray(good)
    flipped[-3] ^= 0x01  # still a valid .npy: only the digest recorded at write time catches it
    for damaged in (b"not a numpy file", b"", good[: len(good) // 2], bytes(flipped)):
        (first.folder / "item_emb.npy").write_bytes(damaged)
        with pytest.warns(DataWarning, match="missing or corrupt"):
            second = backbone_stage(split, folder, cfg, runs)
        assert second.item_emb.shape == (ds.n_items, 16)
        np.testing.assert_array_equal(second.item_emb, first.item_emb)  # retrained: same seed, same arrays


def test_recbole_evaluator_scores_the_fused_wrapper(syn_dir, runs, sasrec, tmp_path, monkeypatch):
    from fusion.recbole_compat import quiet_recbole
    from fusion.wrapper import FusedRecBoleModel
    from recbole.utils import get_trainer

    monkeypatch.chdir(tmp_path)
    _, run, _ = sasrec
    ds, split, _ = data_stage(DataConfig(dataset=str(syn_dir)), runs)
    model, rdata, rconfig, test_data = load_recbole_model(run.backbone.folder, split, BackboneConfig("SASRec", 1, overrides=TINY["SASRec"]))
    oracle = __import__("spectra_rec.priors", fromlist=["history_prior"]).history_prior(split, "oracle")
    with quiet_recbole():
        trainer = get_trainer(rconfig["MODEL_TYPE"], "SASRec")(rconfig, model)
        inner = trainer.evaluate(test_data, load_best_model=False)
        at0 = get_trainer(rconfig["MODEL_TYPE"], "SASRec")(rconfig, FusedRecBoleModel(model, rdata, oracle, ds, 0.0))
        assert at0.evaluate(test_data, load_best_model=False) == inner
        at1 = get_trainer(rconfig["MODEL_TYPE"], "SASRec")(rconfig, FusedRecBoleModel(model, rdata, oracle, ds, 0.5))
        fused = at1.evaluate(test_data, load_best_model=False)
    assert fused["ndcg@10"] != inner["ndcg@10"]
    assert not (tmp_path / "log_tensorboard").exists()  # nothing written into the working directory


def test_the_fused_wrapper_scores_by_the_named_fusion_rule(syn_dir, runs, sasrec, monkeypatch):
    import torch

    from fusion.blend import FUSION_RULES
    from fusion.wrapper import FusedRecBoleModel
    from spectra_rec.priors import history_prior

    _, run, _ = sasrec
    ds, split, _ = data_stage(DataConfig(dataset=str(syn_dir)), runs)
    model, rdata, _, test_data = load_recbole_model(run.backbone.folder, split, BackboneConfig("SASRec", 1, overrides=TINY["SASRec"]))
    prior = history_prior(split, "uhf")
    interaction = next(iter(test_data))[0]
    with torch.no_grad():
        base = model.full_sort_predict(interaction).double().numpy().reshape(len(interaction), -1)
        fused = FusedRecBoleModel(model, rdata, prior, ds, 0.3).full_sort_predict(interaction).numpy()
    # independent: affinity P M^T over the catalogue in RecBole's item order, minmax per row without [PAD]
    items = rdata.field2id_token[rdata.iid_field][1:]
    users = rdata.field2id_token[rdata.uid_field][interaction[model.USER_ID].numpy()]
    aff = prior.matrix(ds, ds.user_index(users)) @ ds.membership[ds.item_index(items)].toarray().T

    def minmax(x):
        return (x - x.min(1, keepdims=True)) / (x.max(1, keepdims=True) - x.min(1, keepdims=True))

    assert np.all(np.isneginf(fused[:, 0]))
    np.testing.assert_allclose(fused[:, 1:], 0.7 * minmax(base[:, 1:]) + 0.3 * minmax(aff), rtol=1e-6, atol=1e-6)

    monkeypatch.setitem(FUSION_RULES, "base-only", lambda b, a, w, mask, norm: np.where(mask, b, -np.inf))
    with torch.no_grad():
        own = FusedRecBoleModel(model, rdata, prior, ds, 0.3, rule="base-only").full_sort_predict(interaction).numpy()
    np.testing.assert_array_equal(own[:, 1:], base[:, 1:].astype(np.float32))
    with pytest.raises(ConfigError, match=r"unknown fusion rule 'nope'; options: \[.*'linear'"):
        FusedRecBoleModel(model, rdata, prior, ds, 0.3, rule="nope")


def test_bad_inputs_give_clear_errors(syn_dir, runs, tmp_path):
    with pytest.raises(ConfigError, match=r"w must be in \[0, 1\], got 1.5"):
        FusionConfig(w=1.5)
    with pytest.raises(ConfigError, match="w_grid must include 0 and 1"):
        FusionConfig(w_grid=(0.2, 0.5))
    with pytest.raises(ConfigError, match="unknown backbone --model 'NoSuchRec'; supported: .*SASRec"):
        run_fusion(_config(syn_dir, runs, model="SASRec") .__class__(model="NoSuchRec", dataset=str(syn_dir), runs=runs))
    ds, split, _ = data_stage(DataConfig(dataset=str(syn_dir)), runs)
    bad = PriorTable(ds.user_ids, ("x", "y"), np.full((ds.n_users, 2), 0.5))
    bad.save(tmp_path / "bad.parquet")
    with pytest.raises(PriorTableError, match="unknown categories \\['x', 'y'\\]; missing categories"):
        run_fusion(_config(syn_dir, runs, prior=str(tmp_path / "bad.parquet")))
    few = PriorTable(ds.user_ids[:5], ds.categories, np.full((5, ds.K), 1 / ds.K))
    few.save(tmp_path / "few.csv")
    with pytest.raises(PriorTableError, match="no row for .* user\\(s\\) of the cohort"):
        run_fusion(_config(syn_dir, runs, prior=str(tmp_path / "few.csv")))
    with pytest.raises(ConfigError, match="neither a prior name"):
        run_fusion(_config(syn_dir, runs, prior="nonsense"))


def test_cli_exits_2_with_a_message_for_bad_w(capsys, caplog):
    import run_fusion as entry

    assert entry.main(["--w", "2"]) == 2
    assert "w must be in [0, 1], got 2.0" in caplog.text


def test_the_default_prior_is_spectras_pool_and_pools_name_their_folder_and_take_the_probe_flags():
    import run_fusion as entry

    from fusion.pipeline import DEFAULT_PRIOR

    args = entry.parse_args([])
    assert args.prior == DEFAULT_PRIOR == FusionConfig().prior == "spectra-name*uhf*exposure"
    assert FusionConfig().output_dir("ml-100k").name == "ml-100k-SASRec-spectra-name+uhf+exposure"
    assert FusionConfig(prior="runs/x/t.parquet*uhf").output_dir("d").name == "d-SASRec-t+uhf"
    assert FusionConfig(prior="runs/x/t.csv").output_dir("d").name == "d-SASRec-t"
    assert entry.probe_engine(entry.parse_args(["--prior", "spectra-name*uhf", "--backend", "vllm"]))[:2] == ("vllm", "local")
    with pytest.raises(ConfigError, match=r"--backend applies to --prior spectra\|.* \(alone or in a pool\), got --prior uhf\*markov"):
        entry.probe_engine(entry.parse_args(["--prior", "uhf*markov", "--backend", "vllm"]))


@pytest.mark.parametrize("model", ["SASRec", "GRU4Rec"])
def test_shipped_yaml_layers_build_a_recbole_config_for_ml100k(model, tmp_path):
    from fusion.backbones import config_layers, recbole_config

    layers = [p.name for p in config_layers(model, "ml-100k")]
    assert layers[0] == "base.yaml" and f"{model}.yaml" in layers
    cfg = recbole_config(model, tmp_path, "ml-100k", BackboneConfig(model), tmp_path)
    assert cfg["dataset"] == "ml-100k-split" and cfg["loss_type"] == "CE" and cfg["MAX_ITEM_LIST_LENGTH"] >= 10


def test_each_candidate_set_picks_its_own_dev_choice_unless_one_set_is_shared(syn_dir, runs, sasrec):
    """Default select_on='each' with the 1se rule: per set, w is at most the dev-best w (the max rule,
    recorded in info); selection='max' takes the dev best; select_on='neg99' shares neg99's choice."""
    from fusion.evaluate import select

    cfg, run, results = sasrec
    assert cfg.select_on == "each" and cfg.selection == "1se"
    for name, r in run.sets.items():
        norm, w, _ = select(r.sweep, cfg.w_grid)
        assert r.info["dev_best_max_rule"]["w"] == w and r.info["dev_best_max_rule"]["normalization"] == norm
        assert r.w <= w and r.info["selection_rule"] == "1se"
        assert results["candidates"][name]["w"] == r.w
    assert results["w_selected_on"].startswith("dev cohort, each candidate set")
    assert results["w_selected_on"].endswith("one-standard-error rule")
    best = run_fusion(_config(syn_dir, runs, selection="max"))
    for name, r in best.sets.items():
        assert (r.normalization, r.w) == select(r.sweep, cfg.w_grid)[:2], name
    shared = run_fusion(_config(syn_dir, runs, select_on="neg99", selection="max"))
    assert {(r.w, r.normalization) for r in shared.sets.values()} == {(best.sets["neg99"].w, best.sets["neg99"].normalization)}
    with pytest.raises(ConfigError, match="select_on must be 'each' or one of"):
        _config(syn_dir, runs, select_on="neg5")
    with pytest.raises(ConfigError, match="selection must be one of"):
        _config(syn_dir, runs, selection="median")


def test_a_pool_prior_fits_its_weights_on_the_cohort_that_chose_w(syn_dir, runs, sasrec):
    from spectra_rec.priors.registry import resolve_prior

    run = run_fusion(_config(syn_dir, runs, prior="uhf*popularity", seed=1, w=0.5))
    _, split, _ = data_stage(DataConfig(dataset=str(syn_dir)), runs)
    want = resolve_prior("uhf*popularity", split, cohorts=(0.2, 1))  # the fusion's own dev cohort (seed 1)
    assert run.prior.method == "uhf*popularity" and run.prior.meta["pool"]["cohort_seed"] == 1
    assert run.prior.meta["pool"]["weights"] != resolve_prior("uhf*popularity", split).meta["pool"]["weights"]
    np.testing.assert_allclose(run.prior.probs, want.probs, atol=1e-12)
