"""The snapshot's split on the driver (``jobs.snapshot.job.index_split``): dense indices in id
order, popularity, the held-out pairs of known users and items not in train, in any input order."""

from __future__ import annotations

import pyarrow as pa
import pytest

from jobs.snapshot.job import index_split

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
