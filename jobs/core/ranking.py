"""Offline and online ranking metrics: the one definition every stage uses (numpy only).

For ranked lists and a set of relevant (user, item) pairs, over the **evaluated users** (every
user with at least one relevant pair):

* ``recall@K`` = |top-K ∩ relevant| / |relevant| (a user with more than K relevant items cannot
  reach 1.0);
* ``ndcg@K`` = DCG / IDCG with binary gains, DCG = Σ_hits 1/log2(rank + 1) (rank from 1) and
  IDCG the DCG of min(K, |relevant|) hits at the top;
* ``hit_rate@K`` = share of evaluated users with at least one hit.

An evaluated user without a ranked list scores zero (a model that cannot rank a test user is
penalised, not excused). Used by the trainer's test metrics (``evaluate_ranking``), the gate
(``metrics_of_lists``) and the monitor's online performance (``ranking_metrics`` on the served
recommendations). ``popularity_top_k`` is the baseline every model must beat: the most popular
items of the training snapshot that the user has not seen.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np


def pair_keys(users: Any, items: Any, *more: tuple[Any, Any]) -> list[np.ndarray]:
    """One int64 key per (user, item) pair, comparable across the given pair lists (ids are
    factorised first, so large ids cannot overflow the key); the user's code is ``key // n_items``."""
    pairs = [(np.asarray(users, dtype=np.int64), np.asarray(items, dtype=np.int64)), *more]
    pairs = [(np.asarray(u, dtype=np.int64), np.asarray(i, dtype=np.int64)) for u, i in pairs]
    all_users = np.unique(np.concatenate([u for u, _ in pairs]))
    all_items = np.unique(np.concatenate([i for _, i in pairs]))
    width = max(all_items.size, 1)
    return [np.searchsorted(all_users, u) * width + np.searchsorted(all_items, i) for u, i in pairs]


