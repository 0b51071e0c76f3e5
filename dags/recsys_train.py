"""
### recsys_train — snapshot → train (GPU pod or local) → evaluation gate → register → infra check → promote

Runs weekly (Monday 04:00 UTC), when the monitor detects drift (it triggers this DAG with a
`reason` in the conf), or on demand from the UI/REST with the typed parameters below.

1. **plan** — the evaluation day D: `eval_date`, or the latest validated curated day.
2. **snapshot** — Spark job `jobs.snapshot`: train on the validated days `[D - window_days, D - 1]`,
   hold out day D (time-based split). Published once per (D, window) under
   `training/snapshots/`.
3. **train** — `python -m jobs.train …`: a local subprocess in the `local` profile, a
   `KubernetesPodOperator` on a GPU node (restricted security context, Secret-borne MLflow
   credentials, `gpu_training` pool) in the `cluster` profile; same task id and argv. Checkpoints
   every epoch and resumes after a crash; logs params, the loss curve and the model to MLflow.
   The *MLflow run* extra link opens the run.
4. **evaluate** — the gate on day D: Recall@K / NDCG@K for the challenger, the champion, a
   popularity baseline and (synthetic worlds) the oracle; **blessed** only if it clears the
   absolute floor, beats popularity by the configured lift and does not regress against the
   champion beyond the tolerance. Every number and the decision go to MLflow and the task log.
5. **register** — a new version of the model with alias `challenger`, tagged with data window,
   metrics, decision, git commit and Airflow run.
6. **infra_validate** — loads the registered model by URI in a fresh process and scores a smoke
   batch (shape, types, no seen items).
7. **promote** — only for a blessed challenger: moves `champion` (previous one kept as
   `previous_champion` for one-step rollback, see `recsys_model_rollback`), emits the
   `recsys_champion_model` Asset event.

No parameter bypasses the gate: `force_retrain` only forces training when the trigger would
otherwise skip it; a manual promotion goes through the audited rollback DAG.
"""

from __future__ import annotations

import pendulum
from airflow.sdk import Param, dag, task

from jobs.config import get_config
from recsys_airflow.assets import CHAMPION_MODEL
from recsys_airflow.defaults import default_args
from recsys_airflow.launcher import JobOperator
from recsys_airflow.training import train_task

cfg = get_config()
SNAPSHOT = "{{ ti.xcom_pull(task_ids='snapshot')['uri'] }}"
RUN_TAG = "{{ dag.dag_id }}__{{ run_id | replace(':', '_') | replace('+', '_') }}"


