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

With ``--replay-days`` (the DAG passes the ``gate.replay_days`` validated days after the
held-out day) the **replay gate** (``jobs.evaluate.replay``) also ranks those days, with only
earlier days as history, and a challenger that is inferior to the champion there (paired
bootstrap interval below ``-gate.replay_tolerance``) is not blessed either. The replay table
is in ``gate/evaluation.json`` (``replay``), its summary in the tag ``gate.replay``, the
paired difference in the metrics ``replay_ndcg_diff_{mean,low,high}``.
"""

from __future__ import annotations

import argparse
import functools
from typing import Any

import numpy as np

from jobs.core import catalog, tracking
from jobs.core.cli import BadInput
from jobs.core.config import GateConfig, PipelineConfig
from jobs.core.ranking import metrics_of_lists
from jobs.core.snapshots import TrainData, load_snapshot
from jobs.evaluate import replay

RANKERS = ("challenger", "champion", "popularity", "oracle")


class EvaluationError(BadInput):
    """The snapshot or a model cannot be evaluated."""


def bless(
    metrics: dict[str, dict[str, float]],
    k: int,
    rules: GateConfig,
    replayed: dict[str, Any] | None = None,
    champion_overlap: str | None = None,
) -> tuple[bool, str]:
    """The gate's decision and its reason, from the rankers' metrics (pure).

    Args:
        metrics: ranker name → ``{"recall_at_K", "ndcg_at_K", ...}``; ``challenger`` and
            ``popularity`` are required, ``champion`` is compared when present.
        k: the cut-off the metrics were computed at.
        rules: the ``gate`` section of the configuration.
        replayed: the replay's result (``jobs.evaluate.replay``); an ``inferior`` verdict
            refuses the challenger, whatever the held-out day says.
        champion_overlap: why the champion cannot be compared on the held-out day (it trained
            on it: a challenger of an older window, e.g. a backfill), which refuses the
            challenger — such a champion excludes the day's items as seen and scores ~0 there,
            so any challenger would look better.
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
    if champion_overlap:
        reasons.append(champion_overlap)
    if replayed is not None and replayed["verdict"] == "inferior":
        reasons.append(replay.summary(replayed, k))
    if reasons:
        return False, "not blessed: " + "; ".join(reasons)
    versus = f", champion {metrics['champion'][f'ndcg_at_{k}']:.4f}" if "champion" in metrics else " (no champion yet)"
    reason = f"blessed: ndcg@{k} {ndcg:.4f} vs popularity {pop:.4f}{versus}; recall@{k} {recall:.4f}"
    if replayed is not None and replayed["days"]:
        reason += f"; {replay.summary(replayed, k)}"
    return True, reason


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


@functools.cache
def _model(model_uri: str) -> Any:
    import mlflow.pyfunc

    return mlflow.pyfunc.load_model(model_uri)


def model_recs(model_uri: str, users: list[int], k: int) -> dict[int, list[int]]:
    """Top-K item ids per user from a logged or registered MLflow pyfunc (loaded once per job)."""
    import pandas as pd

    frame = _model(model_uri).predict(
        pd.DataFrame({"user_id": np.asarray(users, dtype=np.int64), "k": np.full(len(users), k, dtype=np.int64)})
    )
    return {int(u): [int(x) for x in items][:k] for u, items in zip(frame["user_id"], frame["item_ids"], strict=True)}


def gate_metrics(recs: dict[int, list[int]], truth: dict[int, set[int]], k: int) -> dict[str, float]:
    """Recall@K and NDCG@K of one ranker, as the gate names them."""
    m = metrics_of_lists(recs, truth, k)
    return {f"recall_at_{k}": m["recall"], f"ndcg_at_{k}": m["ndcg"], "users": m["users"]}


def check_replay_days(cfg: PipelineConfig, held_out_day: str, days: list[str]) -> list[str]:
    """The replay days, sorted: each a validated curated day after the held-out day."""
    for day in days:
        catalog.require_validated(cfg, day, "replayed by the gate")
        if day <= held_out_day:
            raise EvaluationError(f"replay day {day} is not after the held-out day {held_out_day}")
    return sorted(set(days))


