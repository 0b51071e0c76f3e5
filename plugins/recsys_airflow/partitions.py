"""One consumer run per day: the day of a run of ``recsys_score`` or ``recsys_monitor``.

``recsys_ingest`` and ``recsys_score`` key every asset event they emit by its day
(``outlet_events[asset].add_partitions(day)``), and the consumers run on a
``PartitionedAssetTimetable``: the scheduler makes one run per partition key, with that key as
``dag_run.partition_key`` and the events of that key (only) as the run's triggering events.
Airflow's own model of "one run per day" (3.2+), tested through the real scheduler in
``tests/e2e/test_partitioned_assets.py``:

* events of other days that arrive while a consumer run is active wait in their own partition
  and make their own run (no event is stranded or folded into another day's run, the case the
  claim ledger of earlier versions worked around: apache/airflow#56050);
* a retried or cleared run keeps its partition key, so it re-does the same day;
* a backfill of the producer makes one consumer run per backfilled day.

A run started by hand names its day with the ``day`` param instead (it has no partition key).
The run types of the runs that published the triggering events (``backfill``, ``scheduled``,
``manual``, ...) travel with the day, so consumers tell reloaded history from live days
(``recsys_airflow.decisions.scoring_plan``).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from airflow.sdk.exceptions import AirflowFailException


def check_day(value: Any, where: str) -> str:
    """``value`` as a ``YYYY-MM-DD`` calendar day, or ``AirflowFailException`` naming ``where``."""
    from jobs.core.catalog import day_text
    from jobs.core.cli import BadArgument

    try:
        return day_text(str(value or ""))
    except BadArgument as exc:
        raise AirflowFailException(f"{where}: {exc}") from None


def source_type(event: Any) -> str:
    """The run type of the run that published ``event`` (``backfill``, ``scheduled``, ``manual``,
    ...): from the source run itself (a reprocessed run keeps its id but becomes ``backfill``),
    else from its run id's prefix; ``unknown`` for an event posted over REST."""
    try:
        run = getattr(event, "source_dag_run", None)
    except Exception:  # the source run was deleted, or no supervisor to ask (unit tests)
        run = None
    run_type = getattr(run, "run_type", None)
    if run_type is not None:
        return str(getattr(run_type, "value", run_type))
    run_id = str(getattr(event, "source_run_id", None) or "")
    return run_id.split("__", 1)[0] if "__" in run_id else "unknown"


def run_day(
    day_param: Any,
    partition_key: str | None,
    triggering_asset_events: Mapping[Any, Iterable[Any]] | None,
    nothing: str,
) -> tuple[str, list[str]]:
    """The day a consumer run works on and the run types that published it (pure).

    Args:
        day_param: the run's ``day`` param; a non-empty one wins (a run started by hand).
        partition_key: ``dag_run.partition_key`` (the day, for a run the scheduler made).
        triggering_asset_events: the run's triggering events (asset → events with ``extra``).
        nothing: the message when there is neither.

    Returns:
        ``(day, sources)``: ``sources`` are the sorted distinct run types of the triggering
        events (empty for a ``day`` param: a person's explicit request).

    Raises:
        AirflowFailException: no day at all, a malformed one, or an event whose ``extra["day"]``
            is not the run's partition key (retrying would not help).
    """
    if day_param is not None and str(day_param).strip():
        return check_day(day_param, "param day"), []
    if not partition_key:
        raise AirflowFailException(nothing)
    day = check_day(partition_key, "partition key")
    sources = set()
    for asset, events in (triggering_asset_events or {}).items():
        name = getattr(asset, "name", asset)
        for event in events:
            extra = getattr(event, "extra", None) or {}
            if extra.get("day") != day:
                raise AirflowFailException(
                    f"asset event of {name} for partition {day} names day {extra.get('day')!r}: "
                    "the producer keys its events by their day"
                )
            sources.add(source_type(event))
    return day, sorted(sources)
