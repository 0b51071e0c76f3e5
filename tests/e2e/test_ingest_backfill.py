"""Backfill of the ingestion DAG through the real scheduler, over REST; its OpenLineage events."""

from __future__ import annotations

import hashlib
import json
from datetime import date

import pytest

from jobs import sim as gen
from jobs.core import storage
from jobs.core.catalog import is_validated
from jobs.core.config import get_config

pytestmark = pytest.mark.e2e

DAYS = ["2026-02-01", "2026-02-02", "2026-02-03"]


def _checksums(cfg) -> dict[str, dict[str, str]]:
    out = {}
    for day in DAYS:
        part = storage.local_path(cfg.storage.partition("curated", day))
        out[day] = {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(part.glob("*.parquet"))}
    return out


def test_backfill_three_days_then_reprocess_is_identical(admin_client, stack):
    cfg = get_config()
    params = gen.WorldParams(users=400, items=150, factors=4, seed=21, events_per_day=3000)
    gen.generate(params, date(2026, 2, 1), 3, cfg.storage.zone("landing"), cfg.storage.zone("ground_truth"))
    admin_client.wait_for_dag("recsys_ingest")
    body = {"from_date": "2026-02-01T00:00:00Z", "to_date": "2026-02-03T00:00:00Z"}
    created = admin_client.backfill("recsys_ingest", body["from_date"], body["to_date"], "completed")
    assert admin_client.request("PATCH", "/dags/recsys_ingest", json={"is_paused": False}).status_code == 200
    admin_client.wait_backfill(created["id"], timeout=900)
    admin_client.wait_backfills_idle("recsys_ingest", timeout=900)
    run_ids = {f"backfill__{d}T00:00:00+00:00" for d in DAYS}
    states = admin_client.wait_for_runs("recsys_ingest", run_ids)
    assert set(states.values()) == {"success"}, states
    for day in DAYS:
        part = cfg.storage.partition("curated", day)
        assert storage.read_manifest(part)["rows"] > 2800
        assert is_validated(cfg, day)
    first = _checksums(cfg)
    events = admin_client.request("GET", "/assets/events", params={"limit": 100}).json()["asset_events"]
    curated = [e for e in events if e["extra"].get("day") in DAYS]
    assert sorted(e["extra"]["day"] for e in curated) == DAYS

    again = admin_client.backfill("recsys_ingest", body["from_date"], body["to_date"], "completed")
    assert again["reprocess_behavior"] == "completed"
    admin_client.wait_backfill(again["id"], timeout=900)
    states = admin_client.wait_for_runs("recsys_ingest", run_ids)
    assert set(states.values()) == {"success"}, states
    assert _checksums(cfg) == first
    events = admin_client.request("GET", "/assets/events", params={"limit": 100}).json()["asset_events"]
    assert len([e for e in events if e["extra"].get("day") in DAYS]) == 6

    # OpenLineage (file transport of the local stack): each day's ingest task reported its run
    # with the landing folder as input and the curated and quarantine partitions as outputs.
    lineage = [json.loads(line) for line in stack.lineage_file.read_text().splitlines() if line]
    ingest_runs = [
        e for e in lineage if e.get("eventType") == "COMPLETE" and e["job"]["name"] == "recsys_ingest.ingest"
    ]
    assert {e["job"]["namespace"] for e in ingest_runs} == {"recsys-local"}
    for day in DAYS:
        curated_path = str(storage.local_path(cfg.storage.partition("curated", day)))
        landing_path = str(storage.local_path(cfg.storage.zone("landing")) / f"dt={day}")
        matching = [
            e
            for e in ingest_runs
            if curated_path in {o["name"] for o in e["outputs"]} and landing_path in {i["name"] for i in e["inputs"]}
        ]
        assert len(matching) == 2, (day, [e["outputs"] for e in ingest_runs])  # the backfill and its reprocess
    starts = [e for e in lineage if e.get("eventType") == "START" and e["job"]["name"].startswith("recsys_ingest.")]
    assert len(starts) >= 3 * len(DAYS) * 2  # sensor, ingest, validate, …: every try starts
