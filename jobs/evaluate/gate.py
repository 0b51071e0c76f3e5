"""The evaluation gate (TFX-Evaluator style): is the challenger good enough to serve?

``python -m jobs.evaluate gate --snapshot DIR --run-id RUN [--model-uri URI] [--model-name NAME]``

On the snapshot's held-out day it ranks top-K items (items seen in the training window are
excluded for every ranker) for each test user and computes Recall@K and NDCG@K
(``jobs.core.ranking``) of

* the **challenger** (``--model-uri``, default ``runs:/<RUN>/model``),
* the **champion** (``models:/<name>@champion``, resolved to its version once), if any,
* a **popularity** baseline (most popular unseen items of the window),
* the **oracle** (the simulator's true affinities on that day), when the ground truth exists.

The decision is ``bless`` (a pure function of the metrics and the ``gate`` rules): the
challenger is blessed only if (1) Recall@K ≥ ``gate.min_recall``, (2) NDCG@K ≥
``gate.min_lift_over_popularity`` × popularity's NDCG@K, and (3) when a champion exists,
NDCG@K ≥ champion's NDCG@K − ``gate.max_regression_vs_champion`` (absolute). Every number and
the decision with its reason are logged to the challenger's MLflow run (tags ``gate.decision``,
``gate.reason``, ``gate.champion_version``, which registration copies onto the version) and
printed; the result JSON carries the champion version the decision was made against
(promotion re-checks it).
"""

from __future__ import annotations

import argparse
from typing import Any

import numpy as np

from jobs.core import catalog, tracking
from jobs.core.cli import BadInput
from jobs.core.config import GateConfig, PipelineConfig
from jobs.core.ranking import metrics_of_lists
from jobs.core.snapshots import TrainData, load_snapshot

RANKERS = ("challenger", "champion", "popularity", "oracle")


class EvaluationError(BadInput):
    """The snapshot or a model cannot be evaluated."""


def bless(metrics: dict[str, dict[str, float]], k: int, rules: GateConfig) -> tuple[bool, str]:
    """The gate's decision and its reason, from the rankers' metrics (pure).

    Args:
        metrics: ranker name → ``{"recall_at_K", "ndcg_at_K", ...}``; ``challenger`` and
            ``popularity`` are required, ``champion`` is compared when present.
        k: the cut-off the metrics were computed at.
        rules: the ``gate`` section of the configuration.
    """
    ch = metrics["challenger"]
    recall, ndcg = ch[f"recall_at_{k}"], ch[f"ndcg_at_{k}"]
    pop = metrics["popularity"][f"ndcg_at_{k}"]
    reasons = []
    if recall < rules.min_recall:
        reasons.append(f"recall@{k} {recall:.4f} < floor {rules.min_recall}")
    if ndcg < rules.min_lift_over_popularity * pop:
        reasons.append(f"ndcg@{k} {ndcg:.4f} < {rules.min_lift_over_popularity}× popularity {pop:.4f}")
    if "champion" in metrics:
        champ = metrics["champion"][f"ndcg_at_{k}"]
        if ndcg < champ - rules.max_regression_vs_champion:
            reasons.append(f"ndcg@{k} {ndcg:.4f} < champion {champ:.4f} − {rules.max_regression_vs_champion}")
    if reasons:
        return False, "not blessed: " + "; ".join(reasons)
    versus = f", champion {metrics['champion'][f'ndcg_at_{k}']:.4f}" if "champion" in metrics else " (no champion yet)"
    return True, f"blessed: ndcg@{k} {ndcg:.4f} vs popularity {pop:.4f}{versus}; recall@{k} {recall:.4f}"


