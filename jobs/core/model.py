"""The model artifact: what a trained recommender is on disk and how it ranks (the serving contract).

Written by the trainers (``jobs.train``), read by scoring, the gate, infra validation and the
monitor. The factors are trained by ``jobs.train.model``; this module needs only numpy and
torch (for the batched product and ``topk``).

Scoring
  ``top_k`` ranks every item for a batch of users with one matrix product (users x factors
  times factors x items) plus the bias, masks the items each user already has in the training
  snapshot (a CSR of seen items, scattered as ``-inf`` in one indexed assignment) and takes
  ``torch.topk``; there is no per-user Python loop. Slots with no eligible item (a user who has
  seen almost the whole catalogue) come back as item ``-1``.

Serving
  ``RecsysPyfunc`` is the MLflow pyfunc the trainer logs. It needs only the ``.npz`` artifact
  (embeddings, bias, id maps, popularity and the seen-items CSR) and this module (logged with
  the model as code, so the repository need not be importable): input ``user_id`` (int64,
  optional ``k``, default ``scoring.k``), output ``user_id``, ``item_ids`` (top-K item ids,
  never an item the user has in the training snapshot) and ``scores`` (model scores). A user
  not in the snapshot gets the K most popular items of the snapshot (nothing is seen for them)
  with the items' training pair counts as ``scores``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import torch

from jobs.core.ids import IdIndex

# ---- seen-items CSR ----------------------------------------------------------------------


@dataclass(frozen=True)
class CSR:
    """Rows (users) → sorted column ids (items): ``indices[indptr[u]:indptr[u + 1]]``."""

    indptr: np.ndarray  # int64, n_rows + 1
    indices: np.ndarray  # int64
    n_cols: int

    @property
    def n_rows(self) -> int:
        return len(self.indptr) - 1

    @classmethod
    def from_pairs(cls, rows: np.ndarray, cols: np.ndarray, n_rows: int, n_cols: int) -> CSR:
        """CSR of distinct (row, col) pairs (duplicates are dropped)."""
        rows = np.asarray(rows, dtype=np.int64)
        cols = np.asarray(cols, dtype=np.int64)
        keys = np.unique(rows * n_cols + cols)
        r, c = np.divmod(keys, n_cols)
        indptr = np.zeros(n_rows + 1, dtype=np.int64)
        np.cumsum(np.bincount(r, minlength=n_rows), out=indptr[1:])
        return cls(indptr, c.astype(np.int64), n_cols)

    def gather(self, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(position in ``rows``, column) of every stored entry of the given rows, vectorised."""
        rows = np.asarray(rows, dtype=np.int64)
        starts = self.indptr[rows]
        lengths = self.indptr[rows + 1] - starts
        total = int(lengths.sum())
        pos = np.repeat(np.arange(len(rows), dtype=np.int64), lengths)
        first = np.repeat(starts - (np.cumsum(lengths) - lengths), lengths)
        return pos, self.indices[first + np.arange(total, dtype=np.int64)]


# ---- ranking ----------------------------------------------------------------------------


@torch.no_grad()
def score_all(
    user_factors: torch.Tensor, item_factors: torch.Tensor, item_bias: torch.Tensor | None, user_idx: torch.Tensor
) -> torch.Tensor:
    """Scores of every item for the given users: ``P[user_idx] @ Q.T + b`` (len(user_idx), n_items)."""
    scores = user_factors[user_idx] @ item_factors.T
    if item_bias is not None:
        scores += item_bias
    return scores


@torch.no_grad()
def top_k(
    user_factors: torch.Tensor | np.ndarray,
    item_factors: torch.Tensor | np.ndarray,
    item_bias: torch.Tensor | np.ndarray | None,
    user_idx: torch.Tensor | np.ndarray,
    k: int,
    exclude: CSR | None = None,
    batch_users: int = 4096,
) -> tuple[np.ndarray, np.ndarray]:
    """Top-``k`` items for each user in ``user_idx``: (items int64 (n, k), scores float32 (n, k)).

    Batched matrix product + ``torch.topk``; the ``exclude`` CSR rows (indexed like
    ``user_factors``) are masked out. ``k`` is capped at the catalogue size; slots with no
    eligible item hold item -1 and score -inf.
    """
    p = torch.as_tensor(user_factors)
    q = torch.as_tensor(item_factors, device=p.device, dtype=p.dtype)
    b = None if item_bias is None else torch.as_tensor(item_bias, device=p.device, dtype=p.dtype)
    users_np = np.asarray(user_idx.cpu() if isinstance(user_idx, torch.Tensor) else user_idx, dtype=np.int64)
    n_items = q.shape[0]
    k = min(int(k), n_items)
    out_items = np.empty((len(users_np), k), dtype=np.int64)
    out_scores = np.empty((len(users_np), k), dtype=np.float32)
    for lo in range(0, len(users_np), batch_users):
        batch = users_np[lo : lo + batch_users]
        scores = score_all(p, q, b, torch.as_tensor(batch, device=p.device)).float()
        if exclude is not None:
            rows, cols = exclude.gather(batch)
            if len(rows):
                scores[torch.as_tensor(rows, device=p.device), torch.as_tensor(cols, device=p.device)] = -torch.inf
        vals, idx = torch.topk(scores, k, dim=1, sorted=True)
        idx = torch.where(torch.isneginf(vals), torch.full_like(idx, -1), idx)
        out_items[lo : lo + len(batch)] = idx.cpu().numpy()
        out_scores[lo : lo + len(batch)] = vals.cpu().numpy()
    return out_items, out_scores


