"""The evaluation gate (TFX-Evaluator style): is the challenger good enough to serve?

``python -m jobs.evaluate gate --snapshot DIR --run-id RUN [--model-uri URI] [--model-name NAME]
[--replay-days D1,D2]``

It ranks top-K items for the test users of the snapshot's held-out day and of the replay days
after it (``--replay-days``, planned by the DAG from ``gate.replay_days``), with each user's
history (the window and earlier days) excluded for every ranker: the **challenger**
(``--model-uri``, default ``runs:/<RUN>/model``), the **champion** (``models:/<name>@champion``,
resolved to its version once) if any, **popularity** over the window, **recent popularity** over
the window's last ``gate.recent_days`` days, and on the held-out day the **oracle** (the
simulator's true affinities) when the ground truth exists. ``jobs.evaluate.replay`` pools the
(day, user) pairs into the evidence: their count and a paired bootstrap interval of NDCG@K
challenger − each baseline.

``bless`` (a pure function of that evidence and the ``gate`` rules) blesses the challenger only
with at least ``gate.min_users`` pairs, pooled Recall@K ≥ ``gate.min_recall``, the interval's
lower bound against the best of popularity and recent popularity > −``gate.baseline_margin``,
and against the champion ≥ −``gate.replay_tolerance``. Every number and the decision with its
reason are logged to the challenger's MLflow run (tags ``gate.decision``, ``gate.reason``,
``gate.champion_version``, ``gate.evidence``, which registration copies onto the version; the
table in ``gate/evaluation.json``) and printed; the result JSON carries the champion version the
decision was made against (promotion re-checks it).
"""

from __future__ import annotations

import argparse
import functools
from collections.abc import Sequence
from typing import Any

import numpy as np

from jobs.core import catalog, tracking
from jobs.core.cli import BadInput
from jobs.core.config import GateConfig, PipelineConfig
from jobs.core.ranking import metrics_of_lists
from jobs.core.recency import recent_item_counts
from jobs.core.results import GateResult
from jobs.core.snapshots import TrainData, load_snapshot
from jobs.evaluate import replay

RANKERS = ("challenger", "champion", "popularity", "recent_popularity", "oracle")
BASELINES = ("popularity", "recent_popularity")
# Test users whose oracle scores (users × items, float64) are held at once: 2048 × 20k items is
# 330 MB, where all of a 1M-user day's test users at once would be ~150 GB (bench_scale found
# the gate's peak RSS at 10.5 GiB for 100k users × 5.8k items before this was blocked).
ORACLE_BLOCK = 2048


class EvaluationError(BadInput):
    """The snapshot or a model cannot be evaluated."""


def bless(evidence: dict[str, Any], k: int, rules: GateConfig, champion_overlap: str | None = None) -> tuple[bool, str]:
    """The gate's decision and its reason, from the pooled evidence (pure).

    Args:
        evidence: ``jobs.evaluate.replay.pool``'s result: ``users`` (pooled (day, user) pairs),
            ``pooled`` (ranker → pooled ``recall_at_K``/``ndcg_at_K``) and ``intervals`` (baseline →
            paired interval of NDCG@K challenger − baseline; ``champion`` when one exists).
        k: the cut-off the metrics were computed at.
        rules: the ``gate`` section of the configuration.
        champion_overlap: why the champion cannot be compared on the held-out day (it trained
            on it: a challenger of an older window, e.g. a backfill), which refuses the
            challenger — such a champion excludes the day's items as seen and scores ~0 there,
            so any challenger would look better.
    """
    if champion_overlap:
        return False, f"not blessed: {champion_overlap}"
    n, days = evidence["users"], len(evidence["days"])
    if n < rules.min_users:
        return False, (
            f"not blessed: insufficient evidence: {n} user-days over {days} day(s) < gate.min_users {rules.min_users}"
        )
    intervals = evidence["intervals"]
    pooled = evidence["pooled"]
    best = max(BASELINES, key=lambda b: (pooled[b][f"ndcg_at_{k}"], b == "popularity"))
    reasons = []
    recall = pooled["challenger"][f"recall_at_{k}"]
    if recall < rules.min_recall:
        reasons.append(f"recall@{k} {recall:.4f} < floor {rules.min_recall}")
    if not intervals[best]["low"] > -rules.baseline_margin:
        reasons.append(
            f"{replay.describe(best, intervals[best], k)}: lower bound not above −{rules.baseline_margin} "
            "(best baseline)"
        )
    if "champion" in intervals and intervals["champion"]["low"] < -rules.replay_tolerance:
        reasons.append(
            f"{replay.describe('champion', intervals['champion'], k)}: lower bound below −{rules.replay_tolerance}"
        )
    head = f"{n} user-days over {days} day(s)"
    if reasons:
        return False, f"not blessed ({head}): " + "; ".join(reasons)
    versus = [replay.describe(b, intervals[b], k) for b in ("champion", best) if b in intervals]
    if "champion" not in intervals:
        versus.append("no champion yet")
    return True, f"blessed ({head}): " + "; ".join(versus) + f"; recall@{k} {recall:.4f}"


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

    def rank_by_scores(self, scores: np.ndarray, k: int, users: Sequence[int] | None = None) -> dict[int, list[int]]:
        """Top-K unseen items per user from a (users × snapshot items) score matrix (rows: ``users``,
        default every test user)."""
        out = {}
        for row, user in enumerate(self.users if users is None else users):
            s = scores[row].astype(np.float64).copy()
            for item in self.seen.get(user, ()):
                s[self._column[item]] = -np.inf
            top = np.argsort(-s, kind="stable")[:k]
            out[user] = [int(self.item_ids[j]) for j in top if np.isfinite(s[j])]
        return out

    def oracle_recs(self, truth: dict[str, Any] | None, k: int) -> dict[int, list[int]] | None:
        """Rank by the simulator's true affinity on the held-out day, if that truth exists."""
        if truth is None:
            return None
        uf, vf, bias = truth["user_factors"], truth["item_factors"], truth["item_bias"]
        if max(self.users) >= len(uf) or self.item_ids.max() >= len(vf):
            return None
        items, out = vf[self.item_ids].T, {}
        for lo in range(0, len(self.users), ORACLE_BLOCK):  # one block of users' scores at a time
            block = self.users[lo : lo + ORACLE_BLOCK]
            scores = float(truth["beta"]) * (uf[np.asarray(block)] @ items) + bias[self.item_ids]
            out.update(self.rank_by_scores(scores, k, block))
        return out


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


