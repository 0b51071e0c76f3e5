"""Infra validation: the registered model loads and serves, in a fresh process.

``python -m jobs.evaluate infra --model-uri models:/<name>/<version> --snapshot DIR``

Loads the model by its registry URI exactly as scoring will, scores a smoke batch (known users
from the snapshot plus an unknown id) and checks the output contract: one row per user, columns
``user_id``/``item_ids``/``scores``, K integer item ids per user sorted by non-increasing score,
and no item the user interacted with in the training window. Exit 4 names the broken rule; the
DAG does not promote a model that fails here. An MLflow outage exits 1 (retried), never 4.
"""

from __future__ import annotations

import argparse
import itertools
import time
from typing import Any

import numpy as np

from jobs.core.cli import CheckFailed
from jobs.core.config import PipelineConfig
from jobs.core.results import InfraResult
from jobs.core.snapshots import load_snapshot
from jobs.evaluate.gate import HeldOut

MAX_PROBLEMS = 10


class InfraValidationError(CheckFailed):
    """The model does not meet the serving contract."""


def _problems(out: Any, users: list[int], k: int, held: HeldOut) -> list[str]:
    problems = []
    if list(out.columns)[:3] != ["user_id", "item_ids", "scores"]:
        problems.append(f"columns {list(out.columns)} != ['user_id', 'item_ids', 'scores', ...]")
    if len(out) != len(users) or [int(u) for u in out["user_id"]] != users:
        problems.append(f"expected one row per input user in order ({len(users)}), got {len(out)}")
    catalogue = {int(i) for i in held.item_ids}
    for user, items, scores in zip(out["user_id"], out["item_ids"], out["scores"], strict=False):
        items, scores = list(items), [float(s) for s in scores]
        want = min(k, len(catalogue) - len(held.seen.get(int(user), ())))
        if len(items) != want or len(scores) != len(items):
            problems.append(f"user {user}: {len(items)} items / {len(scores)} scores, expected {want}")
        if not all(isinstance(i, int | np.integer) for i in items):
            problems.append(f"user {user}: item ids are not integers")
        if any(a < b - 1e-6 for a, b in itertools.pairwise(scores)):
            problems.append(f"user {user}: scores not sorted descending")
        seen = held.seen.get(int(user), set()) & {int(i) for i in items}
        if seen:
            problems.append(f"user {user}: recommends already-seen items {sorted(seen)[:5]}")
        if not {int(i) for i in items} <= catalogue:
            problems.append(f"user {user}: items outside the catalogue")
        if len(problems) > MAX_PROBLEMS:
            break
    return problems


def check(model_uri: str, snapshot_uri: str, k: int, smoke_users: int = 64) -> InfraResult:
    """Load ``model_uri`` and check a smoke batch; ``InfraValidationError`` names what is broken."""
    import mlflow.pyfunc
    import pandas as pd

    started = time.perf_counter()
    held = HeldOut(load_snapshot(snapshot_uri))
    model = mlflow.pyfunc.load_model(model_uri)
    users = [int(u) for u in held.data.user_ids[:smoke_users]]
    users.append(int(held.data.user_ids.max()) + 10_000)  # unknown to the model
    out = model.predict(
        pd.DataFrame({"user_id": np.asarray(users, dtype=np.int64), "k": np.full(len(users), k, dtype=np.int64)})
    )
    problems = _problems(out, users, k, held)
    if problems:
        raise InfraValidationError(f"{model_uri} failed infra validation: " + "; ".join(problems[:MAX_PROBLEMS]))
    return {
        "model_uri": model_uri,
        "smoke_users": len(users),
        "k": k,
        "seconds": round(time.perf_counter() - started, 3),
    }


def add_arguments(ap: argparse.ArgumentParser) -> None:
    ap.add_argument("--model-uri", required=True)
    ap.add_argument("--snapshot", required=True)


def run(cfg: PipelineConfig, args: argparse.Namespace) -> InfraResult:
    import mlflow

    mlflow.set_tracking_uri(cfg.mlflow.tracking_uri)
    return check(args.model_uri, args.snapshot, cfg.scoring.k)
