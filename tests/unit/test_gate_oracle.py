"""The gate's oracle ranking, computed in blocks of test users (``jobs.evaluate.gate.ORACLE_BLOCK``)
so that its memory does not grow with users × items: the same lists as one dense product."""

from __future__ import annotations

import numpy as np
import pytest

from jobs.core.snapshots import TrainData
from jobs.evaluate import gate

pytestmark = pytest.mark.unit


def _held_out(seed: int = 5, users: int = 50, items: int = 40) -> tuple[gate.HeldOut, dict]:
    rng = np.random.default_rng(seed)
    train = np.unique(rng.integers(0, users * items, 600))
    test = np.setdiff1d(np.unique(rng.integers(0, users * items, 150)), train)
    tu, ti = np.divmod(test, items)
    data = TrainData(
        users=(train // items).astype(np.int64),
        items=(train % items).astype(np.int64),
        weights=np.ones(len(train), dtype=np.float32),
        test_users=tu.astype(np.int64),
        test_items=ti.astype(np.int64),
        user_ids=np.arange(users, dtype=np.int64) * 10 + 3,  # ids are not indices
        item_ids=np.arange(items, dtype=np.int64) * 7 + 1,
        popularity=np.bincount(train % items, minlength=items).astype(np.int64),
        manifest={},
        uri="memory://oracle",
    )
    truth = {  # the simulator's truth is indexed by id
        "user_factors": rng.normal(size=(users * 10 + 3, 4)),
        "item_factors": rng.normal(size=(items * 7 + 1, 4)),
        "item_bias": rng.normal(size=items * 7 + 1),
        "beta": 4.0,
    }
    return gate.HeldOut(data), truth


def test_the_oracle_in_blocks_ranks_as_one_dense_product(monkeypatch):
    held, truth = _held_out()
    users = np.asarray(held.users)
    dense = truth["beta"] * (truth["user_factors"][users] @ truth["item_factors"][held.item_ids].T)
    expected = held.rank_by_scores(dense + truth["item_bias"][held.item_ids], 5)
    monkeypatch.setattr(gate, "ORACLE_BLOCK", 7)  # several blocks, the last one short
    assert len(held.users) > 3 * 7
    blocked = held.oracle_recs(truth, 5)
    assert blocked == expected
    for user, recs in blocked.items():  # and it is a ranking of unseen items
        assert len(recs) == 5 and not set(recs) & held.seen.get(user, set())
