"""
### recsys_test_partition_producer / recsys_test_partition_consumer — the partitioned-asset probe

Test-only DAGs (loaded through `stack.extra_dag_folders` by `tests/e2e/test_partitioned_assets.py`;
`make up` never sees them) with the shape `recsys_ingest → recsys_score` would have on Airflow's
partitioned assets: the producer runs on a `CronPartitionTimetable` (partition key = the day,
`%Y-%m-%d`) and emits `recsys_test_partitioned` for its day; the consumer runs on a
`PartitionedAssetTimetable` over that asset (identity mapper: its run's key is the producer's).

The consumer has `max_active_runs=1` like the real consumers and its task takes a few seconds, so
events of other days arrive while a run is active and queue behind it (the stranded-event case of
apache/airflow#56050); prints `PROBE key=<partition key> try=<n>` and fails the first try
of the day named by the `recsys_test_partition_fail_day` Variable, so a retry can show which
day it sees.
"""

from __future__ import annotations

import time

import pendulum
from airflow.sdk import Asset, CronPartitionTimetable, PartitionedAssetTimetable, Variable, dag, task

PARTITIONED = Asset(uri="file://recsys-test/partitioned", name="recsys_test_partitioned")


@dag(
    dag_id="recsys_test_partition_producer",
    schedule=CronPartitionTimetable("0 0 * * *", timezone="UTC", key_format="%Y-%m-%d"),
    start_date=pendulum.datetime(2026, 9, 1, tz="UTC"),
    catchup=False,
    doc_md=__doc__,
    tags=["recsys", "test"],
    default_args={"owner": "recsys", "retries": 0},
)
def recsys_test_partition_producer():
    @task(outlets=[PARTITIONED])
    def publish(dag_run=None) -> str:
        print(f"PROBE publish key={dag_run.partition_key} run_type={dag_run.run_type}")
        return dag_run.partition_key

    publish()


@dag(
    dag_id="recsys_test_partition_consumer",
    schedule=PartitionedAssetTimetable(assets=PARTITIONED),
    start_date=pendulum.datetime(2026, 9, 1, tz="UTC"),
    catchup=False,
    max_active_runs=1,  # as recsys_score and recsys_monitor: events of other days queue behind a run
    doc_md=__doc__,
    tags=["recsys", "test"],
    default_args={"owner": "recsys", "retries": 1, "retry_delay": pendulum.duration(seconds=1)},
)
def recsys_test_partition_consumer():
    @task
    def score(dag_run=None, ti=None) -> str:
        key = dag_run.partition_key
        print(f"PROBE key={key} try={ti.try_number}")
        time.sleep(4)
        if ti.try_number == 1 and key == Variable.get("recsys_test_partition_fail_day", default=""):
            raise RuntimeError(f"first try of {key} fails on purpose")
        return key

    score()


recsys_test_partition_producer()
recsys_test_partition_consumer()
