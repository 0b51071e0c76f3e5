"""Tiny real MLflow pyfuncs for the registry tests (pickled by reference: this module is importable)."""

from __future__ import annotations

import mlflow
import pandas as pd


class FixedRanker(mlflow.pyfunc.PythonModel):
    """Recommends the same items, with score 1.0 each, to every user."""

    def __init__(self, items: list[int]) -> None:
        self.items = items

    def predict(self, context, model_input: pd.DataFrame, params=None) -> pd.DataFrame:
        return pd.DataFrame(
            {
                "user_id": model_input["user_id"],
                "item_ids": [self.items] * len(model_input),
                "scores": [[1.0] * len(self.items)] * len(model_input),
            }
        )
