"""Direct-generation baseline: parsing (pure) and greedy decoding from a real tiny model.

The model test fine-tunes the tiny Qwen3 for a few dozen steps to answer the DG question
with a fixed list (containing a duplicate and an unknown name), then checks that greedy
decoding, parsing, counting and p_DG come out as the formulas say.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from spectra_rec.probe.dg import DGReadout, dg_distribution, parse_dg

CATS = ["Drama", "Comedy", "Action", "Active Life, Sports & Recreation", "Film-Noir"]


def test_parse_a_full_valid_list():
    p = parse_dg(" Drama, Comedy, Action", CATS, 3)
    assert p.categories == (0, 1, 2) and (p.invalid, p.unknown, p.duplicate, p.extra) == (0, 0, 0, 0)
    assert dg_distribution(p, len(CATS)) == pytest.approx([1 / 3, 1 / 3, 1 / 3, 0, 0])


def test_parse_counts_every_bad_piece():
    p = parse_dg(" Drama, Drama, Horror, , Comedy, Action, Film-Noir\nmore text", CATS, 3)
    assert p.categories == (0, 1, 2)
    assert (p.duplicate, p.unknown, p.invalid, p.extra) == (1, 1, 1, 1)
    assert p.unknown_names == ("Horror",)


def test_parse_names_with_commas_and_short_lists():
    p = parse_dg(" Active Life, Sports & Recreation, Comedy", CATS, 3)
    assert p.categories == (3, 1)
    assert dg_distribution(p, len(CATS)) == pytest.approx([0, 0.5, 0, 0.5, 0])  # uniform on the 2 listed


def test_empty_output_falls_back_to_uniform_and_is_counted():
    p = parse_dg("\n", CATS, 3)
    assert p.categories == () and p.invalid == 1
    assert dg_distribution(p, 5) == pytest.approx(np.full(5, 0.2))


def test_case_matters():
    p = parse_dg(" drama, Comedy", CATS, 2)
    assert p.categories == (1,) and p.unknown == 1


@pytest.fixture(scope="module")
def dg_model():
    """The tiny model, fine-tuned briefly so that greedy decoding answers the DG question with a fixed list."""
    torch = pytest.importorskip("torch")
    from spectra_rec.testing.tiny import probe_test_model, tiny_data
    from spectra_rec.testing.tiny import tiny_model_and_tokenizer
    from spectra_rec.text import templates as T

    ds, split = tiny_data()
    _, tok = probe_test_model()
    model, _ = tiny_model_and_tokenizer(None, seed=5)  # a private copy: it gets trained
    c = ds.categories
    answer = f" {c[1]}, {c[1]}, Nonsense, {c[4]}, {c[0]}\n"
    users = split.eval_users[:4]
    prompts = [T.history_prefix(ds, int(u), split.train_items(u), max_items=3)[0] + T.dg_question(2) for u in users]
    rows = [(tok(p)["input_ids"], tok(answer, add_special_tokens=False)["input_ids"]) for p in prompts]
    opt = torch.optim.Adam(model.parameters(), lr=3e-2)
    model.train()
    torch.manual_seed(0)
    for step in range(200):
        p_ids, a_ids = rows[step % len(rows)]
        ids = torch.tensor([p_ids + a_ids])
        labels = torch.tensor([[-100] * len(p_ids) + a_ids])
        loss = model(input_ids=ids, labels=labels).loss
        opt.zero_grad()
        loss.backward()
        opt.step()
    model.eval()
    return ds, split, model, tok, users, answer


def test_dg_readout_decodes_parses_and_counts(dg_model):
    from spectra_rec.probe import probe_prior
    from spectra_rec.probe.backends.hf import HFBackend

    ds, split, model, tok, users, answer = dg_model
    ro = DGReadout(k=2, max_new_tokens=30)
    table = probe_prior(ds, split, model, tok, ro, users=users, max_items=3, progress=False,
                        backend=HFBackend(model, tok))
    uncached = probe_prior(ds, split, model, tok, DGReadout(k=2, max_new_tokens=30), users=users, max_items=3, progress=False,
                           backend=HFBackend(model, tok, reuse_prefix=False))
    assert table.probs == pytest.approx(uncached.probs, abs=0)
    # The learnt answer lists c1 twice, one unknown name, then c4 and c0: k = 2 keeps c1 and c4.
    expected = np.zeros(ds.K)
    expected[[1, 4]] = 0.5
    assert table.probs == pytest.approx(np.tile(expected, (len(users), 1)))
    summary = table.meta["readout_summary"]
    n = len(users)
    assert summary["duplicate_total"] == n and summary["unknown_total"] == n and summary["extra_total"] == n
    assert summary["fallback_total"] == 0 and summary["truncated_total"] == 0 and summary["users"] == n
    assert table.meta["k"] == 2 and table.method == "dg"


def test_dg_output_files_keep_the_raw_text(dg_model, tmp_path):
    from spectra_rec.probe import probe_prior

    ds, split, model, tok, users, answer = dg_model
    out = tmp_path / "dg.parquet"
    probe_prior(ds, split, model, tok, "dg", readout_options={"k": 2, "max_new_tokens": 30}, users=users, max_items=3, out=out,
                progress=False)
    raw = pd.read_parquet(tmp_path / "dg.scores.parquet")
    assert (raw["x:text"] == answer.strip("\n")).all()
    assert (raw["x:duplicate"] == 1).all() and (raw["x:unknown"] == 1).all()
    ranks = raw[[f"s:{c}" for c in ds.categories]].to_numpy()
    assert ranks[:, 1] == pytest.approx(np.ones(len(users))) and ranks[:, 4] == pytest.approx(np.full(len(users), 2))


def test_cli_dg(synthetic_dir, tmp_path, capsys):
    import json

    from spectra_rec.cli import main
    from spectra_rec.priors.table import PriorTable
    from spectra_rec.testing.tiny import probe_test_model

    model, tok = probe_test_model()
    mdir = tmp_path / "model"
    model.save_pretrained(mdir)
    tok.save_pretrained(mdir)
    out = tmp_path / "dg.parquet"
    code = main(["dg", "--dataset", str(synthetic_dir), "--model", str(mdir), "--k", "2", "--max-users", "3",
                 "--max-items", "4", "--out", str(out), "--runs", str(tmp_path / "runs"), "--device", "cpu",
                 "--no-progress"])
    assert code == 0 and capsys.readouterr().out.strip() == str(out)
    table = PriorTable.load(out)
    assert table.method == "dg" and table.probs.shape == (3, 12)
    summary = json.loads((tmp_path / "dg.probe.json").read_text())["readout_summary"]
    assert summary["users"] == 3
    raw = pd.read_parquet(tmp_path / "dg.scores.parquet")
    # every user's row is explained: a listed category, or a counted problem
    assert ((raw["x:n_listed"] > 0) | (raw["x:fallback"] == 1)).all()
