"""Contract tests every prior source must pass: subclass :class:`PriorSourceTests` and set ``spec``.

    class TestMyPrior(PriorSourceTests):
        spec = "my-prior"                 # its registered name; resolved through spectra_rec.priors.registry

pytest collects the subclass (name it ``Test...``) and runs every ``test_*`` method below on a
small synthetic dataset and on a copy of it whose held-out interactions all point to other
items. A source that is built from held-out data on purpose (the oracle) sets
``reads_heldout = True``: the held-out check then asks that the table says so instead. A source
that is not (yet) in the registry overrides :meth:`PriorSourceTests.build`.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

CONTRACT_DATA = dict(n_users=60, n_items=120, n_l1=3, n_l2=3, mean_interactions=20, seed=5)
"""Synthetic dataset of the contract (K = 9): small enough to build once per source class."""


def contract_splits(root: Path):
    """(split, perturbed split): the contract dataset and its copy with every held-out interaction changed."""
    from spectra_rec.data import load_dataset, split_dataset
    from spectra_rec.data.synthetic import SyntheticConfig, make_synthetic
    from spectra_rec.testing.data import perturb_heldout

    root = Path(root)
    split = split_dataset(load_dataset(make_synthetic(root / "data" / "contract", SyntheticConfig(**CONTRACT_DATA))))
    perturbed = split_dataset(load_dataset(perturb_heldout(split, root / "perturbed" / "contract")))
    return split, perturbed


class PriorSourceTests:
    """Baseline contract of a prior source: a table of distributions over the dataset's categories, from train data."""

    spec: str | None = None
    """The source's registered name (a ``--prior`` / ``--priors`` spec)."""
    reads_heldout: bool = False
    """Built from held-out data on purpose (diagnostics such as the oracle): opts out of the held-out check."""

    def build(self, split):
        from spectra_rec.priors.registry import resolve_prior

        return resolve_prior(self.spec, split)

    @pytest.fixture(scope="class")
    @classmethod
    def splits(cls, tmp_path_factory):
        return contract_splits(tmp_path_factory.mktemp("prior-contract"))

    def test_one_row_per_user_with_a_train_window_over_the_dataset_categories(self, splits):
        split, _ = splits
        ds = split.dataset
        table = self.build(split)
        assert table.categories == tuple(ds.categories)
        assert table.probs.shape == (int((split.n_train > 0).sum()), ds.K)
        assert set(table.user_ids) == set(ds.user_ids[split.n_train > 0])
        assert table.matrix(ds, split.eval_users).shape == (len(split.eval_users), ds.K)

    def test_rows_are_distributions(self, splits):
        table = self.build(splits[0])
        assert np.isfinite(table.probs).all()
        assert (table.probs >= 0).all()
        np.testing.assert_allclose(table.probs.sum(axis=1), 1.0, rtol=0, atol=1e-12)

    def test_held_out_interactions_change_nothing(self, splits):
        split, perturbed = splits
        assert np.array_equal(split.item[split.is_train], perturbed.item[perturbed.is_train])  # same train windows
        a, b = self.build(split), self.build(perturbed)
        if self.reads_heldout:
            assert a.uses_heldout and b.uses_heldout, "a source that reads held-out data must say so (uses_heldout)"
            return
        assert not a.uses_heldout
        assert a.user_ids.tolist() == b.user_ids.tolist()
        np.testing.assert_array_equal(a.probs, b.probs, err_msg=f"{self.spec}: held-out interactions reached the prior")

    def test_same_split_gives_the_same_table(self, splits):
        a, b = self.build(splits[0]), self.build(splits[0])
        assert a.user_ids.tolist() == b.user_ids.tolist()
        np.testing.assert_array_equal(a.probs, b.probs, err_msg=f"{self.spec}: not deterministic")

    def test_registered_name_round_trips(self, splits, tmp_path):
        from spectra_rec.priors.registry import prior_names, resolve_prior

        split = splits[0]
        table = self.build(split)
        assert self.spec.partition("@")[0] in prior_names()
        assert table.method == self.spec
        again = resolve_prior(str(table.save(tmp_path / "prior.parquet")), split)
        assert again.method == self.spec and again.uses_heldout == table.uses_heldout
        np.testing.assert_array_equal(again.probs, table.probs)
