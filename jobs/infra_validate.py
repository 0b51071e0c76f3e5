"""Infra validation: the registered model loads and serves, in a fresh process.

``python -m jobs.infra_validate --model-uri models:/<name>/<version> --snapshot DIR``

Loads the model by its registry URI exactly as scoring will, scores a smoke batch (known users
from the snapshot plus an unknown id) and checks the output contract: one row per user, columns
``user_id``/``item_ids``/``scores``, K integer item ids per user sorted by non-increasing score,
and no item the user interacted with in the training window. Exit 4 names the broken rule; the
DAG does not promote a model that fails here.
"""

from __future__ import annotations

import argparse
import itertools
import sys
import time
from pathlib import Path

import numpy as np

from jobs import storage
from jobs.config import ConfigError, get_config


class InfraValidationError(RuntimeError):
    """The model does not meet the serving contract."""


def check(model_uri: str, snapshot_uri: str, k: int, smoke_users: int = 64) -> dict:
    import mlflow.pyfunc
    import pandas as pd

    from jobs.evaluate import Snapshot

    started = time.perf_counter()
    snap = Snapshot(snapshot_uri)
    model = mlflow.pyfunc.load_model(model_uri)
    known = [int(u) for u in snap.user_ids[:smoke_users]]
    unknown = int(snap.user_ids.max()) + 10_000
    users = [*known, unknown]
    out = model.predict(
        pd.DataFrame({"user_id": np.asarray(users, dtype=np.int64), "k": np.full(len(users), k, dtype=np.int64)})
    )
    problems = []
    if list(out.columns)[:3] != ["user_id", "item_ids", "scores"]:
        problems.append(f"columns {list(out.columns)} != ['user_id', 'item_ids', 'scores', ...]")
    if len(out) != len(users) or [int(u) for u in out["user_id"]] != users:
        problems.append(f"expected one row per input user in order ({len(users)}), got {len(out)}")
    catalogue = set(int(i) for i in snap.item_ids)
    for user, items, scores in zip(out["user_id"], out["item_ids"], out["scores"], strict=False):
        items, scores = list(items), [float(s) for s in scores]
        want = min(k, len(catalogue) - len(snap.seen.get(int(user), ())))
        if len(items) != want or len(scores) != len(items):
            problems.append(f"user {user}: {len(items)} items / {len(scores)} scores, expected {want}")
        if not all(isinstance(i, int | np.integer) for i in items):
            problems.append(f"user {user}: item ids are not integers")
        if any(a < b - 1e-6 for a, b in itertools.pairwise(scores)):
            problems.append(f"user {user}: scores not sorted descending")
        seen = snap.seen.get(int(user), set()) & {int(i) for i in items}
        if seen:
            problems.append(f"user {user}: recommends already-seen items {sorted(seen)[:5]}")
        if not {int(i) for i in items} <= catalogue:
            problems.append(f"user {user}: items outside the catalogue")
        if len(problems) > 10:
            break
    if problems:
        raise InfraValidationError(f"{model_uri} failed infra validation: " + "; ".join(problems[:10]))
    return {
        "model_uri": model_uri,
        "smoke_users": len(users),
        "k": k,
        "seconds": round(time.perf_counter() - started, 3),
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m jobs.infra_validate", description=__doc__.split("\n\n")[0])
    ap.add_argument("--model-uri", required=True)
    ap.add_argument("--snapshot", required=True)
    ap.add_argument("--result-file", type=Path)
    args = ap.parse_args(argv)
    try:
        cfg = get_config()
    except ConfigError as exc:
        print(exc, file=sys.stderr)
        return 2
    import mlflow

    from jobs.registry import tracking_errors, tracking_exit

    mlflow.set_tracking_uri(cfg.mlflow.tracking_uri)
    try:
        result = check(args.model_uri, args.snapshot, cfg.scoring.k)
    except ConfigError as exc:
        print(exc, file=sys.stderr)
        return 2
    except tracking_errors() as exc:  # server down, timeout, 5xx: exit 1 = retried, never "invalid"
        return tracking_exit(cfg, exc, "infra validation could not run", args.result_file)
    except InfraValidationError as exc:
        print(str(exc), file=sys.stderr)
        if args.result_file:
            storage.write_json_atomic(args.result_file, {"message": str(exc)})
        return 4
    if args.result_file:
        storage.write_json_atomic(args.result_file, result)
    print(f"infra validation passed: {result}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