def recent_popularity(cfg: PipelineConfig, held: HeldOut) -> np.ndarray:
    """Distinct users per snapshot item over the window's last ``gate.recent_days`` training days
    (``jobs.core.recency``: EASE's recency prior counts the same way)."""
    return recent_item_counts(cfg, held.data, cfg.gate.recent_days)


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
) -> GateResult:
    """Gate the challenger; ``model_name`` (default ``mlflow.model_name``) names whose champion to
    beat; ``replay_days``: validated days after the held-out day pooled into the evidence."""
    name = model_name or cfg.mlflow.model_name
    k = cfg.gate.k
    held = HeldOut(load_snapshot(snapshot_uri))
    day = held.data.manifest["day"]
    days = check_replay_days(cfg, day, replay_days or [])
    challenger_uri = model_uri or f"runs:/{run_id}/model"
    cl = tracking.client(cfg)
    champion_version = tracking.alias_version(cl, name, tracking.CHAMPION)
    champion_uri = f"models:/{name}/{champion_version}" if champion_version else None
    window_end = cl.get_model_version(name, champion_version).tags.get("window_end") if champion_version else None
    evidence = replay.pool(
        cfg, held, days, model_recs, challenger_uri, champion_uri, window_end, recent_popularity(cfg, held)
    )
    metrics = dict(evidence["days"][0]["metrics"])  # the held-out day (``HeldOut`` has a test user)
    oracle = held.oracle_recs(catalog.load_truth(cfg, day), k)
    if oracle is not None:
        metrics["oracle"] = gate_metrics(oracle, held.truth, k)
    overlap = None
    if window_end and window_end >= day:
        overlap = (
            f"champion v{champion_version} trained up to {window_end}, on or after the held-out day {day}: "
            "a challenger of an older window cannot be compared with it fairly"
        )
    blessed, reason = bless(evidence, k, cfg.gate, overlap)
    for ranker, values in metrics.items():
        for key, value in values.items():
            if key != "users":
                cl.log_metric(run_id, f"gate_{key}_{ranker}", value)
    cl.log_metric(run_id, "evidence_users", evidence["users"])
    for ranker, values in evidence["pooled"].items():
        for key, value in values.items():
            cl.log_metric(run_id, f"evidence_{key}_{ranker}", value)
    for baseline, interval in evidence["intervals"].items():
        for key in ("mean", "low", "high"):
            cl.log_metric(run_id, f"evidence_ndcg_lift_{baseline}_{key}", interval[key])
    cl.set_tag(run_id, "gate.decision", "blessed" if blessed else "not_blessed")
    cl.set_tag(run_id, "gate.reason", reason)
    cl.set_tag(run_id, "gate.champion_version", champion_version or "none")
    cl.set_tag(run_id, "gate.evidence", evidence["summary"])
    cl.log_dict(
        run_id,
        {"k": k, "metrics": metrics, "blessed": blessed, "reason": reason, "evidence": evidence},
        "gate/evaluation.json",
    )
    return {
        "blessed": blessed,
        "reason": reason,
        "k": k,
        "metrics": metrics,
        "evidence": evidence,
        "champion_version": champion_version,
        "run_id": run_id,
        "experiment_id": cl.get_run(run_id).info.experiment_id,
        "day": day,
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
        help="comma-separated validated days after the held-out day, pooled into the evidence (empty: none)",
    )


def run(cfg: PipelineConfig, args: argparse.Namespace) -> GateResult:
    result = evaluate(cfg, args.snapshot, args.run_id, args.model_uri, args.model_name, args.replay_days)
    k = result["k"]
    print(f"held-out day {result['day']}")
    print(f"{'ranker':18s} {'recall@' + str(k):>10s} {'ndcg@' + str(k):>10s}")
    for ranker, m in result["metrics"].items():
        print(f"{ranker:18s} {m[f'recall_at_{k}']:10.4f} {m[f'ndcg_at_{k}']:10.4f}")
    print("\n".join(replay.table_lines(result["evidence"], k)))
    return result
