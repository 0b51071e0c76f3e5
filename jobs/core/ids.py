"""Id → row lookups shared by the models' engines (numpy only: the pyfuncs load it without torch)."""

from __future__ import annotations

import numpy as np


class IdIndex:
    """Row of each id in ``ids`` (its first row for a repeated id), -1 for an id not in it."""

    def __init__(self, ids: np.ndarray) -> None:
        ids = np.asarray(ids, dtype=np.int64)
        order = np.argsort(ids, kind="stable")
        self._sorted, self._pos = ids[order], order

    def __call__(self, ids: np.ndarray) -> np.ndarray:
        ids = np.asarray(ids, dtype=np.int64)
        if not len(self._sorted):
            return np.full(len(ids), -1, dtype=np.int64)
        pos = np.searchsorted(self._sorted, ids).clip(0, len(self._sorted) - 1)
        return np.where(self._sorted[pos] == ids, self._pos[pos], -1)
