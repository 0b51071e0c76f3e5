"""Policies the DAGs apply, as pure functions (no Airflow, no I/O): tested rule by rule.

* ``retrain_decision`` — the monitor's last word on retraining: the detector's verdict
  (``jobs.monitor.decision``) under the cooldown, a running training and ``force_retrain``.

The gate's blessing is ``jobs.evaluate.gate.bless`` (it runs inside the evaluation job).
"""

from __future__ import annotations

from dataclasses import dataclass


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
