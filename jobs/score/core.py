"""The scoring core as a pure function (no Spark, no MLflow): top-K per user in matrix batches.

``score_users(recommender, user_ids, extra_seen, k)``: one matrix product + bias per batch of
users, seen items masked, ``torch.topk``; ties broken by item id (see ``docs/stages.md``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from jobs.core.cli import BadInput

if TYPE_CHECKING:
    import pyarrow as pa

    from jobs.core.model import Recommender

DEVICES = ("auto", "cpu", "cuda")


class ScoreError(BadInput):
    """The day or the model cannot be scored (bad input: not retried)."""


@dataclass(frozen=True)
class Exclusions:
    """Extra item ids per user: user ``j``'s ids are ``values[offsets[j]:offsets[j + 1]]``."""

    offsets: np.ndarray  # int64, n_users + 1
    values: np.ndarray  # int64 item ids

    @classmethod
    def from_lists(cls, lists: Sequence[Sequence[int] | np.ndarray | None]) -> Exclusions:
        lengths = np.array([0 if x is None else len(x) for x in lists], dtype=np.int64)
        offsets = np.zeros(len(lists) + 1, dtype=np.int64)
        np.cumsum(lengths, out=offsets[1:])
        parts = [np.asarray(x, dtype=np.int64) for x in lists if x is not None and len(x)]
        return cls(offsets, np.concatenate(parts) if parts else np.zeros(0, dtype=np.int64))

    @classmethod
    def none(cls, n: int) -> Exclusions:
        return cls(np.zeros(n + 1, dtype=np.int64), np.zeros(0, dtype=np.int64))

    @classmethod
    def from_arrow(cls, arr: pa.Array) -> Exclusions:
        """From an Arrow list<int64> array (null = no extra items); handles sliced arrays."""
        import pyarrow.compute as pc

        lengths = pc.fill_null(pc.list_value_length(arr), 0).to_numpy(zero_copy_only=False).astype(np.int64)
        offsets = np.zeros(len(arr) + 1, dtype=np.int64)
        np.cumsum(lengths, out=offsets[1:])
        values = arr.flatten().to_numpy(zero_copy_only=False).astype(np.int64, copy=False)
        return cls(offsets, values)

    def __len__(self) -> int:
        return len(self.offsets) - 1


@dataclass(frozen=True)
class Scored:
    """Long-format top-K: one entry per (user, rank), ordered by input user order then rank."""

    user_id: np.ndarray  # int64
    rank: np.ndarray  # int32, 1 = best
    item_id: np.ndarray  # int64
    score: np.ndarray  # float32
    users: int
    unknown_users: int

    def __len__(self) -> int:
        return len(self.user_id)


class ScoringModel:
    """A ``Recommender`` laid out for batch scoring on one device, items in ``item_id`` order.

    Keeping the items sorted by id makes "smaller item index" and "smaller item id" the same
    thing, which is the tie rule. Models written by ``jobs.train`` are already in that order
    (the snapshot numbers items by id); another order is permuted once here.
    """

    def __init__(self, rec: Recommender, device: str = "cpu") -> None:
        import torch

        from jobs.core.model import CSR

        self.rec = rec
        self.device = torch.device(device)
        order = np.argsort(rec.item_ids, kind="stable")
        self.item_ids = np.ascontiguousarray(rec.item_ids[order])
        if len(self.item_ids) > 1 and (np.diff(self.item_ids) == 0).any():
            raise ScoreError("the model's item_ids are not unique")
        identity = np.array_equal(order, np.arange(len(order)))
        item_factors = rec.item_factors if identity else rec.item_factors[torch.from_numpy(order)]
        item_bias = rec.item_bias if identity else rec.item_bias[torch.from_numpy(order)]
        popularity = rec.popularity if identity else rec.popularity[order]
        if identity:
            self.seen = rec.seen
        else:
            inverse = np.empty_like(order)
            inverse[order] = np.arange(len(order))
            self.seen = CSR(rec.seen.indptr, inverse[rec.seen.indices], rec.seen.n_cols)
        self.user_factors = rec.user_factors.to(self.device)
        self.item_factors = item_factors.contiguous().to(self.device)
        self.item_bias = item_bias.contiguous().to(self.device)
        # Unknown users rank by popularity: a zero embedding plus the popularity as the "bias"
        # goes through exactly the same masked top-k as the model's scores.
        self.pop_bias = torch.as_tensor(popularity.astype(np.float32)).to(self.device)
        self.pop_factors = torch.zeros((len(self.item_ids), 1), dtype=torch.float32, device=self.device)

    @property
    def n_items(self) -> int:
        return len(self.item_ids)

    def user_index(self, user_ids: np.ndarray) -> np.ndarray:
        return self.rec.user_index(user_ids)

    def item_index(self, item_ids: np.ndarray) -> np.ndarray:
        """Column of each item id, -1 for an id outside the model's catalogue."""
        item_ids = np.asarray(item_ids, dtype=np.int64)
        if not self.n_items:
            return np.full(len(item_ids), -1, dtype=np.int64)
        pos = np.searchsorted(self.item_ids, item_ids).clip(0, self.n_items - 1)
        return np.where(self.item_ids[pos] == item_ids, pos, -1)