def evaluate(
    cfg: PipelineConfig,
    snapshot_uri: str,
    run_id: str,
    model_uri: str | None = None,
    model_name: str | None = None,
    replay_days: list[str] | None = None,
) -> dict[str, Any]:
    """Gate the challenger; ``model_name`` (default ``mlflow.model_name``) names whose champion to
    beat; ``replay_days``: validated days after the held-out day for the replay gate."""
    name = model_name or cfg.mlflow.model_name
    k = cfg.gate.k
    held = HeldOut(load_snapshot(snapshot_uri))
    days = check_replay_days(cfg, held.data.manifest["day"], replay_days or [])
    challenger_uri = model_uri or f"runs:/{run_id}/model"
    cl = tracking.client(cfg)
    rankers: dict[str, dict[int, list[int]]] = {
        "challenger": model_recs(challenger_uri, held.users, k),
        "popularity": held.popularity_recs(k),
    }
    champion_version = tracking.alias_version(cl, name, tracking.CHAMPION)
    champion_uri = f"models:/{name}/{champion_version}" if champion_version else None
    if champion_uri:
        rankers["champion"] = model_recs(champion_uri, held.users, k)
    oracle = held.oracle_recs(catalog.load_truth(cfg, held.data.manifest["day"]), k)
    if oracle is not None:
        rankers["oracle"] = oracle
    metrics = {ranker: gate_metrics(recs, held.truth, k) for ranker, recs in rankers.items()}
    window_end = cl.get_model_version(name, champion_version).tags.get("window_end") if champion_version else None
    replayed = replay.replay(cfg, held, days, model_recs, challenger_uri, champion_uri, window_end)
    day = held.data.manifest["day"]
    overlap = None
    if window_end and window_end >= day:
        overlap = (
            f"champion v{champion_version} trained up to {window_end}, on or after the held-out day {day}: "
            "a challenger of an older window cannot be compared with it fairly"
        )
    blessed, reason = bless(metrics, k, cfg.gate, replayed, overlap)
    for ranker, values in metrics.items():
        for key, value in values.items():
            if key != "users":
                cl.log_metric(run_id, f"gate_{key}_{ranker}", value)
    if replayed["ndcg_diff"] is not None:
        for key in ("mean", "low", "high"):
            cl.log_metric(run_id, f"replay_ndcg_diff_{key}", replayed["ndcg_diff"][key])
    cl.set_tag(run_id, "gate.decision", "blessed" if blessed else "not_blessed")
    cl.set_tag(run_id, "gate.reason", reason)
    cl.set_tag(run_id, "gate.champion_version", champion_version or "none")
    cl.set_tag(run_id, "gate.replay", replay.summary(replayed, k))
    cl.log_dict(
        run_id,
        {"k": k, "metrics": metrics, "blessed": blessed, "reason": reason, "replay": replayed},
        "gate/evaluation.json",
    )
    return {
        "blessed": blessed,
        "reason": reason,
        "k": k,
        "metrics": metrics,
        "replay": replayed,
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
    ap.add_argument(
        "--replay-days",
        default="",
        type=lambda text: [d for d in text.split(",") if d.strip()],
        help="comma-separated validated days after the held-out day for the replay gate (empty: none)",
    )


def run(cfg: PipelineConfig, args: argparse.Namespace) -> dict[str, Any]:
    result = evaluate(cfg, args.snapshot, args.run_id, args.model_uri, args.model_name, args.replay_days)
    k = result["k"]
    print(f"held-out day {result['day']}")
    print(f"{'ranker':12s} {'recall@' + str(k):>10s} {'ndcg@' + str(k):>10s}")
    for ranker, m in result["metrics"].items():
        print(f"{ranker:12s} {m[f'recall_at_{k}']:10.4f} {m[f'ndcg_at_{k}']:10.4f}")
    print("\n".join(replay.table_lines(result["replay"], k)))
    return result
