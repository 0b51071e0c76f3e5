"""The snapshot's four tables: their schemas, their files, and ``index_split``, the reference.

``index_split`` computes the tables from aggregated pairs with numpy on one machine. The job no
longer runs it (Spark builds the same tables without collecting the pairs: ``jobs.snapshot.split``);
it stays as the definition the Spark build is tested against, row for row, on small worlds.

Files: a table is cut into parts of at most ``ROWS_PER_FILE`` rows (``layout``), by ranges of
its leading index, so that reading the parts in name order gives the table sorted by its
indices. Each part is written by ``encode``, whose bytes depend on the rows only: the same
data gives the same files, hence the same content hash.
"""

from __future__ import annotations

import hashlib
from typing import Any

import numpy as np
import pyarrow as pa

from jobs.core.snapshots import TABLES

ROWS_PER_FILE = 2_000_000  # rows of one part file: what one Spark task holds while writing it


def _idx(name: str) -> pa.Field:
    return pa.field(name, pa.int32(), nullable=False)


SCHEMAS: dict[str, pa.Schema] = {
    "train": pa.schema([_idx("user_idx"), _idx("item_idx"), pa.field("weight", pa.float32(), nullable=False)]),
    "test": pa.schema([_idx("user_idx"), _idx("item_idx")]),
    "users": pa.schema([_idx("user_idx"), pa.field("user_id", pa.int64())]),
    "items": pa.schema(
        [_idx("item_idx"), pa.field("item_id", pa.int64()), pa.field("popularity", pa.int64(), nullable=False)]
    ),
}


def layout(n_users: int, n_items: int, train_rows: int, train_days: int) -> dict[str, int]:
    """Part files of each table, from the counts alone (so two builds of the same data cut the
    tables alike): ``train`` and ``test`` by ranges of ``user_idx``, ``users`` and ``items`` by
    ranges of their index; the test day is sized as one day of train pairs."""

    def parts(rows: int) -> int:
        return max(1, -(-rows // ROWS_PER_FILE))

    return {
        "train": parts(train_rows),
        "test": parts(train_rows // max(1, train_days)),
        "users": parts(n_users),
        "items": parts(n_items),
    }


def part_of(index: Any, parts: int, n: int) -> Any:
    """The part holding index ``index`` of ``n`` in a table of ``parts`` parts (numpy reference
    of the Spark expression in ``jobs.snapshot.split``): equal ranges of the index."""
    return np.asarray(index, dtype=np.int64) * parts // max(n, 1)


def encode(table: pa.Table) -> bytes:
    """The Parquet bytes of one part (pyarrow, snappy; one chunk per column, so the bytes
    depend on the rows only)."""
    import pyarrow.parquet as pq

    sink = pa.BufferOutputStream()
    pq.write_table(table.combine_chunks(), sink, compression="snappy")
    return sink.getvalue().to_pybytes()


def digest(payload: bytes) -> str:
    """sha256 (hex) of a file's bytes, as the content hash takes it."""
    return hashlib.sha256(payload).hexdigest()


def content_hash(digests: dict[str, str]) -> str:
    """The snapshot's content hash: sha256 over its files in name order, each as its name, a
    NUL and the sha256 of its bytes (a trainer's cache key starts from it)."""
    out = hashlib.sha256()
    for name in sorted(digests):
        out.update(name.encode() + b"\0" + bytes.fromhex(digests[name]))
    return out.hexdigest()


def index_split(train_pairs: pa.Table, test_pairs: pa.Table) -> dict[str, pa.Table]:
    """The reference definition of the snapshot's four tables (pure numpy and pyarrow).

    Args:
        train_pairs: ``user_id``, ``item_id``, ``weight`` (float32), one row per pair, any order.
        test_pairs: distinct ``user_id``, ``item_id`` of the held-out day, any order.

    Returns:
        ``train`` (``user_idx``, ``item_idx``, ``weight``), ``test`` (``user_idx``, ``item_idx``: the
        held-out pairs of known users and items not in train), ``users`` (``user_idx``, ``user_id``)
        and ``items`` (``item_idx``, ``item_id``, ``popularity`` = train pairs of the item), indices
        dense in id order, every table sorted by its indices.
    """
    users_np = train_pairs.column("user_id").to_numpy()
    items_np = train_pairs.column("item_id").to_numpy()
    user_ids, user_idx = np.unique(users_np, return_inverse=True)
    item_ids, item_idx, popularity = np.unique(items_np, return_inverse=True, return_counts=True)
    n_items = len(item_ids)
    order = np.lexsort((item_idx, user_idx))
    train_codes = user_idx.astype(np.int64) * n_items + item_idx

    def lookup(ids: Any, values: Any) -> tuple[Any, Any]:
        pos = np.clip(np.searchsorted(ids, values), 0, max(len(ids) - 1, 0))
        return pos, (ids[pos] == values) if len(ids) else np.zeros(len(values), bool)

    test_users, user_known = lookup(user_ids, test_pairs.column("user_id").to_numpy())
    test_items, item_known = lookup(item_ids, test_pairs.column("item_id").to_numpy())
    codes = test_users[user_known & item_known].astype(np.int64) * n_items + test_items[user_known & item_known]
    codes = np.setdiff1d(codes, train_codes)  # sorted and distinct: (user_idx, item_idx) order

    columns = {
        "train": [
            user_idx[order].astype(np.int32),
            item_idx[order].astype(np.int32),
            train_pairs.column("weight").to_numpy()[order].astype(np.float32),
        ],
        "test": [(codes // n_items).astype(np.int32), (codes % n_items).astype(np.int32)] if n_items else [[], []],
        "users": [np.arange(len(user_ids), dtype=np.int32), user_ids],
        "items": [np.arange(n_items, dtype=np.int32), item_ids, popularity.astype(np.int64)],
    }
    return {name: pa.table(columns[name], schema=SCHEMAS[name]) for name in TABLES}
