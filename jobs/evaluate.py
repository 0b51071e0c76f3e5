"""The evaluation gate (TFX-Evaluator style), as its own job.

``python -m jobs.evaluate --snapshot DIR --run-id RUN``

On the snapshot's held-out day it ranks top-K items (items seen in the training window are
excluded for every ranker) for each test user and computes Recall@K and NDCG@K of

* the **challenger** (``runs:/<RUN>/model``),
* the **champion** (``models:/<name>@champion``, resolved to its version once), if any,
* a **popularity** baseline (most popular unseen items of the window),
* the **oracle** (the generator's true affinities on that day), when the ground truth exists.

The challenger is **blessed** only if (1) Recall@K ≥ ``gate.min_recall``, (2) NDCG@K ≥
``gate.min_lift_over_popularity`` × popularity's NDCG@K, and (3) when a champion exists,
NDCG@K ≥ champion's NDCG@K − ``gate.max_regression_vs_champion`` (absolute). Every number and
the decision with its reason are logged to the challenger's MLflow run and printed; the result
JSON carries the champion version the decision was made against (promotion re-checks it).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import numpy as np

from jobs import storage
from jobs.config import ConfigError, PipelineConfig, get_config


class EvaluationError(RuntimeError):
    """The snapshot or a model cannot be evaluated."""


def ranking_metrics(recs: dict[int, list[int]], truth: dict[int, set[int]], k: int) -> dict[str, float]:
    """Mean Recall@K and NDCG@K (binary relevance) over the users in ``truth``.

    Recall@K = hits in the top K / number of relevant items; NDCG@K = DCG / ideal DCG with the
    ideal ranking holding min(K, relevant) hits. Users without recommendations score 0.
    """
    if not truth:
        raise EvaluationError("no test user with a held-out positive: nothing to evaluate")
    discounts = 1.0 / np.log2(np.arange(2, k + 2))
    recall, ndcg = [], []
    for user, relevant in truth.items():
        ranked = recs.get(user, [])[:k]
        gains = np.array([1.0 if item in relevant else 0.0 for item in ranked])
        hits = gains.sum()
        recall.append(hits / len(relevant))
        ideal = discounts[: min(k, len(relevant))].sum()
        ndcg.append(float((gains * discounts[: len(gains)]).sum() / ideal))
    return {f"recall_at_{k}": float(np.mean(recall)), f"ndcg_at_{k}": float(np.mean(ndcg)), "users": len(truth)}


class Snapshot:
    """The parts of a training snapshot the gate needs, as id-keyed structures."""

    def __init__(self, uri: str) -> None:
        import pyarrow.parquet as pq

        folder = storage.local_path(uri)
        self.manifest = storage.read_manifest(uri)
        if self.manifest is None:
            raise EvaluationError(f"no published snapshot at {uri}")
        users = pq.read_table(folder / "users.parquet").to_pydict()
        items = pq.read_table(folder / "items.parquet").to_pydict()
        self.user_ids = np.asarray(users["user_id"], dtype=np.int64)
        self.item_ids = np.asarray(items["item_id"], dtype=np.int64)
        self.popularity = np.asarray(items["popularity"], dtype=np.int64)
        train = pq.read_table(folder / "train.parquet", columns=["user_idx", "item_idx"]).to_pydict()
        test = pq.read_table(folder / "test.parquet").to_pydict()
        self.seen: dict[int, set[int]] = {}
        for u, i in zip(train["user_idx"], train["item_idx"], strict=True):
            self.seen.setdefault(int(self.user_ids[u]), set()).add(int(self.item_ids[i]))
        self.truth: dict[int, set[int]] = {}
        for u, i in zip(test["user_idx"], test["item_idx"], strict=True):
            self.truth.setdefault(int(self.user_ids[u]), set()).add(int(self.item_ids[i]))

    def rank_by_scores(self, scores: np.ndarray, users: list[int], k: int) -> dict[int, list[int]]:
        """Top-K unseen items per user from a (users × snapshot items) score matrix."""
        out = {}
        index = {int(item): j for j, item in enumerate(self.item_ids)}
        for row, user in enumerate(users):
            s = scores[row].astype(np.float64).copy()
            for item in self.seen.get(user, ()):
                s[index[item]] = -np.inf
            top = np.argsort(-s, kind="stable")[:k]
            out[user] = [int(self.item_ids[j]) for j in top if np.isfinite(s[j])]
        return out


def popularity_recs(snap: Snapshot, users: list[int], k: int) -> dict[int, list[int]]:
    scores = np.tile(snap.popularity.astype(np.float64), (len(users), 1))
    return snap.rank_by_scores(scores, users, k)


def oracle_recs(cfg: PipelineConfig, snap: Snapshot, users: list[int], k: int) -> dict[int, list[int]] | None:
    """Rank by the generator's true affinity on the evaluation day, if that truth exists."""
    from jobs.generate import load_truth

    try:
        truth = load_truth(cfg.storage.zone("ground_truth"), snap.manifest["day"])
    except FileNotFoundError:
        return None
    uf, vf, bias = truth["user_factors"], truth["item_factors"], truth["item_bias"]
    if max(users) >= len(uf) or snap.item_ids.max() >= len(vf):
        return None
    scores = float(truth["beta"]) * (uf[np.asarray(users)] @ vf[snap.item_ids].T) + bias[snap.item_ids]
    return snap.rank_by_scores(scores, users, k)


