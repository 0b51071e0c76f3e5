"""Do Airflow 3.3.2's partitioned assets give "one run per day" on the real scheduler?

The probe DAGs (``tests/e2e/dags_extra/recsys_test_partitions.py``: a producer on a
``CronPartitionTimetable`` keyed by the day, a consumer on a ``PartitionedAssetTimetable`` over its
asset) run on the session's live stack through REST, in the cases ``recsys_score`` and
``recsys_monitor`` rely on (``plugins/recsys_airflow/partitions.py``; docs/pipeline.md, *Scoring*):

* a backfill of three days, whose events arrive while a consumer run of another day is active
  (each consumer run takes seconds; ``max_active_runs=1`` as in the real consumers): the runs
  queue behind it and never overlap, one consumer run per day, keyed by that day, none lost;
* a retry of a consumer task: the second try sees the same day as the first;
* clear-and-rerun of one producer day: its event makes one more consumer run, for that day only.

What this test records is what the pipeline's "one run per day" rests on (it replaced a claim
ledger of Airflow Variables); it fails if the scheduler's behaviour changes under an upgrade.
"""

from __future__ import annotations

import time
from collections import Counter
from datetime import datetime
from itertools import pairwise

import pytest

pytestmark = pytest.mark.e2e

PRODUCER, CONSUMER = "recsys_test_partition_producer", "recsys_test_partition_consumer"
DAYS = ["2026-09-01", "2026-09-02", "2026-09-03"]
FAIL_DAY = "2026-09-03"  # the consumer's first try of this day fails on purpose


def _t(stamp: str) -> datetime:
    return datetime.fromisoformat(stamp)


def _converged(api, extra: tuple[str, ...] = (), timeout: float = 300) -> tuple[list[dict], list[dict]]:
    """Wait until every run of both DAGs has ended and the consumer has one run per producer run's
    day (plus ``extra``: days re-emitted); returns (producer runs, consumer runs).

    Unpausing the producer also starts the run of today's partition (seen on 3.3.2 although the
    timetable's ``run_immediately`` is False), so the expected days are read from its runs."""
    deadline = time.monotonic() + timeout
    produced: list[dict] = []
    consumed: list[dict] = []
    while time.monotonic() < deadline:
        produced, consumed = api.runs(PRODUCER), api.runs(CONSUMER)
        ended = all(r["state"] in ("success", "failed") for r in produced + consumed)
        expected = Counter([r["partition_key"] for r in produced] + list(extra))
        if ended and set(DAYS) <= set(expected) and Counter(r["partition_key"] for r in consumed) == expected:
            return produced, consumed
        time.sleep(2)
    raise AssertionError(f"no one consumer run per producer day within {timeout}s: {produced} / {consumed}")


@pytest.mark.timeout(900)
def test_partitioned_assets_run_each_day_once_retry_the_same_day_and_rerun_a_cleared_day(admin_client):
    api = admin_client
    for dag_id in (PRODUCER, CONSUMER):
        api.wait_for_dag(dag_id)
    api.call("POST", "/variables", json={"key": "recsys_test_partition_fail_day", "value": FAIL_DAY})
    api.unpause(CONSUMER)
    api.unpause(PRODUCER)

    backfill = api.backfill(PRODUCER, f"{DAYS[0]}T00:00:00Z", f"{DAYS[-1]}T00:00:00Z", "none", max_active_runs=3)
    api.wait_backfill(backfill["id"], timeout=300)
    produced, consumed = _converged(api)  # one consumer run per day, keyed by the producer's day
    backfilled = [r for r in produced if r["run_type"] == "backfill"]
    assert sorted(r["partition_key"] for r in backfilled) == DAYS, produced
    assert {r["state"] for r in produced} == {"success"} and {r["state"] for r in consumed} == {"success"}, consumed
    runs = {r["partition_key"]: r["dag_run_id"] for r in consumed}

    # max_active_runs=1: no two consumer runs overlap, and at least one was queued while another ran.
    spans = sorted((_t(r["start_date"]), _t(r["end_date"]), _t(r["queued_at"]), r["partition_key"]) for r in consumed)
    for (_, prev_end, _, prev_key), (start, _, _, key) in pairwise(spans):
        assert start >= prev_end, f"consumer runs of {prev_key} and {key} overlap: {spans}"
    queued_behind = [key for (_, prev_end, _, _), (_, _, queued, key) in pairwise(spans) if queued < prev_end]
    assert queued_behind, f"no consumer run was queued behind an active one: {spans}"

    # The retried day: both tries saw the same day.
    ti = next(t for t in api.task_instances(CONSUMER, runs[FAIL_DAY]) if t["task_id"] == "score")
    assert ti["try_number"] == 2, ti
    for attempt in (1, 2):
        assert f"PROBE key={FAIL_DAY} try={attempt}" in api.log_text(CONSUMER, runs[FAIL_DAY], "score", attempt)

    # Clear and re-run one producer day: one more consumer run, for that day only.
    day = DAYS[1]
    producer_run = next(r["dag_run_id"] for r in backfilled if r["partition_key"] == day)
    api.call("POST", f"/dags/{PRODUCER}/dagRuns/{producer_run}/clear", json={"dry_run": False})
    _, after = _converged(api, extra=(day,))
    outcome = {k: [(r["run_type"], r["state"]) for r in after if r["partition_key"] == k] for k in DAYS}
    print("partitioned assets on 3.3.2:", outcome, "queued behind an active run:", queued_behind)
    assert {r["state"] for r in after} == {"success"}, outcome
    rerun = [r["dag_run_id"] for r in after if r["partition_key"] == day]
    assert len(rerun) == 2 and runs[day] in rerun, outcome  # the first run kept, one new run for the day
    assert {k: [r["dag_run_id"] for r in after if r["partition_key"] == k] for k in DAYS if k != day} == {
        k: [runs[k]] for k in DAYS if k != day
    }, outcome  # the other days: no new run