def _ranked_chunk(
    model: ScoringModel,
    factors: Any,
    item_factors: Any,
    bias: Any,
    exclude_rows: np.ndarray,
    exclude_cols: np.ndarray,
    k: int,
) -> tuple[np.ndarray, np.ndarray]:
    """Top-``k`` item columns and scores for a chunk of users, ties broken by item index.

    ``factors`` (n, F) are the chunk's user rows; ``exclude_rows/cols`` the (position, column)
    pairs to mask. Returns (n, k) int64 columns (-1 = no eligible item) and float32 scores.
    """
    import torch

    from jobs.core.model import CSR, top_k

    n, n_items = factors.shape[0], model.n_items
    exclude = CSR.from_pairs(exclude_rows, exclude_cols, n, n_items)
    probe = min(k + 1, n_items)  # one more slot to see a tie at the K-th place
    cols, vals = top_k(factors, item_factors, bias, np.arange(n), probe, exclude=exclude, batch_users=max(n, 1))
    if probe > k:
        boundary = np.isfinite(vals[:, k - 1]) & (vals[:, k - 1] == vals[:, k])
        cols, vals = cols[:, :k].copy(), vals[:, :k].copy()
    else:
        boundary = np.zeros(n, dtype=bool)
    # Equal scores inside the top k: order them by column (= item id order).
    same = (vals[:, 1:] == vals[:, :-1]) & np.isfinite(vals[:, 1:])
    tied = np.flatnonzero(same.any(axis=1) & ~boundary)
    if len(tied):
        sub_cols, sub_vals = cols[tied], vals[tied]
        order = np.lexsort((np.where(sub_cols < 0, n_items, sub_cols), -sub_vals), axis=1)
        cols[tied] = np.take_along_axis(sub_cols, order, axis=1)
        vals[tied] = np.take_along_axis(sub_vals, order, axis=1)
    rows = np.flatnonzero(boundary)
    if len(rows):  # an equal score just outside the top k: re-rank these users with a stable full sort
        with torch.no_grad():
            sub = factors[torch.as_tensor(rows, device=factors.device)]
            scores = (sub @ item_factors.T + bias).float()
            pos, col = exclude.gather(rows)
            if len(pos):
                scores[
                    torch.as_tensor(pos, device=scores.device), torch.as_tensor(col, device=scores.device)
                ] = -torch.inf
            best, idx = torch.sort(scores, dim=1, descending=True, stable=True)
            best, idx = best[:, :k], idx[:, :k]
            idx = torch.where(torch.isneginf(best), torch.full_like(idx, -1), idx)
        cols[rows] = idx.cpu().numpy()
        vals[rows] = best.cpu().numpy()
    return cols, vals


