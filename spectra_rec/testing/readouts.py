"""Contract tests every readout must pass: subclass :class:`ReadoutTests` and set ``readout``.

    class TestMyReadout(ReadoutTests):
        readout = "mine"                      # its registered name (or readout_cls = MyReadout)
        options = {"tau": 0.7}                # options the scoring tests use
        bad_options = ({"tau": 0},)           # each must be refused with a ConfigError

pytest collects the subclass (name it ``Test...``) and runs every ``test_*`` method below on
the tiny sharpened Qwen3 of :mod:`spectra_rec.testing.tiny` through the real HF backend: real
logits, no mocks. The checks: every user's p is a distribution over the K categories (finite,
non-negative, sums to 1) with K raw scores; the same users score the same on a fresh readout
and backend; the shared-prefix KV cache changes nothing; the config is frozen, hashable and
round-trips through its key (the probe stage's cache key); explicit defaults key like omitted
ones; the metadata is JSON; bad and unknown options raise ``ConfigError``.
"""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest

from spectra_rec.errors import ConfigError

PARITY_ATOL = 1e-4
"""Cached vs uncached scores: float32 attention over a reused KV cache vs a fresh forward pass."""


class ReadoutTests:
    """Baseline contract of a readout (see the module docstring)."""

    readout: str | None = None
    """The registered name; ``readout_cls`` may be set instead (a readout under test, unregistered)."""
    readout_cls = None
    options: dict = {}
    """Options of the readout the scoring tests build."""
    bad_options: tuple[dict, ...] = ()
    """Option sets the readout must refuse with a ConfigError (an unknown option is always tried)."""
    n_users: int = 3

    # ---- helpers --------------------------------------------------------------------------
    def readout_type(self):
        from spectra_rec.probe.readouts import readout_class

        return type(self).readout_cls or readout_class(self.readout)

    def build(self, **options):
        return self.readout_type()(**(self.options | options))

    def score(self, ro=None, reuse_prefix: bool = True):
        """(readout, results) for the first ``n_users`` evaluable users of the tiny dataset."""
        from spectra_rec.probe.backends.hf import HFBackend
        from spectra_rec.probe.prompts import PromptBuilder
        from spectra_rec.testing.tiny import probe_test_model, tiny_data

        ds, split = tiny_data()
        model, tok = probe_test_model()
        ro = ro if ro is not None else self.build()
        backend = HFBackend(model, tok, batch_size=4, reuse_prefix=reuse_prefix)
        builder = PromptBuilder(ds, split, tok, backend.max_length)
        ro.prepare(builder)
        hs = [builder.history(int(u), ro.frame, ro.reserve) for u in split.eval_users[: self.n_users]]
        return ro, ro.score(backend, hs)

    # ---- the contract ---------------------------------------------------------------------
    def test_is_registered_under_its_name(self):
        from spectra_rec.probe.readouts import READOUTS, make_readout

        if self.readout is None:
            pytest.skip("an unregistered readout class under test")
        assert READOUTS[self.readout] is self.readout_type() and self.readout_type().name == self.readout
        assert type(make_readout(self.readout, **self.options)) is self.readout_type()

    def test_probs_are_distributions_over_the_K_categories(self):
        from spectra_rec.testing.tiny import tiny_data

        K = tiny_data()[0].K
        _, results = self.score()
        assert len(results) == self.n_users
        for r in results:
            p = np.asarray(r.probs)
            assert p.shape == (K,) and np.asarray(r.scores).shape == (K,)
            assert np.all(np.isfinite(p)) and np.all(p >= 0), p
            assert p.sum() == pytest.approx(1.0, abs=1e-9)
            assert all(np.ndim(v) == 0 for v in r.extra.values()), "extras are scalar columns"

    def test_same_users_score_the_same_on_a_fresh_readout_and_backend(self):
        _, first = self.score()
        _, second = self.score()
        for a, b in zip(first, second):
            np.testing.assert_array_equal(a.probs, b.probs)
            np.testing.assert_array_equal(a.scores, b.scores)  # NaN where unscored, in the same places

    def test_the_shared_prefix_cache_changes_nothing(self):
        _, cached = self.score(reuse_prefix=True)
        _, full = self.score(reuse_prefix=False)
        for a, b in zip(cached, full):
            assert a.probs == pytest.approx(b.probs, abs=PARITY_ATOL)
            assert np.array_equal(np.isnan(a.scores), np.isnan(b.scores))
            assert np.nan_to_num(a.scores) == pytest.approx(np.nan_to_num(b.scores), abs=PARITY_ATOL)

    def test_config_is_frozen_hashable_and_round_trips_through_its_key(self):
        cls = self.readout_type()
        cfg = cls.make_config(**self.options)
        assert cfg == cls.make_config(**self.options) and hash(cfg) == hash(cls.make_config(**self.options))
        name = dataclasses.fields(cfg)[0].name
        with pytest.raises(dataclasses.FrozenInstanceError):
            setattr(cfg, name, getattr(cfg, name))
        key = cfg.key()
        assert json.loads(json.dumps(key)) == key, "the key is plain JSON"
        assert set(key) == {f.name for f in dataclasses.fields(cfg)}
        assert type(cfg).from_key(json.loads(json.dumps(key))) == cfg
        assert cls(config=cfg).config is cfg
        with pytest.raises(ConfigError):
            cls(config=cfg, **{name: getattr(cfg, name)})

    def test_explicit_defaults_key_like_omitted_ones(self):
        cls = self.readout_type()
        defaults = {f.name: f.default for f in dataclasses.fields(cls.config_cls)
                    if f.default is not dataclasses.MISSING}
        assert cls.make_config().key() == cls.make_config(**defaults).key()

    def test_meta_is_json_and_names_the_readout(self):
        ro, _ = self.score()
        meta = ro.meta()
        assert meta["readout"] == ro.name and isinstance(ro.method, str)
        assert json.loads(json.dumps(meta)) == meta

    def test_bad_and_unknown_options_raise_config_error(self):
        cls = self.readout_type()
        for bad in tuple(self.bad_options) + ({"no_such_option": 1},):
            with pytest.raises(ConfigError):
                cls(**(self.options | bad))
