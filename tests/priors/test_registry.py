"""One prior resolver (spectra_rec.priors.registry) behind run_fusion.py --prior and spectra-rec evaluate --priors."""

from __future__ import annotations

import importlib.util
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest

from spectra_rec.cli import main
from spectra_rec.errors import ConfigError
from spectra_rec.evaluate import load_priors
from spectra_rec.priors import HISTORY_PRIORS, history_prior
from spectra_rec.priors.registry import SPECTRA_PRIORS, prior_names, resolve_prior


def test_names_list_history_then_spectra_priors():
    assert prior_names() == sorted(HISTORY_PRIORS) + sorted(SPECTRA_PRIORS)
    assert set(SPECTRA_PRIORS) == {"spectra", "spectra-name", "spectra-choice", "spectra-hier"}


@pytest.mark.parametrize("spec", ["uhf", "uhf@7", "uhf-decay", "oracle", "markov"])
def test_history_specs_resolve_to_the_history_prior(synthetic_split, spec):
    got = resolve_prior(spec, synthetic_split)
    want = history_prior(synthetic_split, spec)
    assert got.method == spec and got.uses_heldout == want.uses_heldout
    np.testing.assert_array_equal(got.probs, want.probs)


def test_table_files_resolve_with_or_without_a_label(synthetic_split, tmp_path):
    path = history_prior(synthetic_split, "markov").save(tmp_path / "m.csv")
    np.testing.assert_array_equal(resolve_prior(str(path), synthetic_split).probs,
                                  history_prior(synthetic_split, "markov").probs)
    pri = load_priors(synthetic_split, [str(path), "mine=uhf"])
    assert list(pri) == ["markov", "mine"] and pri["mine"].method == "uhf"


@pytest.mark.parametrize("flag", ["--prior", "--priors"])
@pytest.mark.parametrize(
    "spec, match",
    [
        ("nonsense", r"{flag} 'nonsense' is neither a prior name \(history priors \[.*'uhf-decay'.*SPECTRA readouts "
                     r"\['spectra', 'spectra-choice', 'spectra-hier', 'spectra-name'\]\) nor a .parquet/.csv prior table"),
        ("markov@5", r"{flag}: prior 'markov@5': only \['uhf', 'uhf-laplace'\] take a context window"),
        ("uhf@0", r"{flag}: prior 'uhf@0': the context window after '@' must be an integer >= 1"),
    ],
)
def test_bad_specs_are_one_line_errors_naming_the_flag(synthetic_split, flag, spec, match):
    with pytest.raises(ConfigError, match=match.format(flag=flag)) as exc:
        resolve_prior(spec, synthetic_split, flag=flag)
    assert "\n" not in str(exc.value)


def test_fusion_resolves_priors_through_the_registry(synthetic_split):
    pytest.importorskip("recbole")
    from fusion import pipeline

    assert pipeline.SPECTRA_PRIORS is SPECTRA_PRIORS
    table = pipeline.resolve_prior("uhf@5", synthetic_split, None, None)
    np.testing.assert_array_equal(table.probs, history_prior(synthetic_split, "uhf@5").probs)
    with pytest.raises(ConfigError, match="--prior 'bogus' is neither a prior name"):
        pipeline.resolve_prior("bogus", synthetic_split, None, None)


def test_resolver_and_evaluate_import_neither_fusion_nor_recbole_nor_torch():
    code = ("import sys, spectra_rec.priors.registry, spectra_rec.evaluate.cli; "
            "print(sorted({m.split('.')[0] for m in sys.modules} & {'fusion', 'recbole', 'torch', 'transformers'}))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


@pytest.mark.filterwarnings("ignore:quartile_reduction:spectra_rec.errors.DataWarning")  # 14 users: empty quartiles
def test_evaluate_priors_spectra_probes_once_into_the_shared_cached_stage(tmp_path):
    """Real tiny alignment and probe: evaluate --priors spectra writes the probe stage the resolver (and so the
    main job) reads back."""
    spec = importlib.util.find_spec("datasets")
    if spec is not None and spec.origin is None:
        pytest.skip("a namespace package 'datasets' (the repository's datasets/ folder on sys.path, e.g. under "
                    "`python -m pytest`) shadows Hugging Face datasets and breaks Trainer.evaluate")
    from spectra_rec.align.config import AlignConfig, TrainConfig
    from spectra_rec.align.pipeline import align
    from spectra_rec.data import load_dataset, split_dataset
    from spectra_rec.data.stage import DataConfig
    from spectra_rec.data.synthetic import SyntheticConfig, make_synthetic
    from spectra_rec.priors.registry import SpectraOptions
    from spectra_rec.testing.tiny import TINY_MODEL

    d = make_synthetic(tmp_path / "data" / "mini", SyntheticConfig(n_users=14, n_items=40, n_l1=2, n_l2=2,
                                                                      mean_interactions=12, seed=4))
    ds = load_dataset(d)
    split = split_dataset(ds)
    runs = tmp_path / "runs"
    cfg = AlignConfig(model=TINY_MODEL, vocab_size=512, max_users=8, max_length=256,
                      cpt_train=TrainConfig(max_steps=2, batch_size=4), sft_train=TrainConfig(max_steps=2, batch_size=4))
    sft = align((ds, split), cfg, runs)
    out = tmp_path / "report"
    rc = main(["evaluate", "--dataset", str(d), "--priors", "spectra", "uhf", "--adapter", str(sft), "--tau", "1",
               "--cohort", "all", "--activity-strata", "0", "--n-boot", "20", "--no-figures", "--runs", str(runs),
               "--out", str(out)])
    assert rc == 0
    probes = [p for p in (runs / "probe").iterdir() if not p.name.startswith(".")]
    assert len(probes) == 1
    # no tau (what run_fusion.py passes): the readout's default, so the same cache entry as --tau 1
    table = resolve_prior("spectra", split, data_config=DataConfig(dataset=str(d)),
                          spectra=SpectraOptions(runs=runs, adapter=sft))
    assert [p for p in (runs / "probe").iterdir() if not p.name.startswith(".")] == probes
    assert table.method == "spectra-logit" and table.source == str(probes[0] / "prior.parquet")
    per_user = pd.read_csv(out / "per_user.csv")
    assert set(per_user["method"]) == {"spectra", "uhf"}
    users = ds.user_index(per_user.loc[per_user["method"] == "spectra", "user_id"].astype(str).to_numpy())
    from spectra_rec.metrics.distribution import js_divergence

    js = js_divergence(table.matrix(ds, users), split.ground_truth(users=users))
    np.testing.assert_allclose(per_user.loc[per_user["method"] == "spectra", "JS"], js, rtol=1e-7)
