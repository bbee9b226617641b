"""Bad inputs end in one clear line (exit 2), cache keys cover every input that changes results,
and folders written by someone else cannot run code or be unpickled."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pandas as pd
import pytest

from spectra_rec.data import load_dataset, split_dataset
from spectra_rec.data.stage import data_identity
from spectra_rec.data.synthetic import SyntheticConfig, make_synthetic
from spectra_rec.errors import DataError
from spectra_rec.priors.history import history_prior

SYN = SyntheticConfig(n_users=60, n_items=80, n_l1=2, n_l2=3, mean_interactions=15, seed=3)


@pytest.fixture(scope="module")
def syn(tmp_path_factory):
    root = make_synthetic(tmp_path_factory.mktemp("syn") / "synthetic", SYN)
    ds = load_dataset(root)
    return root, ds, split_dataset(ds)


@pytest.fixture(scope="module")
def good_table(syn, tmp_path_factory):
    _, _, split = syn
    path = tmp_path_factory.mktemp("tables") / "uhf.parquet"
    history_prior(split, "uhf").save(path)
    return path


# ---- corrupt and mismatched inputs: one line, exit 2, before any training ----------------------------
def _bad_tables(good: Path, tmp: Path, categories) -> dict[str, Path]:
    df = pd.read_parquet(good)
    out = {}
    raw = good.read_bytes()
    (p := tmp / "garbage.parquet").write_bytes(b"this is not parquet at all")
    out["corrupt parquet"] = p
    (p := tmp / "truncated.parquet").write_bytes(raw[: len(raw) // 2])
    out["truncated parquet"] = p
    df.to_csv(p := tmp / "full.csv", index=False)
    text = p.read_text()
    (p := tmp / "truncated.csv").write_text(text[: len(text) // 2])
    out["truncated csv"] = p
    (p := tmp / "binary.csv").write_bytes(b"\xff\xfe\x00\x81" * 50)
    out["non-utf8 csv"] = p
    (p := tmp / "dup.csv").write_text(text.splitlines()[0] + f",{categories[0]}\n" +
                                      "\n".join(line + ",0" for line in text.splitlines()[1:]) + "\n")
    out["duplicate column csv"] = p
    import pyarrow as pa
    import pyarrow.parquet as pq

    arrays = [pa.array(df[c]) for c in df.columns] + [pa.array(df[categories[0]])]
    pq.write_table(pa.Table.from_arrays(arrays, names=list(df.columns) + [categories[0]]), p := tmp / "dup.parquet")
    out["duplicate column parquet"] = p
    return out


def test_corrupt_prior_tables_exit_2_naming_the_file_before_the_backbone_trains(syn, good_table, tmp_path, caplog):
    import run_fusion

    root, ds, _ = syn
    runs = tmp_path / "runs"
    tried = _bad_tables(good_table, tmp_path, ds.categories)
    for what, path in tried.items():
        caplog.clear()
        with caplog.at_level(logging.ERROR):
            rc = run_fusion.main(["--dataset", str(root), "--prior", str(path), "--runs", str(runs), "--model", "GRU4Rec"])
        assert rc == 2, what
        (record,) = [r for r in caplog.records if r.levelno >= logging.ERROR]
        assert str(path) in record.getMessage(), (what, record.getMessage())
        assert "\n" not in record.getMessage(), what
    assert not (runs / "backbone").exists()  # every check ran before any training


def test_a_missing_category_column_is_named_not_reported_as_bad_row_sums(syn, good_table, tmp_path, caplog):
    import run_fusion

    root, ds, _ = syn
    missing = ds.categories[2]
    df = pd.read_parquet(good_table).drop(columns=[missing])
    df.to_parquet(path := tmp_path / "missing.parquet", index=False)
    with caplog.at_level(logging.ERROR):
        rc = run_fusion.main(["--dataset", str(root), "--prior", str(path), "--runs", str(tmp_path / "runs")])
    assert rc == 2
    assert f"missing categories ['{missing}']" in caplog.text and "sum to 1" not in caplog.text
    assert not (tmp_path / "runs" / "backbone").exists()


def test_a_broken_yaml_layer_is_reported_before_training(syn, tmp_path, monkeypatch, caplog):
    import shutil

    import fusion.backbones as fb
    import run_fusion

    root, _, _ = syn
    configs = tmp_path / "recbole_configs"
    shutil.copytree(fb.CONFIG_DIR, configs)
    (configs / "GRU4Rec.yaml").write_text("hidden_size: [64\nepochs: 3\n")
    monkeypatch.setattr(fb, "CONFIG_DIR", configs)
    with caplog.at_level(logging.ERROR):
        rc = run_fusion.main(["--dataset", str(root), "--model", "GRU4Rec", "--runs", str(tmp_path / "runs")])
    assert rc == 2 and f"{configs / 'GRU4Rec.yaml'}: not valid YAML" in caplog.text
    assert not (tmp_path / "runs" / "backbone").exists()


def _bad_datasets(syn_root: Path, tmp: Path) -> dict[str, Path]:
    import shutil

    out = {}
    for what in ("truncated inter", "non-utf8 item", "empty inter"):
        d = tmp / what.replace(" ", "-") / "synthetic"
        shutil.copytree(syn_root, d)
        out[what] = d
    inter = (syn_root / "synthetic.inter").read_bytes()
    (out["truncated inter"] / "synthetic.inter").write_bytes(inter[: len(inter) // 3] + b"\xe2\x82")  # cut mid-character
    item = (syn_root / "synthetic.item").read_text(encoding="utf-8").splitlines()
    item[3] = item[3].replace("\t", "\tCaf\xe9 ", 1)
    (out["non-utf8 item"] / "synthetic.item").write_bytes(("\n".join(item) + "\n").encode("latin-1"))
    (out["empty inter"] / "synthetic.inter").write_bytes(b"")
    (empty := tmp / "empty-folder").mkdir()
    out["empty dataset folder"] = empty
    return out


def test_corrupt_dataset_files_exit_2_naming_the_file(syn, tmp_path, capsys):
    from spectra_rec.cli import main

    root, _, _ = syn
    for what, folder in _bad_datasets(root, tmp_path).items():
        rc = main(["data", "--dataset", str(folder), "--runs", str(tmp_path / "runs")])
        err = capsys.readouterr().err.strip()
        assert rc == 2, (what, err)
        assert err.count("\n") == 0 and str(folder) in err, (what, err)


def test_convert_refuses_to_overwrite_its_own_input(tmp_path, capsys):
    from spectra_rec.cli import main

    raw = tmp_path / "ml-1m"
    raw.mkdir()
    (raw / "ratings.dat").write_text("1::10::5::978300760\n")
    (raw / "movies.dat").write_text("10::Film (1995)::Drama\n")
    for out in (raw, tmp_path):  # the input folder itself, or a folder that contains it
        rc = main(["convert", "--format", "ml-1m", "--input", str(raw), "--out", str(out), "--overwrite"])
        assert rc == 2 and "would delete the raw files" in capsys.readouterr().err
        assert (raw / "ratings.dat").exists() and (raw / "movies.dat").exists()


# ---- cache keys ------------------------------------------------------------------------------------------
def _adapter(tmp: Path, name: str, content: dict) -> Path:
    d = tmp / name
    d.mkdir()
    (d / "manifest.json").write_text(json.dumps(content))
    return d


def test_probe_key_covers_taxonomy_adapter_device_dtype_template_and_ignores_batch_size(syn, tmp_path, monkeypatch):
    import spectra_rec.probe.run as run

    root, ds, split = syn
    tax = json.loads((root / "synthetic.taxonomy.json").read_text())
    t1, t2 = tmp_path / "t1.json", tmp_path / "t2.json"
    t1.write_text(json.dumps(tax))
    t2.write_text(json.dumps({l1: list(reversed(kids)) for l1, kids in tax.items()}))  # same names, new order
    d1, d2 = load_dataset(root, taxonomy=t1), load_dataset(root, taxonomy=t2)
    assert data_identity(d1, split_dataset(d1)) != data_identity(d2, split_dataset(d2))
    a, b = _adapter(tmp_path, "a", {"kind": "sft", "n": 1}), _adapter(tmp_path, "b", {"kind": "sft", "n": 2})
    users = run.cohort(split)

    def key(ds=d1, adapter=a, device="cpu", dtype=None, options=None):
        return run.artifacts.config_hash(run.probe_stage_config(
            ds, split_dataset(ds), adapter, "logit", {}, users, 6, "hf", options or {}, device, dtype))

    base = key()
    assert key(ds=d2) != base  # an external taxonomy file with reordered categories
    assert key(adapter=b) != base
    assert key(dtype="bf16") != base and key(device="cuda") != base
    assert key(dtype="fp32") == base  # the explicit CPU default shares the entry
    assert key(options={"batch_size": 7}) == base  # speed only
    monkeypatch.setattr(run, "TEMPLATE_VERSION", "v-next")
    assert key() != base


def test_backbone_key_covers_yaml_epochs_seed_and_ignores_speed_keys(syn, tmp_path, monkeypatch):
    import shutil

    import fusion.backbones as fb
    from spectra_rec.artifacts import config_hash

    def key(**kw):
        return config_hash(fb.backbone_stage_config(fb.BackboneConfig("GRU4Rec", **kw), "syn", tmp_path / "data-abc"))

    base = key()
    assert key(epochs=3) != base and key(seed=1) != base
    assert key(overrides={"eval_batch_size": 17, "worker": 2}) == base  # speed only
    assert key(overrides={"hidden_size": 8}) != base
    configs = tmp_path / "configs"
    shutil.copytree(fb.CONFIG_DIR, configs)
    monkeypatch.setattr(fb, "CONFIG_DIR", configs)
    assert key() == base
    with (configs / "GRU4Rec.yaml").open("a") as f:
        f.write("\ndropout_prob: 0.11\n")  # YAML contents, not file names
    assert key() != base


def test_align_key_covers_base_model_weights_and_tokenizer_contents(syn, tmp_path):
    from spectra_rec.align.config import AlignConfig
    from spectra_rec.align.pipeline import cpt_stage_config, select_users
    from spectra_rec.artifacts import config_hash

    _, ds, split = syn
    base = tmp_path / "base-model"
    base.mkdir()
    (base / "config.json").write_text('{"model_type": "qwen3"}')
    (base / "model.safetensors").write_bytes(bytes(4096))
    (base / "tokenizer.json").write_text('{"version": "1.0"}')
    cfg = AlignConfig(base_model=str(base))
    users, val = select_users(split, cfg)

    def key(*runs):
        return config_hash(cpt_stage_config(ds, split, cfg, users, val, *runs))

    first = key()
    assert key() == first
    (base / "model.safetensors").write_bytes(bytes(4095) + b"\x01")  # fine-tuned in place: same size
    second = key()
    assert second != first
    (base / "tokenizer.json").write_text('{"version": "1.1"}')
    assert key() != second
    # With a runs folder the digests are remembered by size and modification time (hashed once).
    runs = tmp_path / "runs"
    assert key(runs) == key() == key(runs)
    memo = json.loads((runs / "align" / "base-digests.json").read_text())
    assert len(memo) == 3 and all(len(v) == 64 for v in memo.values())


# ---- code and pickles from folders we did not write -------------------------------------------------------
def test_trust_remote_code_is_never_read_from_a_folders_manifest(tmp_path, monkeypatch):
    """A manifest saying trust_remote_code=true must not switch it on; only the caller's flag does."""
    import transformers

    from spectra_rec.align.io import load_aligned, load_stage_model

    folder = tmp_path / "cpt"
    (folder / "model").mkdir(parents=True)
    (folder / "manifest.json").write_text(json.dumps({
        "kind": "cpt", "base": {"kind": "hf", "weights": "model"}, "config": {"trust_remote_code": True}}))
    seen = []

    class Stop(Exception):
        pass

    def record(path, **kw):  # stands in for the loader only to read the flag it was given
        seen.append(kw.get("trust_remote_code"))
        raise Stop

    monkeypatch.setattr(transformers.AutoModelForCausalLM, "from_pretrained", record)
    with pytest.raises(Stop):
        load_aligned(folder, device="cpu")  # what the probe path calls: no flag given
    with pytest.raises(Stop):
        load_stage_model(folder, device="cpu")
    with pytest.raises(Stop):
        load_stage_model(folder, device="cpu", trust_remote_code=True)  # the command-line flag
    assert seen == [False, False, True]


def test_load_recbole_model_refuses_a_checkpoint_the_manifest_does_not_vouch_for(tmp_path):
    pytest.importorskip("recbole")
    from fusion.backbones import BackboneConfig, load_recbole_model

    ds = load_dataset(make_synthetic(tmp_path / "d" / "synthetic", SYN))
    split = split_dataset(ds)
    folder = tmp_path / "foreign"
    folder.mkdir()
    (folder / "model.pth").write_bytes(b"\x80\x04K\x01.")  # a pickle someone else wrote
    (folder / "manifest.json").write_text(json.dumps({"stage": "backbone"}))
    from spectra_rec.data.export import export_recbole_benchmark, recbole_dataset_name

    name = recbole_dataset_name(ds.name)
    export_recbole_benchmark(split, folder / "recbole" / name, name, 50)
    with pytest.raises(DataError, match=r"model\.pth: refusing to unpickle"):
        load_recbole_model(folder, split, BackboneConfig("GRU4Rec"))
