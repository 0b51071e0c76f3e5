"""Sequences for the sequential family: time order, left padding, truncation, no leak of the future."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from jobs.seq.sequences import PAD, build_histories, latest, training_windows

pytestmark = pytest.mark.unit


def _hist():
    # user 0: items 5, 3, 7 at t=30, 10, 20 (+ a repeat of 3 later); user 1: nothing; user 2: item 4 only
    users = np.array([0, 0, 0, 0, 2])
    items = np.array([5, 3, 7, 3, 4])
    ts = np.array([30, 10, 20, 40, 5])
    return build_histories(users, items, ts, n_users=3)


def test_histories_are_time_ordered_first_occurrences():
    hist = _hist()
    assert hist.indptr.tolist() == [0, 3, 3, 4]
    assert hist.items.tolist() == [3, 7, 5, 4]  # the repeat of 3 at t=40 keeps its first time


def test_ties_in_time_break_by_item_whatever_the_row_order():
    a = build_histories(np.array([0, 0]), np.array([9, 2]), np.array([1, 1]), 1)
    b = build_histories(np.array([0, 0]), np.array([2, 9]), np.array([1, 1]), 1)
    assert a.items.tolist() == b.items.tolist() == [2, 9]


def test_latest_is_left_padded_most_recent_last_and_truncated():
    hist = _hist()
    rows = latest(hist, 4)
    assert rows.tolist() == [[PAD, 4, 8, 6], [PAD] * 4, [PAD, PAD, PAD, 5]]  # tokens = item + 1
    assert latest(hist, 2, np.array([0])).tolist() == [[8, 6]]  # the oldest item is dropped


def test_windows_predict_the_next_item_from_earlier_items_only():
    rng = np.random.default_rng(0)
    n_users, max_len = 20, 4
    users = rng.integers(0, n_users, 300)
    items = rng.integers(0, 50, 300)
    ts = rng.integers(0, 10_000, 300)
    hist = build_histories(users, items, ts, n_users)
    inp, tgt = training_windows(hist, max_len)
    assert inp.shape == tgt.shape and inp.shape[1] == max_len
    assert ((inp == PAD) == (tgt == PAD)).all()  # a position has an input iff it has a target
    # Every target of a user appears exactly once, and each input is the item right before it.
    lengths = hist.lengths()
    assert (tgt != PAD).sum() == np.maximum(lengths - 1, 0).sum()
    row = 0
    for u in range(n_users):
        seq = hist.items[hist.indptr[u] : hist.indptr[u + 1]] + 1
        pairs = {(int(a), int(b)) for a, b in itertools.pairwise(seq)}
        chunks = -(-max(len(seq) - 1, 0) // max_len)
        for r in range(row, row + chunks):
            real = tgt[r] != PAD
            assert {(int(a), int(b)) for a, b in zip(inp[r][real], tgt[r][real], strict=True)} <= pairs
            # within a row, time runs left to right: position j's input is position j-1's target
            assert (inp[r][real][1:] == tgt[r][real][:-1]).all()
        row += chunks
    assert row == len(inp)


def test_windows_cut_long_histories_from_the_newest_end():
    hist = build_histories(np.zeros(6, int), np.arange(6), np.arange(6), 1)  # items 0..5 in order
    inp, tgt = training_windows(hist, 3)
    assert tgt.tolist() == [[4, 5, 6], [PAD, 2, 3]]
    assert inp.tolist() == [[3, 4, 5], [PAD, 1, 2]]
    single = build_histories(np.array([0]), np.array([1]), np.array([0]), 1)
    assert training_windows(single, 3)[0].shape == (0, 3)  # one item: nothing to predict