def ranking_metrics(
    rec_users: Any, rec_items: Any, rec_ranks: Any, rel_users: Any, rel_items: Any, k: int, per_user: bool = False
) -> dict[str, Any]:
    """Recall, NDCG and hit rate at ``k`` of long-format ranked lists.

    Args:
        rec_users, rec_items, rec_ranks: one entry per recommended (user, item) with its
            1-based rank; entries ranked below ``k`` are ignored.
        rel_users, rel_items: the relevant pairs (duplicates count once).
        k: the cut-off.
        per_user: also return ``"per_user": {"users", "recall", "ndcg"}`` (arrays over the users
            with a relevant pair, sorted by user id): what a paired comparison of two rankers needs.

    Returns:
        ``{"recall", "ndcg", "hit_rate", "users", "relevant", "hits", "k"}``; the rates are None
        when no user has a relevant item.
    """
    k = int(k)
    ru = np.asarray(rec_users, dtype=np.int64)
    ri = np.asarray(rec_items, dtype=np.int64)
    rr = np.asarray(rec_ranks, dtype=np.int64)
    top = (rr >= 1) & (rr <= k) & (ri >= 0)
    ru, ri, rr = ru[top], ri[top], rr[top]
    pu = np.asarray(rel_users, dtype=np.int64)
    pi = np.asarray(rel_items, dtype=np.int64)
    if not len(pu):
        empty = {"recall": None, "ndcg": None, "hit_rate": None, "users": 0, "relevant": 0, "hits": 0, "k": k}
        if per_user:
            empty["per_user"] = {"users": pu, "recall": np.zeros(0), "ndcg": np.zeros(0)}
        return empty
    width = max(np.unique(np.concatenate([ri, pi])).size, 1)
    rel_keys, rec_keys = pair_keys(pu, pi, (ru, ri))
    rel = np.unique(rel_keys)
    users, n_rel = np.unique(rel // width, return_counts=True)
    hit = np.isin(rec_keys, rel)
    pos = np.searchsorted(users, rec_keys[hit] // width)
    discount = 1.0 / np.log2(rr[hit] + 1.0)
    dcg = np.bincount(pos, weights=discount, minlength=len(users))
    hits = np.bincount(pos, minlength=len(users))
    idcg = np.cumsum(1.0 / np.log2(np.arange(1, k + 1) + 1.0))[np.minimum(n_rel, k) - 1]
    out = {
        "recall": float((hits / n_rel).mean()),
        "ndcg": float((dcg / idcg).mean()),
        "hit_rate": float((hits > 0).mean()),
        "users": len(users),
        "relevant": len(rel),
        "hits": int(hits.sum()),
        "k": k,
    }
    if per_user:
        ids = np.unique(np.concatenate([pu, ru]))[users]  # the codes of ``pair_keys`` back to user ids
        out["per_user"] = {"users": ids, "recall": hits / n_rel, "ndcg": dcg / idcg}
    return out


def evaluate_ranking(
    top_k_items: np.ndarray, test_pairs: Any, users: np.ndarray | None = None, k: int | None = None
) -> dict[str, Any]:
    """``ranking_metrics`` of a (users × K) matrix of item indices against held-out pairs.

    Args:
        top_k_items: (n, K) item indices, best first; -1 marks an empty slot.
        test_pairs: DataFrame with ``user_idx``/``item_idx`` or a (users, items) pair of arrays.
        users: the user index of each row of ``top_k_items`` (default: row i is user i).
        k: cut-off (default: the width of ``top_k_items``).

    Returns:
        ``ranking_metrics``' dict, with rates 0.0 (not None) when nothing is evaluated.
    """
    ranked = np.asarray(top_k_items, dtype=np.int64)
    if ranked.ndim != 2:
        raise ValueError("top_k_items must be a 2-d array (users x K)")
    k = ranked.shape[1] if k is None else int(k)
    ranked = ranked[:, :k]
    rows = np.arange(len(ranked), dtype=np.int64) if users is None else np.asarray(users, dtype=np.int64)
    if len(rows) != len(ranked):
        raise ValueError("users and top_k_items have different lengths")
    if hasattr(test_pairs, "columns"):  # pandas DataFrame
        t_users, t_items = test_pairs["user_idx"].to_numpy(np.int64), test_pairs["item_idx"].to_numpy(np.int64)
    else:
        t_users, t_items = (np.asarray(a, dtype=np.int64) for a in test_pairs)
    out = ranking_metrics(
        np.repeat(rows, ranked.shape[1]),
        ranked.ravel(),
        np.tile(np.arange(1, ranked.shape[1] + 1), len(ranked)),
        t_users,
        t_items,
        k,
    )
    return {key: (0.0 if value is None else value) for key, value in out.items()}


def metrics_of_lists(
    recs: Mapping[int, Sequence[int]], truth: Mapping[int, set[int] | Sequence[int]], k: int, per_user: bool = False
) -> dict[str, Any]:
    """``ranking_metrics`` of ranked lists keyed by user id against relevant items keyed by user id."""
    rec_users = [u for u, items in recs.items() for _ in items[:k]]
    rec_items = [i for items in recs.values() for i in items[:k]]
    rec_ranks = [r for items in recs.values() for r in range(1, len(items[:k]) + 1)]
    rel_users = [u for u, items in truth.items() for _ in items]
    rel_items = [i for items in truth.values() for i in items]
    return ranking_metrics(rec_users, rec_items, rec_ranks, rel_users, rel_items, k, per_user=per_user)


def popularity_top_k(popularity: np.ndarray, users: np.ndarray, k: int, exclude: Any = None) -> np.ndarray:
    """The ``k`` most popular items per user, skipping the user's row of the ``exclude`` CSR.

    ``exclude`` is a ``jobs.core.model.CSR`` (or anything with ``indptr``/``indices``). Ties in
    popularity are broken by the lower item index. Returns (len(users), k) item indices, -1
    where fewer than k items are eligible.
    """
    popularity = np.asarray(popularity)
    users = np.asarray(users, dtype=np.int64)
    order = np.lexsort((np.arange(len(popularity)), -popularity))
    rank_of = np.empty(len(order), dtype=np.int64)
    rank_of[order] = np.arange(len(order))
    k = min(int(k), len(order))
    out = np.full((len(users), k), -1, dtype=np.int64)
    if exclude is None:
        out[:] = order[:k]
        return out
    indptr, indices = exclude.indptr, exclude.indices
    seen_len = indptr[users + 1] - indptr[users]
    # Only the top (k + |seen|) items can be needed; take the longest such prefix for all.
    depth = min(len(order), k + int(seen_len.max(initial=0)))
    cand = np.broadcast_to(order[:depth], (len(users), depth))
    # Mark candidates seen by the user: a seen item with rank < depth knocks out that column.
    starts = indptr[users]
    pos = np.repeat(np.arange(len(users)), seen_len)
    flat = indices[np.repeat(starts - (np.cumsum(seen_len) - seen_len), seen_len) + np.arange(int(seen_len.sum()))]
    ranks = rank_of[flat]
    keep = ranks < depth
    blocked = np.zeros((len(users), depth), dtype=bool)
    blocked[pos[keep], ranks[keep]] = True
    # Stable compaction of the unblocked candidates to the left.
    sort_key = np.where(blocked, depth, np.arange(depth))
    idx = np.argsort(sort_key, axis=1, kind="stable")[:, :k]
    chosen = np.take_along_axis(cand, idx, axis=1)
    valid = np.take_along_axis(~blocked, idx, axis=1)
    out[:, : chosen.shape[1]] = np.where(valid, chosen, -1)
    return out
