"""
### recsys_score — top-K recommendations for each validated day, with the champion pinned once

Runs once per validated day: `recsys_ingest` keys each `recsys_curated_events` event by its
day and this DAG runs on a `PartitionedAssetTimetable`, so each run's partition key is one day
(a backfill of N days makes N runs; a retried or cleared run re-does its own day; events of
other days that arrive meanwhile make their own runs: `plugins/recsys_airflow/partitions.py`).
Or by hand with the `day` param.

1. **plan** — the day to score: the `day` param, else the run's partition key.
   **Reprocessed history is not served**: a day whose recommendations another run already
   published is *held* (served recommendations are a record of what users got), and so is a day
   that only backfill runs published (reloading history does not serve it after the fact, so
   neither the monitor nor a retraining ever sees it). A held day skips the run, with the reason
   in the log. To re-score a served day on purpose, trigger with `day`
   and `rescore: true`: the copy goes to `rescored/dt=D/` (its manifest names the version) and
   is not announced.
2. **resolve_champion** — `models:/<name>@champion` → a concrete version and its run id,
   **once** for the whole run, printed in the task log. No champion yet → this task and
   everything after it are *skipped* (not failed) with a log line saying so.
3. **score** — `jobs.score --day D --model-version V` (Spark, `mapInArrow`: each
   worker loads the model once and scores users in matrix batches; CUDA when the workers have
   it). The version number comes from XCom, never the alias, so a promotion during the run
   cannot mix versions. Items the user already interacted with (training window and the days
   since, up to D) are excluded; users unknown to the model get the most popular unseen
   items. Output `recommendations/dt=D/` is published atomically; a rerun replaces the day.
   Exit 3 (day not validated, model without artifact) and 2 (bad argument) fail without retry.
4. **publish_recommendations** — the `recsys_recommendations` Asset event of the day with
   `{"day", "model_version", "users", "rows", ...}`, keyed by the day; the monitoring DAG
   runs once per key.

At most one run is active (queued days wait their turn): a Spark job already uses every core.
"""

from __future__ import annotations

from datetime import timedelta

from airflow.sdk import Param, PartitionedAssetTimetable, dag, task

from jobs.core.config import get_config
from recsys_airflow.assets import CURATED_EVENTS, RECOMMENDATIONS
from recsys_airflow.defaults import dag_args, day_param
from recsys_airflow.launcher import JobOperator

cfg = get_config()


@dag(
    dag_id="recsys_score",
    schedule=PartitionedAssetTimetable(assets=CURATED_EVENTS),
    params={
        "day": day_param(
            "Day to score",
            "YYYY-MM-DD (a validated curated day); empty = the day of the triggering curated-events Asset event "
            "(the run's partition key).",
        ),
        "rescore": Param(
            False,
            type="boolean",
            title="Re-score a served day",
            description="With `day`: score it again with today's champion into rescored/dt=D (the served record stays).",
        ),
    },
    **dag_args(cfg, __doc__, ["scoring", "spark", "mlflow"]),
)
def recsys_score():
    @task
    def plan(params: dict | None = None, triggering_asset_events=None, dag_run=None, run_id=None) -> dict:
        """The day this run scores and where: the `day` param, else the run's partition key,
        unless it is held history (then the run is skipped)."""
        from recsys_airflow.scoring_plan import plan_day

        planned = plan_day(get_config(), run_id, params or {}, dag_run.partition_key, triggering_asset_events)
        print(f"day to score: {planned['day']} → {planned['zone']}")
        return planned

    @task(multiple_outputs=True)
    def resolve_champion(planned: dict, run_id=None) -> dict:
        """Pin the champion version for the whole run (skip the run when there is none)."""
        from recsys_airflow.scoring_plan import pin_champion

        pinned = pin_champion(get_config(), planned, run_id)
        print(f"scoring with {pinned['model_name']} version {pinned['version']} (run {pinned['run_id']}), pinned")
        return pinned

    @task(outlets=[RECOMMENDATIONS])
    def publish_recommendations(result: dict, **context) -> dict:
        """Announce the scored day (only reached when its partition was published); a rescored
        copy is not served and not announced (skipped)."""
        from airflow.sdk.exceptions import AirflowSkipException

        if result.get("zone") == "rescored":
            raise AirflowSkipException(f"rescored copy {result['uri']}: not served, not announced")
        extra = {
            "day": result["day"],
            "model_version": result["model_version"],
            "users": result["users"],
            "rows": result["rows"],
            "model_run_id": result["model_run_id"],
            "uri": result["uri"],
        }
        print(f"recommendations dt={extra['day']}: {extra['rows']} rows, model version {extra['model_version']}")
        outlet = context["outlet_events"][RECOMMENDATIONS]
        outlet.extra = extra
        outlet.add_partitions(extra["day"])  # the monitor runs once per day (its partition key)
        return extra

    pinned = resolve_champion(plan())
    score = JobOperator(
        task_id="score",
        module="jobs.score",
        spark=True,
        job_args=[
            "--day",
            pinned["day"],
            "--model-version",
            pinned["version"],
            "--zone",
            pinned["zone"],
            "--served-by",
            pinned["served_by"],
        ],
        execution_timeout=timedelta(hours=2),
        doc_md="`python -m jobs.score --day D --model-version V` with the version pinned by resolve_champion.",
    )
    publish_recommendations(score.output)


recsys_score()
