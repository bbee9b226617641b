"""``spectra-rec data`` / ``spectra-rec priors``: what they print, what they write under --runs,
stage reuse and --fresh, and one-line errors for bad input."""

from __future__ import annotations

import json
import re

import numpy as np
import pandas as pd
import pytest

from spectra_rec.artifacts import read_manifest
from spectra_rec.cli import main
from spectra_rec.priors import PriorTable, history_prior


def _run(capsys, *argv) -> tuple[int, dict, str]:
    rc = main(list(argv))
    out, err = capsys.readouterr()
    rows = {}
    for line in out.splitlines():
        key, _, value = re.split(r"(\s{2,})", line, maxsplit=1)
        rows[key] = value
    return rc, rows, err


@pytest.fixture
def in_tmp(tmp_path, monkeypatch):
    """Run from an empty directory so that a stray write into the working directory shows."""
    work = tmp_path / "cwd"
    work.mkdir()
    monkeypatch.chdir(work)
    return work


def test_data_prints_summary_and_writes_runs(capsys, in_tmp, tmp_path, synthetic_dir, synthetic, synthetic_split):
    runs = tmp_path / "runs"
    rc, rows, _ = _run(capsys, "data", "--dataset", str(synthetic_dir), "--runs", str(runs))
    assert rc == 0
    s = synthetic_split.summary()
    assert rows["users"] == "200" and rows["items"] == "400" and rows["K (categories)"] == "12"
    assert rows["interactions"] == str(synthetic.n_interactions)
    assert rows["train / held-out interactions"] == f"{s['train_interactions']} / {s['heldout_interactions']}"
    assert rows["evaluable users"] == "200"
    assert rows["item slices head/mid/tail"] == "134/133/133"  # min(3r // 400, 2) for ranks r = 0..399
    assert sum(map(int, rows["target cases head/mid/tail"].split("/"))) == 200
    assert rows["category buckets head/mid/tail"] == "4/4/4"
    folder = runs / "data" / re.sub(r".*/", "", rows["artifacts"])
    assert rows["artifacts"] == str(folder) and folder.is_dir()
    assert list(in_tmp.iterdir()) == []  # nothing written to the working directory

    names = {p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file()}
    assert names == {
        "manifest.json",
        "summary.json",
        "split.parquet",
        "item_slices.csv",
        "category_buckets.csv",
    }
    manifest = read_manifest(folder)
    assert manifest["stage"] == "data" and manifest["hash"] == folder.name
    assert manifest["config"]["dataset"] == str(synthetic_dir) and manifest["config"]["split_ratio"] == 0.8
    assert set(manifest["config"]["inputs"]) == {
        f"synthetic.{s}" for s in ("inter", "item", "user", "taxonomy.json")
    }
    assert manifest["summary"]["K"] == 12 and manifest["summary"]["eval_users"] == 200

    split = pd.read_parquet(folder / "split.parquet")
    assert len(split) == synthetic.n_interactions
    assert (split["window"] == "heldout").sum() == s["heldout_interactions"]
    np.testing.assert_array_equal(split["item_id"], synthetic.item_ids[synthetic_split.item])
    slices = pd.read_csv(folder / "item_slices.csv")
    np.testing.assert_array_equal(slices["train_count"], synthetic_split.item_train_counts)
    assert slices["slice"].value_counts().to_dict() == {"head": 134, "mid": 133, "tail": 133}
    buckets = pd.read_csv(folder / "category_buckets.csv")
    assert list(buckets["category"]) == list(synthetic.categories)


