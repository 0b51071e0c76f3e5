"""Task defaults shared by the project's DAGs."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

# Every DAG's start date: early enough to backfill the public logs the importer reads (MovieLens
# 20M/25M/32M begin on 1995-01-09). Harmless for scheduling: catch-up is off everywhere, so a
# DAG's first scheduled run is its latest interval.
START_DATE = datetime(1995, 1, 1, tzinfo=UTC)


def default_args(owner: str, retries: int = 2, retry_delay_s: int = 30) -> dict[str, Any]:
    """Owner, retries with exponential backoff (``retry_delay_s`` doubling, capped at 10 min) and
    the failure notifier.

    DAGs pass ``airflow.retry_delay_s`` from the pipeline config (``RECSYS__AIRFLOW__RETRY_DELAY_S``):
    30 s by default; the chaos run shortens it so that its retries do not dominate its time.
    Every task's final failure is announced by ``RecsysNotifier`` (Airflow's notifier interface):
    one ``RECSYS FAILURE`` log line, and a POST to the ``recsys_webhook`` connection when there
    is one (``recsys_airflow.notify``).
    """
    from recsys_airflow.notify import RecsysNotifier

    return {
        "owner": owner,
        "retries": retries,
        "retry_delay": timedelta(seconds=retry_delay_s),
        "retry_exponential_backoff": True,
        "max_retry_delay": timedelta(minutes=10),
        "on_failure_callback": [RecsysNotifier()],
    }
