"""Ray Data probing: a real local cluster (2 CPUs), 2 actors on the tiny model, against the single-process run."""

from __future__ import annotations

import importlib.util
import json
import os
import socket
import sys

import numpy as np
import pandas as pd
import pytest

from spectra_rec.errors import ConfigError

HAS_RAY = importlib.util.find_spec("ray") is not None
needs_ray = pytest.mark.skipif(not HAS_RAY, reason="needs ray (pip install 'spectra-rec[ray]')")


@pytest.fixture(scope="module")
def cluster():
    """One small local cluster for the module (probe_prior_ray joins it instead of starting its own)."""
    import ray

    os.environ.setdefault("PYTHONPATH", os.getcwd())
    from ray import cloudpickle

    cloudpickle.register_pickle_by_value(sys.modules[__name__])  # the crashing actor subclass below
    ray.init(num_cpus=2, object_store_memory=200 * 1024**2, include_dashboard=False, log_to_driver=False,
             runtime_env={"env_vars": {"PYTHONPATH": os.environ["PYTHONPATH"], "OMP_NUM_THREADS": "1"}})
    yield ray
    ray.shutdown()


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """(dataset, split, model folder, the model as loaded from it, tokenizer)."""
    from spectra_rec.align.model import load_base_model
    from spectra_rec.testing.tiny import probe_test_model, tiny_data

    ds, split = tiny_data()
    model, tok = probe_test_model()
    path = tmp_path_factory.mktemp("ray") / "model"
    model.save_pretrained(path)
    tok.save_pretrained(path)
    loaded, tokenizer = load_base_model(path, device="cpu")
    return ds, split, path, loaded, tokenizer


def _ray_probe(tiny, out, readout="choice", **kw):
    from spectra_rec.probe.distributed import ModelSpec, RayConfig, probe_prior_ray

    ds, split, path, *_ = tiny
    return probe_prior_ray(ds, split, ModelSpec(str(path), "model", device="cpu", threads=1), readout, out=out,
                           max_users=12, chunk_users=4, ray_config=RayConfig(workers=2), progress=False, **kw)


def _local_probe(tiny, out, readout="choice"):
    import torch

    from spectra_rec.probe import probe_prior

    ds, split, _, model, tok = tiny
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as in each actor: the same reduction order, so the same floats
    try:
        return probe_prior(ds, split, model, tok, readout, max_users=12, chunk_users=4, out=out, progress=False)
    finally:
        torch.set_num_threads(threads)


class CrashOnce:
    """Mixin: the first batch any actor sees kills its process (os._exit), as a lost node or an OOM kill would."""

    flag = ""

    def __call__(self, batch):
        try:
            os.rename(self.flag, self.flag + ".taken")  # atomic: exactly one actor crashes, once
        except FileNotFoundError:
            return super().__call__(batch)
        os._exit(1)


@needs_ray
@pytest.mark.ray
def test_a_crashed_actors_batch_is_retried_and_an_interrupted_run_resumes(cluster, tiny, tmp_path):
    from spectra_rec.probe.distributed import ProbeActor

    flag = tmp_path / "crash"
    flag.write_text("")
    crashing = type("CrashingActor", (CrashOnce, ProbeActor), {"flag": str(flag)})
    out = tmp_path / "p.parquet"
    table = _ray_probe(tiny, out, actor_cls=crashing)
    assert (tmp_path / "crash.taken").exists()  # an actor did die mid-batch
    reference = _local_probe(tiny, tmp_path / "ref.parquet")
    np.testing.assert_array_equal(table.probs, reference.probs)  # its batch was retried, nothing lost or doubled

    # Interrupt: drop one finished chunk (as if the run had been killed before it arrived); rerun.
    shard = out.with_name(out.name + ".parts") / "shard-0000-of-0001"
    chunks = sorted(shard.glob("chunk-*.parquet"))
    assert len(chunks) == 3
    lost = pd.read_parquet(chunks[1])
    chunks[1].unlink()
    (shard / "DONE").unlink()
    out.unlink()
    again = _ray_probe(tiny, out)
    assert json.loads((shard / "DONE").read_text())["probed_this_run"] == len(lost) == 4
    np.testing.assert_array_equal(again.probs, reference.probs)


