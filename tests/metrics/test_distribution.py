"""JS, KL, TV, entropy against scipy and hand-worked cases."""

import numpy as np
import pytest
from scipy.spatial.distance import jensenshannon
from scipy.stats import entropy as scipy_entropy

from spectra_rec.metrics.distribution import entropy, js_divergence, kl_divergence, max_abs_error, total_variation


def _random_dists(n, K, seed, zeros=True):
    rng = np.random.default_rng(seed)
    x = rng.dirichlet(np.full(K, 0.5), size=n)
    if zeros:
        x[rng.random((n, K)) < 0.3] = 0
        x[:, 0] += 1e-3  # keep every row non-empty
        x /= x.sum(axis=1, keepdims=True)
    return x


def test_js_matches_scipy_distance_squared_base2():
    p, q = _random_dists(50, 19, 0), _random_dists(50, 19, 1)
    expected = np.array([jensenshannon(a, b, base=2) ** 2 for a, b in zip(p, q)])
    assert js_divergence(p, q) == pytest.approx(expected, abs=1e-12)


def test_js_hand_worked_pitfalls_example():
    # docs/pitfalls.md: p = [.5, .5], q = [1, 0] -> distance 0.558, divergence 0.311
    js = js_divergence([[0.5, 0.5]], [[1.0, 0.0]])[0]
    expected = 1.5 - 0.75 * np.log2(3)  # = H(m) - (H(p) + H(q)) / 2 with m = (.75, .25)
    assert js == pytest.approx(expected, abs=1e-12)
    assert js == pytest.approx(0.311, abs=1e-3)


def test_js_properties_bounded_symmetric_zero_on_equal():
    p, q = _random_dists(200, 7, 2), _random_dists(200, 7, 3)
    js = js_divergence(p, q)
    assert ((js >= 0) & (js <= 1)).all()
    assert js == pytest.approx(js_divergence(q, p), abs=1e-14)
    assert (js_divergence(p, p) == 0).all()
    assert js_divergence([[1.0, 0.0]], [[0.0, 1.0]])[0] == pytest.approx(1.0)


def test_kl_matches_scipy_entropy():
    p = _random_dists(30, 10, 4)
    q = _random_dists(30, 10, 5, zeros=False)
    expected = np.array([scipy_entropy(a, b, base=2) for a, b in zip(p, q)])
    assert kl_divergence(p, q) == pytest.approx(expected, rel=1e-12)
    assert (kl_divergence(p, q) >= 0).all()
    assert kl_divergence(p, q, base=np.e) == pytest.approx(expected * np.log(2), rel=1e-12)


def test_kl_infinite_when_support_missing():
    assert kl_divergence([[0.5, 0.5]], [[1.0, 0.0]])[0] == np.inf
    assert kl_divergence([[1.0, 0.0]], [[0.5, 0.5]])[0] == pytest.approx(1.0)


def test_tv_and_max_error_hand_worked():
    p = [[0.5, 0.3, 0.2]]
    q = [[0.2, 0.3, 0.5]]
    assert total_variation(p, q)[0] == pytest.approx(0.3)
    assert max_abs_error(p, q)[0] == pytest.approx(0.3)


def test_entropy_matches_scipy():
    p = _random_dists(20, 19, 6)
    assert entropy(p) == pytest.approx([scipy_entropy(r, base=2) for r in p], rel=1e-12)
    assert entropy(np.full((1, 8), 1 / 8))[0] == pytest.approx(3.0)


def test_single_vector_is_one_user():
    assert js_divergence([0.5, 0.5], [1.0, 0.0]).shape == (1,)


@pytest.mark.parametrize(
    "p, q, match",
    [
        ([[0.5, np.nan]], [[0.5, 0.5]], "p: expected finite"),
        ([[0.5, 0.5]], [[0.7, 0.5]], "q: expected every row to sum to 1"),
        ([[1.2, -0.2]], [[0.5, 0.5]], "p: expected non-negative"),
        ([[0.5, 0.5]], [[0.2, 0.3, 0.5]], r"same \(users x categories\) shape"),
        (np.ones((2, 2, 2)) / 2, [[0.5, 0.5]], "p: expected a"),
    ],
)
def test_invalid_input_names_the_argument(p, q, match):
    with pytest.raises(ValueError, match=match):
        js_divergence(p, q)
