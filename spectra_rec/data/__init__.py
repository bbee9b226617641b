"""Datasets in RecBole atomic format, the per-user chronological split, slices and buckets."""

from spectra_rec.data.dataset import Dataset, builtin_dataset_dir, load_dataset
from spectra_rec.data.split import Split, split_dataset

__all__ = ["Dataset", "Split", "builtin_dataset_dir", "load_dataset", "split_dataset"]