# ---- MLflow pyfunc ----------------------------------------------------------------------

ARTIFACT_KEY = "recsys"  # the pyfunc artifact holding the .npz (schema.MODEL_FILE)


def save_artifact(
    path: str,
    *,
    user_factors: np.ndarray,
    item_factors: np.ndarray,
    item_bias: np.ndarray,
    user_ids: np.ndarray,
    item_ids: np.ndarray,
    popularity: np.ndarray,
    seen: CSR,
    default_k: int,
) -> None:
    """Write everything the pyfunc needs into one ``.npz``."""
    with open(path, "wb") as fh:
        np.savez(
            fh,
            user_factors=np.asarray(user_factors, dtype=np.float32),
            item_factors=np.asarray(item_factors, dtype=np.float32),
            item_bias=np.asarray(item_bias, dtype=np.float32),
            user_ids=np.asarray(user_ids, dtype=np.int64),
            item_ids=np.asarray(item_ids, dtype=np.int64),
            popularity=np.asarray(popularity, dtype=np.int64),
            seen_indptr=seen.indptr.astype(np.int64),
            seen_indices=seen.indices.astype(np.int64),
            default_k=np.array(int(default_k)),
        )


class Recommender:
    """Top-K recommendations by user id from the packed arrays (the pyfunc's engine)."""

    def __init__(self, arrays: dict[str, np.ndarray]) -> None:
        self.user_factors = torch.from_numpy(arrays["user_factors"])
        self.item_factors = torch.from_numpy(arrays["item_factors"])
        self.item_bias = torch.from_numpy(arrays["item_bias"])
        self.user_ids = arrays["user_ids"]
        self.item_ids = arrays["item_ids"]
        self.popularity = arrays["popularity"]
        self.seen = CSR(arrays["seen_indptr"], arrays["seen_indices"], len(self.item_ids))
        self.default_k = int(arrays["default_k"])
        self._user_rows = IdIndex(self.user_ids)
        # Popularity order for unknown users: most pairs first, ties by item index.
        self._popular = np.lexsort((np.arange(len(self.popularity)), -self.popularity))

    @classmethod
    def load(cls, path: str) -> Recommender:
        with np.load(path) as npz:
            return cls({key: npz[key] for key in npz.files})

    def user_index(self, user_ids: np.ndarray) -> np.ndarray:
        """Row of each user id, -1 for an id not in the training snapshot."""
        return self._user_rows(user_ids)

    def recommend(self, user_ids: np.ndarray, k: int | np.ndarray | None = None) -> list[dict[str, Any]]:
        user_ids = np.asarray(user_ids, dtype=np.int64)
        ks = np.full(len(user_ids), self.default_k if k is None else 0, dtype=np.int64)
        if k is not None:
            ks[:] = np.asarray(k, dtype=np.int64)
        if (ks < 1).any():
            raise ValueError("k must be at least 1")
        kmax = int(ks.max()) if len(ks) else 0
        rows = self.user_index(user_ids)
        known = rows >= 0
        items = np.full((len(user_ids), min(kmax, len(self.item_ids))), -1, dtype=np.int64)
        scores = np.full(items.shape, -np.inf, dtype=np.float32)
        if known.any():
            items[known], scores[known] = top_k(
                self.user_factors, self.item_factors, self.item_bias, rows[known], kmax, self.seen
            )
        if (~known).any():
            top = self._popular[: items.shape[1]]
            items[~known] = top
            scores[~known] = self.popularity[top].astype(np.float32)
        out = []
        for uid, kk, it, sc in zip(user_ids, ks, items, scores, strict=True):
            valid = it[:kk] >= 0
            out.append(
                {
                    "user_id": int(uid),
                    "item_ids": self.item_ids[it[:kk][valid]].tolist(),
                    "scores": sc[:kk][valid].astype(np.float64).tolist(),
                }
            )
        return out


def _pyfunc_class() -> type:
    from mlflow.pyfunc import PythonModel

    class RecsysPyfunc(PythonModel):
        """MLflow pyfunc: DataFrame[user_id int64, k int64 optional] → DataFrame[user_id, item_ids, scores]."""

        def load_context(self, context) -> None:
            self._rec = Recommender.load(context.artifacts[ARTIFACT_KEY])

        def predict(self, context, model_input: pd.DataFrame, params: dict[str, Any] | None = None) -> pd.DataFrame:
            frame = model_input if isinstance(model_input, pd.DataFrame) else pd.DataFrame(model_input)
            if "user_id" not in frame.columns:
                raise ValueError("input must have a user_id column")
            k = None
            if "k" in frame.columns and frame["k"].notna().any():
                k = frame["k"].fillna(self._rec.default_k).to_numpy(dtype=np.int64)
            elif params and params.get("k"):
                k = int(params["k"])
            rows = self._rec.recommend(frame["user_id"].to_numpy(dtype=np.int64), k)
            return pd.DataFrame(rows, columns=["user_id", "item_ids", "scores"])

    RecsysPyfunc.__module__, RecsysPyfunc.__qualname__ = __name__, "RecsysPyfunc"  # pickled by reference
    return RecsysPyfunc


def __getattr__(name: str) -> Any:
    """``RecsysPyfunc`` (the MLflow pyfunc) is built on first access: it subclasses MLflow's
    ``PythonModel``, and importing MLflow costs every process that imports this module 1-2 s
    (each Spark scoring worker does, and uses only ``top_k`` and ``CSR``). Pickle looks the
    class up by name here too, so a logged model unpickles to the same class."""
    if name == "RecsysPyfunc":
        cls = globals()[name] = _pyfunc_class()
        return cls
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
