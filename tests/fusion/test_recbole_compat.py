"""fusion/recbole_compat.py: RecBole 1.2.1 really trains, evaluates and reloads on numpy 2,
pandas 3 and torch >= 2.6, without ray; the patches are scoped; spectra_rec never imports RecBole.

One real SASRec epoch on the synthetic dataset exported with ``export_recbole_benchmark``
(hidden 16, one layer, batch 256): ~10-20 s on two cores.
"""

from __future__ import annotations

import json
import math
import re
import pickle
import subprocess
import sys
import textwrap

import numpy as np
import pandas as pd
import pytest

from spectra_rec.data.export import export_recbole_benchmark

pytest.importorskip("recbole")

pytestmark = [
    # RecBole's own noise under pandas 3 / torch 2.x; the compat module makes it harmless
    pytest.mark.filterwarnings("ignore:A value is being set on a copy"),
    pytest.mark.filterwarnings("ignore::FutureWarning"),
    pytest.mark.filterwarnings("ignore:The given NumPy array is not writable"),
    pytest.mark.filterwarnings("ignore::DeprecationWarning"),
    pytest.mark.filterwarnings("ignore:Detected pickle protocol 4"),
]

MODEL = "SASRec"


def _config_dict(data_path, checkpoint_dir) -> dict:
    return {
        "data_path": str(data_path),
        "dataset": "syn",
        "benchmark_filename": ["train", "valid", "test"],
        "load_col": {"inter": ["user_id", "item_id", "item_id_list"], "item": ["item_id"]},
        "alias_of_item_id": ["item_id_list"],
        "MAX_ITEM_LIST_LENGTH": 50,
        "train_neg_sample_args": None,
        "loss_type": "CE",
        "eval_args": {"order": "TO", "mode": {"valid": "full", "test": "full"}, "group_by": "user"},
        "epochs": 1,
        "train_batch_size": 256,
        "eval_batch_size": 1024,
        "metrics": ["NDCG", "Hit", "MRR"],
        "topk": [10],
        "valid_metric": "NDCG@10",
        "checkpoint_dir": str(checkpoint_dir),
        "show_progress": False,
        "seed": 0,
        "reproducibility": True,
        "use_gpu": False,
        "hidden_size": 16,
        "inner_size": 32,
        "n_layers": 1,
        "n_heads": 1,
        "state": "WARNING",
    }


@pytest.fixture(scope="module")
def trained(synthetic_split, tmp_path_factory):
    """Export the synthetic split, build RecBole's pipeline inside the patches, train one epoch."""
    from fusion.recbole_compat import import_recbole, pandas3_patches

    root = tmp_path_factory.mktemp("recbole")
    counts = export_recbole_benchmark(synthetic_split, root / "data" / "syn", "syn")
    import_recbole()
    from recbole.config import Config
    from recbole.data import create_dataset, data_preparation
    from recbole.utils import get_model, get_trainer, init_seed

    argv = ["pytest-prog", "--epochs=99", "--model=GRU4Rec", "--hidden_size=512"]
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(root)  # RecBole writes log_tensorboard/ into the working directory
        mp.setattr(sys, "argv", argv)
        with pandas3_patches():
            config = Config(model=MODEL, config_dict=_config_dict(root / "data", root / "saved"))
            init_seed(config["seed"], config["reproducibility"])
            dataset = create_dataset(config)
            train, valid, test = data_preparation(config, dataset)
        argv_after = sys.argv
        model = get_model(MODEL)(config, train.dataset)
        trainer = get_trainer(config["MODEL_TYPE"], MODEL)(config, model)
        best_valid, _ = trainer.fit(train, valid, saved=True, show_progress=False)
        result = trainer.evaluate(test, load_best_model=False)
    return {
        "config": config,
        "dataset": dataset,
        "data": (train, valid, test),
        "model": model,
        "trainer": trainer,
        "best_valid": best_valid,
        "result": result,
        "counts": counts,
        "argv": (argv, argv_after),
        "root": root,
    }


@pytest.mark.slow
def test_one_sasrec_epoch_trains_and_evaluates(trained, synthetic_split):
    r = trained["result"]
    assert set(r) == {"ndcg@10", "hit@10", "mrr@10"}
    values = {k: float(v) for k, v in r.items()}
    assert all(math.isfinite(v) and 0.0 <= v <= 1.0 for v in values.values())
    # one target per user at rank k: MRR = 1/k <= NDCG = 1/log2(k+1) <= Hit = 1, so the means keep that order
    assert values["mrr@10"] <= values["ndcg@10"] <= values["hit@10"]
    assert math.isfinite(float(trained["best_valid"]))
    # RecBole saw exactly what the export wrote: the catalogue (+ [PAD]) and one test case per evaluable user
    ds = trained["dataset"]
    assert ds.item_num == synthetic_split.dataset.n_items + 1
    assert ds.file_size_list == [trained["counts"][k] for k in ("train", "valid", "test")]
    assert trained["data"][2].dataset.inter_num == len(synthetic_split.eval_users)
    assert (trained["root"] / "log_tensorboard").is_dir()  # RecBole's writes went to the temporary cwd


@pytest.mark.slow
def test_argv_hidden_from_config_and_restored(trained):
    config = trained["config"]
    argv, after = trained["argv"]
    assert config["epochs"] == 1 and config["hidden_size"] == 16 and config["model"] == MODEL
    assert after is argv  # the same list object came back


