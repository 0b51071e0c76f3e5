"""
### recsys_monitor — drift report of each served day → retrain decision → trigger `recsys_train`

Runs once per served day: scoring keys each `recsys_recommendations` event by its day (extra
`day`, `model_version`) and this DAG runs on a `PartitionedAssetTimetable` (one run per key:
`plugins/recsys_airflow/partitions.py`), or on demand with the typed parameters below.

1. **plan** — the day D: the `day` parameter, else the run's partition key.
2. **monitor** — `python -m jobs.monitor --day D`: the day's drift report under
   `reports/drift/dt=D/` (JSON + HTML with distribution
   overlays, metric table and trend; also MLflow artifacts of a run in
   `<experiment>-monitoring`; the *Drift report* extra link opens it). Data drift of the
   validated curated day against the champion's training reference (PSI / Jensen-Shannon on
   fixed reference bins, KS statistic as an effect size — never a p-value, which flags any
   large sample), unseen users/items, prediction drift of the served scores, and the online
   outcome: hit-rate@K / recall@K of the recommendations of D-1 against D's clicks, plays and
   ratings, compared with the champion's offline recall. Thresholds: `drift` in
   `include/config/pipeline.yaml`. Exit 3 (curated day missing) or 2 (bad version) fail
   without retry (`jobs.core.cli.ExitCode`). The model version comes from the day's recommendations manifest: the
   version the scoring run pinned (the same value as the event's `model_version`).
3. **decide** — the report says *retrain* when recall decays beyond `drift.performance_decay`
   or ≥ `drift.min_drifted_features` features are in alert. Then the **cooldown**
   (`recsys_airflow.decisions.retrain_decision`, a pure function tested rule by rule): no retrain
   while a `recsys_train` run is queued or running (counted with the Task SDK's
   `get_dr_count`, i.e. Airflow's own state), nor within `drift.cooldown_hours` of the end of
   the latest finished training run (read from the MLflow training experiment: the Task SDK
   offers run counts and states but no end times, and MLflow records when each training really
   finished, whoever triggered it). `force_retrain` overrides the detector and the
   finished-run cooldown, never a queued/running training. A drift alert is announced by the
   notifier (log line + `recsys_webhook` connection if configured); the decision and its reason
   are in the task log and the `decision` XCom.
4. **trigger_retrain** — `TriggerDagRunOperator` of `recsys_train` (no logical date: a
   manual-type run at trigger time) with conf `{"reason", "report_html", "force_retrain"}`,
   which `recsys_train`'s params record; skipped when there is nothing to retrain.

Every task announces its failure through the same notifier. One run at a time
(`max_active_runs=1`), so days are monitored in order and each report's trend sees the
previous ones.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from airflow.providers.standard.operators.trigger_dagrun import TriggerDagRunOperator
from airflow.sdk import Param, PartitionedAssetTimetable, dag, task

from jobs.core.config import get_config
from recsys_airflow.assets import RECOMMENDATIONS
from recsys_airflow.defaults import dag_args, day_param
from recsys_airflow.links import MonitorJobOperator

cfg = get_config()
TRAIN_DAG_ID = "recsys_train"


@dag(
    dag_id="recsys_monitor",
    schedule=PartitionedAssetTimetable(assets=RECOMMENDATIONS),
    params={
        "day": day_param(
            "Day",
            "YYYY-MM-DD to monitor; empty = the day of the triggering recommendations event (the run's partition key).",
        ),
        "force_retrain": Param(
            False,
            type="boolean",
            title="Force retrain",
            description="Trigger recsys_train even without drift (not while a training run is queued or running).",
        ),
    },
    **dag_args(cfg, __doc__, ["monitoring", "drift", "mlflow"]),
)
def recsys_monitor():
    """The DAG body: its TaskFlow tasks inline, so that the graph reads in one place."""

    @task
    def plan(params: dict | None = None, triggering_asset_events=None, dag_run=None) -> str:
        """The day to monitor: the `day` param, else the run's partition key."""
        from recsys_airflow.partitions import run_day

        day, sources = run_day(
            (params or {}).get("day"),
            dag_run.partition_key,
            triggering_asset_events,
            "no day to monitor: set the `day` parameter or trigger through a recommendations event",
        )
        print(f"day to monitor: {day} (recommendations published by: {', '.join(sources) or 'the day param'})")
        return day

    @task.short_circuit
    def decide(report: dict, params: dict | None = None, ti: Any = None) -> dict | None:
        """Apply the cooldown and `force_retrain` to the report's decision; the conf to trigger, or None (skip)."""
        import time

        from jobs.core.tracking import last_training_end
        from recsys_airflow.decisions import decision_record, retrain_conf, retrain_decision
        from recsys_airflow.notify import announce

        force = bool(params["force_retrain"])
        if report["drift_alert"]:
            announce(
                "drift",
                f"drift on {report['day']} (model v{report['model_version']}): {report['reason']} "
                f"— report {report['report_html']}",
                {"day": report["day"], "alerts": report["alerts"], "report_html": report["report_html"]},
            )
        running = ti.get_dr_count(dag_id=TRAIN_DAG_ID, states=["queued", "running"])
        hours_since, train_run = None, None
        if not running and report["retrain"] and not force:
            end, train_run = last_training_end(get_config())
            hours_since = (time.time() - end) / 3600 if end else None
        decision = retrain_decision(
            detector_retrain=report["retrain"],
            detector_reason=report["reason"],
            force=force,
            active_trainings=running,
            hours_since_training=hours_since,
            cooldown_hours=cfg.drift.cooldown_hours,
            last_training_run=train_run,
            train_dag_id=TRAIN_DAG_ID,
        )
        ti.xcom_push(key="decision", value=decision_record(report, decision, force, running, hours_since))
        print(f"decision: {'RETRAIN' if decision.retrain else 'no retrain'} — {decision.reason}")
        return retrain_conf(report, decision, force)

    day = plan()
    monitor = MonitorJobOperator(
        task_id="monitor",
        module="jobs.monitor",
        job_args=["--day", day],
        execution_timeout=timedelta(hours=1),
        doc_md="`python -m jobs.monitor --day D`: the day's report JSON + HTML, MLflow monitoring run, decision.",
    )
    TriggerDagRunOperator(
        task_id="trigger_retrain",
        trigger_dag_id=TRAIN_DAG_ID,
        conf=decide(monitor.output),
        logical_date=None,
        wait_for_completion=False,
        openlineage_inject_parent_info=False,
        doc_md="Starts recsys_train with the reason and the report; its Params record both.",
    )


recsys_monitor()