def _score_group(
    model: ScoringModel,
    rows: np.ndarray,
    group: np.ndarray,
    is_known: bool,
    extra: tuple[np.ndarray, np.ndarray],
    out: tuple[np.ndarray, np.ndarray],
    batch_users: int,
) -> None:
    """Rank one group of users (positions ``group``: all known to the model, or all unknown) in
    chunks of ``batch_users``, writing columns and scores into ``out`` at those positions.

    Known users exclude their training-window items and their extra pairs and score with their
    factors; unknown users exclude their extra pairs only and get the popularity ranking.
    """
    import torch

    extra_pos, extra_col = extra
    cols, vals = out
    kk = cols.shape[1]
    # the group's extra pairs, with users numbered 0.. inside the group (ascending)
    rank_in_group = np.full(len(rows), -1, dtype=np.int64)
    rank_in_group[group] = np.arange(len(group))
    g_rows = rank_in_group[extra_pos]
    g_keep = g_rows >= 0
    g_rows, g_cols = g_rows[g_keep], extra_col[g_keep]
    for lo in range(0, len(group), batch_users):
        chunk = group[lo : lo + batch_users]
        a, b = np.searchsorted(g_rows, [lo, lo + len(chunk)])
        e_rows, e_cols = g_rows[a:b] - lo, g_cols[a:b]
        if is_known:
            s_rows, s_cols = model.seen.gather(rows[chunk])
            ex_rows, ex_cols = np.concatenate([s_rows, e_rows]), np.concatenate([s_cols, e_cols])
            factors = model.user_factors[torch.as_tensor(rows[chunk], device=model.device)]
            c, v = _ranked_chunk(model, factors, model.item_factors, model.item_bias, ex_rows, ex_cols, kk)
        else:
            factors = torch.zeros((len(chunk), 1), dtype=torch.float32, device=model.device)
            c, v = _ranked_chunk(model, factors, model.pop_factors, model.pop_bias, e_rows, e_cols, kk)
        cols[chunk], vals[chunk] = c, v


def score_users(
    recommender: Recommender | ScoringModel,
    user_ids: Sequence[int] | np.ndarray,
    extra_seen: Exclusions | Sequence[Sequence[int] | np.ndarray | None] | None,
    k: int,
    *,
    batch_users: int = 4096,
    device: str | None = None,
) -> Scored:
    """Top-``k`` items for each user: the scoring core of the batch job, as a pure function.

    Args:
        recommender: the model (``jobs.model.Recommender``, or a prepared ``ScoringModel``
            to reuse across calls).
        user_ids: users to score (int64 ids; known or not to the model).
        extra_seen: per user (aligned with ``user_ids``), item ids to exclude besides the
            model's training-window ``seen`` items; ``None`` = nothing extra.
        k: recommendations per user (at most the catalogue size).
        batch_users: users per matrix product.
        device: ``cpu``/``cuda`` when a ``Recommender`` is given (default cpu).

    Returns:
        Long-format ``Scored``: for each user in input order, ranks 1..k by descending score
        (ties: smaller item id first), items never seen by that user; unknown users get the
        snapshot's most popular items (score = training pair count).
    """
    if k < 1:
        raise ValueError("k must be at least 1")
    model = recommender if isinstance(recommender, ScoringModel) else ScoringModel(recommender, device or "cpu")
    users = np.asarray(user_ids, dtype=np.int64)
    n = len(users)
    if extra_seen is None:
        extra = Exclusions.none(n)
    elif isinstance(extra_seen, Exclusions):
        extra = extra_seen
    else:
        extra = Exclusions.from_lists(extra_seen)
    if len(extra) != n:
        raise ValueError(f"extra_seen has {len(extra)} rows for {n} users")
    kk = min(int(k), model.n_items)
    cols = np.full((n, kk), -1, dtype=np.int64)
    vals = np.full((n, kk), -np.inf, dtype=np.float32)
    # Extra exclusions as (user position, item column) pairs, items outside the catalogue dropped.
    extra_pos = np.repeat(np.arange(n, dtype=np.int64), np.diff(extra.offsets))
    extra_col = model.item_index(extra.values)
    keep = extra_col >= 0
    extra_pos, extra_col = extra_pos[keep], extra_col[keep]
    rows = model.user_index(users)
    known = np.flatnonzero(rows >= 0)
    unknown = np.flatnonzero(rows < 0)
    if kk:
        for group, is_known in ((known, True), (unknown, False)):
            _score_group(model, rows, group, is_known, (extra_pos, extra_col), (cols, vals), batch_users)
    valid = cols >= 0
    counts = valid.sum(axis=1)
    flat_cols = cols[valid]
    return Scored(
        user_id=np.repeat(users, counts),
        rank=np.nonzero(valid)[1].astype(np.int32) + 1,
        item_id=model.item_ids[flat_cols] if len(flat_cols) else np.zeros(0, dtype=np.int64),
        score=vals[valid].astype(np.float32),
        users=n,
        unknown_users=len(unknown),
    )
