"""The snapshot's reference split (``jobs.snapshot.tables.index_split``, which the Spark build is
tested against): dense indices in id order, popularity, the held-out pairs of known users and
items not in train, in any input order; the part layout and the content hash."""

from __future__ import annotations

import pyarrow as pa
import pytest

from jobs.snapshot.tables import index_split

pytestmark = pytest.mark.unit


def _pairs(rows, weights=True):
    cols = {
        "user_id": pa.array([r[0] for r in rows], pa.int64()),
        "item_id": pa.array([r[1] for r in rows], pa.int64()),
    }
    if weights:
        cols["weight"] = pa.array([float(r[2]) for r in rows], pa.float32())
    return pa.table(cols)


def test_indices_popularity_and_held_out_pairs():
    train = [(30, 7, 2), (10, 9, 1), (30, 9, 1), (20, 7, 3)]  # users 10, 20, 30; items 7, 9
    test = [(10, 7), (10, 9), (99, 7), (20, 5), (30, 7), (20, 9)]
    tables = index_split(_pairs(train), _pairs(test, weights=False))
    assert tables["users"].to_pydict() == {"user_idx": [0, 1, 2], "user_id": [10, 20, 30]}
    assert tables["items"].to_pydict() == {"item_idx": [0, 1], "item_id": [7, 9], "popularity": [2, 2]}
    assert tables["train"].to_pydict() == {
        "user_idx": [0, 1, 2, 2],
        "item_idx": [1, 0, 0, 1],
        "weight": [1.0, 3.0, 2.0, 1.0],
    }
    # (10, 9) and (30, 7) are in train; user 99 and item 5 are unknown to the model
    assert tables["test"].to_pydict() == {"user_idx": [0, 1], "item_idx": [0, 1]}
    assert [f.nullable for f in tables["train"].schema] == [False, False, False]
    # the input order does not matter: the same tables, hence the same files and content hash
    again = index_split(_pairs(train[::-1]), _pairs(test[::-1], weights=False))
    assert all(again[name].equals(tables[name]) for name in tables)


def test_no_held_out_pair_left():
    tables = index_split(_pairs([(1, 1, 1)]), _pairs([(1, 1), (2, 2)], weights=False))
    assert tables["test"].num_rows == 0 and tables["test"].schema.names == ["user_idx", "item_idx"]


def test_layout_cuts_by_index_ranges_in_order(monkeypatch):
    import numpy as np

    from jobs.snapshot import tables

    monkeypatch.setattr(tables, "ROWS_PER_FILE", 10)
    assert tables.layout(n_users=5, n_items=3, train_rows=10, train_days=7) == {
        "train": 1,
        "test": 1,
        "users": 1,
        "items": 1,
    }
    parts = tables.layout(n_users=25, n_items=31, train_rows=95, train_days=3)
    assert parts == {"train": 10, "test": 4, "users": 3, "items": 4}
    # equal ranges of the index, every part used, parts in index order
    of = tables.part_of(np.arange(25), parts["train"], 25)
    assert of[0] == 0 and of[-1] == parts["train"] - 1 and (np.diff(of) >= 0).all()
    assert set(of.tolist()) == set(range(parts["train"]))


def test_content_hash_depends_on_names_and_bytes_not_order():
    from jobs.snapshot.tables import content_hash, digest

    files = {"train-00000.parquet": digest(b"a"), "reference_stats.json": digest(b"b")}
    assert content_hash(files) == content_hash(dict(reversed(list(files.items()))))
    assert content_hash(files) != content_hash({**files, "train-00000.parquet": digest(b"c")})
    assert content_hash(files) != content_hash(
        {"train-00001.parquet": digest(b"a"), "reference_stats.json": digest(b"b")}
    )


def test_offsets_count_the_ids_of_earlier_partitions_even_empty_ones():
    from jobs.snapshot.split import _offsets

    rows = [
        {"table": "users", "_pid": 3, "n": 4, "rows": 0},
        {"table": "items", "_pid": 0, "n": 7, "rows": 20},
        {"table": "users", "_pid": 0, "n": 2, "rows": 0},
        {"table": "users", "_pid": 1, "n": 5, "rows": 0},  # partition 2 holds no id
    ]
    assert _offsets(rows, "users") == ([0, 2, 7, 7], 11, 0)
    assert _offsets(rows, "items") == ([0], 7, 20)
    assert _offsets([], "items") == ([], 0, 0)
