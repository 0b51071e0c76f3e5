"""What every DAG of the project shares: its ``@dag`` header, task defaults and the ``day`` param."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

from airflow.sdk import Param

from jobs.core.config import PipelineConfig

# Every DAG's start date: early enough to backfill the public logs the importer reads (MovieLens
# 20M/25M/32M begin on 1995-01-09). Harmless for scheduling: catch-up is off everywhere, so a
# DAG's first scheduled run is its latest interval.
START_DATE = datetime(1995, 1, 1, tzinfo=UTC)
DAY_PATTERN = r"^$|^\d{4}-\d{2}-\d{2}$"  # empty: the run's own day (partition key or schedule)


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


def dag_args(
    cfg: PipelineConfig, doc_md: str | None, tags: Sequence[str], *, retries: int = 2, max_active_runs: int = 1
) -> dict[str, Any]:
    """The ``@dag`` arguments every pipeline shares: start date, no catch-up, one active run by
    default, the module docstring as ``doc_md``, the ``recsys`` tag first, ``default_args``.

    A DAG file passes its own ``dag_id``, ``schedule`` and ``params`` beside them:
    ``@dag(dag_id=..., schedule=..., **dag_args(cfg, __doc__, ["scoring"]))``.
    """
    return {
        "start_date": START_DATE,
        "catchup": False,
        "max_active_runs": max_active_runs,
        "doc_md": doc_md,
        "tags": ["recsys", *tags],
        "default_args": default_args(cfg.airflow.owner, retries=retries, retry_delay_s=cfg.airflow.retry_delay_s),
    }


def day_param(title: str, description: str) -> Param:
    """The ``day`` param of every DAG that takes one: ``YYYY-MM-DD``, empty or null = the run's own day."""
    return Param(None, type=["null", "string"], pattern=DAY_PATTERN, title=title, description=description)