@needs_ray
@pytest.mark.ray
def test_cli_engine_ray_writes_the_single_process_table_row_for_row(cluster, tiny, tmp_path, capsys):
    from spectra_rec.cli import main
    from spectra_rec.data.synthetic import SyntheticConfig, make_synthetic
    from spectra_rec.priors.table import PriorTable

    path = tiny[2]
    # the tiny dataset's own files (spectra_rec.testing.tiny builds it in a folder it deletes): same config, same data
    data = make_synthetic(tmp_path / "tiny", SyntheticConfig(n_users=60, n_items=120, n_l1=2, n_l2=3,
                                                             mean_interactions=20, seed=0))
    args = ["probe", "--model", str(path), "--readout", "logit", "--max-users", "12", "--chunk-users", "4",
            "--device", "cpu", "--threads", "1", "--no-progress", "--dataset", str(data), "--runs", str(tmp_path / "runs")]
    import torch

    threads = torch.get_num_threads()
    try:
        assert main(args + ["--out", str(tmp_path / "local.parquet")]) == 0  # --threads 1, as in each actor
    finally:
        torch.set_num_threads(threads)
    assert main(args + ["--engine", "ray", "--workers", "2", "--out", str(tmp_path / "ray.parquet")]) == 0
    a, b = (PriorTable.load(tmp_path / f"{n}.parquet") for n in ("local", "ray"))
    assert a.user_ids.tolist() == b.user_ids.tolist() and len(a.user_ids) == 12
    np.testing.assert_array_equal(a.probs, b.probs)
    sa, sb = (pd.read_parquet(tmp_path / f"{n}.scores.parquet") for n in ("local", "ray"))
    pd.testing.assert_frame_equal(sa, sb)  # raw scores too, row for row
    done = json.loads((tmp_path / "ray.parquet.parts" / "shard-0000-of-0001" / "DONE").read_text())
    assert done["engine"] == "ray" and done["workers"] == 2 and done["probed_this_run"] == 12


# ---- bad input: one line naming the flag, exit code 2 ---------------------------------------------
def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@needs_ray
def test_bad_ray_flags_are_one_line_errors(synthetic_dir, tmp_path, capsys):
    from spectra_rec.cli import main

    base = ["probe", "--dataset", str(synthetic_dir), "--model", str(tmp_path), "--out", str(tmp_path / "p.parquet")]
    cases = [
        (["--engine", "ray", "--workers", "0"], "--workers must be >= 1, got 0"),
        (["--engine", "ray", "--gpus-per-worker", "1"], "--gpus-per-worker 1: this machine has no CUDA GPU"),
        (["--engine", "ray", "--address", f"127.0.0.1:{_free_port()}"], "no Ray cluster answers there"),
        (["--gpus-per-worker", "1"], "--gpus-per-worker needs --engine ray"),
        (["--engine", "ray", "--shard", "0/2"], "--shard and --engine ray exclude each other"),
    ]
    if importlib.util.find_spec("torch") is not None:
        import torch

        if torch.cuda.is_available():
            cases.pop(1)
    for flags, message in cases:
        assert main(base + flags) == 2
        err = capsys.readouterr().err.strip()
        assert message in err and len(err.splitlines()) == 1, (flags, err)


def test_engine_ray_without_ray_names_the_extra(monkeypatch):
    from spectra_rec.probe import distributed

    real = importlib.util.find_spec
    monkeypatch.setattr(distributed.importlib.util, "find_spec", lambda name, *a: None if name == "ray" else real(name, *a))
    with pytest.raises(ConfigError, match=r"--engine ray needs the optional 'ray' package.*spectra-rec\[ray\]"):
        distributed.require_ray()


@needs_ray
def test_run_fusion_passes_the_engine_to_spectra_priors_only():
    import run_fusion

    backend, engine, cfg = run_fusion.probe_engine(run_fusion.parse_args(["--prior", "spectra-choice", "--engine", "ray",
                                                                          "--workers", "3"]))
    assert (backend, engine, cfg.workers, cfg.address) == ("hf", "ray", 3, None)
    assert run_fusion.probe_engine(run_fusion.parse_args(["--prior", "spectra"]))[1:] == ("local", None)
    with pytest.raises(ConfigError, match=r"--engine applies to --prior spectra"):
        run_fusion.probe_engine(run_fusion.parse_args(["--prior", "uhf", "--engine", "ray"]))
    with pytest.raises(ConfigError, match=r"--workers must be >= 1, got 0"):
        run_fusion.probe_engine(run_fusion.parse_args(["--prior", "spectra", "--engine", "ray", "--workers", "0"]))


@needs_ray
@pytest.mark.ray
def test_spectra_prior_on_ray_is_the_cached_local_prior(cluster, synthetic, synthetic_split, tmp_path):
    """The fusion job's path (``spectra_prior``): same table on Ray, and the same cache entry (engine not in the key)."""
    import torch

    from spectra_rec.align.pipeline import align
    from spectra_rec.probe.distributed import RayConfig
    from spectra_rec.probe.run import spectra_prior
    from spectra_rec.testing.tiny import quick_align_config

    runs = tmp_path / "runs"
    sft = align((synthetic, synthetic_split), quick_align_config(), runs)
    ray_table = spectra_prior((synthetic, synthetic_split), runs=runs / "r", readout="choice", adapter=sft,
                              max_users=8, device="cpu", ray_config=RayConfig(workers=2), progress=False)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        local = spectra_prior((synthetic, synthetic_split), runs=runs / "l", readout="choice", adapter=sft,
                              max_users=8, device="cpu", progress=False)
    finally:
        torch.set_num_threads(threads)
    np.testing.assert_array_equal(ray_table.probs, local.probs)
    assert [p.name for p in (runs / "r" / "probe").iterdir()] == [p.name for p in (runs / "l" / "probe").iterdir()]
