"""Kill the Spark scoring job in each phase of its write, retry, and compare with a clean run.

The champion is a real model: ``jobs.train`` on the session world's snapshot, registered and
promoted on a private tracking server. The day scored is the world's last day. Like the
ingestion case, a seeded injector orders three phases of the publish protocol of the
recommendations zone — staging created, a file written, the partition published (the attempt
dies after the swap, before it reports) — and SIGKILLs the job's whole process tree (driver,
JVM, Python workers that hold the model) the moment the phase is seen on disk, plus a seeded
jitter. Each attempt runs through the real task launcher (``JobOperator``, as the score DAG's
task does): the kill is a retryable failure naming SIGKILL. Then the retry runs twice at once
(a dead worker's orphan and Airflow's retry): both succeed.

A reader thread checks every visible ``dt=`` partition throughout (its ``_SUCCESS`` lists
exactly the files present and their rows): no reader ever sees a partial day. At the end the
partition is byte-identical to a clean in-process run of the same version on a copy of the
world (data files; the manifest but for its timings), its rows are the reference's (none lost, none duplicated by ``(user_id, rank)``) and no
staging folder is left.
"""

from __future__ import annotations

import functools
import json
import os
import shutil
import time
from collections import Counter
from datetime import date
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from tests.reliability.harness import (
    CaseResult,
    FaultInjector,
    PartitionPoller,
    job_env,
    kill_in_phases,
    launch_job,
    leftovers,
    partition_checksums,
)

pytestmark = pytest.mark.reliability

SEED = 23
PHASES = ("recommendations staging", "recommendations file written", "recommendations published")
TRAIN_ARGS = [
    *("--epochs", "3", "--batch-size", "64", "--factors", "16", "--lr", "0.01"),
    *("--negatives", "4", "--seed", "3", "--device", "cpu"),
]


def _champion(world, tmp_path: Path) -> str:
    """Train on the world's snapshot, register and promote: the version to score with."""
    import subprocess
    import sys

    from jobs.core.config import get_config
    from jobs.registry.aliases import promote
    from jobs.registry.register import register
    from tests.reliability.harness import REPO

    result = tmp_path / "train.json"
    done = subprocess.run(
        [
            *(sys.executable, "-m", "jobs.train", "--snapshot", world.snapshot_uri, "--result-file", str(result)),
            *("--checkpoint-dir", str(tmp_path / "ckpt"), "--run-name", "score-faults", *TRAIN_ARGS),
        ],
        cwd=REPO,
        env=job_env(RECSYS_XCOM_DIR="/nonexistent-xcom"),
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    trained = json.loads(result.read_text())
    cfg = get_config()
    version = register(cfg, trained["run_id"], {"decision": "blessed"}, trained["model_uri"])["version"]
    promote(cfg, version, None, "reliability test", "test_score_faults")
    return version


def _launch(task_id: str, day: str, version: str) -> tuple:
    return launch_job(task_id, "jobs.score", ["--day", day, "--model-version", version])


def _published(part: Path) -> tuple[dict[str, str], dict]:
    """Data files' checksums and the manifest without its timings (``stages``, ``seconds``)."""
    manifest = json.loads((part / "_SUCCESS").read_text())
    for key in ("stages", "seconds"):
        manifest.pop(key, None)
    return {n: h for n, h in partition_checksums(part).items() if n.startswith("part-")}, manifest


def _ranked(part: Path) -> Counter:
    files = json.loads((part / "_SUCCESS").read_text())["files"]
    table = pq.read_table([part / f for f in files], columns=["user_id", "rank"]) if files else None
    return Counter(zip(table["user_id"].to_pylist(), table["rank"].to_pylist(), strict=True)) if table else Counter()


def test_scoring_killed_in_each_write_phase_then_retried(world, tracking, spark, tmp_path, monkeypatch, report):
    from jobs.core.config import get_config, load_config
    from jobs.score.job import score_day

    started = time.monotonic()
    # The job's Spark has the session fixture's parallelism, so the reference's bytes apply.
    monkeypatch.setenv("RECSYS__SPARK__MASTER", "local[2]")
    version = _champion(world, tmp_path)
    day = world.day
    ref_root = tmp_path / "reference"
    shutil.copytree(world.root, ref_root, symlinks=True)
    ref_cfg = load_config(environ={**os.environ, "RECSYS__STORAGE__ROOT": str(ref_root)})
    reference = score_day(ref_cfg, spark, date.fromisoformat(day), version)
    assert reference["rows"] > 0 and reference["model_version"] == version
    ref_zone = ref_root / "recommendations"

    cfg = get_config()
    zone = Path(cfg.storage.zone("recommendations"))
    with PartitionPoller([zone], interval=0.005) as poller:
        inj = FaultInjector(SEED, max_faults=len(PHASES), max_seconds=1200)
        launch = functools.partial(_launch, day=day, version=version)
        kills = kill_in_phases(inj, PHASES, {"recommendations": zone}, day, launch, "jobs.score")
        retries = [_launch(name, day, version) for name in ("score-orphan", "score-retry")]
        for _, thread, _ in retries:
            thread.join(600)
    results = [outcome for _, _, outcome in retries]
    assert all("result" in r for r in results), results
    assert all(r["result"]["rows"] == reference["rows"] for r in results), results
    assert poller.violations == [], poller.violations[:5]
    assert poller.checks > 0
    assert _published(zone / f"dt={day}") == _published(ref_zone / f"dt={day}")
    assert leftovers(zone) == []
    expected, got = _ranked(ref_zone / f"dt={day}"), _ranked(zone / f"dt={day}")
    lost = sum((expected - got).values())
    duplicated = sum((got - expected).values())
    assert lost == 0 and duplicated == 0 and sum(got.values()) == reference["rows"]
    report.record(
        CaseResult(
            "scoring: SIGKILL mid-write",
            "test_scoring_killed_in_each_write_phase_then_retried",
            faults_injected=len(kills),
            runs_recovered=len(results),
            rows_expected=reference["rows"],
            rows_lost=lost,
            rows_duplicated=duplicated,
            seconds=round(time.monotonic() - started, 1),
            details={"seed": SEED, "kills": kills, "reader_checks": poller.checks, "reader_polls": poller.polls},
        )
    )
