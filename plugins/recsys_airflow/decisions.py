"""Policies the DAGs apply, as pure functions (no Airflow, no I/O): tested rule by rule.

* ``retrain_decision`` — the monitor's last word on retraining: the detector's verdict
  (``jobs.monitor.decision``) under the cooldown, a running training and ``force_retrain``
  (``decision_record`` and ``retrain_conf``: what the monitor DAG records and triggers with).
* ``scoring_plan`` — whether a scoring run may write its day, under the policy for reprocessed
  history (served recommendations are a record; a backfill never serves by itself).

The gate's blessing is ``jobs.evaluate.gate.bless`` (it runs inside the evaluation job).
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class RetrainDecision:
    retrain: bool
    reason: str


def retrain_decision(
    *,
    detector_retrain: bool,
    detector_reason: str,
    force: bool,
    active_trainings: int,
    hours_since_training: float | None,
    cooldown_hours: float,
    last_training_run: str | None = None,
    train_dag_id: str = "recsys_train",
) -> RetrainDecision:
    """Whether the monitor triggers a training, and why.

    Rules, in order:

    1. a training queued or running → no (a second one would train on the same data);
    2. ``force`` → yes, whatever the detector says (but never past rule 1);
    3. the detector says no → no, with its reason;
    4. the latest training finished less than ``cooldown_hours`` ago → no;
    5. otherwise → yes, with the detector's reason.

    Args:
        detector_retrain / detector_reason: the drift report's decision.
        force: the run's ``force_retrain`` param.
        active_trainings: queued or running runs of the training DAG.
        hours_since_training: hours since the latest training finished (None: never).
        cooldown_hours: ``drift.cooldown_hours``.
    """
    if active_trainings:
        return RetrainDecision(False, f"cooldown: {active_trainings} {train_dag_id} run(s) queued or running")
    if force:
        return RetrainDecision(True, f"force_retrain (detector: {detector_reason})")
    if not detector_retrain:
        return RetrainDecision(False, detector_reason)
    if hours_since_training is not None and hours_since_training < cooldown_hours:
        return RetrainDecision(
            False,
            f"cooldown: training run {last_training_run} finished {hours_since_training:.1f} h ago "
            f"(< {cooldown_hours:g} h); detector: {detector_reason}",
        )
    return RetrainDecision(True, detector_reason)


def decision_record(
    report: Mapping[str, Any], decision: RetrainDecision, force: bool, running: int, hours_since: float | None
) -> dict[str, Any]:
    """What the monitor DAG's ``decide`` task records (XCom ``decision``): the decision, its inputs."""
    return {
        "retrain": decision.retrain,
        "reason": decision.reason,
        "force_retrain": force,
        "detector_retrain": report["retrain"],
        "training_runs_active": running,
        "last_training_end_hours_ago": hours_since,
        "report_html": report["report_html"],
    }


def retrain_conf(report: Mapping[str, Any], decision: RetrainDecision, force: bool) -> dict[str, Any] | None:
    """The conf the monitor triggers ``recsys_train`` with (its Params record the reason and the
    report, bounded), or None: no retraining."""
    if not decision.retrain:
        return None
    return {"reason": decision.reason[:500], "report_html": report["report_html"][:1000], "force_retrain": force}


BACKFILL = "backfill"  # DagRunType.BACKFILL_JOB (also what a reprocessed run becomes)


@dataclass(frozen=True)
class ScoringPlan:
    day: str  # the run's one day
    zone: str  # "recommendations" (served) or "rescored" (explicit re-scoring)
    held: str | None = None  # why the day is not scored; None: it is


def scoring_plan(
    day: str,
    *,
    run_id: str,
    served: Mapping[str, Any] | None,
    sources: Collection[str],
    rescore: bool = False,
) -> ScoringPlan:
    """Whether a scoring run writes its ``day``, and where.

    Rules, in order:

    1. ``rescore`` (an operator's explicit action, with the ``day`` param) → scored into the
       ``rescored`` zone: the served record is never rewritten, a re-scored copy sits beside it;
    2. a day already served by another run (``served`` is the day's published recommendations
       manifest; its ``served_by`` names that run, absent when the partition predates the
       record) → held: served recommendations are a record of what users got, not a cache to
       refresh with today's champion;
    3. a day whose curated events all come from backfill runs (``sources``, the run types of the
       runs that published them) → held: reloading history does not serve it after the fact,
       and nothing downstream (the monitor, a retraining) sees it;
    4. otherwise → scored into ``recommendations``. A day this very run served already (a
       cleared run) is scored again: same run, same pinned champion, same bytes.

    Args:
        day: the run's day (its ``day`` param, or its partition key).
        run_id: this run's id.
        served: the manifest of the day's published recommendations, None when unpublished.
        sources: run types of the runs whose events named the day; empty for a ``day`` param
            (an explicit request is live by definition).
    """
    if rescore:
        return ScoringPlan(day, "rescored")
    if served is not None and served.get("served_by") != run_id:
        return ScoringPlan(
            day,
            "recommendations",
            f"served already (by {served.get('served_by') or 'an earlier run'}): served recommendations are a record; "
            "re-score it explicitly with the day param and rescore=true (written to the rescored zone)",
        )
    if sources and set(sources) <= {BACKFILL}:
        return ScoringPlan(
            day,
            "recommendations",
            "published by a backfill only and never served: reloaded history is not served after the fact",
        )
    return ScoringPlan(day, "recommendations")
