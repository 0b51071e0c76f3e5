"""bench_ingest in full mode: a size that fails fails the benchmark (its rows and the other
sizes' rows kept). Spark, the job and validation are replaced by fakes on a 3-row day."""

from __future__ import annotations

import json
import time
import types
from contextlib import contextmanager
from pathlib import Path
from unittest import mock

import pytest

from benchmarks import bench_ingest

pytestmark = pytest.mark.unit

LINE = {
    "event_id": "e1", "user_id": 1, "item_id": 2, "event_type": "click", "ts": "2026-01-01T10:00:00Z",
    "watch_seconds": None, "rating": None, "device": "tv", "country": "DE",
}  # fmt: skip


def _burn() -> None:
    """Some CPU, so that the CPU-second rates have a non-zero denominator."""
    deadline = time.process_time() + 0.03
    while time.process_time() < deadline:
        pass


@pytest.fixture
def fakes(monkeypatch):
    """The benchmark's collaborators as fakes; ``fail`` names what breaks at which size."""
    import benchmarks.spark_server
    import jobs.core.spark
    import jobs.ingest.job
    import jobs.sim
    import jobs.validate.job

    fail: dict[str, int] = {}

    @contextmanager
    def connect_server(prefix):
        yield {"start_s": 0.1}

    def write_day(params, day, landing, truth, fmt):
        if fail.get("write") == params.events_per_day:
            raise MemoryError("Java heap space\nat ...")
        folder = Path(landing) / f"dt={day.isoformat()}"
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "part-0.jsonl").write_text("\n".join(json.dumps({**LINE, "event_id": f"e{i}"}) for i in range(3)))
        return {"files": ["part-0.jsonl"], "rows_written": 3, "duplicates": 0}

    def ingest_day(cfg, spark, day):
        _burn()
        return {"rows": 3, "duplicates_removed": 0, "quarantined": 0, "files": ["part-00000.parquet"]}

    def validate_day(cfg, day, engine, spark):
        ok = fail.get("validate") != day.toordinal()
        return {"rows": 3, "success": ok, "failures": [] if ok else ["row count out of bounds"], "expectations": 5}

    def reader(spark, files, fmt):
        _burn()
        return mock.MagicMock()

    monkeypatch.setattr(benchmarks.spark_server, "connect_server", connect_server)
    monkeypatch.setattr(jobs.core.spark, "connect", lambda cfg, name: mock.MagicMock())
    monkeypatch.setattr(jobs.core.spark, "parallelism", lambda spark: 2)
    monkeypatch.setattr(jobs.ingest.job, "ingest_day", ingest_day)
    monkeypatch.setattr(jobs.sim, "write_day", write_day)
    monkeypatch.setattr(jobs.validate.job, "validate_day", validate_day)
    monkeypatch.setattr(bench_ingest, "_spark_reader", reader)
    monkeypatch.setattr(bench_ingest, "gc", types.SimpleNamespace(collect=lambda: 0))  # ~0.2 s a call in pytest
    return fail


def test_every_size_ok_returns_the_rows(fakes):
    rows = bench_ingest.run(quick=False)
    assert [r["metric"] for r in rows if r["metric"].endswith("throughput")] == [
        "ingest_day 1M throughput",
        "ingest_day 10M throughput",
    ]
    assert not [r for r in rows if "FAILED" in r["metric"]]


def test_a_failing_size_in_full_mode_fails_the_benchmark_and_keeps_every_row(fakes):
    fakes["write"] = 10_000_000
    with pytest.raises(bench_ingest.SizesFailed, match=r"1 size\(s\) failed: 10M: MemoryError") as info:
        bench_ingest.run(quick=False)
    metrics = [r["metric"] for r in info.value.partial_rows]
    assert "ingest_day 1M throughput" in metrics and "validate_day pandas 1M" in metrics
    assert metrics[-1] == "ingest 10M FAILED"
    assert info.value.partial_rows[-1]["note"] == "FAILED: MemoryError: Java heap space"


def test_a_day_its_validation_refuses_fails_the_size(fakes):
    from datetime import timedelta

    fakes["validate"] = (bench_ingest.DAY0 + timedelta(days=bench_ingest.DAY_GAP)).toordinal()  # the 10M day
    with pytest.raises(bench_ingest.SizesFailed, match="10M: RuntimeError") as info:
        bench_ingest.run(quick=False)
    failed = info.value.partial_rows[-1]
    assert failed["metric"] == "ingest 10M FAILED" and "row count out of bounds" in failed["note"]
    assert "validate_day pandas 10M" in [r["metric"] for r in info.value.partial_rows]
