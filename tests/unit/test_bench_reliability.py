"""The reliability benchmark turns the fault report into result rows (lost + duplicated rows)."""

from __future__ import annotations

import pytest

from benchmarks.bench_reliability import rows_from_report
from tests.reliability.harness import CaseResult, Report

pytestmark = pytest.mark.unit


def test_rows_per_case_and_totals_from_a_written_report(tmp_path):
    report = Report(tmp_path / "report.json")
    report.record(CaseResult("ingest: SIGKILL mid-write", "t1", 3, 2, rows_expected=4000, seconds=10.0))
    report.record(CaseResult("chaos", "t2", 5, 5, rows_expected=1000, rows_lost=1, rows_duplicated=2))
    rows = rows_from_report(report.payload())
    assert [r["metric"] for r in rows] == [
        "ingest: SIGKILL mid-write: rows lost + duplicated",
        "chaos: rows lost + duplicated",
        "total: rows lost + duplicated",
    ]
    assert [r["value"] for r in rows] == [0, 3, 3]
    assert rows[1]["ratio"] == pytest.approx(0.003) and rows[2]["reference"] == 5000
    assert "8 faults injected, 7 runs recovered" in rows[2]["note"] and "2 cases" in rows[2]["note"]


def test_an_unknown_report_schema_is_refused():
    with pytest.raises(ValueError, match="unknown report schema 2"):
        rows_from_report({"schema": 2, "cases": [], "totals": {}})
