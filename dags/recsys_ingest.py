"""
### recsys_ingest — landing events → curated Parquet, gated by Great Expectations

One run = one UTC day (the run's logical date, `{{ ds }}`).

1. **wait_for_landing** — deferred wait for `landing/events/dt={{ ds }}/_SUCCESS`
   (fails with the folder's name after `wait_timeout_s`).
2. **ingest** — Spark job `jobs.ingest`: explicit schema, typing, rule checks (rejected rows go to
   `quarantine/events/dt={{ ds }}` with a reason each), dedup on `event_id`, atomic publish of
   `curated/events/dt={{ ds }}`. A rerun replaces exactly that day.
3. **validate** — GX suites `curated_events` and `ingest_run` (`include/expectations/`);
   report under `reports/validation/dt={{ ds }}/`. A failed validation fails the run (no retry:
   the data will not change) and nothing downstream sees the day.
4. **publish_curated_event** — emits the `recsys_curated_events` Asset event with
   `{"day", "rows", "quarantined", ...}` in its extra, keyed by the day (its partition key):
   `recsys_score` runs once per key.

**Late data**: a Deadline alert fires when a day's run has not succeeded
`airflow.late_ingest_after_hours` (6 h) after the day closed — one `RECSYS LATE` log line and
the `recsys_webhook` message (`recsys_airflow.deadlines`). Backfill runs carry no deadline:
reloading history is not late data.

**Backfill** history from the UI (*Trigger → Backfill*) or `POST /api/v2/backfills`; `catchup`
is off so that unpausing does not flood the scheduler with every day since `start_date` —
history is loaded deliberately, with reprocessing rules, through a backfill.
"""

from __future__ import annotations

from datetime import timedelta

from airflow.sdk import AsyncCallback, DeadlineAlert, Param, dag, task

from jobs.core.config import get_config
from recsys_airflow.assets import CURATED_EVENTS
from recsys_airflow.deadlines import LiveRunLogicalDate, late_after, late_ingest
from recsys_airflow.defaults import dag_args
from recsys_airflow.launcher import JobOperator
from recsys_airflow.sensors import LandingSensor

cfg = get_config()


@dag(
    dag_id="recsys_ingest",
    schedule="@daily",
    max_consecutive_failed_dag_runs=0,
    owner_links={cfg.airflow.owner: "https://github.com/recsys/recsys-airflow"},
    deadline=DeadlineAlert(
        reference=LiveRunLogicalDate(),
        interval=late_after(cfg.airflow.late_ingest_after_hours),
        callback=AsyncCallback(late_ingest, kwargs={"hours": cfg.airflow.late_ingest_after_hours}),
    ),
    params={
        "wait_timeout_s": Param(
            cfg.ingest.wait_timeout_s,
            type="integer",
            minimum=1,
            maximum=7 * 24 * 3600,
            title="Landing wait timeout (s)",
            description="How long to wait for the day's landing folder before failing.",
        ),
        "validation_engine": Param(
            "pandas",
            type="string",
            enum=["pandas", "spark"],
            title="Validation engine",
            description="pandas: read the day with pyarrow (one machine); spark: validate a Spark DataFrame.",
        ),
    },
    render_template_as_native_obj=False,
    **dag_args(cfg, __doc__, ["ingestion", "spark", "great-expectations"], max_active_runs=3),
)
def recsys_ingest():
    wait = LandingSensor(
        task_id="wait_for_landing",
        folder=cfg.storage.zone("landing") + "/dt={{ ds }}",
        timeout_s="{{ params.wait_timeout_s }}",
        poke_interval_s=cfg.ingest.poke_interval_s,
        retries=0,
        doc_md="Deferred: the worker slot is free while the triggerer polls for `_SUCCESS`.",
    )
    ingest = JobOperator(
        task_id="ingest",
        module="jobs.ingest",
        spark=True,
        job_args=["--day", "{{ ds }}"],
        lineage_inputs=[cfg.storage.zone("landing") + "/dt={{ ds }}"],
        execution_timeout=timedelta(hours=2),
        doc_md="`python -m jobs.ingest --day {{ ds }}`: exit code 3 means the landing data itself is wrong (no retry).",
    )
    validate = JobOperator(
        task_id="validate",
        module="jobs.validate",
        job_args=["--day", "{{ ds }}", "--engine", "{{ params.validation_engine }}"],
        lineage_inputs=[cfg.storage.zone("curated") + "/dt={{ ds }}"],
        execution_timeout=timedelta(hours=1),
        doc_md="GX validation; exit 4 = expectations failed (named in the error), no retry.",
    )

    @task(outlets=[CURATED_EVENTS])
    def publish_curated_event(ingested: dict, validated: dict, **context) -> dict:
        """Tell downstream DAGs which partition is new (only reached when validation passed)."""
        extra = {
            "day": ingested["day"],
            "rows": ingested["rows"],
            "quarantined": ingested["quarantined"],
            "duplicates_removed": ingested["duplicates_removed"],
            "report_html": validated["report_html"],
        }
        outlet = context["outlet_events"][CURATED_EVENTS]
        outlet.extra = extra
        outlet.add_partitions(extra["day"])  # recsys_score runs once per day (its partition key)
        return extra

    wait >> ingest >> validate
    publish_curated_event(ingest.output, validate.output)


recsys_ingest()
