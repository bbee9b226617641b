"""The data stage: load, split, and write the split, slices and buckets under ``runs/``.

RecBole benchmark files are written by the backbone stage (``fusion.backbones``), truncated
to that backbone's own ``MAX_ITEM_LIST_LENGTH``.
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from spectra_rec import artifacts
from spectra_rec.data.dataset import Dataset, load_dataset
from spectra_rec.data.split import SLICES, Split, split_dataset

log = logging.getLogger(__name__)

LAYOUT_VERSION = 3
"""Bump when the files this stage writes change shape, so older cached folders are not reused."""


@dataclass(frozen=True)
class DataConfig:
    """Which dataset to load and how to split it."""

    dataset: str = "ml-100k"
    """A built-in dataset name or a directory of RecBole atomic files."""
    category_field: str = "class"
    """The item field (token_seq) that holds each item's categories."""
    split_ratio: float = 0.8
    """Share of each user's interactions (at least 1) in the train window."""
    taxonomy: str | None = None
    """An L1 -> [L2, ...] JSON file over the categories (default: ``<name>.taxonomy.json`` when present)."""


def data_identity(ds: Dataset, split: Split) -> dict:
    """What makes two splits the same data: every input file's digest (an outside ``--taxonomy`` included),
    the split ratio, the category field and the category order (two taxonomies can order the same names
    differently)."""
    return {"name": ds.name, "files": ds.input_digests(), "split_ratio": split.ratio,
            "category_field": ds.category_field, "categories": list(ds.categories)}


def data_stage(config: DataConfig, runs: Path = Path("runs"), fresh: bool = False) -> tuple[Dataset, Split, Path]:
    """Load and split ``config.dataset``; write (or reuse) its artifacts; return dataset, split, folder."""
    ds = load_dataset(config.dataset, category_field=config.category_field, taxonomy=config.taxonomy)
    split = split_dataset(ds, config.split_ratio)
    inputs = ds.input_digests()
    stage_config = asdict(config) | {"dataset_name": ds.name, "inputs": inputs, "layout": LAYOUT_VERSION}

    def build(tmp: Path) -> dict:
        window = np.where(split.is_train, "train", "heldout")
        frame = pd.DataFrame(
            {
                "user_id": ds.user_ids[split.user],
                "item_id": ds.item_ids[split.item],
                "timestamp": split.time,
                "position": split.position(),
                "window": window,
            }
        )
        artifacts.write_parquet(tmp / "split.parquet", frame)
        pd.DataFrame(
            {
                "item_id": ds.item_ids,
                "train_count": split.item_train_counts,
                "slice": np.asarray(SLICES)[split.item_slice],
            }
        ).to_csv(tmp / "item_slices.csv", index=False)
        pd.DataFrame(
            {
                "category": ds.categories,
                "train_mass": split.category_train_mass,
                "bucket": np.asarray(SLICES)[split.category_bucket],
            }
        ).to_csv(tmp / "category_buckets.csv", index=False)
        summary = ds.summary() | split.summary()
        artifacts.write_json(tmp / "summary.json", summary)
        return {"summary": summary}

    folder = artifacts.run_stage(runs, "data", stage_config, build, fresh=fresh)
    return ds, split, folder
