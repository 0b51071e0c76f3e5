"""The benchmark harness fails the run on any benchmark failure; bench_ingest's failed size fails it."""

from __future__ import annotations

import json
import sys
import types

import pytest

from benchmarks import __main__ as harness
from benchmarks.bench_ingest import SizesFailed, checked, failed_size_row

pytestmark = pytest.mark.unit


def _fake(monkeypatch, run) -> None:
    module = types.ModuleType("benchmarks.bench_fake")
    module.run = run
    monkeypatch.setitem(sys.modules, "benchmarks.bench_fake", module)
    monkeypatch.setattr(harness, "BENCHMARKS", ["fake"])


def test_a_failed_ingest_size_fails_the_benchmark_and_keeps_every_row():
    rows = [{"metric": "ingest_day 1M throughput", "value": 1.0, "unit": "events/s"}]
    rows.append(failed_size_row("10M", MemoryError("Java heap space\nat ...")))
    assert rows[-1]["metric"] == "ingest 10M FAILED" and "value" not in rows[-1]
    assert rows[-1]["note"] == "FAILED: MemoryError: Java heap space"
    with pytest.raises(SizesFailed, match="1 size\\(s\\) failed: 10M: MemoryError") as info:
        checked(rows, ["10M: MemoryError"])
    assert info.value.partial_rows is rows
    assert checked(rows[:1], []) == rows[:1]


def test_partial_rows_are_kept_and_the_status_is_failed(monkeypatch):
    def run(quick: bool):
        raise SizesFailed(["10M: OSError"], [{"metric": "ingest_day 1M throughput", "value": 2.0}])

    _fake(monkeypatch, run)
    rows, status = harness.run_one("fake", quick=True)
    assert status == "failed"
    assert [r["metric"] for r in rows] == ["ingest_day 1M throughput", "error"]
    assert rows[0]["value"] == 2.0 and rows[1]["note"].startswith("FAILED: SizesFailed: 1 size(s) failed")


@pytest.mark.parametrize(
    ("run", "reason"),
    [
        (lambda quick: [], "RuntimeError: the benchmark returned no rows"),
        (lambda quick: sys.exit(0), "SystemExit: 0"),
        (lambda quick: 1 / 0, "ZeroDivisionError"),
    ],
    ids=["no rows", "sys.exit(0)", "exception"],
)
def test_any_failure_makes_the_run_exit_non_zero(monkeypatch, tmp_path, run, reason):
    _fake(monkeypatch, run)
    assert harness.main(["--only", "fake", "--results-dir", str(tmp_path)]) == 1
    written = json.loads((tmp_path / "results.json").read_text())
    assert written["runs"]["fake"]["status"] == "failed"
    assert reason in written["rows"][-1]["note"]
    assert "| fake | full |" in (tmp_path / "results.md").read_text()
    assert "| failed |" in (tmp_path / "results.md").read_text()


def test_a_benchmark_that_returns_rows_passes(monkeypatch, tmp_path):
    _fake(monkeypatch, lambda quick: [{"metric": "m", "value": 3.0, "reference": 2.0}])
    assert harness.main(["--only", "fake", "--quick", "--results-dir", str(tmp_path)]) == 0
    written = json.loads((tmp_path / "results.json").read_text())
    assert written["runs"]["fake"]["status"] == "ok" and written["rows"][0]["ratio"] == 1.5
