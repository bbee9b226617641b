"""fusion.pipeline.cohorts: the dev / test cohorts of a fusion run (Split.cohorts, then --max-users), without RecBole."""

import numpy as np
import pytest

from fusion.pipeline import FusionConfig, cohorts


def _config(**kw):
    return FusionConfig(**({"model": "SASRec"} | kw))


def test_without_a_cap_the_cohorts_are_the_splits(synthetic_split):
    dev, test = cohorts(synthetic_split, _config(dev_fraction=0.3, seed=4))
    want_dev, want_test = synthetic_split.cohorts(0.3, 4)
    np.testing.assert_array_equal(dev, want_dev)
    np.testing.assert_array_equal(test, want_test)
    n = len(synthetic_split.eval_users)
    capped = cohorts(synthetic_split, _config(dev_fraction=0.3, seed=4, max_users=n))  # a cap that cuts nothing
    np.testing.assert_array_equal(capped[0], want_dev)
    np.testing.assert_array_equal(capped[1], want_test)


@pytest.mark.parametrize("max_users, frac", [(20, 0.2), (30, 0.1), (30, 0.5), (2, 0.2), (7, 0.9)])
def test_a_cap_subsamples_each_cohort_and_keeps_them_disjoint(synthetic_split, max_users, frac):
    cfg = _config(dev_fraction=frac, seed=9, max_users=max_users)
    dev, test = cohorts(synthetic_split, cfg)
    full_dev, full_test = synthetic_split.cohorts(frac, 9)
    n_dev = max(1, round(max_users * frac))
    assert len(dev) == n_dev and len(test) == max_users - n_dev
    assert set(dev) <= set(full_dev) and set(test) <= set(full_test)  # a user never changes cohort
    assert len(np.intersect1d(dev, test)) == 0
    assert (np.diff(dev) > 0).all() and (np.diff(test) > 0).all()


def test_capped_cohorts_are_seeded(synthetic_split):
    a, b, other = (cohorts(synthetic_split, _config(seed=s, max_users=20)) for s in (1, 1, 2))
    for x, y in zip(a, b):
        np.testing.assert_array_equal(x, y)
    assert not np.array_equal(a[1], other[1])
