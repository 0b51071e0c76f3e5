"""The reliability report names a case its host could not run (a skipped test) with the reason."""

from __future__ import annotations

import json

import pytest

from tests.reliability.harness import CaseResult, Report, skipped_case

pytestmark = pytest.mark.unit


def test_a_skipped_case_is_reported_with_its_reason_and_counts_nothing(tmp_path):
    report = Report(tmp_path / "report.json")
    report.record(CaseResult("disk: full zone", "test_full_disk", 2, 2, rows_expected=4000))
    longrepr = ("tests/reliability/test_disk_faults.py", 91, "Skipped: cannot simulate a full disk here: not root")
    report.record(skipped_case("test_full_disk_on_tmpfs", "test_full_disk_on_tmpfs", longrepr))

    written = json.loads((tmp_path / "report.json").read_text())
    assert [c["skipped"] for c in written["cases"]] == ["", "cannot simulate a full disk here: not root"]
    assert written["totals"]["faults_injected"] == 2 and written["totals"]["runs_recovered"] == 2
    row = report.table().splitlines()[3]
    assert row.startswith("test_full_disk_on_tmpfs") and row.endswith(
        "skipped: cannot simulate a full disk here: not root"
    )
