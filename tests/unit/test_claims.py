"""The claim ledger (``recsys_airflow.claims``): each asset event handled by exactly one run.

The scheduler's behaviour it works around (an event arriving while the consumer's queue row is
taken gets no run of its own) is replayed here as event sequences; the real scheduler runs it
in the demo and chaos tests, and ``tests/dags/test_score_dag_run.py`` runs it through the Task
SDK (real Variables, real ``inlet_events``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from airflow.sdk.exceptions import AirflowFailException

from recsys_airflow.claims import KEEP_RUNS, LOOKBACK, claim_days, claimed_sources, ledger_key, source_type

pytestmark = pytest.mark.unit
T0 = datetime(2026, 3, 2, tzinfo=UTC)


@dataclass
class Event:
    id: int
    dt: str | None
    source_run_id: str | None = None

    @property
    def timestamp(self) -> datetime:
        return T0 + timedelta(minutes=self.id)

    @property
    def extra(self) -> dict[str, Any]:
        return {} if self.dt is None else {"day": self.dt}


@dataclass
class Asset:
    """``inlet_events[asset]``: every event so far, ``after`` inclusive like the execution API."""

    events: list[Event] = field(default_factory=list)
    after_calls: list[str] = field(default_factory=list)
    uncommitted: set[int] = field(default_factory=set)  # ids not visible yet

    def emit(self, dt: str | None, source_run_id: str | None = None) -> Event:
        self.events.append(Event(len(self.events) + 1, dt, source_run_id))
        return self.events[-1]

    def after(self, iso: str) -> list[Event]:
        self.after_calls.append(iso)
        floor = datetime.fromisoformat(iso)
        return [e for e in self.events if e.timestamp >= floor and e.id not in self.uncommitted]


class Store(dict):
    def set(self, key: str, value: dict[str, Any]) -> None:
        self[key] = value


def claim(run_id: str, asset: Asset, store: Store, triggering: list[Event]) -> list[str]:
    days, _why = claim_days("recsys_score", run_id, "curated", {"curated": triggering}, asset, store)
    return days


def test_an_event_that_arrived_while_the_queue_row_was_taken_is_claimed_by_that_rows_run():
    """apache/airflow#56050 as the scheduler plays it: run 2 is made from the row event 2 queued
    and is handed only event 2; events 3 and 4 arrived while that row waited. Run 2 claims them
    all, so the last day is not left for a later, unrelated event."""
    asset, store = Asset(), Store()
    e1 = asset.emit("2026-03-02")
    assert claim("run1", asset, store, [e1]) == ["2026-03-02"]
    e2 = asset.emit("2026-03-03")
    asset.emit("2026-03-04")
    asset.emit("2026-03-05")
    assert claim("run2", asset, store, [e2]) == ["2026-03-03", "2026-03-04", "2026-03-05"]
    assert store[ledger_key("recsys_score")]["claimed_id"] == 4
    # Event 5 queued a fresh row after run 2 was made; run 2's claim (later) did not see it.
    e5 = asset.emit("2026-03-06")
    assert claim("run3", asset, store, [e5]) == ["2026-03-06"]


def test_a_run_whose_events_were_claimed_already_gets_nothing():
    asset, store = Asset(), Store()
    e1 = asset.emit("2026-03-02")
    e2 = asset.emit("2026-03-03")  # queued a new row after run 1 was made, before run 1 claimed
    assert claim("run1", asset, store, [e1]) == ["2026-03-02", "2026-03-03"]
    assert claim("run2", asset, store, [e2]) == []


def test_a_retry_or_clear_gets_its_first_claim_back():
    asset, store = Asset(), Store()
    e1 = asset.emit("2026-03-02")
    assert claim("run1", asset, store, [e1]) == ["2026-03-02"]
    asset.emit("2026-03-03")
    assert claim("run1", asset, store, [e1]) == ["2026-03-02"]  # not the new event
    assert claim("run2", asset, store, []) == ["2026-03-03"]


def test_without_a_ledger_the_claim_starts_at_the_runs_own_events_not_at_history():
    asset, store = Asset(), Store()
    for day in ("2026-02-01", "2026-02-02"):
        asset.emit(day)
    e3 = asset.emit("2026-03-02")
    assert claim("run1", asset, store, [e3]) == ["2026-03-02"]
    assert claim("manual", Asset(), Store(), []) == []  # no ledger, nothing triggered: nothing


def test_the_same_day_twice_is_scored_once_per_run():
    asset, store = Asset(), Store()
    e1 = asset.emit("2026-03-02")
    asset.emit("2026-03-02")  # the day re-ingested while the row waited
    assert claim("run1", asset, store, [e1]) == ["2026-03-02"]
    assert store[ledger_key("recsys_score")]["runs"]["run1"]["events"] == [1, 2]


def test_an_event_without_a_valid_day_fails_with_its_id():
    asset, store = Asset(), Store()
    e1 = asset.emit(None)
    with pytest.raises(AirflowFailException, match="asset event 1 of curated has no 'day'"):
        claim("run1", asset, store, [e1])
    e2 = asset.emit("2026-02-30")
    with pytest.raises(AirflowFailException, match="not a calendar day"):
        claim("run2", asset, Store(), [e2])
    assert ledger_key("recsys_score") not in store  # nothing claimed by a failed claim


def test_the_ledger_keeps_recent_runs_only_and_reads_from_its_high_water_mark():
    asset, store = Asset(), Store()
    for n in range(KEEP_RUNS + 5):
        e = asset.emit("2026-03-02")
        assert claim(f"run{n}", asset, store, [e]) == ["2026-03-02"]
    ledger = store[ledger_key("recsys_score")]
    assert len(ledger["runs"]) == KEEP_RUNS
    assert "run0" not in ledger["runs"] and f"run{KEEP_RUNS + 4}" in ledger["runs"]
    # Each claim reads from the last claimed event's timestamp, not the whole history.
    assert asset.after_calls[-1] == (Event(KEEP_RUNS + 4, None).timestamp - LOOKBACK).isoformat()
    assert ledger["claimed_id"] == KEEP_RUNS + 5
    assert ledger["floor_id"] == 5  # the forgotten runs' events are below the floor


def test_an_event_that_commits_after_a_higher_id_is_still_claimed():
    """Postgres hands out ids at insert: event 2 may commit after event 3 was claimed."""
    asset, store = Asset(), Store()
    e1 = asset.emit("2026-03-02")
    asset.emit("2026-03-03")
    asset.emit("2026-03-04")
    asset.uncommitted.add(2)
    assert claim("run1", asset, store, [e1]) == ["2026-03-02", "2026-03-04"]
    asset.uncommitted.clear()
    assert claim("run2", asset, store, []) == ["2026-03-03"]
    assert claim("run3", asset, store, []) == []


@dataclass
class SourceRun:
    run_type: str


@dataclass
class Reprocessed(Event):
    """An event whose source run a backfill reprocessed: its id says scheduled, its type backfill."""

    @property
    def source_dag_run(self) -> SourceRun:
        return SourceRun("backfill")


def test_each_claimed_day_remembers_the_run_types_that_published_it():
    asset, store = Asset(), Store()
    live = asset.emit("2026-03-02", "scheduled__2026-03-02T00:00:00+00:00")
    asset.emit("2026-03-03", "backfill__2026-03-03T00:00:00+00:00")
    asset.emit("2026-03-03", "manual__2026-03-04T10:00:00+00:00")
    asset.emit("2026-03-04", None)  # posted over REST: no source run
    assert claim("r1", asset, store, [live]) == ["2026-03-02", "2026-03-03", "2026-03-04"]
    assert claimed_sources("recsys_score", "r1", store) == {
        "2026-03-02": ["scheduled"],
        "2026-03-03": ["backfill", "manual"],
        "2026-03-04": ["unknown"],
    }
    assert claimed_sources("recsys_score", "r-unknown", store) == {}
    # the source run's own type wins over its id: a reprocessed run keeps a scheduled__ id
    assert source_type(Reprocessed(9, "2026-03-05", "scheduled__2026-03-05T00:00:00+00:00")) == "backfill"
