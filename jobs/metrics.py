"""Offline ranking metrics shared by the trainer, the gate and the benchmarks (numpy only).

``evaluate_ranking(top_k_items, test_pairs)`` scores ranked lists against held-out positives:

* ``recall@K`` = |top-K ∩ relevant| / |relevant|, averaged over the users with at least one
  held-out positive (the plain definition; a user with more than K relevant items cannot reach
  1.0);
* ``ndcg@K`` = DCG / IDCG with binary gains, DCG = Σ_hits 1/log2(rank + 2) (rank from 0) and
  IDCG the DCG of min(K, |relevant|) hits at the top, averaged over the same users.

Users with held-out positives but no ranked list count as zero (a model that cannot rank a
test user is penalised, not excused). ``popularity_top_k`` is the baseline every model must beat:
the most popular items of the training snapshot that the user has not seen.
"""

from __future__ import annotations

from typing import Any

import numpy as np


def _pairs(test_pairs: Any) -> tuple[np.ndarray, np.ndarray]:
    if hasattr(test_pairs, "columns"):  # pandas DataFrame
        return test_pairs["user_idx"].to_numpy(np.int64), test_pairs["item_idx"].to_numpy(np.int64)
    users, items = test_pairs
    return np.asarray(users, dtype=np.int64), np.asarray(items, dtype=np.int64)


def evaluate_ranking(
    top_k_items: np.ndarray,
    test_pairs: Any,
    users: np.ndarray | None = None,
    k: int | None = None,
) -> dict[str, float]:
    """Recall@K and NDCG@K of ranked lists against held-out (user, item) pairs.

    Args:
        top_k_items: (n, K) item indices, best first; -1 marks an empty slot.
        test_pairs: DataFrame with ``user_idx``/``item_idx`` or a (users, items) pair of arrays.
        users: the user index of each row of ``top_k_items`` (default: row i is user i).
        k: cut-off (default: the width of ``top_k_items``).

    Returns:
        ``{"recall": ..., "ndcg": ..., "users": n_evaluated, "k": K}``.
    """
    ranked = np.asarray(top_k_items, dtype=np.int64)
    if ranked.ndim != 2:
        raise ValueError("top_k_items must be a 2-d array (users x K)")
    k = ranked.shape[1] if k is None else int(k)
    ranked = ranked[:, :k]
    rows_users = np.arange(len(ranked), dtype=np.int64) if users is None else np.asarray(users, dtype=np.int64)
    if len(rows_users) != len(ranked):
        raise ValueError("users and top_k_items have different lengths")
    t_users, t_items = _pairs(test_pairs)
    keys_all = np.unique(np.stack([t_users, t_items], axis=1), axis=0) if len(t_users) else np.zeros((0, 2), np.int64)
    t_users, t_items = keys_all[:, 0], keys_all[:, 1]
    eval_users, n_rel = np.unique(t_users, return_counts=True)
    if not len(eval_users):
        return {"recall": 0.0, "ndcg": 0.0, "users": 0, "k": k}

    width = int(max(ranked.max(initial=0), t_items.max(initial=0))) + 2
    test_keys = t_users * width + t_items
    present = np.isin(rows_users, eval_users)
    r_users, r_ranked = rows_users[present], ranked[present]
    hit = np.isin(r_users[:, None] * width + r_ranked, test_keys) & (r_ranked >= 0)

    discount = 1.0 / np.log2(np.arange(k) + 2.0)
    dcg = (hit * discount).sum(axis=1)
    hits = hit.sum(axis=1)
    pos = np.searchsorted(eval_users, r_users)
    rel = n_rel[pos]
    idcg = np.cumsum(discount)[np.minimum(rel, k) - 1]

    recall = np.zeros(len(eval_users))
    ndcg = np.zeros(len(eval_users))
    recall[pos] = hits / rel
    ndcg[pos] = dcg / idcg
    return {"recall": float(recall.mean()), "ndcg": float(ndcg.mean()), "users": len(eval_users), "k": k}


def popularity_top_k(popularity: np.ndarray, users: np.ndarray, k: int, exclude: Any = None) -> np.ndarray:
    """The ``k`` most popular items per user, skipping the user's row of the ``exclude`` CSR.

    ``exclude`` is a ``jobs.model.CSR`` (or anything with ``indptr``/``indices``). Ties in
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
