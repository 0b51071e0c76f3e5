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

Cached and idempotent like every trainer (``jobs.core.trainer_protocol``: same snapshot
content, code and λ → the registered version is reported, nothing trained; a ``result.json`` of
the same fingerprint in ``--checkpoint-dir`` is re-emitted).
"""

from __future__ import annotations

import argparse
import json
import logging
import sys

import numpy as np

from jobs.core import ranking
from jobs.core.cli import BadArgument, run_job
from jobs.core.config import PipelineConfig
from jobs.core.results import TrainResult
from jobs.core.snapshots import TrainData, load_snapshot
from jobs.core.trainer_protocol import Tracker, TrainerRun, add_trainer_arguments, snapshot_params
from jobs.ease.model import choose_l2, ease_weights, export_arrays, interaction_matrix, top_k_unseen

JOB = "jobs.ease"
FAMILY = "ease"


def _grid(text: str) -> list[float]:
    values = [float(v) for v in text.split(",") if v.strip()]
    if any(v <= 0 for v in values):
        raise ValueError("every λ must be > 0")
    return values


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


def train(cfg: PipelineConfig, args: argparse.Namespace) -> TrainResult:
    """The trainer protocol around the closed form: cache, rerun, fit and evaluate, one logged pyfunc."""
    data = load_snapshot(args.snapshot)
    hparams = {"l2": args.l2, "tune_l2": args.tune_l2, "seed": args.seed, "k": args.k}
    run = TrainerRun.open(cfg, JOB, data, hparams, args.checkpoint_dir)
    previous = run.reuse(cfg, args, family=FAMILY)
    if previous is not None:
        return previous
    arrays, metrics, choice = fit(data, args.l2, args.k, args.seed, args.tune_l2)
    tracker = Tracker(args.tracking_uri, args.experiment)
    tracker.start(None, args.run_name)
    params = {
        "model": "ease",
        "family": FAMILY,
        "l2": choice["l2"],
        "l2_choice": json.dumps(choice) if args.tune_l2 else "training.ease_l2 / --l2",
        **snapshot_params(data),
        "k": args.k,
    }
    tracker.log_inputs(data, JOB, params, run.key)
    info = tracker.log_model(arrays, data, cfg.scoring.k)
    result = run.result(tracker, info.model_uri, metrics, args.k, data, l2=float(choice["l2"]), family=FAMILY)
    return run.finish(tracker, metrics, result)


def build_parser(cfg: PipelineConfig) -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="python -m jobs.ease", description=__doc__.split("\n\n")[0])
    add_trainer_arguments(ap, cfg, "folder or s3:// prefix for result.json (idempotent reruns)")
    ap.add_argument("--l2", type=float, default=cfg.training.ease_l2, help="L2 penalty λ (training.ease_l2)")
    ap.add_argument("--tune-l2", type=_grid, default=[], help="comma-separated λ grid chosen by validation per run")
    ap.add_argument("--seed", type=int, default=cfg.training.seed, help="seed of the λ validation split")
    return ap


def run(cfg: PipelineConfig, args: argparse.Namespace) -> TrainResult:
    if args.k < 1:
        raise BadArgument("--k must be at least 1")
    if args.l2 <= 0:
        raise BadArgument("--l2 must be > 0")
    return train(cfg, args)


def _summary(result: TrainResult) -> str:
    if result.get("cached"):
        return f"cached: version {result['cached_version']} ({result['model_uri']})"
    k, m = result["k"], result["metrics"]
    return (
        f"ease (λ={result['l2']:g}): recall@{k}={m[f'recall_at_{k}']:.4f} ndcg@{k}={m[f'ndcg_at_{k}']:.4f} "
        f"(popularity {m[f'pop_ndcg_at_{k}']:.4f}; run {result['run_id']})"
    )


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    return run_job(
        "ease training",
        build_parser,
        run,
        argv,
        summary=_summary,
        ledger=lambda r: f"train/{r['run_id']}" if r.get("run_id") and not r.get("cached") else None,
    )
