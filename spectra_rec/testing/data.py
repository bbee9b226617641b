"""Hand-made datasets for tests that check what text reaches training and prompts."""

from __future__ import annotations

from pathlib import Path

import numpy as np

LEAK_MARKER = "Zecret"
"""Every held-out item of :func:`leak_dataset` has a title starting with this; nothing else does."""
LEAK_CATEGORY = "Zeta"
"""A category carried only by held-out items of :func:`leak_dataset`."""


def leak_dataset(root: Path, n_users: int = 8):
    """``n_users`` x 10 interactions: 8 train (shared items), 2 held-out on items nobody else has.

    Held-out items are titled ``Zecret<u>x<k>`` and carry the category ``Zeta`` (the first alone,
    the second with ``Drama``), which no train item has. Any held-out interaction that reaches a
    training text or a prompt context shows up as ``LEAK_MARKER`` in it. Written as RecBole
    atomic files (with a ``.user`` file) under ``root`` and loaded.
    """
    from spectra_rec.data import load_dataset

    root = Path(root)
    genres = ["Action", "Comedy", "Drama", "Horror", "Romance Drama", "Action Comedy"]
    items = {f"s{j}": (f"Shared film {j}", genres[j % 6]) for j in range(12)}
    inter = []
    rng = np.random.default_rng(3)
    for u in range(n_users):
        for t in range(8):
            inter.append((f"u{u}", f"s{rng.integers(12)}", 100 * u + t))
        for k in range(2):
            item = f"h{u}x{k}"
            items[item] = (f"{LEAK_MARKER}{u}x{k}", LEAK_CATEGORY if k == 0 else f"{LEAK_CATEGORY} Drama")
            inter.append((f"u{u}", item, 100 * u + 50 + k))
    root.mkdir(parents=True, exist_ok=True)
    (root / "leak.inter").write_text(
        "user_id:token\titem_id:token\ttimestamp:float\n" + "".join(f"{u}\t{i}\t{t}\n" for u, i, t in inter)
    )
    (root / "leak.item").write_text(
        "item_id:token\ttitle:token_seq\trelease_year:token\tclass:token_seq\n"
        + "".join(f"{i}\t{title}\t1999\t{cats}\n" for i, (title, cats) in items.items())
    )
    (root / "leak.user").write_text(
        "user_id:token\tage:token\tgender:token\toccupation:token\n"
        + "".join(f"u{u}\t{20 + u}\tF\twriter\n" for u in range(n_users))
    )
    return load_dataset(root)


def perturb_heldout(split, out_dir: Path, seed: int = 1, users=None) -> Path:
    """A copy of ``split``'s dataset in which every held-out interaction (of ``users``; None: all) points to a different item.

    Times are kept (so every user's split point is unchanged: synthetic timestamps are strictly
    increasing per user) and the rows are shuffled (file order must not matter). Anything built
    from the train side must come out identical on the copy.
    """
    import shutil

    ds = split.dataset
    rng = np.random.default_rng(seed)
    item = split.item.copy()
    held = ~split.is_train
    if users is not None:
        held &= np.isin(split.user, np.asarray(users, dtype=np.int64))
    item[held] = (item[held] + rng.integers(1, ds.n_items, size=int(held.sum()))) % ds.n_items
    order = rng.permutation(len(item))
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True)
    lines = (
        f"{ds.user_ids[u]}\t{ds.item_ids[i]}\t{t:.0f}\n"
        for u, i, t in zip(split.user[order], item[order], split.time[order])
    )
    with (out_dir / f"{ds.name}.inter").open("w") as f:
        f.write("user_id:token\titem_id:token\ttimestamp:float\n")
        f.writelines(lines)
    for p in Path(ds.source).glob(f"{ds.name}.*"):
        if p.suffix != ".inter":
            shutil.copy(p, out_dir / p.name)
    return out_dir
