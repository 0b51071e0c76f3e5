"""Train EASE on one training snapshot and log it to MLflow as the same pyfunc as MF.

``python -m jobs.ease --snapshot DIR [--l2 λ] [--tune-l2 λ1,λ2,...] [--recent-weights α1,α2,...]
[--recent-days D] [--run-name NAME]
[--checkpoint-dir DIR] [--experiment NAME] [--tracking-uri URI] [--k K] [--model-name NAME]
[--force-retrain true|false] [--result-file PATH]``

The trainer CLI contract of ``jobs.train`` and ``jobs.popularity`` (the factory's families run
any of them): a snapshot in; an MLflow run with params, the snapshot as input dataset, the drift
reference, test ``recall_at_K``/``ndcg_at_K`` (and popularity's, ``pop_*``) and the model as
``jobs.core.model.RecsysPyfunc`` (``jobs.core.export``); the result JSON ``{"run_id",
"model_uri", "metrics", "cached", "cache_key", ...}``. The closed form and its export are
``jobs.ease.model``. λ is ``training.ease_l2`` unless ``--l2`` gives one; ``--tune-l2`` picks it
per run by ``jobs.ease.model.choose_l2`` (a seeded validation inside the training window).

The recency prior (``jobs.ease.model.recency_bias``) counts the window's last
``training.ease_recent_days`` curated days like the gate's recent-popularity baseline
(``jobs.core.recency``); its weight α is chosen per run among ``training.ease_recent_weights`` on
the window's last ``training.ease_recent_valid_days`` days (at most half the window;
``jobs.ease.model.choose_recent_weight``; one value: that α; ``0``: plain EASE). A snapshot whose
manifest lists no ``train_days`` (not built by ``jobs.snapshot``) is fitted without it; the run's
``recent_prior`` param says what was chosen and why.

Cached and idempotent like every trainer (``jobs.core.trainer_protocol``: same snapshot
content, code and λ → the registered version is reported, nothing trained; a ``result.json`` of
the same fingerprint in ``--checkpoint-dir`` is re-emitted).
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Callable

import numpy as np

from jobs.core import ranking
from jobs.core.cli import BadArgument, run_job
from jobs.core.config import PipelineConfig
from jobs.core.recency import positive_pairs, recent_item_counts
from jobs.core.results import TrainResult
from jobs.core.snapshots import TrainData, load_snapshot
from jobs.core.trainer_protocol import Tracker, TrainerRun, add_trainer_arguments, snapshot_params
from jobs.ease.model import (
    choose_l2,
    choose_recent_weight,
    ease_weights,
    export_arrays,
    interaction_matrix,
    recency_bias,
    top_k_unseen,
)

JOB = "jobs.ease"
FAMILY = "ease"


def _grid(text: str) -> list[float]:
    values = [float(v) for v in text.split(",") if v.strip()]
    if any(v <= 0 for v in values):
        raise ValueError("every λ must be > 0")
    return values


Prior = Callable[[float], tuple[np.ndarray | None, str]]


def _weights(text: str) -> list[float]:
    values = [float(v) for v in text.split(",") if v.strip()]
    if not values or any(v < 0 for v in values):
        raise ValueError("the recency prior's weights must be >= 0 (at least one)")
    return values


def fit(
    data: TrainData, l2: float, k: int, seed: int, grid: list[float], prior_of: Prior | None = None
) -> tuple[dict, dict, dict]:
    """(export arrays, test metrics, choices) of EASE on the snapshot; ``prior_of(λ)`` gives its
    recency prior and what to log of it (None: plain EASE). λ is chosen without the prior."""
    x = interaction_matrix(data.users, data.items, data.n_users, data.n_items)
    choice = choose_l2(x, grid, k, seed) if grid else {"l2": l2}
    bias, choice["recent_prior"] = prior_of(choice["l2"]) if prior_of else (None, "off")
    b = ease_weights(x, choice["l2"])
    test_users = np.unique(data.test_users)
    m = ranking.evaluate_ranking(
        top_k_unseen(x, b, test_users, k, bias), (data.test_users, data.test_items), users=test_users, k=k
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
    return export_arrays(x, b, bias), metrics, choice


def prior(cfg: PipelineConfig, data: TrainData, weights: list[float], days: int, k: int, valid_days: int) -> Prior:
    """``prior_of(λ)`` for ``fit``: the recency prior's bias (None: plain EASE) and what the run
    logs about it as ``recent_prior`` — α chosen among ``weights`` on the window's last
    ``valid_days`` days (at most half the window)."""

    def prior_of(l2: float) -> tuple[np.ndarray | None, str]:
        train_days = list(data.manifest.get("train_days") or [])
        if not any(w > 0 for w in weights):
            return None, "off (weight 0)"
        if not train_days:
            logging.getLogger(JOB).warning(
                "snapshot %s lists no train_days: fitted without the recency prior", data.uri
            )
            return None, "off: the snapshot's manifest lists no train_days"
        if len(weights) == 1:
            alpha, why = weights[0], "fixed"
        elif len(train_days) < 2:
            alpha, why = 0.0, "a one-day window has no day to choose α on"
        else:
            valid = min(valid_days, len(train_days) // 2)
            x_before = interaction_matrix(*positive_pairs(cfg, data, train_days[:-valid]), data.n_users, data.n_items)
            last_users, last_items = positive_pairs(cfg, data, train_days[-valid:])
            before = recent_item_counts(cfg, data, days, skip_last=valid)
            chosen = choose_recent_weight(x_before, last_users, last_items, before, weights, l2, k)
            alpha, why = chosen["alpha"], json.dumps(chosen, sort_keys=True)
        if alpha <= 0:
            return None, f"off: α=0 chosen ({why})"
        recent = recent_item_counts(cfg, data, days)
        return recency_bias(recent, alpha), f"α={alpha:g} ({why}) over the last {days} train day(s)"

    return prior_of


def train(cfg: PipelineConfig, args: argparse.Namespace) -> TrainResult:
    """The trainer protocol around the closed form: cache, rerun, fit and evaluate, one logged pyfunc."""
    data = load_snapshot(args.snapshot)
    hparams = {"l2": args.l2, "tune_l2": args.tune_l2, "seed": args.seed, "k": args.k}
    valid_days = cfg.training.ease_recent_valid_days
    hparams |= {"recent_weights": args.recent_weights, "recent_days": args.recent_days, "recent_valid_days": valid_days}
    run = TrainerRun.open(cfg, JOB, data, hparams, args.checkpoint_dir)
    previous = run.reuse(cfg, args, family=FAMILY)
    if previous is not None:
        return previous
    prior_of = prior(cfg, data, args.recent_weights, args.recent_days, args.k, valid_days)
    arrays, metrics, choice = fit(data, args.l2, args.k, args.seed, args.tune_l2, prior_of)
    tracker = Tracker(args.tracking_uri, args.experiment)
    tracker.start(None, args.run_name)
    params = {
        "model": "ease",
        "family": FAMILY,
        "l2": choice["l2"],
        "l2_choice": json.dumps({k: v for k, v in choice.items() if k != "recent_prior"})
        if args.tune_l2
        else "training.ease_l2 / --l2",
        "recent_prior": choice["recent_prior"][:500],
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
    ap.add_argument(
        "--recent-weights",
        type=_weights,
        default=list(cfg.training.ease_recent_weights),
        help="comma-separated α of the recency prior, chosen per run on the window's last days "
        "(one value: fixed; 0: plain EASE; training.ease_recent_weights)",
    )
    ap.add_argument(
        "--recent-days",
        type=int,
        default=cfg.training.ease_recent_days,
        help="the prior's recent window in train days (training.ease_recent_days)",
    )
    return ap


def run(cfg: PipelineConfig, args: argparse.Namespace) -> TrainResult:
    if args.k < 1:
        raise BadArgument("--k must be at least 1")
    if args.l2 <= 0:
        raise BadArgument("--l2 must be > 0")
    if args.recent_days < 1:
        raise BadArgument("--recent-days must be at least 1")
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
