"""The one place RecBole 1.2.1 is made to run on current numpy, pandas and torch.

Import RecBole only through :func:`import_recbole` (or after importing this module).
What is fixed, and why (each checked against RecBole 1.2.1's code):

- numpy 2 removed ``np.float_``, ``np.complex_`` and ``np.unicode_``, which RecBole's
  ``Config`` reads to set ``np.float``, ``np.int``, ... as a side effect; its evaluator
  metrics then use ``np.float``. We define the same aliases Config would, before RecBole is
  imported, so RecBole's metrics work whether or not a Config was built.
- ``recbole.quick_start`` imports ray (``ray<=2.6.3``, no wheel for Python 3.12+): we never
  import it and build the pipeline from Config / create_dataset / get_model / get_trainer.
- pandas 3 (copy-on-write): ``Series.agg(len)`` returns one scalar instead of per-row
  lengths, and the chained ``df[f].fillna(..., inplace=True)`` silently does nothing.
  :func:`pandas3_patches` fixes both, and only while RecBole builds its dataset.
- torch >= 2.6 loads with ``weights_only=True``; RecBole checkpoints pickle its Config.
  :func:`load_checkpoint` loads files this toolkit wrote itself with ``weights_only=False``,
  after checking the sha256 recorded when they were written.
- Importing RecBole's sequential models runs ``torch.autograd.set_detect_anomaly(True)`` at import
  time (``sine.py``), for the whole process; anomaly mode doubles every backward pass (a SASRec
  epoch on ml-100k: 69 s with it, 36 s without, identical metrics). :func:`import_recbole` imports
  those models itself and restores the anomaly mode the process had before.
- ``Config`` parses ``sys.argv``; :func:`pandas3_patches` hides our own command line from it.
- RecBole's Trainer writes TensorBoard events to ``./log_tensorboard`` and logs config dumps
  to the root logger: :func:`quiet_recbole` sends the events to a folder we choose (or
  nowhere) and drops RecBole's INFO chatter while it runs.
"""

from __future__ import annotations

import contextlib
import importlib
import sys
from pathlib import Path

import numpy as np

_NUMPY_ALIASES = {
    # removed in numpy 2, read by RecBole's Config
    "float_": np.float64,
    "complex_": np.complex128,
    "unicode_": np.str_,
    # what RecBole's Config assigns (config/configurator.py), used by its evaluator
    "bool": np.bool_,
    "int": np.int_,
    "float": np.float64,
    "complex": np.complex128,
    "object": np.object_,
    "str": np.str_,
    "long": np.int_,
    "unicode": np.str_,
}


def _install_numpy_aliases() -> None:
    for name, value in _NUMPY_ALIASES.items():
        if name not in np.__dict__:  # hasattr would trip numpy's deprecation __getattr__
            setattr(np, name, value)


def import_recbole():
    """Import RecBole's building blocks (never ``recbole.quick_start``) after the numpy aliases.

    The sequential models are imported here so that the anomaly mode their import switches on is
    put back: to what the process had before, or off when RecBole's models were already imported
    elsewhere (then RecBole, not the caller, set it). A later ``get_model`` finds them imported.
    """
    import torch

    _install_numpy_aliases()
    fresh = _ANOMALY_MODULE not in sys.modules
    before = torch.is_anomaly_enabled() if fresh else False
    recbole = importlib.import_module("recbole")
    importlib.import_module("recbole.model.sequential_recommender")
    torch.autograd.set_detect_anomaly(before)
    return recbole


_ANOMALY_MODULE = "recbole.model.sequential_recommender.sine"
"""The RecBole module whose import runs ``torch.autograd.set_detect_anomaly(True)``."""


def _fill_nan_cow_safe(self) -> None:
    """RecBole's ``Dataset._fill_nan`` with assignments that survive pandas copy-on-write."""
    from recbole.utils import FeatureType

    for feat_name in self.feat_name_list:
        feat = getattr(self, feat_name)
        for field in feat:
            ftype = self.field2type[field]
            if ftype == FeatureType.TOKEN:
                feat[field] = feat[field].fillna(value=0)
            elif ftype == FeatureType.FLOAT:
                feat[field] = feat[field].fillna(value=feat[field].mean())
            else:
                dtype = np.int64 if ftype == FeatureType.TOKEN_SEQ else np.float64
                feat[field] = feat[field].apply(
                    lambda x: np.array([], dtype=dtype) if isinstance(x, float) else x
                )


