"""The order of a snapshot's training pairs: read from the curated days of its window.

A snapshot keeps one row per (user, item) pair without time (``jobs.snapshot``), which is all
the order-free families need. The sequential model needs each user's order, so it reads the
positive events (``user_id``, ``item_id``, ``ts``) of the snapshot's ``train_days`` from the
curated zone — the same validated files the snapshot was built from — and keeps the events
whose (user, item) pair is a train pair of the snapshot, mapped to its indices. Curated days
are immutable once validated, so this is as reproducible as the snapshot itself.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from jobs.core import catalog
from jobs.core.cli import BadInput
from jobs.core.config import PipelineConfig
from jobs.core.ids import IdIndex
from jobs.core.schema import POSITIVE_TYPES
from jobs.core.snapshots import TrainData


def window_events(cfg: PipelineConfig, data: TrainData) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(user_idx, item_idx, ts in epoch microseconds) of the snapshot's training pairs' positive events.

    Raises:
        BadInput: the manifest lists no train days, or their curated files are gone.
    """
    days = data.manifest.get("train_days")
    if not days:
        raise BadInput(f"snapshot {data.uri}: its manifest lists no train_days (the sequence order comes from them)")
    files = catalog.curated_files(cfg, list(days))
    if not files:
        raise BadInput(f"snapshot {data.uri}: no curated file for its train days {days[0]} … {days[-1]}")
    return events_of(_read(files), data)


def _read(files: list[str]) -> Any:
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    tables = [pq.read_table(f, columns=["user_id", "item_id", "event_type", "ts"]) for f in files]
    table = pa.concat_tables(tables) if len(tables) > 1 else tables[0]
    return table.filter(pc.is_in(table.column("event_type"), pa.array(list(POSITIVE_TYPES))))


def events_of(table: Any, data: TrainData) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The rows of an Arrow table (``user_id``, ``item_id``, ``ts``) that are train pairs of ``data``, as indices."""
    import pyarrow as pa
    import pyarrow.compute as pc

    users = IdIndex(data.user_ids)(table.column("user_id").to_numpy())
    items = IdIndex(data.item_ids)(table.column("item_id").to_numpy())
    ts = pc.cast(table.column("ts"), pa.timestamp("us", tz="UTC")).cast(pa.int64()).to_numpy()
    known = (users >= 0) & (items >= 0)
    users, items, ts = users[known], items[known], ts[known]
    pairs = np.unique(data.users * data.n_items + data.items)
    keep = np.isin(users * data.n_items + items, pairs)
    return users[keep], items[keep], ts[keep]
