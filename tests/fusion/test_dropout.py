"""UniformDropout keeps nn.Dropout's semantics; the backbone uses it and records how it trained."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from scipy import stats
from torch import nn

from fusion.dropout import UniformDropout, swap_dropout


@pytest.mark.parametrize("p", [0.1, 0.2, 0.5])
def test_keep_rate_matches_p_and_kept_values_are_scaled(p):
    torch.manual_seed(0)
    x = torch.rand(200_000) + 0.5  # no zeros in the input, so zeros in the output are drops
    y = UniformDropout(p).train()(x)
    dropped = int((y == 0).sum())
    # two-sided binomial test of the drop count against p (independent of the implementation)
    assert stats.binomtest(dropped, x.numel(), p).pvalue > 1e-3
    kept = y != 0
    np.testing.assert_allclose(y[kept].numpy(), (x[kept] / (1 - p)).numpy(), rtol=1e-6)
    # E[y] = x, as with nn.Dropout
    assert abs(float(y.mean() / x.mean()) - 1) < 0.01


def test_drop_rate_agrees_with_nn_dropout_and_eval_is_the_identity():
    torch.manual_seed(1)
    x = torch.ones(100_000)
    ours = float((UniformDropout(0.3).train()(x) == 0).float().mean())
    theirs = float((nn.Dropout(0.3).train()(x) == 0).float().mean())
    assert abs(ours - theirs) < 0.01
    m = UniformDropout(0.3).eval()
    assert m(x) is x
    assert UniformDropout(0.0).train()(x) is x
    assert float(UniformDropout(1.0).train()(x).abs().sum()) == 0.0


def test_gradient_is_the_same_mask_times_the_scale():
    torch.manual_seed(2)
    x = torch.randn(64, 32, requires_grad=True)
    y = UniformDropout(0.25).train()(x)
    y.sum().backward()
    expected = (y.detach() != 0).float() / 0.75
    torch.testing.assert_close(x.grad, expected)


def test_seeded_masks_repeat():
    x = torch.ones(1000)
    torch.manual_seed(3)
    a = UniformDropout(0.2).train()(x)
    torch.manual_seed(3)
    b = UniformDropout(0.2).train()(x)
    assert torch.equal(a, b)


def test_bad_probability_is_refused():
    with pytest.raises(ValueError, match=r"dropout probability must be in \[0, 1\], got 1.5"):
        UniformDropout(1.5)


def test_swap_replaces_every_plain_dropout_and_keeps_the_state_dict():
    class Special(nn.Dropout):
        pass

    model = nn.Sequential(nn.Linear(4, 4), nn.Dropout(0.2), nn.Sequential(nn.Dropout(0.1), Special(0.3)))
    before = {k: v.clone() for k, v in model.state_dict().items()}
    assert swap_dropout(model) == 2
    kinds = [type(m).__name__ for m in model.modules() if isinstance(m, (nn.Dropout, UniformDropout))]
    assert kinds == ["UniformDropout", "UniformDropout", "Special"]
    assert [m.p for m in model.modules() if isinstance(m, UniformDropout)] == [0.2, 0.1]
    assert model.state_dict().keys() == before.keys()


def test_recbole_models_train_with_the_uniform_kernel_and_record_it(tmp_path):
    pytest.importorskip("recbole")
    from fusion.backbones import BackboneConfig, backbone_stage, backbone_stage_config, prepare_recbole
    from fusion.recbole_compat import quiet_recbole
    from spectra_rec.data.export import export_recbole_benchmark, recbole_dataset_name
    from spectra_rec.data.stage import DataConfig, data_stage
    from spectra_rec.data.synthetic import SyntheticConfig, make_synthetic

    folder = make_synthetic(tmp_path / "syn", SyntheticConfig(n_users=60, n_items=80, mean_interactions=15, seed=5))
    _, split, data_folder = data_stage(DataConfig(dataset=str(folder)), tmp_path / "runs")
    tiny = {"hidden_size": 16, "inner_size": 32, "train_batch_size": 256}
    rb = recbole_dataset_name(split.dataset.name)
    export_recbole_benchmark(split, tmp_path / "rb" / rb, rb, 30)
    for kernel, expect in (("uniform", UniformDropout), ("bernoulli", nn.Dropout)):
        with quiet_recbole():
            *_, model = prepare_recbole(split, tmp_path / "rb", BackboneConfig("SASRec", overrides=tiny,
                                                                              dropout_kernel=kernel), tmp_path / kernel)
        drops = [m for m in model.modules() if isinstance(m, (nn.Dropout, UniformDropout))]
        assert drops and all(type(m) is expect for m in drops)

    cfg = BackboneConfig("SASRec", epochs=1, overrides=tiny, amp=False)
    backbone = backbone_stage(split, data_folder, cfg, tmp_path / "runs")
    m = json.loads((backbone.folder / "recbole_metrics.json").read_text())
    assert m["dropout_kernel"] == "uniform" and m["amp"] is False
    # both settings change what is trained, so both are in the cache key
    keys = {json.dumps(backbone_stage_config(BackboneConfig("SASRec", overrides=tiny, **kw), split.dataset.name,
                                             data_folder), sort_keys=True)
            for kw in ({"amp": False}, {"amp": True}, {"amp": False, "dropout_kernel": "bernoulli"})}
    assert len(keys) == 3


def test_a_bad_dropout_kernel_is_refused():
    from fusion.backbones import BackboneConfig
    from spectra_rec.errors import ConfigError

    with pytest.raises(ConfigError, match=r"--dropout-kernel must be one of \['uniform', 'bernoulli'\], got 'fast'"):
        BackboneConfig(dropout_kernel="fast")