@contextlib.contextmanager
def pandas3_patches():
    """While RecBole builds a dataset: per-row ``agg(len)``, empty sequences read as "", no argv."""
    import pandas as pd
    from recbole.data.dataset import Dataset as RecBoleDataset

    orig_agg, orig_read_csv = pd.Series.agg, pd.read_csv
    orig_fill_nan, orig_argv = RecBoleDataset._fill_nan, sys.argv

    def agg(self, func=None, *args, **kwargs):
        if func is len:
            return self.map(len)
        return orig_agg(self, func, *args, **kwargs)

    def read_csv(*args, **kwargs):
        df = orig_read_csv(*args, **kwargs)
        # RecBole's next line is a chained fillna("") on sequence columns (named "field:token_seq")
        for col in df.columns:
            if str(col).endswith("_seq"):
                df[col] = df[col].fillna("")
        return df

    pd.Series.agg, pd.read_csv = agg, read_csv
    RecBoleDataset._fill_nan = _fill_nan_cow_safe
    sys.argv = sys.argv[:1]
    try:
        yield
    finally:
        pd.Series.agg, pd.read_csv = orig_agg, orig_read_csv
        RecBoleDataset._fill_nan = orig_fill_nan
        sys.argv = orig_argv


class _DropRecBoleInfo:
    """RecBole logs config dumps and progress to the root logger with ANSI colours; keep its warnings only."""

    def filter(self, record) -> bool:
        return record.levelno >= 30 or "/recbole/" not in record.pathname.replace("\\", "/")


class _NullWriter:
    """Stands in for TensorBoard's SummaryWriter: accepts every call, writes nothing."""

    def __getattr__(self, name):
        return lambda *args, **kwargs: None


@contextlib.contextmanager
def quiet_recbole(tensorboard_dir: Path | None = None):
    """While RecBole runs: TensorBoard events go to ``tensorboard_dir`` (or nowhere) instead of
    ``./log_tensorboard``; its INFO chatter and deprecation warnings are dropped."""
    import logging
    import warnings

    import recbole.trainer.trainer as rb_trainer

    orig_tb = rb_trainer.get_tensorboard
    if tensorboard_dir is None:
        rb_trainer.get_tensorboard = lambda logger: _NullWriter()
    else:
        from torch.utils.tensorboard import SummaryWriter

        rb_trainer.get_tensorboard = lambda logger: SummaryWriter(str(tensorboard_dir))
    filt = _DropRecBoleInfo()
    handlers = logging.getLogger().handlers
    for h in handlers:
        h.addFilter(filt)
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", module=r"recbole(\.|$)")
            warnings.filterwarnings("ignore", category=FutureWarning, module=r"torch\.amp")
            yield
    finally:
        rb_trainer.get_tensorboard = orig_tb
        for h in handlers:
            h.removeFilter(filt)


def load_checkpoint(path: Path, sha256: str | None, map_location="cpu") -> dict:
    """Load a RecBole checkpoint that this toolkit wrote (it pickles RecBole's Config).

    Unpickling runs code, so the file must match ``sha256``, the digest the backbone stage
    recorded in its manifest when it wrote the file; anything else is refused unread.
    """
    import torch

    from spectra_rec.artifacts import file_sha256
    from spectra_rec.errors import DataError

    path = Path(path)
    if not sha256:
        raise DataError(f"{path}: refusing to unpickle a checkpoint without a recorded sha256 "
                        "(only backbone folders this toolkit wrote, with model_sha256 in manifest.json, are loaded)")
    if not path.is_file():
        raise DataError(f"{path}: checkpoint not found")
    actual = file_sha256(path)
    if actual != sha256:
        raise DataError(f"{path}: sha256 {actual[:16]}... does not match the {sha256[:16]}... recorded when it was "
                        "written; refusing to unpickle a modified or foreign checkpoint")
    return torch.load(path, map_location=map_location, weights_only=False)


_install_numpy_aliases()
