"""Write a split as RecBole benchmark files so a backbone trains on exactly the train windows.

RecBole reads ``<name>.train.inter``, ``.valid.inter`` and ``.test.inter`` when
``benchmark_filename`` is set; sequential models then skip their own augmentation, so
every row carries its context explicitly in ``item_id_list:token_seq``.

- train: every prefix of the train window minus its last item (target = next item);
- valid: target = the last train item, context = the items before it (early stopping
  never sees held-out data);
- test: target = the first held-out item, context = the whole train window.
Users whose train window has a single item have no train row. This module writes files
only; it does not import RecBole.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from spectra_rec.data.split import Split


def _rows(split: Split, users, ends, max_len: int):
    """(user token, target token, context tokens) for target position ``end`` of each user."""
    ds = split.dataset
    for u, end in zip(users, ends):
        start = split.ptr[u]
        ctx = split.item[max(start, start + end - max_len) : start + end]
        yield ds.user_ids[u], ds.item_ids[split.item[start + end]], " ".join(ds.item_ids[ctx])


def _write(path: Path, rows) -> int:
    n = 0
    tmp = path.with_suffix(path.suffix + ".tmp")
    with tmp.open("w") as f:
        f.write("user_id:token\titem_id:token\titem_id_list:token_seq\n")
        for u, i, ctx in rows:
            f.write(f"{u}\t{i}\t{ctx}\n")
            n += 1
    tmp.replace(path)
    return n


def recbole_dataset_name(name: str) -> str:
    """The exported dataset's name: never one RecBole special-cases (it hard-wires ``ml-100k`` to its bundled copy)."""
    return f"{name}-split"


def export_recbole_benchmark(split: Split, out_dir: Path, name: str, max_len: int = 50) -> dict:
    """Write train/valid/test .inter files plus an .item file listing the whole catalogue."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    ds = split.dataset
    nt = split.n_train
    train_users = np.repeat(np.arange(ds.n_users), np.maximum(nt - 2, 0))
    # positions 1 .. n_train-2 of each user (position n_train-1 is the validation target)
    train_ends = np.concatenate([np.arange(1, max(n - 1, 1)) for n in nt]) if len(nt) else np.array([])
    valid_users = np.flatnonzero(nt >= 2)
    test_users = split.eval_users
    counts = {
        "train": _write(out_dir / f"{name}.train.inter", _rows(split, train_users, train_ends, max_len)),
        "valid": _write(out_dir / f"{name}.valid.inter", _rows(split, valid_users, nt[valid_users] - 1, max_len)),
        "test": _write(out_dir / f"{name}.test.inter", _rows(split, test_users, nt[test_users], max_len)),
    }
    # The item file puts every catalogue item into RecBole's id space, so candidates
    # never seen in training still get a (cold) embedding and a score.
    tmp = out_dir / f"{name}.item.tmp"
    tmp.write_text("item_id:token\n" + "".join(f"{t}\n" for t in ds.item_ids))
    tmp.replace(out_dir / f"{name}.item")
    return counts
