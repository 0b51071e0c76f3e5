"""Popularity baseline as a servable model: the second trainer behind the model-pipeline factory.

``python -m jobs.popularity --snapshot DIR [--run-name NAME] [--checkpoint-dir DIR]
[--experiment NAME] [--tracking-uri URI] [--k K] [--result-file PATH]``

Why a model for popularity: it is the cold-start fallback a recommender serves when the learned
model cannot be trusted, and it is exactly the baseline the gate (``jobs.evaluate``) compares
every challenger with. Registering it as its own model (``recsys-popularity``) through the same
snapshot → gate → registry → promotion path makes that fallback versioned and auditable, and
proves that the pipeline pieces accept any trainer that follows the trainer's CLI contract:

* input: a published snapshot folder (``jobs/snapshot.py``), read and checked by
  ``jobs.core.snapshots.load_snapshot`` (a bad snapshot exits 2 naming the problem);
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

Idempotent: a run with the same snapshot manifest whose ``result.json`` sits in a local
``--checkpoint-dir`` is re-emitted instead of logging a second model.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import shutil
import sys
import tempfile
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from jobs.core import ranking, storage
from jobs.core.cache import RUN_TAG, as_bool, cache_key, code_version, find_cached
from jobs.core.cli import BadArgument, run_job
from jobs.core.config import PipelineConfig
from jobs.core.snapshots import load_snapshot
from jobs.popularity.model import ARTIFACT_KEY, PopularityPyfunc, PopularityRecommender


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


RESULT = "result.json"


def seen_csr(users: np.ndarray, items: np.ndarray, n_users: int, n_items: int) -> tuple[np.ndarray, np.ndarray]:
    """(indptr, indices) of the distinct training (user, item) pairs."""
    keys = np.unique(np.asarray(users, np.int64) * n_items + np.asarray(items, np.int64))
    rows, cols = np.divmod(keys, n_items)
    indptr = np.zeros(n_users + 1, dtype=np.int64)
    np.cumsum(np.bincount(rows, minlength=n_users), out=indptr[1:])
    return indptr, cols.astype(np.int64)


def fingerprint(data: Any) -> str:
    payload = {"job": "jobs.popularity", "snapshot": data.uri, "manifest": data.manifest}
    return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()


def train(args: argparse.Namespace, default_k: int, cfg: PipelineConfig | None = None) -> dict[str, Any]:
    """Rank, evaluate on the snapshot's test pairs, log the pyfunc; returns the result JSON.

    Long because it is the trainer's whole run: cache check, ranking, evaluation and logging one pyfunc.
    """
    import mlflow
    from mlflow.models import ModelSignature
    from mlflow.types.schema import Array, ColSpec, Schema

    data = load_snapshot(args.snapshot)
    fp = fingerprint(data)
    key = cache_key(data.manifest, "jobs.popularity", code_version("popularity", "core"), {"k": args.k})
    if cfg is not None and not args.force_retrain:
        hit = find_cached(cfg, args.model_name, key)
        if hit is not None:
            print(f"cached: version {hit['cached_version']} has this cache key ({key}); nothing trained", flush=True)
            return {"cached": True, "cache_key": key, "k": args.k, **hit}
    done = storage.join(args.checkpoint_dir, RESULT) if args.checkpoint_dir else None
    text = storage.read_text(done) if done is not None else None
    if text is not None:
        previous = json.loads(text)
        if previous.get("fingerprint") == fp:
            print(f"already trained ({done}); re-emitting its result", file=sys.stderr)
            return previous
    indptr, indices = seen_csr(data.users, data.items, data.n_users, data.n_items)
    arrays = {
        "item_ids": data.item_ids,
        "popularity": data.popularity,
        "user_ids": data.user_ids,
        "seen_indptr": indptr,
        "seen_indices": indices,
        "default_k": np.array(int(default_k)),
    }
    rec = PopularityRecommender(arrays)
    test_users = np.unique(data.test_users)
    ranked = ranking.popularity_top_k(data.popularity, test_users, args.k, rec)
    m = ranking.evaluate_ranking(ranked, (data.test_users, data.test_items), users=test_users, k=args.k)
    k = args.k
    metrics = {f"recall_at_{k}": m["recall"], f"ndcg_at_{k}": m["ndcg"], "test_users": float(m["users"])}

    mlflow.set_tracking_uri(args.tracking_uri)
    experiment_id = mlflow.set_experiment(args.experiment).experiment_id
    signature = ModelSignature(
        inputs=Schema([ColSpec("long", "user_id"), ColSpec("long", "k", required=False)]),
        outputs=Schema(
            [ColSpec("long", "user_id"), ColSpec(Array("long"), "item_ids"), ColSpec(Array("double"), "scores")]
        ),
    )
    with mlflow.start_run(experiment_id=experiment_id, run_name=args.run_name) as run:
        mlflow.log_params(
            {
                "model": "popularity",
                "ranking": "distinct training users per item, ties to the lower item index, seen items excluded",
                "n_users": data.n_users,
                "n_items": data.n_items,
                "train_rows": len(data.users),
                "snapshot": data.uri,
                "k": k,
            }
        )
        mlflow.set_tags(
            {
                RUN_TAG: key,
                "snapshot_uri": data.uri,
                "snapshot_day": str(data.manifest.get("day", "")),
                "recsys.job": "jobs.popularity",
            }
        )
        frame = pd.DataFrame([{key: str(value) for key, value in data.manifest.items()}])
        with warnings.catch_warnings():  # "source can be interpreted in multiple ways": a local path
            warnings.simplefilter("ignore", UserWarning)
            dataset = mlflow.data.from_pandas(frame, source=data.uri, name=f"snapshot-{data.manifest.get('day')}")
        mlflow.log_input(dataset, context="training")
        mlflow.log_metrics(metrics)
        with tempfile.TemporaryDirectory(prefix="recsys-popularity-") as tmp:
            npz = Path(tmp) / "popularity.npz"
            with open(npz, "wb") as fh:
                np.savez(fh, **arrays)
            code = _serving_code(Path(tmp) / "code")
            info = mlflow.pyfunc.log_model(
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
        run_id = run.info.run_id
        result = {
            "run_id": run_id,
            "model_uri": info.model_uri,
            "run_model_uri": f"runs:/{run_id}/model",
            "experiment_id": experiment_id,
            "metrics": metrics,
            "k": k,
            "snapshot": data.uri,
            "snapshot_day": data.manifest.get("day"),
            "fingerprint": fp,
            "cached": False,
            "cache_key": key,
        }
        mlflow.log_dict(result, "result.json")
    if done is not None:
        storage.write_json_atomic(done, result)
    return result


def build_parser(cfg: PipelineConfig) -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="python -m jobs.popularity", description=__doc__.split("\n\n")[0])
    ap.add_argument("--snapshot", required=True, help="snapshot folder (train/test/users/items parquet + _SUCCESS)")
    ap.add_argument("--run-name")
    ap.add_argument("--checkpoint-dir", help="folder or s3:// prefix for result.json (idempotent reruns)")
    ap.add_argument("--experiment", default=cfg.mlflow.experiment)
    ap.add_argument("--tracking-uri", default=cfg.mlflow.tracking_uri)
    ap.add_argument("--k", type=int, default=cfg.gate.k, help="cut-off of the test metrics (gate.k)")
    ap.add_argument("--model-name", default=cfg.mlflow.model_name, help="registered model whose versions are the cache")
    ap.add_argument("--force-retrain", type=as_bool, default=False, help="true: train even when cached")
    return ap


def run(cfg: PipelineConfig, args: argparse.Namespace) -> dict[str, Any]:
    if args.k < 1:
        raise BadArgument("--k must be at least 1")
    return train(args, cfg.scoring.k, cfg)


def _summary(result: dict[str, Any]) -> str:
    if result.get("cached"):
        return f"cached: version {result['cached_version']} ({result['model_uri']})"
    k, m = result["k"], result["metrics"]
    return f"popularity: recall@{k}={m[f'recall_at_{k}']:.4f} ndcg@{k}={m[f'ndcg_at_{k}']:.4f} (run {result['run_id']})"


def main(argv: list[str] | None = None) -> int:
    return run_job(
        "popularity training",
        build_parser,
        run,
        argv,
        summary=_summary,
    )
