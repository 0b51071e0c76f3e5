"""Jobs on a machine whose every core is busy: they finish, and publish the same bytes.

A job's Spark session starts its own Python workers on the server, and Spark waits a fixed 10 s
for each to connect back: on a saturated machine that start is what fails first ("did not start
in time", ``jobs.core.spark.unavailable``), so the server's local master retries a task
``scripts.spark_service.TASK_ATTEMPTS`` times. Here ``python -m jobs.ingest`` of one landing day
runs through the real task launcher twice on the session's server: once as it is, then again
while ``2 × cores`` busy-loop processes (at the jobs' own priority, each in its own session)
hold every core. The loaded
run must succeed within its bound and republish byte-identical files; the slowdown is reported
(how the job degrades under load).
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from datetime import date

import pytest

from tests.reliability.harness import CaseResult, launch_job, partition_checksums

pytestmark = pytest.mark.reliability

DAY = date(2026, 6, 9)
BOUND_S = 300  # the loaded run's bound (unloaded: ~10 s here)


def _ingest(task_id: str) -> tuple[dict, float]:
    started = time.monotonic()
    _, thread, outcome = launch_job(task_id, "jobs.ingest", ["--day", DAY.isoformat()])
    thread.join(BOUND_S)
    assert not thread.is_alive(), f"{task_id}: not finished within {BOUND_S} s"
    assert "result" in outcome, outcome.get("error")
    return outcome["result"], time.monotonic() - started


def test_jobs_finish_and_publish_the_same_bytes_while_every_core_is_busy(world, report):
    from pathlib import Path

    from jobs import sim as gen
    from jobs.core.config import get_config
    from tests.reliability.conftest import world_params

    cfg = get_config()
    gen.generate(world_params(), DAY, 1, cfg.storage.zone("landing"), cfg.storage.zone("ground_truth"))
    part = Path(cfg.storage.partition("curated", DAY.isoformat()))
    quiet, quiet_s = _ingest("ingest-quiet")
    reference = partition_checksums(part)

    hogs = [
        # each in its own session, as the processes of another stack are: with the kernel's
        # autogroup scheduling a session shares the CPU with the job's and the server's equally
        subprocess.Popen([sys.executable, "-c", "while True: pass"], stdin=subprocess.DEVNULL, start_new_session=True)
        for _ in range(2 * (os.cpu_count() or 2))
    ]
    try:
        time.sleep(1)  # the hogs hold the cores before the job starts
        loaded, loaded_s = _ingest("ingest-loaded")
    finally:
        for hog in hogs:
            hog.kill()
            hog.wait()
    assert loaded["rows"] == quiet["rows"] > 3000 and partition_checksums(part) == reference
    print(f"ingest of {quiet['rows']} rows: {quiet_s:.1f} s quiet, {loaded_s:.1f} s with {len(hogs)} busy loops")
    report.record(
        CaseResult(
            "load: a job while every core is busy",
            "test_jobs_finish_and_publish_the_same_bytes_while_every_core_is_busy",
            faults_injected=1,
            runs_recovered=1,
            rows_expected=quiet["rows"],
            seconds=round(quiet_s + loaded_s, 1),
            details={
                "busy_loops": len(hogs),
                "quiet_s": round(quiet_s, 1),
                "loaded_s": round(loaded_s, 1),
                "slowdown": round(loaded_s / quiet_s, 2),
            },
        )
    )
