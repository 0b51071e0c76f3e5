"""A published training snapshot, read and checked: what every trainer, the gate and infra
validation see of it (``jobs.snapshot`` writes it).

A snapshot folder holds four tables: ``train`` (user_idx, item_idx, weight), ``test``
(user_idx, item_idx: the held-out day's new positive pairs), ``users`` / ``items`` (dense index
→ id; items carry the window's popularity), the drift reference and the ``_SUCCESS`` manifest
(day, window, row counts, files). A table is a run of part files, ``train-00000.parquet``,
``train-00001.parquet``, … (``part_name``): read in name order they are one table sorted by
its indices. A single ``train.parquet`` (snapshots written before parts, hand-made ones) is read
the same way. ``load_snapshot`` raises ``SnapshotError`` (``jobs.core.errors``: bad input,
exit 3) naming what is wrong.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from jobs.core import storage
from jobs.core.errors import SnapshotError

__all__ = ["TABLES", "SnapshotError", "TrainData", "load_snapshot", "part_name", "snapshot_table", "table_files"]

TABLES = ("train", "test", "users", "items")


def part_name(table: str, part: int) -> str:
    """The file name of part ``part`` of a snapshot table (``train-00000.parquet``)."""
    return f"{table}-{part:05d}.parquet"


def table_files(uri: str, manifest: dict[str, Any], table: str) -> list[str]:
    """URIs of the files of ``table`` in a published snapshot, in order: its parts as the
    manifest lists them (the folder's files when the manifest lists none), else the single
    ``<table>.parquet``."""
    names = manifest.get("files") or storage.list_files(uri)
    parts = re.compile(rf"{re.escape(table)}-\d{{5}}\.parquet")
    found = sorted((n for n in names if parts.fullmatch(n.rsplit("/", 1)[-1])), key=lambda n: n.rsplit("/", 1)[-1])
    return [storage.join(uri, n) for n in found] or [storage.partition_file(uri, manifest, f"{table}.parquet")]


def snapshot_table(uri: str, table: str, manifest: dict[str, Any] | None = None) -> Any:
    """One table of a published snapshot as a ``pyarrow.Table`` (its parts concatenated)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    uri = str(uri).rstrip("/")
    manifest = storage.read_manifest(uri) if manifest is None else manifest
    tables = [pq.read_table(path) for path in table_files(uri, manifest or {}, table)]
    return pa.concat_tables(tables) if len(tables) > 1 else tables[0]


@dataclass
class TrainData:
    """A snapshot in memory: index arrays (int64), pair weights and the id maps."""

    users: np.ndarray
    items: np.ndarray
    weights: np.ndarray
    test_users: np.ndarray
    test_items: np.ndarray
    user_ids: np.ndarray
    item_ids: np.ndarray
    popularity: np.ndarray
    manifest: dict[str, Any] = field(default_factory=dict)
    uri: str = ""

    @property
    def n_users(self) -> int:
        return len(self.user_ids)

    @property
    def n_items(self) -> int:
        return len(self.item_ids)

    def seen(self) -> Any:
        """The training pairs as a ``jobs.core.model.CSR`` (users × items)."""
        from jobs.core.model import CSR

        return CSR.from_pairs(self.users, self.items, self.n_users, self.n_items)


def _read_table(uri: str, manifest: dict[str, Any], table_name: str, columns: dict[str, str]):
    name = f"{table_name}.parquet"
    try:
        table = snapshot_table(uri, table_name, manifest)
    except (FileNotFoundError, OSError) as exc:
        raise SnapshotError(f"snapshot {uri}: cannot read {name}: {exc}") from None
    except ValueError as exc:  # parts whose schemas differ
        raise SnapshotError(f"snapshot {uri}: the parts of {name} do not fit together: {exc}") from None
    missing = [c for c in columns if c not in table.column_names]
    if missing:
        raise SnapshotError(
            f"snapshot {uri}: {name} lacks column(s) {', '.join(missing)} (has {', '.join(table.column_names)})"
        )
    out = {}
    for col, dtype in columns.items():
        arr = table.column(col)
        if arr.null_count:
            raise SnapshotError(f"snapshot {uri}: {name}.{col} has {arr.null_count} null value(s)")
        out[col] = arr.to_numpy().astype(dtype, copy=False)
    return out


def load_snapshot(uri: str) -> TrainData:
    """Read and check a snapshot folder; raises SnapshotError naming what is wrong."""
    uri = str(uri).rstrip("/")
    if storage.is_local(uri) and not storage.local_path(uri).is_dir():
        raise SnapshotError(f"snapshot folder not found: {uri}")
    try:
        manifest = storage.read_manifest(uri)
    except OSError as exc:
        raise SnapshotError(f"snapshot {uri}: cannot read its {storage.SUCCESS} manifest: {exc}") from None
    except ValueError as exc:
        raise SnapshotError(f"snapshot {uri}: {storage.SUCCESS} is not JSON: {exc}") from None
    if manifest is None:
        raise SnapshotError(f"snapshot {uri} is not published: {storage.SUCCESS} manifest missing")
    train = _read_table(uri, manifest, "train", {"user_idx": "int64", "item_idx": "int64", "weight": "float32"})
    test = _read_table(uri, manifest, "test", {"user_idx": "int64", "item_idx": "int64"})
    users = _read_table(uri, manifest, "users", {"user_idx": "int64", "user_id": "int64"})
    items = _read_table(uri, manifest, "items", {"item_idx": "int64", "item_id": "int64", "popularity": "int64"})
    if not len(train["user_idx"]):
        raise SnapshotError(f"snapshot {uri}: the training set is empty (train.parquet has 0 rows)")
    n_users, n_items = len(users["user_idx"]), len(items["item_idx"])
    for name, idx, n in (("users", users["user_idx"], n_users), ("items", items["item_idx"], n_items)):
        if not np.array_equal(np.sort(idx), np.arange(n)):
            raise SnapshotError(f"snapshot {uri}: {name}.parquet indices are not 0..{n - 1}")
    for name, table in (("train", train), ("test", test)):
        for col, n in (("user_idx", n_users), ("item_idx", n_items)):
            values = table[col]
            if len(values) and (values.min() < 0 or values.max() >= n):
                raise SnapshotError(f"snapshot {uri}: {name}.parquet {col} out of range 0..{n - 1}")
    weights = train["weight"]
    if not np.isfinite(weights).all() or (weights <= 0).any():
        raise SnapshotError(f"snapshot {uri}: train.parquet weight must be finite and > 0")
    user_ids = np.empty(n_users, np.int64)
    user_ids[users["user_idx"]] = users["user_id"]
    item_ids = np.empty(n_items, np.int64)
    item_ids[items["item_idx"]] = items["item_id"]
    popularity = np.empty(n_items, np.int64)
    popularity[items["item_idx"]] = items["popularity"]
    return TrainData(
        users=train["user_idx"],
        items=train["item_idx"],
        weights=weights,
        test_users=test["user_idx"],
        test_items=test["item_idx"],
        user_ids=user_ids,
        item_ids=item_ids,
        popularity=popularity,
        manifest=manifest,
        uri=uri,
    )
