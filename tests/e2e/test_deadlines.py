"""Late data through the real scheduler and triggerer: ``recsys_ingest``'s Deadline alert.

Three runs of days without landing data (each fails its landing wait after 20 s):

* a **late** day, triggered long after it closed: its deadline (close + 6 h) is already past,
  so the scheduler hands the miss to the triggerer, which announces it on the webhook;
* **today**, triggered on time: a deadline in the future, nothing announced;
* a **backfilled** day, as old as the late one: no deadline at all (reloading history is not
  late data).

The webhook is a real HTTP server on loopback behind the ``recsys_webhook`` connection, created
over REST (and removed at the end); the deadlines are read from the live stack's metadata DB.
"""

from __future__ import annotations

import contextlib
import json
import sqlite3
import time
from datetime import UTC, datetime

import pytest

from tests.webhook import Webhook

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(900)]

# Days no other test of the live stack uses (tests/reliability/test_stack_faults.py backfills 2026-07-01…02).
LATE, BACKFILLED = "2026-08-11", "2026-08-12"
CONF = {"wait_timeout_s": 20}


def _deadlines(stack) -> dict[str, tuple[str, str, int]]:
    """run id → (run type, deadline time, missed) of recsys_ingest's deadlines in the live DB."""
    with contextlib.closing(sqlite3.connect(stack.airflow_home / "airflow.db", timeout=30)) as db:
        rows = db.execute(
            "SELECT r.run_id, r.run_type, d.deadline_time, d.missed FROM deadline d "
            "JOIN dag_run r ON r.id = d.dagrun_id WHERE r.dag_id = 'recsys_ingest'"
        ).fetchall()
    return {run_id: (run_type, str(when), missed) for run_id, run_type, when, missed in rows}


def test_a_late_day_is_announced_and_todays_and_backfilled_days_are_not(admin_client, live_stack):
    hook = Webhook()
    conn = {
        "connection_id": "recsys_webhook",
        "conn_type": "http",
        "host": "127.0.0.1",
        "port": hook.port,
        "extra": json.dumps({"endpoint": "/hook"}),
    }
    admin_client.request("DELETE", "/connections/recsys_webhook")
    assert admin_client.request("POST", "/connections", json=conn).status_code == 201
    runs: list[str] = []
    try:
        admin_client.wait_for_dag("recsys_ingest")
        admin_client.unpause("recsys_ingest")
        today = datetime.now(UTC).replace(microsecond=0)
        late = admin_client.trigger("recsys_ingest", CONF, logical_date=f"{LATE}T00:00:00Z")["dag_run_id"]
        on_time = admin_client.trigger("recsys_ingest", CONF, logical_date=today.isoformat())["dag_run_id"]
        backfill = admin_client.backfill(
            "recsys_ingest", f"{BACKFILLED}T00:00:00Z", f"{BACKFILLED}T00:00:00Z", conf=CONF, max_active_runs=1
        )
        runs = [late, on_time]

        # The late day's alert: the scheduler finds the expired deadline, the triggerer runs
        # recsys_airflow.deadlines.late_ingest, which posts to the webhook.
        limit = time.monotonic() + 300
        while not [e for e in hook.events("late") if e.get("day") == LATE] and time.monotonic() < limit:
            time.sleep(3)
        alerts = hook.events("late")
        mine = [e for e in alerts if e.get("day") == LATE]
        assert len(mine) == 1, hook.received
        assert mine[0]["run_id"] == late and mine[0]["dag_id"] == "recsys_ingest"
        assert f"landing data for {LATE} is late" in mine[0]["text"] and "6 h after the day closed" in mine[0]["text"]

        admin_client.wait_backfill(backfill["id"], timeout=300)
        for run_id in runs:
            admin_client.wait_run("recsys_ingest", run_id, timeout=300)
        backfill_run = f"backfill__{BACKFILLED}T00:00:00+00:00"
        assert admin_client.call("GET", f"/dags/recsys_ingest/dagRuns/{backfill_run}")["run_type"] == "backfill"

        deadlines = _deadlines(live_stack)
        assert deadlines[late][0] == "manual" and deadlines[late][1].startswith("2026-08-12 06:00")
        assert deadlines[late][2] == 1  # missed, and handled once
        # Today's deadline is tomorrow 06:00 UTC: not missed, nothing announced for today.
        assert deadlines[on_time][2] == 0 and deadlines[on_time][1] > today.strftime("%Y-%m-%d %H:%M")
        assert backfill_run not in deadlines  # LiveRunLogicalDate: no deadline for a backfill
        assert not [e for e in hook.events("late") if e.get("day") in (today.date().isoformat(), BACKFILLED)]
        # The same failures still reach the webhook as failures (the landing wait timed out).
        failed = {e["run_id"] for e in hook.events("failure")}
        assert {late, on_time, backfill_run} <= failed, hook.received
    finally:
        admin_client.request("DELETE", "/connections/recsys_webhook")
        hook.close()
