"""Contract tests every fusion rule must pass: subclass :class:`FusionRuleTests` and set ``rule``.

    class TestMyRule(FusionRuleTests):
        rule = my_rule                    # rule(base, aff, w, mask, normalization) -> fused

pytest collects the subclass (name it ``Test...``) and runs every ``test_*`` method below. The
rule is only called, never imported here, so this module does not depend on ``fusion``.
"""

from __future__ import annotations

import numpy as np
import pytest

from spectra_rec.errors import ConfigError


def _cases(seed: int = 0, n: int = 12, C: int = 9):
    """Base scores with ties, prior affinities, and a mask with padded tails of different lengths."""
    rng = np.random.default_rng(seed)
    base = np.round(rng.normal(size=(n, C)), 1)  # rounding makes ties, which the rank must keep
    aff = rng.dirichlet(np.ones(C), size=n)
    mask = np.ones((n, C), dtype=bool)
    for u in range(n):
        mask[u, C - (u % 4):] = False  # 0..3 padded candidates per row
    return base, aff, mask


def _pairwise_order(x: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """sign(x_i - x_j) for every pair of real candidates of each row (0 for ties and padding)."""
    filled = np.where(mask, x, 0.0)
    d = np.sign(filled[:, :, None] - filled[:, None, :])
    both = mask[:, :, None] & mask[:, None, :]
    return np.where(both, d, 0)


class FusionRuleTests:
    """Baseline contract of a fusion rule ``rule(base, aff, w, mask, normalization)``."""

    rule = None
    normalizations: tuple[str, ...] = ("minmax", "zscore", "softmax", "rank")
    """Normalizations the rule accepts."""
    weights: tuple[float, ...] = (0.0, 0.01, 0.3, 0.5, 1.0)

    def _fuse(self, base, aff, w, mask, norm):
        # Looked up on the class: a plain function stored as ``rule`` would otherwise be bound to self.
        return type(self).rule(base, aff, w, mask, norm)

    def test_w0_keeps_the_base_ranking_exactly(self):
        base, aff, mask = _cases()
        for norm in self.normalizations:
            fused = self._fuse(base, aff, 0.0, mask, norm)
            assert np.array_equal(_pairwise_order(fused, mask), _pairwise_order(base, mask)), norm

    def test_candidate_set_is_preserved_and_padding_is_minus_inf(self):
        base, aff, mask = _cases(seed=1)
        for norm in self.normalizations:
            for w in self.weights:
                fused = self._fuse(base, aff, w, mask, norm)
                assert fused.shape == base.shape
                assert np.array_equal(np.isfinite(fused), mask), (norm, w)
                assert np.all(fused[~mask] == -np.inf), (norm, w)

    def test_same_inputs_give_the_same_scores_and_inputs_are_not_modified(self):
        base, aff, mask = _cases(seed=2)
        copies = base.copy(), aff.copy(), mask.copy()
        first = self._fuse(base, aff, 0.3, mask, self.normalizations[0])
        second = self._fuse(base, aff, 0.3, mask, self.normalizations[0])
        assert np.array_equal(first, second)
        for before, after in zip(copies, (base, aff, mask)):
            assert np.array_equal(before, after)

    @pytest.mark.parametrize("w", [-0.1, 1.5, float("nan")])
    def test_w_outside_0_1_is_refused_naming_w(self, w):
        base, aff, mask = _cases()
        with pytest.raises(ConfigError, match="w"):
            self._fuse(base, aff, w, mask, self.normalizations[0])

    def test_unknown_normalization_is_refused_listing_the_options(self):
        base, aff, mask = _cases()
        with pytest.raises(ConfigError, match="minmax"):
            self._fuse(base, aff, 0.3, mask, "no-such-normalization")
