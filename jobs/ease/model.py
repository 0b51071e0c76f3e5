"""EASE (Steck 2019, "Embarrassingly Shallow Autoencoders") in closed form, and its export.

``X`` is the binary users × items matrix of the window's positive pairs; ``G = XᵀX + λI``,
``P = G⁻¹``, ``B = −P / diag(P)`` (column-wise) with ``diag(B) = 0``; a user's scores are
``X_u B``. Pure numpy (float64 for the inverse), no randomness: the same snapshot and λ give the
same bytes.

**Recency prior** (``recency_bias``): a log whose tastes move (a film's first weeks) rewards what
is popular *now*, which an item-item model of the whole window does not see. The family adds
``α · r_i / max(r)`` to every user's score of item i, where ``r`` is the item's recent popularity
(distinct users over the window's last days, ``jobs.core.recency``: the gate's recent-popularity
baseline) — EASE ranks within what is current, the prior lifts what is current. ``α = 0`` is
plain EASE. α is chosen per run (``choose_recent_weight``) on the window's own last days, so a log
whose tastes do not move (the synthetic world before a launch) keeps plain EASE and a real log
(ML-100K's temporal protocol, ``benchmarks/bench_quality.py``) gets the prior.

Export (the one scoring contract, ``jobs.core.model``): ``user_factors = X`` (users × items,
float32), ``item_factors = Bᵀ`` (items × items) and ``item_bias`` = the prior (0 without it), so
that ``user_factors @ item_factorsᵀ + item_bias = X B + prior`` and blocked GEMM + top-k serves
EASE like MF. Cost:
users × items + items² floats (4 bytes each) in the artifact and in every scorer's memory, one
items³ inversion to train. It stops scaling around 30k items (30k² × 4 bytes = 3.6 GB for B,
plus the float64 Gram matrix and its inverse while training); past that the next step is a
sparse X (user rows as a CSR multiplied at scoring time) and a pruned B.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np


def interaction_matrix(users: np.ndarray, items: np.ndarray, n_users: int, n_items: int) -> np.ndarray:
    """The binary users × items matrix of the (user, item) pairs (float64; duplicates count once)."""
    x = np.zeros((n_users, n_items), dtype=np.float64)
    x[np.asarray(users, dtype=np.int64), np.asarray(items, dtype=np.int64)] = 1.0
    return x


def ease_weights(x: Any, l2: float) -> np.ndarray:
    """EASE's item-item matrix B (items × items, float64, zero diagonal) for binary ``x``: a
    dense array or a ``scipy.sparse`` matrix (the Gram matrix is dense either way; a sparse ``x``
    only saves the users × items dense copy)."""
    if l2 <= 0:
        raise ValueError("the L2 penalty must be > 0")
    sparse = hasattr(x, "tocsr")  # scipy.sparse: XᵀX is sparse too, densified in float64
    gram = np.asarray((x.T @ x).toarray(), dtype=np.float64) if sparse else x.T @ x
    gram[np.diag_indices_from(gram)] += l2
    p = np.linalg.inv(gram)
    b = -p / np.diag(p)[None, :]
    b[np.diag_indices_from(b)] = 0.0
    return b


def recency_bias(recent: np.ndarray, weight: float) -> np.ndarray:
    """The recency prior as an item bias (float64): ``weight × recent / max(recent)``, in
    ``[0, weight]``; zeros when ``weight`` is 0 or no item is recent."""
    if weight < 0:
        raise ValueError("the recency prior's weight must be >= 0")
    recent = np.asarray(recent, dtype=np.float64)
    top = float(recent.max()) if len(recent) else 0.0
    return weight * recent / top if weight > 0 and top > 0 else np.zeros(len(recent))


def export_arrays(x: np.ndarray, b: np.ndarray, bias: np.ndarray | None = None) -> dict[str, np.ndarray]:
    """The ``recsys.npz`` factors: ``X``, ``Bᵀ`` and the bias (the prior, or zeros; see the module docstring)."""
    return {
        "user_factors": np.ascontiguousarray(x, dtype=np.float32),
        "item_factors": np.ascontiguousarray(b.T, dtype=np.float32),
        "item_bias": np.zeros(b.shape[0], dtype=np.float32) if bias is None else np.asarray(bias, dtype=np.float32),
    }


def top_k_unseen(x: np.ndarray, b: np.ndarray, users: np.ndarray, k: int, bias: np.ndarray | None = None) -> np.ndarray:
    """Top-``k`` item indices of ``X_u B`` (+ ``bias``) for ``users``, items of the user's history
    excluded (ties to the lower index; -1 when fewer than ``k`` items are left)."""
    scores = x[users] @ b
    if bias is not None:
        scores = scores + np.asarray(bias, dtype=np.float64)[None, :]
    scores[x[users] > 0] = -np.inf
    order = np.argsort(-scores, axis=1, kind="stable")[:, :k]
    return np.where(np.isfinite(np.take_along_axis(scores, order, axis=1)), order, -1)


def _ndcg(ranked: np.ndarray, truth: np.ndarray) -> float:
    """Mean NDCG of ranked item lists against a binary truth matrix (rows aligned)."""
    k = ranked.shape[1]
    discounts = 1.0 / np.log2(np.arange(2, k + 2))
    hits = np.take_along_axis(truth, np.maximum(ranked, 0), axis=1) * (ranked >= 0)
    dcg = (hits * discounts).sum(axis=1)
    ideal = np.cumsum(discounts)[np.minimum(truth.sum(axis=1).astype(np.int64), k) - 1]
    return float((dcg / ideal).mean())


def choose_l2(x: np.ndarray, grid: Sequence[float], k: int, seed: int, holdout: float = 0.2) -> dict[str, float]:
    """λ by a seeded validation inside the training window (the test days are never seen).

    Each user with at least two items hides a seeded ``holdout`` share of them (at least one);
    EASE is fitted on the rest for every λ of ``grid`` and scored by NDCG@``k`` of the hidden items.

    Returns:
        ``{"l2": best λ (ties to the smaller), "ndcg": its NDCG, "ndcg@<λ>": every λ's NDCG}``.
    """
    rng = np.random.default_rng(seed)
    rows, cols = np.nonzero(x)
    order = rng.permutation(len(rows))
    rows, cols = rows[order], cols[order]
    counts = np.bincount(rows, minlength=x.shape[0])
    rank = np.empty(len(rows), dtype=np.int64)  # position of each pair among its user's shuffled pairs
    sorter = np.argsort(rows, kind="stable")
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
    rank[sorter] = np.arange(len(rows)) - np.repeat(starts, counts)
    hide = (counts[rows] >= 2) & (rank < np.maximum(1, np.floor(holdout * counts[rows])))
    fit, truth = x.copy(), np.zeros_like(x)
    fit[rows[hide], cols[hide]] = 0.0
    truth[rows[hide], cols[hide]] = 1.0
    users = np.flatnonzero(truth.sum(axis=1) > 0)
    scores = {}
    for l2 in sorted(set(float(v) for v in grid)):
        scores[l2] = _ndcg(top_k_unseen(fit, ease_weights(fit, l2), users, k), truth[users])
    best = max(scores, key=lambda v: (scores[v], -v))
    return {"l2": best, "ndcg": scores[best], **{f"ndcg@{v:g}": s for v, s in scores.items()}}


def choose_recent_weight(
    x_before: np.ndarray,
    valid_users: np.ndarray,
    valid_items: np.ndarray,
    recent_before: np.ndarray,
    grid: Sequence[float],
    l2: float,
    k: int,
) -> dict[str, float]:
    """α of the recency prior by a temporal validation inside the window (the test days are never seen).

    EASE is fitted (λ = ``l2``) on ``x_before``, the binary pairs of the window before its last
    days; the truth is those days' positive pairs (``valid_users``, ``valid_items``) the user did
    not have before — what serving could recommend, as the gate judges it. Each α of ``grid`` adds
    ``recency_bias(recent_before, α)`` (recent popularity as of the day before the last days) and is
    scored by NDCG@``k``. On ML-100K's temporal protocol a 7-day validation chose well where the
    last day alone (a few users) did not (``docs/benchmarks.md``).

    Returns:
        ``{"alpha": best α (ties to the smaller; 0 when no user can be judged), "users":
        users judged, "ndcg@<α>": every α's NDCG}``.
    """
    truth = np.zeros_like(x_before)
    truth[np.asarray(valid_users, dtype=np.int64), np.asarray(valid_items, dtype=np.int64)] = 1.0
    truth[x_before > 0] = 0.0  # an item the user had before is not a recommendation to find
    users = np.flatnonzero((truth.sum(axis=1) > 0) & (x_before.sum(axis=1) > 0))  # a history to rank from
    if not len(users):
        return {"alpha": 0.0, "users": 0.0}
    b = ease_weights(x_before, l2)
    scores = {
        float(a): _ndcg(top_k_unseen(x_before, b, users, k, recency_bias(recent_before, a)), truth[users])
        for a in sorted(set(float(v) for v in grid))
    }
    best = max(scores, key=lambda a: (scores[a], -a))
    return {"alpha": best, "users": float(len(users)), **{f"ndcg@{a:g}": v for a, v in scores.items()}}