@pytest.mark.slow
def test_checkpoint_reloads_into_a_fresh_model(trained):
    import torch

    from fusion.recbole_compat import load_checkpoint
    from recbole.utils import get_model, get_trainer

    path = trained["trainer"].saved_model_file
    assert str(path).startswith(str(trained["root"] / "saved"))
    # the pitfall this function exists for: torch >= 2.6 refuses RecBole's pickled Config by default
    with pytest.raises(pickle.UnpicklingError, match="Weights only load failed"):
        torch.load(path, map_location="cpu")
    from spectra_rec.artifacts import file_sha256

    ckpt = load_checkpoint(path, file_sha256(path))
    assert {"state_dict", "config", "epoch"} <= set(ckpt)
    config, (train, _, test) = trained["config"], trained["data"]
    torch.manual_seed(123)
    fresh = get_model(MODEL)(config, train.dataset)
    trained_state = trained["model"].state_dict()
    assert any(not torch.equal(v, trained_state[k]) for k, v in fresh.state_dict().items())  # untrained differs
    fresh.load_state_dict(ckpt["state_dict"])
    fresh_state = fresh.state_dict()
    assert fresh_state.keys() == trained_state.keys()
    for k, v in trained_state.items():
        assert torch.equal(fresh_state[k], v), k
    # and it evaluates to the very same numbers
    from fusion.recbole_compat import quiet_recbole

    with quiet_recbole():  # no TensorBoard events in the working directory
        again = get_trainer(config["MODEL_TYPE"], MODEL)(config, fresh).evaluate(test, load_best_model=False)
    assert dict(again) == dict(trained["result"])


def test_numpy_aliases():
    import fusion.recbole_compat  # noqa: F401  (installs the aliases on import)

    assert np.float_ is np.float64
    assert np.complex_ is np.complex128
    assert np.unicode_ is np.str_


def test_patches_are_scoped_and_restored_even_on_error():
    from fusion.recbole_compat import import_recbole, pandas3_patches

    import_recbole()
    from recbole.data.dataset import Dataset as RecBoleDataset

    before = (pd.Series.agg, pd.read_csv, RecBoleDataset._fill_nan, sys.argv)
    lists = pd.Series([[1, 2, 3], [4]])
    with pytest.raises(RuntimeError, match="inside"):
        with pandas3_patches():
            assert pd.Series.agg is not before[0] and pd.read_csv is not before[1]
            assert RecBoleDataset._fill_nan is not before[2]
            assert sys.argv == before[3][:1]
            assert lists.agg(len).tolist() == [3, 1]  # per-row lengths, what RecBole expects
            assert lists.agg("size") == 2  # anything else goes to pandas' own agg
            raise RuntimeError("inside")
    after = (pd.Series.agg, pd.read_csv, RecBoleDataset._fill_nan, sys.argv)
    assert all(a is b for a, b in zip(before, after))


def test_read_csv_patch_fills_empty_sequences(tmp_path):
    from fusion.recbole_compat import pandas3_patches

    (tmp_path / "f.tsv").write_text("item_id:token\titem_id_list:token_seq\n1\t\n2\t1\n")
    with pandas3_patches():
        # RecBole reads sequence columns as strings, then splits them; an empty one must be "", not NaN
        df = pd.read_csv(tmp_path / "f.tsv", sep="\t", dtype={"item_id_list:token_seq": str})
    assert df["item_id_list:token_seq"].tolist() == ["", "1"]
    assert pd.read_csv(tmp_path / "f.tsv", sep="\t", dtype=str)["item_id_list:token_seq"].isna().tolist() == [True, False]


def test_spectra_rec_never_imports_recbole(tmp_path):
    """A fresh interpreter: import spectra_rec, run the data stage on ml-100k through the CLI; RecBole
    (and ray, torch) stay out of sys.modules. Importing fusion.recbole_compat alone does not import it either."""
    code = textwrap.dedent(
        f"""
        import json, sys
        import spectra_rec
        from spectra_rec.cli import main
        from spectra_rec.priors import history_prior
        rc = main(["data", "--dataset", "ml-100k", "--runs", {str(tmp_path / "runs")!r}])
        heavy = sorted(m for m in sys.modules if m.split(".")[0] in ("recbole", "ray", "torch"))
        import fusion.recbole_compat
        after_compat = sorted(m for m in sys.modules if m.split(".")[0] == "recbole")
        print(json.dumps({{"rc": rc, "heavy": heavy, "after_compat": after_compat}}))
        """
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    *printed, last = out.stdout.strip().splitlines()
    report = json.loads(last)
    assert report == {"rc": 0, "heavy": [], "after_compat": []}
    text = "\n".join(printed)
    assert re.search(r"^K \(categories\)\s+19$", text, re.M) and re.search(r"^users\s+943$", text, re.M)
    assert list(tmp_path.iterdir()) == [tmp_path / "runs"]  # nothing written to the working directory


@pytest.mark.slow
def test_checkpoint_is_unpickled_only_when_its_recorded_digest_matches(trained, tmp_path):
    """The pickle load is reachable from load_recbole_model: a foreign or modified file is refused unread."""
    import shutil

    from fusion.recbole_compat import load_checkpoint
    from spectra_rec.artifacts import file_sha256
    from spectra_rec.errors import DataError

    path = tmp_path / "model.pth"
    shutil.copy(trained["trainer"].saved_model_file, path)
    digest = file_sha256(path)
    with pytest.raises(DataError, match=r"model\.pth: refusing to unpickle a checkpoint without a recorded sha256"):
        load_checkpoint(path, None)
    with path.open("ab") as f:
        f.write(b"\0")  # one appended byte: still unpicklable, but no longer the file that was written
    with pytest.raises(DataError, match=r"model\.pth: sha256 .* does not match"):
        load_checkpoint(path, digest)
