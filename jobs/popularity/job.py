"""Popularity baseline as a servable model: the second trainer behind the model-pipeline factory.

``python -m jobs.popularity --snapshot DIR [--run-name NAME] [--checkpoint-dir DIR]
[--experiment NAME] [--tracking-uri URI] [--k K] [--result-file PATH]``

Why a model for popularity: it is the cold-start fallback a recommender serves when the learned
model cannot be trusted, and it is exactly the baseline the gate (``jobs.evaluate``) compares
every challenger with. Registering it as its own model (``recsys-popularity``) through the same
snapshot → gate → registry → promotion path makes that fallback versioned and auditable, and
proves that the pipeline pieces accept any trainer that follows the trainer's CLI contract:

* input: a published snapshot folder (``jobs/snapshot.py``), read and checked by
  ``jobs.core.snapshots.load_snapshot`` (a bad snapshot exits 3 naming the problem);
* output: an MLflow run in the configured experiment with params, the snapshot tags and input
  dataset, test metrics ``recall_at_K``/``ndcg_at_K`` and the model as a pyfunc with the
  serving signature (``user_id``, optional ``k`` → ``user_id``, ``item_ids``, ``scores``);
* result JSON (``--result-file``, and ``/airflow/xcom/return.json`` when that folder exists):
  ``{"run_id", "model_uri", "run_model_uri", "experiment_id", "metrics", "k", ...}``.

The ranking: items by the number of distinct training users (the snapshot's ``popularity``),
ties to the lower item index, items the user interacted with in the window excluded; users
unknown to the snapshot get the global top K. That is the gate's popularity ranker, so on the
same snapshot the gate scores this model exactly like its baseline (and, with the default lift
rule, never blesses it over a champion-less registry by accident).

Cached and idempotent like every trainer (``jobs.core.trainer_protocol``): a registered
version with the same cache key is reported, and a ``result.json`` of the same fingerprint in
``--checkpoint-dir`` is re-emitted, instead of logging a second model.
"""

from __future__ import annotations

import argparse
import logging
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from jobs.core import ranking
from jobs.core.cli import BadArgument, run_job
from jobs.core.config import PipelineConfig
from jobs.core.results import TrainResult
from jobs.core.snapshots import TrainData, load_snapshot
from jobs.core.trainer_protocol import Tracker, TrainerRun, add_trainer_arguments, snapshot_params
from jobs.popularity.model import ARTIFACT_KEY, PopularityPyfunc, PopularityRecommender

JOB = "jobs.popularity"


def _serving_code(root: Path) -> Path:
    """The modules the pyfunc imports, laid out as packages under ``root/jobs`` (its code path)."""
    jobs_dir = Path(__file__).resolve().parents[1]
    files = (
        "__init__.py",
        "core/__init__.py",
        "core/ids.py",
        "core/ranking.py",
        "popularity/__init__.py",
        "popularity/model.py",
    )
    for rel in files:
        (root / "jobs" / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(jobs_dir / rel, root / "jobs" / rel)
    return root / "jobs"


def seen_csr(users: np.ndarray, items: np.ndarray, n_users: int, n_items: int) -> tuple[np.ndarray, np.ndarray]:
    """(indptr, indices) of the distinct training (user, item) pairs."""
    keys = np.unique(np.asarray(users, np.int64) * n_items + np.asarray(items, np.int64))
    rows, cols = np.divmod(keys, n_items)
    indptr = np.zeros(n_users + 1, dtype=np.int64)
    np.cumsum(np.bincount(rows, minlength=n_users), out=indptr[1:])
    return indptr, cols.astype(np.int64)


def train(cfg: PipelineConfig, args: argparse.Namespace) -> TrainResult:
    """The trainer protocol around the popularity ranking: cache, rerun, rank and evaluate, one logged pyfunc."""
    data = load_snapshot(args.snapshot)
    run = TrainerRun.open(cfg, JOB, data, {"k": args.k}, args.checkpoint_dir)
    previous = run.reuse(cfg, args)
    if previous is not None:
        return previous
    indptr, indices = seen_csr(data.users, data.items, data.n_users, data.n_items)
    arrays = {
        "item_ids": data.item_ids,
        "popularity": data.popularity,
        "user_ids": data.user_ids,
        "seen_indptr": indptr,
        "seen_indices": indices,
        "default_k": np.array(int(cfg.scoring.k)),
    }
    rec = PopularityRecommender(arrays)
    test_users = np.unique(data.test_users)
    k = args.k
    ranked = ranking.popularity_top_k(data.popularity, test_users, k, rec)
    m = ranking.evaluate_ranking(ranked, (data.test_users, data.test_items), users=test_users, k=k)
    metrics = {f"recall_at_{k}": m["recall"], f"ndcg_at_{k}": m["ndcg"], "test_users": float(m["users"])}
    tracker = Tracker(args.tracking_uri, args.experiment)
    tracker.start(None, args.run_name)
    params = {
        "model": "popularity",
        "ranking": "distinct training users per item, ties to the lower item index, seen items excluded",
        **snapshot_params(data),
        "k": k,
    }
    tracker.log_inputs(data, JOB, params, run.key)
    info = log_pyfunc(tracker.mlflow, arrays, data)
    return run.finish(tracker, metrics, run.result(tracker, info.model_uri, metrics, k, data))


def log_pyfunc(mlflow: Any, arrays: dict[str, np.ndarray], data: TrainData) -> Any:
    """Log the popularity arrays as the run's ``model`` (its own pyfunc and serving code); MLflow's ``ModelInfo``."""
    from mlflow.models import ModelSignature
    from mlflow.types.schema import Array, ColSpec, Schema

    signature = ModelSignature(
        inputs=Schema([ColSpec("long", "user_id"), ColSpec("long", "k", required=False)]),
        outputs=Schema(
            [ColSpec("long", "user_id"), ColSpec(Array("long"), "item_ids"), ColSpec(Array("double"), "scores")]
        ),
    )
    with tempfile.TemporaryDirectory(prefix="recsys-popularity-") as tmp:
        npz = Path(tmp) / "popularity.npz"
        with open(npz, "wb") as fh:
            np.savez(fh, **arrays)
        code = _serving_code(Path(tmp) / "code")
        return mlflow.pyfunc.log_model(
            name="model",
            python_model=PopularityPyfunc(),
            artifacts={ARTIFACT_KEY: str(npz)},
            code_paths=[str(code)],
            signature=signature,
            input_example=pd.DataFrame({"user_id": data.user_ids[: min(3, data.n_users)].astype(np.int64)}),
            pip_requirements=[
                f"mlflow-skinny=={mlflow.__version__}",
                f"numpy=={np.__version__}",
                f"pandas=={pd.__version__}",
            ],
        )


def build_parser(cfg: PipelineConfig) -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="python -m jobs.popularity", description=__doc__.split("\n\n")[0])
    add_trainer_arguments(ap, cfg, "folder or s3:// prefix for result.json (idempotent reruns)")
    return ap


def run(cfg: PipelineConfig, args: argparse.Namespace) -> TrainResult:
    if args.k < 1:
        raise BadArgument("--k must be at least 1")
    return train(cfg, args)


def _summary(result: TrainResult) -> str:
    if result.get("cached"):
        return f"cached: version {result['cached_version']} ({result['model_uri']})"
    k, m = result["k"], result["metrics"]
    return f"popularity: recall@{k}={m[f'recall_at_{k}']:.4f} ndcg@{k}={m[f'ndcg_at_{k}']:.4f} (run {result['run_id']})"


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    return run_job(
        "popularity training",
        build_parser,
        run,
        argv,
        summary=_summary,
    )
