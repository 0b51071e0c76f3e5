"""The fault matrix's counts: faults injected, runs recovered, rows lost and duplicated.

Runs the reliability tier (``pytest -m reliability``: real processes, real faults — SIGKILL of
the ingestion, scoring and training jobs mid-write, scheduler and worker kills, duplicates,
tracking-server outages, read-only and full disks, and the chaos run of the whole loop) in a
subprocess and turns its report (``test-artifacts/reliability/report.json``, written by
``tests/reliability/harness.Report``) into result rows: one row per case and the totals.
``--quick`` leaves out the chaos run (two whole-loop runs through the scheduler, one on the
cluster rehearsal's shape).

Here the ``reference`` of a row is the rows a clean run publishes (``rows_expected``) and the
``value`` is rows lost + duplicated, so the ``ratio`` must be 0. The tier failing is reported as
a failed benchmark with pytest's last lines.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
REPORT = REPO / "test-artifacts" / "reliability" / "report.json"


def rows_from_report(report: dict[str, Any]) -> list[dict[str, Any]]:
    """Result rows of a reliability report (schema 1)."""
    if report.get("schema") != 1:
        raise ValueError(f"{REPORT}: unknown report schema {report.get('schema')!r}")
    out = []
    for case in [*report["cases"], {"case": "total", **report["totals"]}]:
        bad = case["rows_lost"] + case["rows_duplicated"]
        out.append(
            {
                "metric": f"{case['case']}: rows lost + duplicated",
                "value": bad,
                "unit": "rows",
                "reference": case["rows_expected"] or None,
                "ratio": (bad / case["rows_expected"]) if case["rows_expected"] else None,
                "note": (
                    f"{case['faults_injected']} faults injected, {case['runs_recovered']} runs recovered, "
                    f"lost {case['rows_lost']}, duplicated {case['rows_duplicated']}"
                    + (f", {case['seconds']:.0f}s" if "seconds" in case else f", {case.get('cases', 0)} cases")
                ),
            }
        )
    return out


def run(quick: bool = False) -> list[dict[str, Any]]:
    REPORT.unlink(missing_ok=True)
    argv = [sys.executable, "-m", "pytest", "-m", "reliability", "-q", "-p", "no:cacheprovider", "tests"]
    if quick:
        argv += ["--deselect", "tests/reliability/test_chaos_rehearsal.py"]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), str(REPO / "plugins")])}
    done = subprocess.run(argv, cwd=REPO, env=env, capture_output=True, text=True)
    print(done.stdout[-3000:], flush=True)
    if done.returncode != 0:
        raise RuntimeError(f"the reliability tier failed (exit {done.returncode}): {done.stdout[-1500:]}")
    return rows_from_report(json.loads(REPORT.read_text()))