class HeldOut:
    """The held-out day of a snapshot as id-keyed structures: test users, their truth, seen items."""

    def __init__(self, data: TrainData) -> None:
        self.data = data
        self.item_ids = data.item_ids
        self.popularity = data.popularity
        self.seen: dict[int, set[int]] = {}
        for u, i in zip(data.user_ids[data.users].tolist(), data.item_ids[data.items].tolist(), strict=True):
            self.seen.setdefault(u, set()).add(i)
        self.truth: dict[int, set[int]] = {}
        for u, i in zip(data.user_ids[data.test_users].tolist(), data.item_ids[data.test_items].tolist(), strict=True):
            self.truth.setdefault(u, set()).add(i)
        if not self.truth:
            raise EvaluationError(f"snapshot {data.uri}: no test user with a held-out positive: nothing to evaluate")
        self.users = sorted(self.truth)
        self._column = {int(item): j for j, item in enumerate(self.item_ids)}

    def rank_by_scores(self, scores: np.ndarray, k: int) -> dict[int, list[int]]:
        """Top-K unseen items per test user from a (test users × snapshot items) score matrix."""
        out = {}
        for row, user in enumerate(self.users):
            s = scores[row].astype(np.float64).copy()
            for item in self.seen.get(user, ()):
                s[self._column[item]] = -np.inf
            top = np.argsort(-s, kind="stable")[:k]
            out[user] = [int(self.item_ids[j]) for j in top if np.isfinite(s[j])]
        return out

    def popularity_recs(self, k: int) -> dict[int, list[int]]:
        return self.rank_by_scores(np.tile(self.popularity.astype(np.float64), (len(self.users), 1)), k)

    def oracle_recs(self, truth: dict[str, Any] | None, k: int) -> dict[int, list[int]] | None:
        """Rank by the simulator's true affinity on the held-out day, if that truth exists."""
        if truth is None:
            return None
        uf, vf, bias = truth["user_factors"], truth["item_factors"], truth["item_bias"]
        if max(self.users) >= len(uf) or self.item_ids.max() >= len(vf):
            return None
        scores = float(truth["beta"]) * (uf[np.asarray(self.users)] @ vf[self.item_ids].T) + bias[self.item_ids]
        return self.rank_by_scores(scores, k)


def model_recs(model_uri: str, users: list[int], k: int) -> dict[int, list[int]]:
    """Top-K item ids per user from a logged or registered MLflow pyfunc."""
    import mlflow.pyfunc
    import pandas as pd

    model = mlflow.pyfunc.load_model(model_uri)
    frame = model.predict(
        pd.DataFrame({"user_id": np.asarray(users, dtype=np.int64), "k": np.full(len(users), k, dtype=np.int64)})
    )
    return {int(u): [int(x) for x in items][:k] for u, items in zip(frame["user_id"], frame["item_ids"], strict=True)}


def gate_metrics(recs: dict[int, list[int]], truth: dict[int, set[int]], k: int) -> dict[str, float]:
    """Recall@K and NDCG@K of one ranker, as the gate names them."""
    m = metrics_of_lists(recs, truth, k)
    return {f"recall_at_{k}": m["recall"], f"ndcg_at_{k}": m["ndcg"], "users": m["users"]}


def evaluate(
    cfg: PipelineConfig, snapshot_uri: str, run_id: str, model_uri: str | None = None, model_name: str | None = None
) -> dict[str, Any]:
    """Gate the challenger; ``model_name`` (default ``mlflow.model_name``) names whose champion to beat."""
    name = model_name or cfg.mlflow.model_name
    k = cfg.gate.k
    held = HeldOut(load_snapshot(snapshot_uri))
    cl = tracking.client(cfg)
    rankers: dict[str, dict[int, list[int]]] = {
        "challenger": model_recs(model_uri or f"runs:/{run_id}/model", held.users, k),
        "popularity": held.popularity_recs(k),
    }
    champion_version = tracking.alias_version(cl, name, tracking.CHAMPION)
    if champion_version:
        rankers["champion"] = model_recs(f"models:/{name}/{champion_version}", held.users, k)
    oracle = held.oracle_recs(catalog.load_truth(cfg, held.data.manifest["day"]), k)
    if oracle is not None:
        rankers["oracle"] = oracle
    metrics = {ranker: gate_metrics(recs, held.truth, k) for ranker, recs in rankers.items()}
    blessed, reason = bless(metrics, k, cfg.gate)
    for ranker, values in metrics.items():
        for key, value in values.items():
            if key != "users":
                cl.log_metric(run_id, f"gate_{key}_{ranker}", value)
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
        "day": held.data.manifest["day"],
    }


def add_arguments(ap: argparse.ArgumentParser) -> None:
    ap.add_argument("--snapshot", required=True)
    ap.add_argument("--run-id", required=True)
    ap.add_argument("--model-uri", help="the challenger's logged model (default runs:/<run-id>/model)")
    ap.add_argument("--model-name", help="registered model whose champion is compared (default mlflow.model_name)")


def run(cfg: PipelineConfig, args: argparse.Namespace) -> dict[str, Any]:
    result = evaluate(cfg, args.snapshot, args.run_id, args.model_uri, args.model_name)
    k = result["k"]
    print(f"{'ranker':12s} {'recall@' + str(k):>10s} {'ndcg@' + str(k):>10s}")
    for ranker, m in result["metrics"].items():
        print(f"{ranker:12s} {m[f'recall_at_{k}']:10.4f} {m[f'ndcg_at_{k}']:10.4f}")
    return result
