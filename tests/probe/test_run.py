"""probe_prior: output files and metadata, train-window-only prompts, shards, resume, CLI."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

pytest.importorskip("torch")

from spectra_rec.errors import ConfigError  # noqa: E402
from spectra_rec.priors.table import PriorTable  # noqa: E402
from spectra_rec.probe import merge_shards, probe_prior  # noqa: E402
from spectra_rec.probe.backends.hf import HFBackend  # noqa: E402
from spectra_rec.testing.tiny import probe_test_model, tiny_data  # noqa: E402
from spectra_rec.text.templates import TEMPLATE_VERSION  # noqa: E402


@pytest.fixture(scope="module")
def tiny():
    ds, split = tiny_data()
    model, tok = probe_test_model()
    return ds, split, model, tok


def test_outputs_and_metadata(tiny, tmp_path):
    ds, split, model, tok = tiny
    out = tmp_path / "p.parquet"
    manifest = tmp_path / "manifest.json"
    manifest.write_text(json.dumps({"kind": "sft", "hash": "abc"}))
    table = probe_prior(ds, split, model, tok, "logit", readout_options={"tau": 0.5}, max_users=5, out=out,
                        adapter_manifest=manifest, progress=False)
    loaded = PriorTable.load(out)
    assert loaded.probs == pytest.approx(table.probs) and loaded.user_ids.tolist() == table.user_ids.tolist()
    assert loaded.user_ids.tolist() == list(ds.user_ids[split.eval_users[:5]])
    meta = json.loads((tmp_path / "p.probe.json").read_text())
    for m in (loaded.meta, meta):
        assert m["readout"] == "logit" and m["tau"] == 0.5 and m["method"] == "spectra-logit"
        assert m["verbalizers"] == {"affirmative": ["Yes", "yes"], "negative": ["No", "no"]}
        assert m["template_version"] == TEMPLATE_VERSION
        assert len(m["adapter_manifest_hash"]) == 16 and m["uses_heldout"] is False
    raw = pd.read_parquet(tmp_path / "p.scores.parquet")
    scores = raw[[f"s:{c}" for c in ds.categories]].to_numpy()
    e = np.exp((scores - scores.max(1, keepdims=True)) / 0.5)
    assert loaded.probs == pytest.approx(e / e.sum(1, keepdims=True), abs=1e-12)
    assert set(raw.columns) >= {"user_id", "n_items", "dropped", "prefix_tokens"}


def test_heldout_window_never_reaches_the_prior(synthetic_split, perturbed_split):
    """Every held-out interaction changed: the probed prior is bit-identical (prompts hold train items only)."""
    model, tok = probe_test_model()
    a = probe_prior(synthetic_split.dataset, synthetic_split, model, tok, "logit", max_users=4, progress=False)
    b = probe_prior(perturbed_split.dataset, perturbed_split, model, tok, "logit", max_users=4, progress=False)
    assert a.user_ids.tolist() == b.user_ids.tolist()
    assert np.array_equal(a.probs, b.probs)


def test_shards_merge_into_the_unsharded_table(tiny, tmp_path):
    ds, split, model, tok = tiny
    whole = probe_prior(ds, split, model, tok, "choice", max_users=7, progress=False)
    out = tmp_path / "s.parquet"
    part = probe_prior(ds, split, model, tok, "choice", max_users=7, shard=(1, 3), out=out, chunk_users=2,
                       progress=False)
    assert len(part.user_ids) == 2 and not out.exists()
    with pytest.raises(ConfigError, match=r"shard\(s\) \[0, 2\]"):
        merge_shards(out)
    probe_prior(ds, split, model, tok, "choice", max_users=7, shard=(0, 3), out=out, progress=False)
    merged = probe_prior(ds, split, model, tok, "choice", max_users=7, shard=(2, 3), out=out, progress=False)
    assert out.exists()
    assert merged.user_ids.tolist() == whole.user_ids.tolist()
    assert merged.probs == pytest.approx(whole.probs, abs=1e-12)
    assert merge_shards(out).probs == pytest.approx(whole.probs, abs=1e-12)


def test_resume_skips_users_already_written(tiny, tmp_path):
    ds, split, model, tok = tiny
    out = tmp_path / "r.parquet"
    first = probe_prior(ds, split, model, tok, "logit", max_users=6, out=out, chunk_users=2, progress=False)
    chunks = sorted((tmp_path / "r.parquet.parts" / "shard-0000-of-0001").glob("chunk-*.parquet"))
    assert len(chunks) == 3
    chunks[1].unlink()  # as if interrupted before the second chunk was written
    out.unlink()
    be = HFBackend(model, tok)
    again = probe_prior(ds, split, model, tok, "logit", max_users=6, out=out, chunk_users=2, progress=False,
                        backend=be)
    assert be.stats["prefill_calls"] == 2  # only the two missing users were probed
    assert again.probs == pytest.approx(first.probs, abs=1e-12)


def test_partial_results_of_another_configuration_are_refused(tiny, tmp_path):
    ds, split, model, tok = tiny
    out = tmp_path / "c.parquet"
    probe_prior(ds, split, model, tok, "logit", max_users=2, out=out, progress=False)
    with pytest.raises(ConfigError, match="different probe configuration.*tau"):
        probe_prior(ds, split, model, tok, "logit", readout_options={"tau": 2.0}, max_users=2, out=out,
                    progress=False)
    t = probe_prior(ds, split, model, tok, "logit", readout_options={"tau": 2.0}, max_users=2, out=out,
                    fresh=True, progress=False)
    assert PriorTable.load(out).meta["tau"] == 2.0 and len(t.user_ids) == 2


def test_cli_probe_with_shards(synthetic_dir, tmp_path, capsys):
    from spectra_rec.cli import main

    model, tok = probe_test_model()
    mdir = tmp_path / "model"
    model.save_pretrained(mdir)
    tok.save_pretrained(mdir)
    out = tmp_path / "cli.parquet"
    common = ["--dataset", str(synthetic_dir), "--model", str(mdir), "--max-users", "4", "--out", str(out),
              "--runs", str(tmp_path / "runs"), "--device", "cpu", "--no-progress", "--readout", "hier",
              "--branches", "top:2", "--max-items", "5"]
    assert main(["probe", *common, "--shard", "0/2"]) == 0
    assert not out.exists()
    assert main(["probe", *common, "--shard", "1/2"]) == 0
    assert capsys.readouterr().out.strip().endswith("cli.parquet")
    table = PriorTable.load(out)
    assert table.probs.shape == (4, 12) and table.meta["branches"] == "top:2" and table.meta["max_items"] == 5
    raw = pd.read_parquet(tmp_path / "cli.scores.parquet")
    assert (raw["n_items"] <= 5).all() and (raw["x:n_branches"] == 2).all()
    assert main(["probe", *common, "--verbalizers", "Yes"]) == 2
    assert "--verbalizers must look like Yes,yes/No,no" in capsys.readouterr().err


def test_spectra_prior_aligns_then_probes_and_caches(tmp_path):
    """The fusion entry point on a tiny alignment (2 CPT + 2 SFT steps): align, probe, reuse."""
    import importlib.util

    spec = importlib.util.find_spec("datasets")
    if spec is not None and spec.origin is None:
        pytest.skip("a namespace package 'datasets' (the repository's datasets/ folder on sys.path, e.g. under "
                    "`python -m pytest`) shadows Hugging Face datasets and breaks Trainer.evaluate")
    from spectra_rec.align.config import AlignConfig, TrainConfig
    from spectra_rec.probe.run import spectra_prior
    from spectra_rec.testing.tiny import TINY_MODEL

    ds, split = tiny_data()
    cfg = AlignConfig(model=TINY_MODEL, vocab_size=512, max_users=12, max_length=256,
                      cpt_train=TrainConfig(max_steps=2, batch_size=4), sft_train=TrainConfig(max_steps=2, batch_size=4))
    runs = tmp_path / "runs"
    from spectra_rec.text.templates import Verbalizers

    options = {"verbalizers": Verbalizers(), "tau": 1.0}  # what the CLI passes (a dataclass in the stage hash)
    table = spectra_prior(ds, split, runs, "logit", readout_options=options, align_config=cfg, max_users=4,
                          progress=False)
    (sft,) = (runs / "align" / "sft").iterdir()
    assert table.method == "spectra-logit" and table.probs.shape == (4, ds.K)
    assert table.meta["max_items"] == json.loads((sft / "manifest.json").read_text())["context"]["max_items"]
    assert table.meta["adapter_manifest_hash"] is not None
    folder = runs / "probe" / next(p.name for p in (runs / "probe").iterdir() if not p.name.startswith("."))
    assert {p.name for p in folder.iterdir()} == {"prior.parquet", "prior.scores.parquet", "prior.probe.json",
                                                  "manifest.json"}
    mtime = (folder / "prior.parquet").stat().st_mtime_ns
    again = spectra_prior(ds, split, runs, "logit", readout_options=options, adapter=sft, max_users=4,
                          progress=False)
    assert (folder / "prior.parquet").stat().st_mtime_ns == mtime  # cached, not recomputed
    assert np.array_equal(again.probs, table.probs)
    # run_fusion passes no options and no batch size: the same defaults hit the same cache
    spectra_prior(ds, split, runs, "logit", adapter=sft, max_users=4, progress=False)
    spectra_prior(ds, split, runs, "logit", adapter=sft, max_users=4, progress=False, backend_options={"batch_size": 7})
    assert [p.name for p in (runs / "probe").iterdir() if not p.name.startswith(".")] == [folder.name]
    spectra_prior(ds, split, runs, "logit", readout_options={"tau": 2.0}, adapter=sft, max_users=4, progress=False)
    assert len([p for p in (runs / "probe").iterdir() if not p.name.startswith(".")]) == 2


def test_answer_ids_are_checked_against_the_adapter_manifest(tiny, caplog):
    import logging

    from spectra_rec.align.tokenizer import check_single_tokens
    from spectra_rec.text.templates import Verbalizers

    ds, split, model, tok = tiny
    good = check_single_tokens(tok, Verbalizers().all())
    with caplog.at_level(logging.WARNING):
        probe_prior(ds, split, model, tok, "logit", max_users=1, adapter_manifest={"verbalizer_ids": good},
                    progress=False)
    assert "manifest" not in caplog.text
    with caplog.at_level(logging.WARNING):
        probe_prior(ds, split, model, tok, "logit", max_users=1,
                    adapter_manifest={"verbalizer_ids": good | {"No": good["No"] + 1}}, progress=False)
    assert "answer word 'No' reads token" in caplog.text


def test_prompts_sum_up_older_items_when_the_adapters_sft_did(tiny):
    from spectra_rec.probe.shards import sft_history_summary

    ds, split, model, tok = tiny
    on = {"context": {"max_items": 3, "history_summary": True}}
    assert sft_history_summary(on) and sft_history_summary({"config": {"sft": {"history_summary": True}}})
    assert not sft_history_summary({"context": {"max_items": 3}}) and not sft_history_summary(None)
    kw = dict(max_users=4, max_items=3, progress=False)
    summed = probe_prior(ds, split, model, tok, "logit", adapter_manifest=on, **kw)
    plain = probe_prior(ds, split, model, tok, "logit", adapter_manifest={"context": {"max_items": 3}}, **kw)
    assert summed.meta["history_summary"] is True and plain.meta["history_summary"] is False
    assert not np.allclose(summed.probs, plain.probs)  # the model reads another prompt
    again = probe_prior(ds, split, model, tok, "logit", adapter_manifest={"config": {"sft": {"history_summary": True}}},
                        **kw)
    np.testing.assert_allclose(again.probs, summed.probs)
