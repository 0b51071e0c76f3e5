"""Every asset event handled exactly once by an asset-scheduled DAG, even when Airflow strands it.

**The gap.** Airflow 3.3 keeps one queue row per (asset, consumer DAG). An event that arrives
while that row is already queued (the consumer is at ``max_active_runs``, or the scheduler has
not looped yet) does not refresh it, and the run made from the row consumes only the events up
to the row's creation time; the row is then deleted. The later event is stranded: no run
sees it until some *other* event of the asset arrives, which may be a day later, and that run
then folds both (apache/airflow#56050; fixed for 3.4 by referencing events from the queue).
Measured here: the last day of an ingestion backfill was scored a day late, by the model
promoted in between.

**The fix, on our side.** A consumer run does not trust its ``triggering_asset_events``
alone. It *claims* every event of the asset that no earlier run claimed, reading them through
``inlet_events`` (the Task SDK's own access to the asset's events), and records the claim in a
ledger, one Airflow Variable per consumer (``recsys_claims.<dag_id>``):

    {"floor_id": <ids at or below it are not ours>, "claimed_id": <highest claimed id>,
     "claimed_ts": "<newest claimed event's timestamp>",
     "runs": {"<run_id>": {"days": [...], "events": [ids], "sources": {day: [run types]}}}}

  ``sources`` records, per day, the run types of the runs that published its events
  (``backfill`` for a backfill, also for a run a backfill reprocessed; ``scheduled``,
  ``manual``...): consumers tell reloaded history from live days with it (``claimed_sources``).

  An event is new when its id is above the floor and no kept run claimed it; the read goes
  back an hour before ``claimed_ts``, because on Postgres an event can commit after one with a
  higher id (a high-water mark alone would skip it).

* A stranded event is always claimed by the run made from the queue row it found: that run is
  created after the event arrived, so its claim sees it.
* An event that arrives after a run was created queues a new row; whichever run claims it
  first handles it, and the other finds nothing new and is skipped with a log line.
* A retried or cleared run gets back exactly the days it claimed the first time (the ledger is
  keyed by run id), so "clear" re-does the same work.
* No ledger yet (first run, or an operator deleted the Variable to reset it): the claim starts
  at this run's own triggering events, so history is never replayed by surprise.

This is safe only while at most one run of the consumer claims at a time: the consumer DAGs
keep ``max_active_runs=1`` (asserted by their tests).
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Iterable, Mapping
from datetime import date, datetime, timedelta
from typing import Any, Protocol

from airflow.sdk.exceptions import AirflowFailException, AirflowSkipException

log = logging.getLogger(__name__)
DAY = re.compile(r"^\d{4}-\d{2}-\d{2}$")
KEEP_RUNS = 200  # ledger entries kept for retries and clears of recent runs
LOOKBACK = timedelta(hours=1)  # how far before the newest claim a late-committed event is looked for


class LedgerStore(Protocol):
    def get(self, key: str) -> dict[str, Any] | None: ...

    def set(self, key: str, value: dict[str, Any]) -> None: ...


class VariableStore:
    """The ledger in Airflow Variables (the metadata DB, through the Task SDK)."""

    def get(self, key: str) -> dict[str, Any] | None:
        from airflow.sdk import Variable

        raw = Variable.get(key, default=None)
        if raw in (None, ""):
            return None
        try:
            value = json.loads(raw) if isinstance(raw, str) else raw
        except ValueError:
            raise AirflowFailException(f"Variable {key} is not JSON; delete it to restart the claim ledger") from None
        if not isinstance(value, dict):
            raise AirflowFailException(f"Variable {key} is not a JSON object; delete it to restart the claim ledger")
        return value

    def set(self, key: str, value: dict[str, Any]) -> None:
        from airflow.sdk import Variable

        Variable.set(
            key,
            json.dumps(value, sort_keys=True),
            description="recsys: asset events claimed per run (plugins/recsys_airflow/claims.py)",
        )


def ledger_key(consumer: str) -> str:
    return f"recsys_claims.{consumer}"


def check_day(value: Any, where: str) -> str:
    """``value`` as a ``YYYY-MM-DD`` calendar day, or ``AirflowFailException`` naming ``where``."""
    text = str(value or "").strip()
    if not DAY.match(text):
        raise AirflowFailException(f"{where}: {value!r} is not a day in YYYY-MM-DD form")
    try:
        date.fromisoformat(text)
    except ValueError:
        raise AirflowFailException(f"{where}: {text} is not a calendar day") from None
    return text


def _day_of(event: Any, asset_name: str) -> str:
    extra = getattr(event, "extra", None) or {}
    if "day" not in extra:
        raise AirflowFailException(f"asset event {getattr(event, 'id', '?')} of {asset_name} has no 'day' in {extra}")
    return check_day(extra["day"], f"asset event of {asset_name}")


def _iso(ts: Any) -> str:
    return ts.isoformat() if isinstance(ts, datetime) else str(ts)


def _aware(ts: Any) -> datetime:
    return ts if isinstance(ts, datetime) else datetime.fromisoformat(str(ts))


def claim_days(
    consumer: str,
    run_id: str,
    asset_name: str,
    triggering: Mapping[Any, Iterable[Any]] | None,
    available: Any,
    store: LedgerStore | None = None,
) -> tuple[list[str], str]:
    """Claim this run's share of an asset's events; the sorted distinct days and a log line.

    Args:
        consumer: the consuming DAG's id (names the ledger).
        run_id: this run's id (a retry or clear gets its first claim back).
        asset_name: the asset's name, for messages.
        triggering: the context's ``triggering_asset_events`` (asset → events with
            ``timestamp``); only used to start a ledger.
        available: the context's ``inlet_events[asset]`` (events with ``id``, ``timestamp``
            and ``extra``; supports ``.after(iso)``, inclusive).
        store: where the ledger lives (default: Airflow Variables).

    Returns:
        ``(days, why)``; ``days`` is empty when every event was claimed by earlier runs.

    Raises:
        AirflowFailException: an event without a valid ``dt`` (``check_day``), or a malformed
            ledger.

    Long because the claim is one read-select-record-write of the ledger.
    """
    store = VariableStore() if store is None else store
    key = ledger_key(consumer)
    ledger = store.get(key) or {}
    runs: dict[str, Any] = dict(ledger.get("runs") or {})
    if run_id in runs:
        days = list(runs[run_id]["days"])
        return days, f"retry of {run_id}: the days it claimed first ({', '.join(days) or 'none'}) from {key}"

    trig = [e for events in (triggering or {}).values() for e in events]
    if "claimed_ts" in ledger:
        # New = not claimed by a kept run and above the floor. Read back LOOKBACK before the
        # newest claimed event: on Postgres an event can commit after one with a higher id.
        floor = int(ledger.get("floor_id", ledger.get("claimed_id", 0)))
        claimed = {int(i) for r in runs.values() for i in r["events"]}
        since = _iso(_aware(ledger["claimed_ts"]) - LOOKBACK)
        events = [e for e in available.after(since) if int(e.id) > floor and int(e.id) not in claimed]
        origin = f"events not claimed yet (ledger {key})"
    elif trig:
        start = min(e.timestamp for e in trig)
        events = list(available.after(_iso(start)))
        origin = f"events since this run's first triggering event ({_iso(start)}; new ledger {key})"
        if not events:
            raise AirflowFailException(
                f"inlet_events of {asset_name} holds no event since {_iso(start)}, yet {len(trig)} triggered this "
                "run: does the task declare the asset in its inlets?"
            )
        floor = min(int(e.id) for e in events) - 1  # history before the ledger is not ours
    else:
        return [], f"no ledger {key} and no triggering event: nothing to claim"

    events.sort(key=lambda e: int(e.id))
    sources: dict[str, set[str]] = {}
    for e in events:
        sources.setdefault(_day_of(e, asset_name), set()).add(source_type(e))
    days = sorted(sources)
    runs[run_id] = {
        "days": days,
        "events": [int(e.id) for e in events],
        "sources": {day: sorted(types) for day, types in sorted(sources.items())},
    }
    if len(runs) > KEEP_RUNS:
        for old in sorted(runs, key=lambda r: max(runs[r]["events"] or [0]))[: len(runs) - KEEP_RUNS]:
            floor = max([floor, *runs.pop(old)["events"]])  # forgotten claims: below the floor now
    newest = max(events, key=lambda e: _aware(e.timestamp)) if events else None
    claimed_ts = ledger.get("claimed_ts") if newest is None else _iso(newest.timestamp)
    if newest is not None and ledger.get("claimed_ts"):
        claimed_ts = max(ledger["claimed_ts"], claimed_ts, key=_aware)
    top = max([int(ledger.get("claimed_id", 0)), *(int(e.id) for e in events)])
    store.set(key, {"floor_id": floor, "claimed_id": top, "claimed_ts": claimed_ts, "runs": runs})
    ids = ", ".join(f"#{e.id}" for e in events) or "none"
    return days, f"claimed {len(events)} {asset_name} event(s) ({ids}; {len(trig)} triggered this run): {origin}"


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


def claimed_sources(consumer: str, run_id: str, store: LedgerStore | None = None) -> dict[str, list[str]]:
    """Day → source run types of what ``run_id`` claimed (empty: it claimed nothing)."""
    store = VariableStore() if store is None else store
    entry = ((store.get(ledger_key(consumer)) or {}).get("runs") or {}).get(run_id) or {}
    return {day: list(types) for day, types in (entry.get("sources") or {}).items()}


def claim_or_skip(
    consumer: str,
    run_id: str,
    asset_name: str,
    triggering: Mapping[Any, Iterable[Any]] | None,
    available: Any,
    nothing: str,
) -> list[str]:
    """``claim_days`` for a consumer's first task: the days, or skip/fail when there are none.

    Raises:
        AirflowSkipException: the run was triggered but every event was claimed already.
        AirflowFailException: ``nothing`` (the run was started by hand with no day and there
            is nothing new to claim), or what ``claim_days`` raises.
    """
    days, why = claim_days(consumer, run_id, asset_name, triggering, available)
    log.info("%s", why)
    if days:
        return days
    if not any(True for events in (triggering or {}).values() for _ in events):
        raise AirflowFailException(f"{nothing} ({why})")
    raise AirflowSkipException(f"nothing new: {why}")
