"""Train EASE on one training snapshot and log it to MLflow as the same pyfunc as MF.

``python -m jobs.ease --snapshot DIR [--l2 λ] [--tune-l2 λ1,λ2,...] [--run-name NAME]
[--checkpoint-dir DIR] [--experiment NAME] [--tracking-uri URI] [--k K] [--model-name NAME]
[--force-retrain true|false] [--result-file PATH]``

The trainer CLI contract of ``jobs.train`` and ``jobs.popularity`` (the factory's families run
any of them): a snapshot in; an MLflow run with params, the snapshot as input dataset, the drift
reference, test ``recall_at_K``/``ndcg_at_K`` (and popularity's, ``pop_*``) and the model as
``jobs.core.model.RecsysPyfunc`` (``jobs.core.export``); the result JSON ``{"run_id",
"model_uri", "metrics", "cached", "cache_key", ...}``. The closed form and its export are
``jobs.ease.model``. λ is ``training.ease_l2`` unless ``--l2`` gives one; ``--tune-l2`` picks it
per run by ``jobs.ease.model.choose_l2`` (a seeded validation inside the training window).

Cached like every trainer (``jobs.core.cache``: same snapshot content, code and λ → the
registered version is reported, nothing trained); idempotent per ``--checkpoint-dir`` (a
``result.json`` of the same fingerprint is re-emitted).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
import warnings
from typing import Any

import numpy as np

from jobs.core import ranking, storage
from jobs.core.cache import RUN_TAG, as_bool, cache_key, code_version, find_cached
from jobs.core.cli import BadArgument, run_job
from jobs.core.config import PipelineConfig
from jobs.core.schema import REFERENCE_ARTIFACT
from jobs.core.snapshots import TrainData, load_snapshot
from jobs.ease.model import choose_l2, ease_weights, export_arrays, interaction_matrix, top_k_unseen

RESULT = "result.json"
FAMILY = "ease"


def _grid(text: str) -> list[float]:
    values = [float(v) for v in text.split(",") if v.strip()]
    if any(v <= 0 for v in values):
        raise ValueError("every λ must be > 0")
    return values


def fingerprint(data: TrainData, hparams: dict[str, Any]) -> str:
    payload = {"job": "jobs.ease", "snapshot": data.uri, "manifest": data.manifest, "hparams": hparams}
    return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()


def fit(data: TrainData, l2: float, k: int, seed: int, grid: list[float]) -> tuple[dict, dict, dict]:
    """(export arrays, test metrics, λ choice) of EASE on the snapshot (no I/O)."""
    x = interaction_matrix(data.users, data.items, data.n_users, data.n_items)
    choice = choose_l2(x, grid, k, seed) if grid else {"l2": l2}
    b = ease_weights(x, choice["l2"])
    test_users = np.unique(data.test_users)
    m = ranking.evaluate_ranking(
        top_k_unseen(x, b, test_users, k), (data.test_users, data.test_items), users=test_users, k=k
    )
    pop = ranking.evaluate_ranking(
        ranking.popularity_top_k(data.popularity, test_users, k, data.seen()),
        (data.test_users, data.test_items),
        users=test_users,
        k=k,
    )
    metrics = {
        f"recall_at_{k}": m["recall"],
        f"ndcg_at_{k}": m["ndcg"],
        f"pop_recall_at_{k}": pop["recall"],
        f"pop_ndcg_at_{k}": pop["ndcg"],
        "test_users": float(m["users"]),
        "l2": float(choice["l2"]),
    }
    return export_arrays(x, b), metrics, choice


def train(cfg: PipelineConfig, args: argparse.Namespace) -> dict[str, Any]:
    """Cache check, closed form, evaluation and one logged pyfunc; returns the result JSON."""
    data = load_snapshot(args.snapshot)
    hparams = {"l2": args.l2, "tune_l2": args.tune_l2, "seed": args.seed, "k": args.k}
    key = cache_key(data.manifest, "jobs.ease", code_version("ease", "core"), hparams)
    if not args.force_retrain:
        hit = find_cached(cfg, args.model_name, key)
        if hit is not None:
            print(f"cached: version {hit['cached_version']} has this cache key ({key}); nothing trained", flush=True)
            return {"cached": True, "cache_key": key, "k": args.k, "family": FAMILY, **hit}
    fp = fingerprint(data, hparams)
    done = storage.join(args.checkpoint_dir, RESULT) if args.checkpoint_dir else None
    text = storage.read_text(done) if done is not None else None
    if text is not None and json.loads(text).get("fingerprint") == fp:
        print(f"already trained ({done}); re-emitting its result", file=sys.stderr)
        return json.loads(text)
    arrays, metrics, choice = fit(data, args.l2, args.k, args.seed, args.tune_l2)
    run_id, model_uri, experiment_id = _log(cfg, args, data, arrays, metrics, choice, key)
    result = {
        "run_id": run_id,
        "model_uri": model_uri,
        "run_model_uri": f"runs:/{run_id}/model",
        "experiment_id": experiment_id,
        "metrics": metrics,
        "k": args.k,
        "l2": float(choice["l2"]),
        "family": FAMILY,
        "snapshot": data.uri,
        "snapshot_day": data.manifest.get("day"),
        "fingerprint": fp,
        "cached": False,
        "cache_key": key,
    }
    if done is not None:
        storage.write_json_atomic(done, result)
    return result


def _log(cfg, args, data: TrainData, arrays: dict, metrics: dict, choice: dict, key: str) -> tuple[str, str, str]:
    """One MLflow run: params, tags, input dataset, drift reference, metrics, the pyfunc."""
    import mlflow
    import pandas as pd

    from jobs.core.export import log_recsys_model

    mlflow.set_tracking_uri(args.tracking_uri)
    experiment_id = mlflow.set_experiment(args.experiment).experiment_id
    with mlflow.start_run(experiment_id=experiment_id, run_name=args.run_name) as run:
        mlflow.log_params(
            {
                "model": "ease",
                "family": FAMILY,
                "l2": choice["l2"],
                "l2_choice": json.dumps(choice) if args.tune_l2 else "training.ease_l2 / --l2",
                "n_users": data.n_users,
                "n_items": data.n_items,
                "train_rows": len(data.users),
                "snapshot": data.uri,
                "k": args.k,
            }
        )
        day = str(data.manifest.get("day", ""))
        mlflow.set_tags({RUN_TAG: key, "snapshot_uri": data.uri, "snapshot_day": day, "recsys.job": "jobs.ease"})
        frame = pd.DataFrame([{k: str(v) for k, v in data.manifest.items()}])
        with warnings.catch_warnings():  # "source can be interpreted in multiple ways": a local path
            warnings.simplefilter("ignore", UserWarning)
            dataset = mlflow.data.from_pandas(frame, source=data.uri, name=f"snapshot-{day}")
        mlflow.log_input(dataset, context="training")
        reference = data.manifest.get("reference_stats")
        if reference:  # the drift reference travels with the model, as MF's does (the monitor reads it)
            text = storage.read_text(storage.partition_file(data.uri, data.manifest, reference))
            mlflow.log_text(text or "", REFERENCE_ARTIFACT)
        mlflow.log_metrics(metrics)
        info = log_recsys_model(mlflow, arrays, data, cfg.scoring.k)
        return run.info.run_id, info.model_uri, experiment_id


def build_parser(cfg: PipelineConfig) -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="python -m jobs.ease", description=__doc__.split("\n\n")[0])
    ap.add_argument("--snapshot", required=True, help="snapshot folder (train/test/users/items parquet + _SUCCESS)")
    ap.add_argument("--l2", type=float, default=cfg.training.ease_l2, help="L2 penalty λ (training.ease_l2)")
    ap.add_argument("--tune-l2", type=_grid, default=[], help="comma-separated λ grid chosen by validation per run")
    ap.add_argument("--seed", type=int, default=cfg.training.seed, help="seed of the λ validation split")
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
    if args.l2 <= 0:
        raise BadArgument("--l2 must be > 0")
    return train(cfg, args)


def _summary(result: dict[str, Any]) -> str:
    if result.get("cached"):
        return f"cached: version {result['cached_version']} ({result['model_uri']})"
    k, m = result["k"], result["metrics"]
    return (
        f"ease (λ={result['l2']:g}): recall@{k}={m[f'recall_at_{k}']:.4f} ndcg@{k}={m[f'ndcg_at_{k}']:.4f} "
        f"(popularity {m[f'pop_ndcg_at_{k}']:.4f}; run {result['run_id']})"
    )


def main(argv: list[str] | None = None) -> int:
    return run_job(
        "ease training",
        build_parser,
        run,
        argv,
        summary=_summary,
        ledger=lambda r: f"train/{r['run_id']}" if r.get("run_id") and not r.get("cached") else None,
    )
