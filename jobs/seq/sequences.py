"""Users' interaction sequences as the sequential model reads them (numpy only, no I/O).

Tokens: item index + 1, with 0 the padding. A user's **history** is their distinct items in the
order of their first positive event in the window (ties in time by item index), i.e. the
snapshot's train pairs in time order. Rows are **left-padded, most recent last**: the newest
item always sits at the last position (the one the model reads a user's state from).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

PAD = 0


@dataclass(frozen=True)
class Histories:
    """Each user's items in time order: ``items[indptr[u]:indptr[u + 1]]`` (item indices, not tokens)."""

    indptr: np.ndarray  # int64, n_users + 1
    items: np.ndarray  # int64

    @property
    def n_users(self) -> int:
        return len(self.indptr) - 1

    def lengths(self) -> np.ndarray:
        return np.diff(self.indptr)


def build_histories(users: np.ndarray, items: np.ndarray, ts: np.ndarray, n_users: int) -> Histories:
    """Histories from (user, item, time) events: each (user, item) pair once, at its first event.

    Args:
        users, items: indices (int), any order; ts: comparable times (e.g. int64 microseconds).
        n_users: rows of the result (users without events get an empty history).
    """
    users = np.asarray(users, dtype=np.int64)
    items = np.asarray(items, dtype=np.int64)
    ts = np.asarray(ts)
    order = np.lexsort((items, ts, users))  # by user, then time, then item
    u, i = users[order], items[order]
    n_items = int(items.max()) + 1 if len(items) else 1
    _, first = np.unique(u * n_items + i, return_index=True)  # first event of each pair
    keep = np.sort(first)  # back to (user, time, item) order
    u, i = u[keep], i[keep]
    indptr = np.zeros(n_users + 1, dtype=np.int64)
    np.cumsum(np.bincount(u, minlength=n_users), out=indptr[1:])
    return Histories(indptr, i)


def latest(hist: Histories, max_len: int, users: np.ndarray | None = None) -> np.ndarray:
    """Tokens of each user's last ``max_len`` items, left-padded, most recent last: (len(users), max_len)."""
    users = np.arange(hist.n_users, dtype=np.int64) if users is None else np.asarray(users, dtype=np.int64)
    start, n = hist.indptr[users], hist.lengths()[users]
    t = n[:, None] - max_len + np.arange(max_len)[None, :]  # position j holds item number t
    valid = t >= 0
    flat = np.where(valid, start[:, None] + t, 0)
    return np.where(valid, hist.items[flat] + 1, PAD).astype(np.int64) if len(hist.items) else np.zeros_like(t)


def training_windows(hist: Histories, max_len: int) -> tuple[np.ndarray, np.ndarray]:
    """(inputs, targets) token rows of shape (W, max_len) for next-item training.

    Position j of a row reads input item ``h[t - 1]`` and predicts target ``h[t]`` (the next
    item in time), so no position's input holds its own or a later item; with the causal mask
    position j sees only inputs 0..j. A history of n items yields n - 1 targets, cut into
    windows of ``max_len`` targets from the most recent backwards (the oldest window is
    left-padded; padding has target 0). Users with fewer than 2 items yield no window.
    Rows are ordered by user, newest window first.
    """
    n = hist.lengths()
    targets_per_user = np.maximum(n - 1, 0)
    windows = -(-targets_per_user // max_len)
    user = np.repeat(np.arange(hist.n_users, dtype=np.int64), windows)
    k = np.arange(len(user)) - np.repeat(np.cumsum(windows) - windows, windows)  # 0 = newest
    end = n[user] - 1 - k * max_len  # last target of the window (item number)
    t = end[:, None] - (max_len - 1) + np.arange(max_len)[None, :]
    valid = t >= 1
    base = hist.indptr[user][:, None]
    tgt = np.where(valid, hist.items[np.where(valid, base + t, 0)] + 1, PAD) if len(user) else t
    inp = np.where(valid, hist.items[np.where(valid, base + t - 1, 0)] + 1, PAD) if len(user) else t
    return inp.astype(np.int64), tgt.astype(np.int64)
