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
   neither the monitor nor a retraining ever sees it). Held days are logged with the reason; a
   held day skips the run. To re-score a served day on purpose, trigger with `day`
   and `rescore: true`: the copy goes to `rescored/dt=D/` (its manifest names the version) and
   is not announced.
2. **resolve_champion** — `models:/<name>@champion` → a concrete version and its run id,
   **once** for the whole run, printed in the task log. No champion yet → this task and
   everything after it are *skipped* (not failed) with a log line saying so.
3. **score** — one `jobs.score --day D --model-version V` per day (Spark, `mapInArrow`: each
   worker loads the model once and scores users in matrix batches; CUDA when the workers have
   it). The version number comes from XCom, never the alias, so a promotion during the run
   cannot mix versions. Items the user already interacted with (training window and the days
   since, up to D) are excluded; users unknown to the model get the most popular unseen
   items. Output `recommendations/dt=D/` is published atomically; a rerun replaces the day.
   Exit 3 (day not validated, model without artifact) and 2 (bad argument) fail without retry.
4. **publish_recommendations** — one `recsys_recommendations` Asset event per day with
   `{"day", "model_version", "users", "rows", ...}`, keyed by the day; the monitoring DAG
   runs once per key.

At most one run is active (queued days wait their turn): a Spark job already uses every core.
"""

from __future__ import annotations

from datetime import timedelta

from airflow.sdk import Param, PartitionedAssetTimetable, dag, task

from jobs.core.config import get_config
from recsys_airflow.assets import CURATED_EVENTS, RECOMMENDATIONS
from recsys_airflow.champion import score_argv
from recsys_airflow.defaults import START_DATE, default_args
from recsys_airflow.launcher import JobOperator

cfg = get_config()


@dag(
    dag_id="recsys_score",
    schedule=PartitionedAssetTimetable(assets=CURATED_EVENTS),
    start_date=START_DATE,
    catchup=False,
    max_active_runs=1,
    doc_md=__doc__,
    tags=["recsys", "scoring", "spark", "mlflow"],
    default_args=default_args(cfg.airflow.owner, retry_delay_s=cfg.airflow.retry_delay_s),
    params={
        "day": Param(
            None,
            type=["null", "string"],
            pattern=r"^$|^\d{4}-\d{2}-\d{2}$",
            title="Day to score",
            description="YYYY-MM-DD (a validated curated day); empty = the day(s) of the triggering curated-events Asset events.",
        ),
        "rescore": Param(
            False,
            type="boolean",
            title="Re-score a served day",
            description="With `day`: score it again with today's champion into rescored/dt=D (the served record stays).",
        ),
    },
)
def recsys_score():
    @task
    def plan(params: dict | None = None, triggering_asset_events=None, dag_run=None, run_id=None) -> dict:
        """The day this run scores and where: the `day` param, else the run's partition key,
        unless it is held history."""
        from recsys_airflow.champion import plan_scoring

        planned = plan_scoring(get_config(), run_id, params or {}, dag_run.partition_key, triggering_asset_events)
        print(f"days to score: {', '.join(planned['days'])} → {planned['zone']}; held: {planned['held'] or 'none'}")
        return planned

    @task
    def resolve_champion(planned: dict, run_id=None) -> list[dict]:
        """Pin the champion version for the whole run (skip the run when there is none)."""
        from recsys_airflow.champion import champion_or_skip

        requests = champion_or_skip(get_config(), planned["days"], planned["zone"], run_id)
        print(
            f"scoring with {requests[0]['model_name']} version {requests[0]['version']} "
            f"(run {requests[0]['run_id']}), pinned for this run"
        )
        return requests

    requests = resolve_champion(plan())
    score = JobOperator.partial(
        task_id="score",
        module="jobs.score",
        spark=True,
        max_active_tis_per_dagrun=1,
        execution_timeout=timedelta(hours=2),
        doc_md="`python -m jobs.score --day D --model-version V` with the version pinned by resolve_champion.",
    ).expand(job_args=requests.map(score_argv))

    @task(outlets=[RECOMMENDATIONS])
    def publish_recommendations(result: dict, **context) -> dict:
        """Announce one scored day (only reached when its partition was published); a rescored
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

    publish_recommendations.expand(result=score.output)


recsys_score()
