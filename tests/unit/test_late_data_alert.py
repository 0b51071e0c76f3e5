"""recsys_airflow.deadlines: the late-data deadline's interval, message and registration.

The deadline's life through the real scheduler and triggerer (created, missed, announced; none
for a backfill) is ``tests/e2e/test_deadlines.py``.
"""

from __future__ import annotations

from datetime import timedelta

import pytest

pytestmark = pytest.mark.unit


def test_the_deadline_is_the_days_close_plus_the_grace_hours():
    from recsys_airflow.deadlines import late_after

    assert late_after(6) == timedelta(hours=30)
    assert late_after(0) == timedelta(days=1)
    with pytest.raises(ValueError, match="late_ingest_after_hours must be >= 0"):
        late_after(-1)


def test_the_message_names_the_day_the_run_and_the_deadline():
    from recsys_airflow.deadlines import late_message

    context = {
        "dag_run": {
            "dag_id": "recsys_ingest",
            "dag_run_id": "manual__2026-07-01T00:00:00+00:00",
            "logical_date": "2026-07-01T00:00:00Z",
            "state": "running",
        },
        "deadline": {"id": "x", "deadline_time": "2026-07-02T06:00:00+00:00"},
    }
    text, details = late_message(context, 6.0)
    assert text.startswith("landing data for 2026-07-01 is late: recsys_ingest run manual__2026-07-01")
    assert "6 h after the day closed (deadline 2026-07-02T06:00:00+00:00; state running)" in text
    assert details == {
        "day": "2026-07-01",
        "dag_id": "recsys_ingest",
        "run_id": "manual__2026-07-01T00:00:00+00:00",
        "run_state": "running",
        "deadline": "2026-07-02T06:00:00+00:00",
    }
    assert late_message({}, 6)[1]["day"] == "?"  # a context without a run still gives a message


def test_the_ingest_dag_carries_the_alert_and_the_plugin_registers_its_reference():
    from recsys_plugin import RecsysPlugin

    from jobs.core.config import get_config
    from recsys_airflow.deadlines import LiveRunLogicalDate, late_ingest
    from tests.dag_runs import repo_bag

    assert LiveRunLogicalDate in RecsysPlugin.deadline_references
    (alert,) = repo_bag().dags["recsys_ingest"].deadline
    hours = get_config().airflow.late_ingest_after_hours
    assert isinstance(alert.reference, LiveRunLogicalDate)
    assert alert.interval == timedelta(days=1, hours=hours)
    assert alert.callback.path == "recsys_airflow.deadlines.late_ingest" and alert.callback.kwargs == {"hours": hours}
    assert late_ingest.__module__ == "recsys_airflow.deadlines"
    assert alert.reference.serialize_reference()["reference_type"] == "LiveRunLogicalDate"
