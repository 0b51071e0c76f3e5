"""Kill the Spark ingestion job in each phase of its write, retry, and compare with a clean run.

``tests/integration/test_spark_service.py`` kills a large ingest's client the moment its
staging files appear (one point of the write, on the Spark Connect server). This case aims at
every phase of the write:
a seeded injector picks three distinct *phases* of the publish protocol — of quarantine staging,
quarantine published, curated staging, a curated file written, curated published — and SIGKILLs the
job's whole process tree (Python driver, JVM, Python workers) the moment that phase is
observed on disk, plus a seeded jitter. The job runs through the real task launcher
(``JobOperator``), so each kill also checks what Airflow would do with it: a retryable failure
(not fail-fast) whose message says the job was killed.

The day is new (no previous partition) and carries 3% rows with a missing required field, so
the quarantine zone is written too. After three killed attempts the retry runs as **two
processes at once** — the orphan of a dead worker and the retry Airflow started — and both
must succeed. Throughout, a reader thread checks every visible partition of both zones (its
``_SUCCESS`` manifest lists exactly the files present and their rows). At the end, curated and
quarantine are byte-identical to a clean in-process run on a copy of the same world, the other
days are untouched and no staging/trash folder is left.
"""

from __future__ import annotations

import dataclasses
import os
import shutil
import time
from datetime import date
from pathlib import Path

import pytest

from tests.reliability.harness import (
    CaseResult,
    FaultInjector,
    PartitionPoller,
    kill_in_phases,
    launch_job,
    leftovers,
    row_diff,
    zone_fingerprint,
)

pytestmark = pytest.mark.reliability

DAY = date(2026, 6, 4)
SEED = 11
ATTEMPTS = 3  # killed attempts before the retry; each costs a JVM start
PHASES = ("quarantine staging", "quarantine published", "curated staging", "curated file written", "curated published")


def _launch(task_id: str) -> tuple:
    return launch_job(task_id, "jobs.ingest", ["--day", DAY.isoformat()])


def _reference(world, tmp_path: Path, spark) -> Path:
    """A clean run of DAY on a copy of the same world: the bytes every retry must reproduce."""
    from jobs.core.config import load_config
    from jobs.ingest.job import ingest_day

    ref_root = tmp_path / "reference"
    shutil.copytree(world.root, ref_root, symlinks=True)
    cfg = load_config(environ={**os.environ, "RECSYS__STORAGE__ROOT": str(ref_root)})
    result = ingest_day(cfg, spark, DAY)
    assert result["quarantined"] > 0 and result["rows"] > 3000
    return ref_root


def test_ingest_killed_in_each_write_phase_then_retried(world, spark, tmp_path, report):
    from jobs import sim as gen
    from jobs.core.config import get_config
    from tests.reliability.conftest import world_params

    started = time.monotonic()
    cfg = get_config()
    params = dataclasses.replace(world_params(), scenarios=(gen.Scenario("null_required", DAY, 0.03),))
    gen.generate(params, DAY, 1, cfg.storage.zone("landing"), cfg.storage.zone("ground_truth"))
    ref_root = _reference(world, tmp_path, spark)
    curated = Path(cfg.storage.zone("curated"))
    quarantine = Path(cfg.storage.zone("quarantine"))
    others_before = {z.name: zone_fingerprint(z, world.days) for z in (curated, quarantine)}
    with PartitionPoller([curated, quarantine], interval=0.005) as poller:
        inj = FaultInjector(SEED, max_faults=ATTEMPTS, max_seconds=1200)
        zones = {"curated": curated, "quarantine": quarantine}
        kills = kill_in_phases(inj, inj.rng.sample(PHASES, ATTEMPTS), zones, DAY.isoformat(), _launch, "jobs.ingest")
        retries = [_launch(name) for name in ("ingest-orphan", "ingest-retry")]
        for _, thread, _ in retries:
            thread.join(600)
    results = [outcome for _, _, outcome in retries]
    assert all("result" in r for r in results), results
    assert poller.violations == [], poller.violations[:5]
    assert poller.checks > 0
    ref = {z: zone_fingerprint(ref_root / z, [DAY.isoformat()]) for z in ("curated/events", "quarantine/events")}
    got = {z: zone_fingerprint(world.root / z, [DAY.isoformat()]) for z in ("curated/events", "quarantine/events")}
    assert got == ref
    assert {z.name: zone_fingerprint(z, world.days) for z in (curated, quarantine)} == others_before
    assert leftovers(curated) == [] and leftovers(quarantine) == []
    rows = row_diff(ref_root / "curated/events", curated, [DAY.isoformat()])
    assert rows["rows_lost"] == 0 and rows["rows_duplicated"] == 0, rows
    report.record(
        CaseResult(
            "ingest: SIGKILL mid-write",
            "test_ingest_killed_in_each_write_phase_then_retried",
            faults_injected=len(kills),
            runs_recovered=len(results),
            rows_expected=rows["rows_expected"],
            rows_lost=rows["rows_lost"],
            rows_duplicated=rows["rows_duplicated"],
            seconds=round(time.monotonic() - started, 1),
            details={"seed": SEED, "kills": kills, "reader_checks": poller.checks, "reader_polls": poller.polls},
        )
    )