def model_recs(model_uri: str, users: list[int], k: int) -> dict[int, list[int]]:
    import mlflow
    import mlflow.pyfunc
    import pandas as pd

    mlflow.set_tracking_uri(get_config().mlflow.tracking_uri)
    model = mlflow.pyfunc.load_model(model_uri)
    frame = model.predict(
        pd.DataFrame({"user_id": np.asarray(users, dtype=np.int64), "k": np.full(len(users), k, dtype=np.int64)})
    )
    return {int(u): [int(x) for x in items][:k] for u, items in zip(frame["user_id"], frame["item_ids"], strict=True)}


def decide(cfg: PipelineConfig, metrics: dict[str, dict[str, float]], k: int) -> tuple[bool, str]:
    g = cfg.gate
    ch = metrics["challenger"]
    recall, ndcg = ch[f"recall_at_{k}"], ch[f"ndcg_at_{k}"]
    pop = metrics["popularity"][f"ndcg_at_{k}"]
    reasons = []
    if recall < g.min_recall:
        reasons.append(f"recall@{k} {recall:.4f} < floor {g.min_recall}")
    if ndcg < g.min_lift_over_popularity * pop:
        reasons.append(f"ndcg@{k} {ndcg:.4f} < {g.min_lift_over_popularity}× popularity {pop:.4f}")
    if "champion" in metrics:
        champ = metrics["champion"][f"ndcg_at_{k}"]
        if ndcg < champ - g.max_regression_vs_champion:
            reasons.append(f"ndcg@{k} {ndcg:.4f} < champion {champ:.4f} − {g.max_regression_vs_champion}")
    if reasons:
        return False, "not blessed: " + "; ".join(reasons)
    versus = f", champion {metrics['champion'][f'ndcg_at_{k}']:.4f}" if "champion" in metrics else " (no champion yet)"
    return True, f"blessed: ndcg@{k} {ndcg:.4f} vs popularity {pop:.4f}{versus}; recall@{k} {recall:.4f}"


def evaluate(
    cfg: PipelineConfig,
    snapshot_uri: str,
    run_id: str,
    model_uri: str | None = None,
    model_name: str | None = None,
) -> dict[str, Any]:
    """Gate the challenger; ``model_name`` (default ``mlflow.model_name``) names whose champion to beat."""
    from jobs.registry import CHAMPION, alias_version, client

    name = model_name or cfg.mlflow.model_name
    k = cfg.gate.k
    snap = Snapshot(snapshot_uri)
    users = sorted(snap.truth)
    rankers: dict[str, dict[int, list[int]]] = {
        "challenger": model_recs(model_uri or f"runs:/{run_id}/model", users, k),
        "popularity": popularity_recs(snap, users, k),
    }
    cl = client(cfg)
    champion_version = alias_version(cl, name, CHAMPION)
    if champion_version:
        rankers["champion"] = model_recs(f"models:/{name}/{champion_version}", users, k)
    oracle = oracle_recs(cfg, snap, users, k)
    if oracle is not None:
        rankers["oracle"] = oracle
    metrics = {name: ranking_metrics(recs, snap.truth, k) for name, recs in rankers.items()}
    blessed, reason = decide(cfg, metrics, k)
    for name, values in metrics.items():
        for key, value in values.items():
            if key != "users":
                cl.log_metric(run_id, f"gate_{key}_{name}", value)
    cl.set_tag(run_id, "gate.decision", "blessed" if blessed else "not_blessed")
    cl.set_tag(run_id, "gate.reason", reason)
    cl.set_tag(run_id, "gate.champion_version", champion_version or "none")
    cl.log_dict(run_id, {"k": k, "metrics": metrics, "blessed": blessed, "reason": reason}, "gate/evaluation.json")
    return {
        "blessed": blessed,
        "reason": reason,
        "k": k,
        "metrics": metrics,
        "champion_version": champion_version,
        "run_id": run_id,
        "experiment_id": cl.get_run(run_id).info.experiment_id,
        "eval_day": snap.manifest["day"],
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m jobs.evaluate", description=__doc__.split("\n\n")[0])
    ap.add_argument("--snapshot", required=True)
    ap.add_argument("--run-id", required=True)
    ap.add_argument("--model-uri", help="the challenger's logged model (default runs:/<run-id>/model)")
    ap.add_argument("--model-name", help="registered model whose champion is compared (default mlflow.model_name)")
    ap.add_argument("--result-file", type=Path)
    args = ap.parse_args(argv)
    from jobs.registry import tracking_errors, tracking_exit

    try:
        cfg = get_config()
        result = evaluate(cfg, args.snapshot, args.run_id, args.model_uri, args.model_name)
    except (ConfigError, EvaluationError) as exc:
        print(f"evaluation failed: {exc}", file=sys.stderr)
        if args.result_file:
            storage.write_json_atomic(args.result_file, {"message": str(exc)})
        return 3
    except tracking_errors() as exc:  # server down, timeout, 5xx: exit 1 = retried
        return tracking_exit(cfg, exc, "evaluation failed", args.result_file)
    k = result["k"]
    print(f"{'ranker':12s} {'recall@' + str(k):>10s} {'ndcg@' + str(k):>10s}")
    for name, m in result["metrics"].items():
        print(f"{name:12s} {m[f'recall_at_{k}']:10.4f} {m[f'ndcg_at_{k}']:10.4f}")
    print(f"gate: {result['reason']}")
    if args.result_file:
        storage.write_json_atomic(args.result_file, result)
    print(json.dumps({"blessed": result["blessed"]}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
