"""Late data: a Deadline alert when a day's ingestion has not succeeded in time.

Day D closes at midnight UTC (its run's logical date + 1 day). ``recsys_ingest`` carries a
``DeadlineAlert`` whose deadline is the day's close plus ``airflow.late_ingest_after_hours``
(``include/config/pipeline.yaml``, 6 h by default). When a run of D has not succeeded by then,
the scheduler hands the missed deadline to the triggerer, which runs ``late_ingest``: one
``RECSYS LATE: ...`` log line and the same message on the ``recsys_webhook`` connection (see
``recsys_airflow.notify``). A run that succeeds before its deadline prunes it; nothing is sent.

The reference is ``LiveRunLogicalDate``, not Airflow's ``DAGRUN_LOGICAL_DATE``: a **backfill**
of last month is not late data — its deadline would be weeks in the past the moment the run is
created, and every backfilled day would page someone. For backfill runs it returns None, and
Airflow creates no deadline. It is registered through the project's Airflow plugin
(``plugins/recsys_plugin.py``), which the scheduler needs to deserialize the DAG.
"""

from __future__ import annotations

import asyncio
from datetime import datetime, timedelta
from typing import Any

from airflow.sdk.definitions.deadline import BaseDeadlineReference

# Run types that are history being (re)loaded on purpose, not a day's live arrival.
NOT_LIVE = frozenset({"backfill"})


class LiveRunLogicalDate(BaseDeadlineReference):
    """The run's logical date — for scheduled and manual runs; None (no deadline) for backfills."""

    required_kwargs = frozenset({"dag_id", "run_id"})

    def _evaluate_with(self, *, session: Any, dag_id: str, run_id: str, **_: Any) -> datetime | None:
        from airflow.models import DagRun
        from sqlalchemy import select

        row = session.execute(
            select(DagRun.logical_date, DagRun.run_type).where(DagRun.dag_id == dag_id, DagRun.run_id == run_id)
        ).one_or_none()
        if row is None or row.logical_date is None:
            return None
        run_type = getattr(row.run_type, "value", row.run_type)
        return None if str(run_type) in NOT_LIVE else row.logical_date


def late_after(hours: float) -> timedelta:
    """The deadline's interval from the logical date: the day itself, then ``hours`` of grace."""
    if hours < 0:
        raise ValueError(f"airflow.late_ingest_after_hours must be >= 0, got {hours}")
    return timedelta(days=1, hours=hours)


def late_message(context: dict[str, Any], hours: float) -> tuple[str, dict[str, Any]]:
    """The announcement of a missed deadline: text and webhook details (pure; tested)."""
    run = context.get("dag_run") or {}
    deadline = context.get("deadline") or {}
    logical = str(run.get("logical_date") or "")
    day = logical[:10] or "?"
    text = (
        f"landing data for {day} is late: {run.get('dag_id', 'recsys_ingest')} run {run.get('dag_run_id', '?')} "
        f"has not succeeded {hours:g} h after the day closed (deadline {deadline.get('deadline_time', '?')}; "
        f"state {run.get('state', '?')})"
    )
    details = {
        "day": day,
        "dag_id": run.get("dag_id"),
        "run_id": run.get("dag_run_id"),
        "run_state": run.get("state"),
        "deadline": str(deadline.get("deadline_time", "")),
    }
    return text, details


async def late_ingest(context: dict[str, Any] | None = None, hours: float = 0.0, **_: Any) -> None:
    """Deadline callback (runs in the triggerer): announce the late day."""
    from recsys_airflow.notify import announce

    text, details = late_message(context or {}, hours)
    await asyncio.to_thread(announce, "late", text, details)