def test_data_stage_is_reused_and_fresh_recomputes(capsys, in_tmp, tmp_path, synthetic_dir):
    runs = tmp_path / "runs"
    _, rows, _ = _run(capsys, "data", "--dataset", str(synthetic_dir), "--runs", str(runs))
    folder = runs / "data" / rows["artifacts"].rsplit("/", 1)[-1]
    (folder / "marker").write_text("x")
    _, again, _ = _run(capsys, "data", "--dataset", str(synthetic_dir), "--runs", str(runs))
    assert again == rows and (folder / "marker").exists()  # reused, not rebuilt
    _, fresh, _ = _run(capsys, "data", "--dataset", str(synthetic_dir), "--runs", str(runs), "--fresh")
    assert fresh["artifacts"] == rows["artifacts"] and not (folder / "marker").exists()
    _, other, _ = _run(capsys, "data", "--dataset", str(synthetic_dir), "--runs", str(runs), "--split-ratio", "0.5")
    assert other["artifacts"] != rows["artifacts"]
    assert len(list((runs / "data").iterdir())) == 2


def test_changed_input_file_gets_a_new_folder(capsys, in_tmp, tmp_path, toy_dir):
    runs = tmp_path / "runs"
    _, rows, _ = _run(capsys, "data", "--dataset", str(toy_dir), "--runs", str(runs))
    with (toy_dir / "toy.inter").open("a") as f:
        f.write("e\t1\t1\n")
    _, changed, _ = _run(capsys, "data", "--dataset", str(toy_dir), "--runs", str(runs))
    assert changed["users"] == "5" and changed["artifacts"] != rows["artifacts"]


def test_priors_cli_writes_a_loadable_table(capsys, in_tmp, tmp_path, synthetic_dir, synthetic_split):
    out = tmp_path / "prior.csv"
    rc = main(["priors", "--dataset", str(synthetic_dir), "--method", "markov", "--out", str(out),
               "--runs", str(tmp_path / "runs")])
    assert rc == 0 and capsys.readouterr().out.strip() == str(out)
    table = PriorTable.load(out)
    assert table.method == "markov" and not table.uses_heldout
    users = np.arange(200)
    np.testing.assert_array_equal(
        table.matrix(synthetic_split.dataset, users),
        history_prior(synthetic_split, "markov").matrix(synthetic_split.dataset, users),
    )
    assert json.loads((tmp_path / "prior.csv.meta.json").read_text())["dataset"] == "synthetic"
    assert list(in_tmp.iterdir()) == []


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["data", "--dataset", "nowhere"], r"spectra-rec data: error: --dataset 'nowhere' is neither a directory"),
        (["data", "--split-ratio", "1.5"], r"spectra-rec data: error: split ratio must be in \(0, 1\), got 1\.5"),
    ],
)
def test_bad_input_is_one_line_with_exit_code_2(capsys, in_tmp, tmp_path, synthetic_dir, argv, message):
    if "--split-ratio" in argv:
        argv = argv + ["--dataset", str(synthetic_dir)]
    assert main(argv + ["--runs", str(tmp_path / "runs")]) == 2
    err = capsys.readouterr().err
    assert re.search(message, err) and "Traceback" not in err


def test_unknown_prior_method_is_one_line_with_exit_code_2(capsys, in_tmp, tmp_path, synthetic_dir):
    assert main(["priors", "--dataset", str(synthetic_dir), "--method", "spectra", "--runs", str(tmp_path / "r")]) == 2
    err = capsys.readouterr().err
    assert "unknown prior 'spectra'; history priors: ['markov'" in err and "Traceback" not in err


def test_priors_cli_windowed_uhf_and_split_ratio(capsys, in_tmp, tmp_path, synthetic_dir):
    from spectra_rec.data import load_dataset, split_dataset

    out = tmp_path / "w.parquet"
    rc = main(["priors", "--dataset", str(synthetic_dir), "--method", "uhf@3", "--split-ratio", "0.5",
               "--out", str(out), "--runs", str(tmp_path / "runs")])
    assert rc == 0
    table = PriorTable.load(out)
    assert table.method == "uhf@3" and table.meta["split_ratio"] == 0.5 and table.meta["context_window"] == 3
    split = split_dataset(load_dataset(synthetic_dir), 0.5)
    users = np.arange(50)
    np.testing.assert_array_equal(table.matrix(split.dataset, users), history_prior(split, "uhf@3").matrix(split.dataset, users))
