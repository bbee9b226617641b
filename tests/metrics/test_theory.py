"""Theorem 1 per-user check and the Lemma 1 JS floor for uniform-on-top-k (paper Appendix F)."""

import numpy as np
import pytest

from spectra_rec.metrics.distribution import js_divergence, total_variation
from spectra_rec.metrics.theory import (
    binary_entropy,
    dg_js_floor,
    outside_mass,
    theorem1_check,
    topk_mask,
    uniform_on_topk,
)


def test_uniform_on_topk_shape():
    p = np.array([[0.1, 0.4, 0.2, 0.3]])
    assert uniform_on_topk(p, 2)[0] == pytest.approx([0, 0.5, 0, 0.5])
    assert uniform_on_topk(p, 9).sum() == pytest.approx(1.0)


def test_floor_formula_hand_worked():
    # q = (.3, .3, .4), DG uniform on {c0, c1}: delta = .4; q is uniform on S, so equality
    q = np.array([[0.3, 0.3, 0.4]])
    dg = np.array([[0.5, 0.5, 0.0]])
    delta = 0.4
    floor = binary_entropy(delta / 2) - binary_entropy(delta) / 2
    assert dg_js_floor(q, dg)[0] == pytest.approx(floor)
    assert js_divergence(dg, q)[0] == pytest.approx(floor, abs=1e-12)
    # the same number from the definition on the coarsened pair (1, 0) vs (1 - delta, delta)
    assert js_divergence([[1.0, 0.0]], [[1 - delta, delta]])[0] == pytest.approx(floor, abs=1e-12)


def test_floor_holds_for_random_truth_and_lists_and_lemma1_tv():
    rng = np.random.default_rng(0)
    q = rng.dirichlet(np.full(19, 0.3), size=500)
    noisy = rng.dirichlet(np.full(19, 0.3), size=500) * 0.5 + q * 0.5
    for k in (1, 3, 5):
        dg = uniform_on_topk(noisy, k)
        delta = outside_mass(q, dg > 0)
        assert (total_variation(dg, q) >= delta - 1e-12).all()  # Lemma 1
        assert (js_divergence(dg, q) >= dg_js_floor(q, dg) - 1e-12).all()
        assert (dg_js_floor(q, dg)[delta > 0] > 0).all()


def test_floor_is_zero_without_outside_mass_and_monotone():
    d = np.linspace(0, 1, 101)
    floor = binary_entropy(d / 2) - binary_entropy(d) / 2
    assert floor[0] == 0 and floor[-1] == pytest.approx(1.0)
    assert (np.diff(floor) > 0).all()


def test_theorem1_hand_worked():
    # q top-2 = {c0, c1}, gap_2 = .35 - .15 = .2; p within eps = .05; DG lists {c0, c2} -> miss
    q = np.array([[0.4, 0.35, 0.15, 0.1]])
    p = np.array([[0.38, 0.32, 0.18, 0.12]])
    dg = np.array([[0.5, 0.0, 0.5, 0.0]])
    r = theorem1_check(p, q, dg, 2)
    assert r["eps"][0] == pytest.approx(0.03)
    assert r["gap"][0] == pytest.approx(0.2)
    assert r["dg_miss"][0] and r["favourable"][0] and r["p_recovers"][0]
    assert r["mass_p"][0] == pytest.approx(0.75) and r["mass_dg"][0] == pytest.approx(0.55)


def test_theorem1_conclusion_holds_on_every_favourable_user():
    rng = np.random.default_rng(1)
    q = rng.dirichlet(np.full(10, 0.3), size=2000)
    p = q + rng.normal(0, 0.01, q.shape)
    p = np.clip(p, 0, None)
    p /= p.sum(axis=1, keepdims=True)
    dg = uniform_on_topk(rng.dirichlet(np.ones(10), size=2000), 3)
    r = theorem1_check(p, q, dg, 3)
    fav = r["favourable"]
    assert fav.sum() > 100
    assert r["p_recovers"][fav].all()
    assert (r["mass_p"][fav] > r["mass_dg"][fav]).all()


def test_topk_mask_and_bad_k():
    assert topk_mask(np.array([[0.2, 0.5, 0.3]]), 2)[0].tolist() == [False, True, True]
    with pytest.raises(ValueError, match="k: Theorem 1 needs k < K"):
        theorem1_check([[0.5, 0.5]], [[0.5, 0.5]], [[0.5, 0.5]], 2)
