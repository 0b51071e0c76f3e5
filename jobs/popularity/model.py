"""The popularity model as a servable MLflow pyfunc (logged with this module as its code)."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from jobs.core.ids import IdIndex

try:  # the pyfunc wrapper needs MLflow; the ranking itself does not
    from mlflow.pyfunc import PythonModel
except ImportError:  # pragma: no cover - mlflow is installed wherever the pyfunc is used
    PythonModel = object  # type: ignore[assignment,misc]


ARTIFACT_KEY = "popularity"


class PopularityRecommender:
    """Top-K most popular unseen items per user id, from packed arrays (the pyfunc's engine)."""

    def __init__(self, arrays: dict[str, np.ndarray]) -> None:
        self.item_ids = np.asarray(arrays["item_ids"], dtype=np.int64)
        self.popularity = np.asarray(arrays["popularity"], dtype=np.int64)
        self.user_ids = np.asarray(arrays["user_ids"], dtype=np.int64)
        self.seen_indptr = np.asarray(arrays["seen_indptr"], dtype=np.int64)
        self.seen_indices = np.asarray(arrays["seen_indices"], dtype=np.int64)
        self.default_k = int(arrays["default_k"])
        self._user_rows = IdIndex(self.user_ids)

    @property
    def indptr(self) -> np.ndarray:  # the CSR view popularity_top_k expects
        return self.seen_indptr

    @property
    def indices(self) -> np.ndarray:
        return self.seen_indices

    def user_index(self, user_ids: np.ndarray) -> np.ndarray:
        """Row of each user id in the snapshot, -1 for an unknown id."""
        return self._user_rows(user_ids)

    def recommend(self, user_ids: np.ndarray, ks: np.ndarray) -> list[dict[str, Any]]:
        from jobs.core.ranking import popularity_top_k

        user_ids = np.asarray(user_ids, dtype=np.int64)
        ks = np.asarray(ks, dtype=np.int64)
        if (ks < 1).any():
            raise ValueError("k must be at least 1")
        kmax = int(ks.max()) if len(ks) else 0
        rows = self.user_index(user_ids)
        known = rows >= 0
        ranked = np.full((len(user_ids), min(kmax, len(self.item_ids))), -1, dtype=np.int64)
        if known.any():
            ranked[known] = popularity_top_k(self.popularity, rows[known], kmax, self)
        if (~known).any():
            ranked[~known] = popularity_top_k(self.popularity, np.zeros((~known).sum(), np.int64), kmax)
        out = []
        for uid, k, row in zip(user_ids, ks, ranked, strict=True):
            idx = row[:k][row[:k] >= 0]
            out.append(
                {
                    "user_id": int(uid),
                    "item_ids": self.item_ids[idx].tolist(),
                    "scores": self.popularity[idx].astype(np.float64).tolist(),
                }
            )
        return out


class PopularityPyfunc(PythonModel):
    """MLflow pyfunc: DataFrame[user_id int64, k int64 optional] → DataFrame[user_id, item_ids, scores]."""

    def load_context(self, context) -> None:
        with np.load(context.artifacts[ARTIFACT_KEY]) as npz:
            self._rec = PopularityRecommender({key: npz[key] for key in npz.files})

    def predict(self, context, model_input: pd.DataFrame, params: dict[str, Any] | None = None) -> pd.DataFrame:
        frame = model_input if isinstance(model_input, pd.DataFrame) else pd.DataFrame(model_input)
        if "user_id" not in frame.columns:
            raise ValueError("input must have a user_id column")
        default = int(params["k"]) if params and params.get("k") else self._rec.default_k
        ks = np.full(len(frame), default, dtype=np.int64)
        if "k" in frame.columns and frame["k"].notna().any():
            ks = frame["k"].fillna(default).to_numpy(dtype=np.int64)
        rows = self._rec.recommend(frame["user_id"].to_numpy(dtype=np.int64), ks)
        return pd.DataFrame(rows, columns=["user_id", "item_ids", "scores"])