@dag(
    dag_id="recsys_train",
    schedule="0 4 * * 1",
    start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
    catchup=False,
    max_active_runs=1,
    doc_md=__doc__,
    tags=["recsys", "training", "mlflow", "gpu"],
    default_args=default_args(cfg.airflow.owner),
    params={
        "force_retrain": Param(
            False,
            type="boolean",
            title="Force retrain",
            description="Train even when the trigger's reason would not require it (the gate still decides promotion).",
        ),
        "epochs": Param(
            cfg.training.epochs, type="integer", minimum=1, maximum=200, title="Epochs", description="Training epochs."
        ),
        "window_days": Param(
            cfg.training.window_days,
            type="integer",
            minimum=1,
            maximum=90,
            title="Window (days)",
            description="Validated curated days before the evaluation day used for training.",
        ),
        "eval_date": Param(
            "",
            type="string",
            pattern=r"^$|^\d{4}-\d{2}-\d{2}$",
            title="Evaluation day",
            description="YYYY-MM-DD held out for the gate; empty = the latest validated curated day.",
        ),
        "reason": Param(
            "scheduled",
            type="string",
            maxLength=500,
            title="Reason",
            description="Why this training runs (set by the drift monitor; free text from the UI).",
        ),
        "report_uri": Param(
            "",
            type="string",
            maxLength=1000,
            title="Drift report",
            description="Report that triggered this run, if any.",
        ),
    },
)
def recsys_train():
    @task
    def plan(params: dict | None = None, data_interval_end=None) -> dict:
        """Pick the evaluation day D (latest validated curated day unless given)."""
        from jobs.validate import validated_days

        days = validated_days(get_config())
        if params["eval_date"]:
            day = params["eval_date"]
        else:
            limit = data_interval_end.date().isoformat() if data_interval_end else "9999-12-31"
            eligible = [d for d in days if d <= limit]
            if not eligible:
                raise ValueError("no validated curated day to evaluate on: run recsys_ingest first")
            day = eligible[-1]
        if day not in days:
            raise ValueError(f"eval_date {day} is not a validated curated day (validated: {days[-5:]})")
        return {"day": day, "window_days": int(params["window_days"]), "reason": params["reason"]}

    planned = plan()
    snapshot = JobOperator(
        task_id="snapshot",
        module="jobs.snapshot",
        spark=True,
        job_args=[
            "--date",
            "{{ ti.xcom_pull(task_ids='plan')['day'] }}",
            "--window-days",
            "{{ ti.xcom_pull(task_ids='plan')['window_days'] }}",
        ],
        fail_fast_codes=[3],
    )
    train = train_task(
        cfg,
        "train",
        [
            "--snapshot",
            SNAPSHOT,
            "--epochs",
            "{{ params.epochs }}",
            "--run-name",
            RUN_TAG,
            "--checkpoint-dir",
            cfg.storage.zone("checkpoints") + "/" + RUN_TAG,
        ],
        doc_md="Same argv locally and in the GPU pod; resumes from the last epoch checkpoint on retry.",
    )
    evaluate = JobOperator(
        task_id="evaluate",
        module="jobs.evaluate",
        job_args=[
            "--snapshot",
            SNAPSHOT,
            "--run-id",
            "{{ ti.xcom_pull(task_ids='train')['run_id'] }}",
            "--model-uri",
            "{{ ti.xcom_pull(task_ids='train')['model_uri'] }}",
        ],
        doc_md="The gate: challenger vs champion vs popularity vs oracle on the held-out day.",
    )
    register = JobOperator(
        task_id="register",
        module="jobs.registry",
        job_args=[
            "register",
            "--run-id",
            "{{ ti.xcom_pull(task_ids='train')['run_id'] }}",
            "--model-uri",
            "{{ ti.xcom_pull(task_ids='train')['model_uri'] }}",
            "--tags",
            "{{ {'airflow_run_id': run_id, 'airflow_dag_id': dag.dag_id, "
            "'decision': 'blessed' if ti.xcom_pull(task_ids='evaluate')['blessed'] else 'not_blessed', "
            "'decision_reason': ti.xcom_pull(task_ids='evaluate')['reason'], "
            "'data_window': ti.xcom_pull(task_ids='snapshot')['window_start'] ~ '..' ~ ti.xcom_pull(task_ids='snapshot')['window_end'], "
            "'eval_day': ti.xcom_pull(task_ids='snapshot')['day'], "
            "'trigger_reason': params.reason} | tojson }}",
        ],
        pool="model_registry",
    )
    infra_validate = JobOperator(
        task_id="infra_validate",
        module="jobs.infra_validate",
        job_args=[
            "--model-uri",
            "{{ ti.xcom_pull(task_ids='register')['model_uri'] }}",
            "--snapshot",
            SNAPSHOT,
        ],
        fail_fast_codes=[4],
        doc_md="Fresh process: load by registry URI, score a smoke batch, check shape/types/no seen items.",
    )

    @task.short_circuit(ignore_downstream_trigger_rules=True)
    def blessed(evaluation: dict) -> bool:
        """Stop here (skip promotion) unless the gate blessed the challenger."""
        print(f"gate decision: {'BLESSED' if evaluation['blessed'] else 'NOT blessed'} — {evaluation['reason']}")
        return bool(evaluation["blessed"])

    promote = JobOperator(
        task_id="promote",
        module="jobs.registry",
        job_args=[
            "promote",
            "--version",
            "{{ ti.xcom_pull(task_ids='register')['version'] }}",
            "--expected-champion",
            "{{ ti.xcom_pull(task_ids='evaluate')['champion_version'] or '' }}",
            "--reason",
            "{{ ti.xcom_pull(task_ids='evaluate')['reason'] }}",
            "--actor",
            "{{ dag.dag_id }}/{{ run_id }}",
        ],
        pool="model_registry",
        fail_fast_codes=[3],
        outlets=[CHAMPION_MODEL],
    )

    planned >> snapshot >> train >> evaluate >> register >> infra_validate
    infra_validate >> blessed(evaluate.output) >> promote


recsys_train()
