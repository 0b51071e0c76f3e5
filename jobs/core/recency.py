"""Recent popularity of a snapshot's items: what the gate's ``recent_popularity`` baseline ranks by
and what EASE's recency prior (``jobs.ease``) adds to its scores — one definition for both.

A snapshot keeps its pairs without time (``jobs.snapshot``); its manifest lists the curated
``train_days`` it was built from. Recent popularity counts, per snapshot item, the distinct users
with a positive event (``schema.POSITIVE_TYPES``) on the window's last ``days`` train days, as the
snapshot counts the window's popularity (distinct pairs). Users and items outside the snapshot
are not counted. Curated days are immutable once validated, so this is as reproducible as the
snapshot itself; local folders and object-store URIs alike (``jobs.core.reference.read_curated``).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from jobs.core import catalog
from jobs.core.ids import IdIndex
from jobs.core.schema import POSITIVE_TYPES


def distinct_pair_counts(users: np.ndarray, items: np.ndarray, n_items: int) -> np.ndarray:
    """Distinct users per item (int64, ``n_items`` long) of (user, item) index pairs; a pair seen
    twice counts once, a negative index (unknown to the snapshot) not at all."""
    users, items = np.asarray(users, dtype=np.int64), np.asarray(items, dtype=np.int64)
    known = (users >= 0) & (items >= 0)
    pairs = np.unique(users[known] * n_items + items[known])
    return np.bincount(pairs % n_items, minlength=n_items).astype(np.int64)


def positive_pairs(cfg: Any, data: Any, days: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """(user index, item index) of the positive events of the curated ``days`` whose user and item
    the snapshot knows (repeats kept); empty when no day has a curated file."""
    files = catalog.curated_files(cfg, days) if days else []
    if not files:
        return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64)
    import pyarrow as pa
    import pyarrow.compute as pc

    from jobs.core.reference import read_curated

    table = read_curated(files)
    kinds = pc.cast(pa.array(list(POSITIVE_TYPES)), table["event_type"].type)
    table = table.filter(pc.is_in(table["event_type"], value_set=kinds))
    users = IdIndex(data.user_ids)(table["user_id"].to_numpy(zero_copy_only=False))
    items = IdIndex(data.item_ids)(table["item_id"].to_numpy(zero_copy_only=False))
    known = (users >= 0) & (items >= 0)
    return users[known], items[known]


def recent_item_counts(cfg: Any, data: Any, days: int, skip_last: int = 0) -> np.ndarray:
    """Recent popularity per snapshot item (see the module docstring) over the last ``days`` of
    the manifest's ``train_days`` (``skip_last``: ending that many days earlier, as of an earlier
    day); zeros when it lists none or none of them has a curated file."""
    train_days = list(data.manifest.get("train_days") or [])
    train_days = train_days[: len(train_days) - skip_last] if skip_last else train_days
    picked = train_days[-days:] if days > 0 else []
    return distinct_pair_counts(*positive_pairs(cfg, data, picked), data.n_items)
