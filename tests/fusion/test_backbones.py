"""Backbone training: anomaly mode stays off, early stopping is reported, bad settings are refused.

Tiny RecBole models on the synthetic dataset (a few seconds each on two cores).
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
import warnings

import pytest

from fusion.backbones import BackboneConfig, backbone_stage
from spectra_rec.data.stage import DataConfig, data_stage
from spectra_rec.data.synthetic import SyntheticConfig, make_synthetic
from spectra_rec.errors import ConfigError, ConfigWarning

pytest.importorskip("recbole")

TINY = {"embedding_size": 16, "hidden_size": 16, "train_batch_size": 256}


@pytest.fixture(scope="module")
def syn(tmp_path_factory):
    folder = make_synthetic(
        tmp_path_factory.mktemp("syn"), SyntheticConfig(n_users=80, n_items=100, mean_interactions=20, seed=7)
    )
    runs = tmp_path_factory.mktemp("runs")
    _, split, data_folder = data_stage(DataConfig(dataset=str(folder)), runs)
    return split, data_folder, runs


def test_importing_recbole_models_leaves_anomaly_mode_off_in_a_fresh_process():
    # RecBole's sine.py switches anomaly mode on at import time, for the whole process
    code = textwrap.dedent(
        """
        import torch
        from fusion.recbole_compat import import_recbole
        import_recbole()
        import recbole.model.sequential_recommender  # already imported: must not switch it on again
        from recbole.utils import get_model
        get_model("SASRec")
        print(torch.is_anomaly_enabled())
        """
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip().splitlines()[-1] == "False"


def test_import_recbole_switches_off_what_an_earlier_direct_import_switched_on():
    code = textwrap.dedent(
        """
        import torch
        import fusion.recbole_compat as compat  # numpy aliases only
        import recbole.model.sequential_recommender  # a user's own import: RecBole turns anomaly mode on
        on = torch.is_anomaly_enabled()
        compat.import_recbole()
        print(on, torch.is_anomaly_enabled())
        """
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip().splitlines()[-1] == "True False"


def test_anomaly_mode_is_off_during_training_and_for_later_stages(syn):
    import torch

    split, data_folder, runs = syn
    backbone = backbone_stage(split, data_folder, BackboneConfig("GRU4Rec", epochs=2, overrides=TINY), runs)
    metrics = json.loads((backbone.folder / "recbole_metrics.json").read_text())
    assert metrics["anomaly_mode"] is False  # read inside RecBole's fit, once per epoch
    assert not torch.is_anomaly_enabled()  # what the LLM stages that follow in this process see


def test_debug_flag_turns_anomaly_mode_on_only_while_training_and_keeps_the_cache_key(syn, tmp_path):
    import torch

    split, data_folder, runs = syn
    plain = backbone_stage(split, data_folder, BackboneConfig("GRU4Rec", epochs=1, overrides=TINY), tmp_path)
    debug_cfg = BackboneConfig("GRU4Rec", epochs=1, overrides=TINY, detect_anomaly=True)
    debug = backbone_stage(split, data_folder, debug_cfg, tmp_path, fresh=True)
    assert debug.folder == plain.folder  # a debug switch does not change what is trained
    assert json.loads((debug.folder / "recbole_metrics.json").read_text())["anomaly_mode"] is True
    assert not torch.is_anomaly_enabled()


def test_early_stopping_record_matches_the_valid_curve(syn):
    split, data_folder, runs = syn
    cfg = BackboneConfig("GRU4Rec", epochs=6, patience=0, overrides=TINY | {"learning_rate": 0.05})
    m = json.loads((backbone_stage(split, data_folder, cfg, runs).folder / "recbole_metrics.json").read_text())
    curve = m["valid_curve"]
    assert len(curve) == m["epochs_run"]
    best = max(range(len(curve)), key=lambda i: (curve[i], i))  # RecBole keeps the latest of equal bests
    assert m["best_epoch"] == best + 1
    assert m["valid"]["ndcg@10"] == pytest.approx(curve[best], abs=1e-6)
    # patience 0: RecBole stops at the first epoch that does not reach the best so far
    if m["stopped_early"]:
        assert m["epochs_run"] == m["best_epoch"] + 1
    else:
        assert m["epochs_run"] == 6


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [({"epochs": 0}, r"--epochs must be >= 1, got 0"), ({"patience": -1}, r"--patience must be >= 0, got -1")],
)
def test_bad_epochs_or_patience_are_refused(kwargs, match):
    with pytest.raises(ConfigError, match=match):
        BackboneConfig("SASRec", **kwargs)


def test_cli_refuses_a_negative_patience_with_exit_2(capsys):
    import run_fusion

    assert run_fusion.main(["--patience", "-2"]) == 2


def test_unknown_yaml_key_warns_with_file_and_key(tmp_path, monkeypatch):
    import fusion.backbones as bb

    (tmp_path / "base.yaml").write_text("epochs: 3\nhiden_size: 64\n")
    monkeypatch.setattr(bb, "CONFIG_DIR", tmp_path)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        resolved = bb.resolved_yaml("SASRec", "nothing")
    msgs = [str(w.message) for w in caught if issubclass(w.category, ConfigWarning)]
    assert resolved == {"epochs": 3, "hiden_size": 64}
    assert len(msgs) == 1 and "base.yaml" in msgs[0] and "'hiden_size'" in msgs[0]


def test_shipped_yaml_layers_have_no_unknown_keys():
    import fusion.backbones as bb

    with warnings.catch_warnings():
        warnings.simplefilter("error", ConfigWarning)
        for model in bb.SUPPORTED_MODELS:
            bb.resolved_yaml(model, "ml-100k")


def test_training_threads_are_recorded_restored_and_left_out_of_the_cache_key(syn, tmp_path):
    import torch

    from fusion.backbones import backbone_stage_config, resolved_threads

    split, data_folder, _ = syn
    before = torch.get_num_threads()
    assert resolved_threads(BackboneConfig("GRU4Rec")) == 1  # recurrent: one thread by default
    assert resolved_threads(BackboneConfig("SASRec")) == before
    assert resolved_threads(BackboneConfig("SASRec", threads=3)) == 3
    one = backbone_stage(split, data_folder, BackboneConfig("GRU4Rec", epochs=1, overrides=TINY), tmp_path)
    assert json.loads((one.folder / "recbole_metrics.json").read_text())["threads"] == 1
    assert torch.get_num_threads() == before  # restored for the stages that follow
    keys = {json.dumps(backbone_stage_config(BackboneConfig("GRU4Rec", overrides=TINY, threads=n), split.dataset.name,
                                             data_folder), sort_keys=True) for n in (None, 1, 2)}
    assert len(keys) == 1
    with pytest.raises(ConfigError, match=r"--backbone-threads must be >= 1, got 0"):
        BackboneConfig(threads=0)
