"""Spark as a service: jobs are Connect clients of one server, and that server is robust to them.

* the jobs' code reaches the server's Python workers only as a session artifact (the server
  does not see the repository);
* a job failing on bad input, or a UDF raising, leaves the server healthy for the next job;
* a client SIGKILLed in the middle of a write never exposes a partial partition (the writers
  are the server's workers; the client publishes), and the rerun is byte-identical;
* the server killed mid-job fails the task as retryable with the endpoint named; restarted,
  the retry publishes byte-identical output;

The standalone cluster (a Master and two Workers, separate JVMs on 127.0.0.1, behind its own
Connect server) runs in the cluster rehearsal (``tests/reliability/test_chaos_rehearsal.py``): ingestion and
scoring tasks on both workers, output byte-identical to the local demo's.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from datetime import date
from pathlib import Path

import pytest

from jobs import sim as gen
from jobs.core import storage
from scripts import spark_service
from scripts.stack import Stack, down, up
from scripts.stack_shape import free_port

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
DAY = date(2026, 3, 1)
BIG = gen.WorldParams(users=3000, items=500, factors=8, seed=9, events_per_day=300_000)


def checksums(folder: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.glob("*.parquet"))}


def job(module: str, *args: str, env: dict[str, str] | None = None, **kwargs) -> subprocess.Popen:
    """``python -m module args`` as the launcher runs it (own process group)."""
    full = {**os.environ, "PYTHONPATH": f"{REPO}{os.pathsep}{REPO / 'plugins'}", **(env or {})}
    return subprocess.Popen(
        [sys.executable, "-m", module, *args],
        cwd=REPO,
        env=full,
        stdout=kwargs.pop("stdout", subprocess.PIPE),
        stderr=kwargs.pop("stderr", subprocess.PIPE),
        text=True,
        start_new_session=True,
        **kwargs,
    )


def finished(proc: subprocess.Popen, timeout: float = 600) -> tuple[int, str, str]:
    out, err = proc.communicate(timeout=timeout)
    return proc.returncode, out, err


def partition_is_whole(part: Path) -> bool:
    """A visible partition must hold its manifest and every file the manifest lists, readable."""
    import pyarrow.parquet as pq

    manifest = json.loads((part / storage.SUCCESS).read_text())
    rows = sum(pq.ParquetFile(part / name).metadata.num_rows for name in manifest["files"])
    return rows == manifest["rows"] and sorted(p.name for p in part.glob("*.parquet")) == manifest["files"]


def staging_with_files(zone: Path) -> list[Path]:
    return [p for p in zone.glob(".staging-*") if any(p.iterdir())]


def test_job_code_reaches_the_workers_only_as_a_session_artifact(spark, cfg):
    """Without the artifact the server's Python cannot import ``jobs``; with it, it can."""
    from pyspark.sql import SparkSession

    def probe(batches):
        import pyarrow as pa

        for batch in batches:
            try:
                import jobs.core.schema as schema

                found = schema.__file__
            except ImportError as exc:
                found = f"ImportError: {exc}"
            yield pa.RecordBatch.from_pydict({"where": [found] * batch.num_rows})

    bare = SparkSession.builder.remote(cfg.spark.remote).create()
    try:
        without = bare.range(0, 1, 1, 1).mapInArrow(probe, "where string").collect()[0]["where"]
    finally:
        bare.stop()
    with_artifact = spark.range(0, 1, 1, 1).mapInArrow(probe, "where string").collect()[0]["where"]
    assert without.startswith("ImportError"), without
    assert "recsys_jobs_" in with_artifact and with_artifact.endswith("jobs/core/schema.py"), with_artifact


def test_server_stays_healthy_after_bad_input_a_failing_udf_and_a_killed_client(spark, stack, cfg, tmp_path):
    from pyspark.errors.exceptions.connect import PythonException

    from jobs.ingest.job import ingest_day

    def boom(batches):
        for _ in batches:
            raise ValueError("boom from a worker")
        yield  # pragma: no cover - a generator

    with pytest.raises(PythonException, match="boom from a worker"):
        spark.range(0, 2, 1, 1).mapInArrow(boom, "id long").collect()
    # Bad input: a renamed column fails the job before any Spark work, exit 3.
    gen.generate(
        gen.WorldParams(
            users=200,
            items=80,
            factors=4,
            seed=1,
            events_per_day=2000,
            scenarios=(gen.Scenario.parse("renamed_column@2026-03-02", gen.CORRUPTION_KINDS),),
        ),
        date(2026, 3, 2),
        1,
        cfg.storage.zone("landing"),
        cfg.storage.zone("ground_truth"),
    )
    code, _, err = finished(job("jobs.ingest", "--day", "2026-03-02"))
    assert code == 3 and "lacks required column" in err, err[-2000:]
    # A client SIGKILLed in the middle of a write: nothing partial is ever visible.
    gen.generate(BIG, DAY, 1, cfg.storage.zone("landing"), cfg.storage.zone("ground_truth"))
    zone = Path(cfg.storage.zone("curated"))
    part = zone / f"dt={DAY}"
    reference = ingest_day(cfg, spark, DAY)  # the previous, complete version
    before = checksums(part)
    caught = []
    for _ in range(3):  # an attempt whose kill came only after its publish (a fast machine) is run again
        proc = job("jobs.ingest", "--day", DAY.isoformat(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline, seen = time.monotonic() + 300, []
        while time.monotonic() < deadline and not seen and proc.poll() is None:
            assert partition_is_whole(part) and checksums(part) == before  # readers see the old version, whole
            seen = staging_with_files(zone)
            time.sleep(0.05)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGSTOP)  # frozen: from here on it cannot publish
        caught = [p for p in seen if p.exists()]  # still staged: the write was caught in progress
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(60)
        if caught:
            break
    assert caught, "every attempt published before its write was caught in progress"
    assert proc.returncode == -signal.SIGKILL
    # The orphaned server-side work may run on; it never publishes. Watched until the server has
    # no running job left (nothing can write any more), then once more.
    settle = time.monotonic() + 120
    while spark_service.running_jobs(stack.spark_ui_port):
        assert partition_is_whole(part) and checksums(part) == before
        assert time.monotonic() < settle, "the killed client's job still runs on the server after 120 s"
        time.sleep(0.2)
    assert partition_is_whole(part) and checksums(part) == before
    # The killed attempt's staging folder stays (a publish renames it away; only a killed client
    # leaves it, for vacuum): its files may be gone, since a worker interrupted mid-file removes
    # the temporary file it was writing (``fs.write_bytes_atomic``) and the kill can land before
    # any part file was complete.
    assert list(zone.glob(".staging-*")), "the interrupted write left no staging folder: nothing was interrupted"
    rerun = ingest_day(cfg, spark, DAY)  # the next job: the server is healthy, the leftovers cleaned
    assert checksums(part) == before and rerun["rows"] == reference["rows"]
    assert [p.name for p in zone.iterdir() if p.name.startswith(".")] == []


@pytest.fixture
def own_server(tmp_path):
    """A Connect server of its own (killable without disturbing the suite's)."""
    stack = Stack(tmp_path / "state", free_port(), free_port(), connect_port=free_port(), spark_ui_port=free_port())
    up(stack, only=("spark-connect",))
    yield stack
    down(stack)


def test_server_killed_mid_job_is_a_retryable_failure_naming_the_endpoint(own_server, cfg, monkeypatch):
    """Through the task launcher: the failure is retryable (not fail-fast) and names the endpoint;
    once the server is back the retry publishes the same bytes as an undisturbed run."""
    from airflow.sdk.exceptions import AirflowException, AirflowFailException

    from recsys_airflow.launcher import JobOperator

    monkeypatch.setenv("RECSYS__SPARK__REMOTE", own_server.spark_remote)
    gen.generate(BIG, DAY, 1, cfg.storage.zone("landing"), cfg.storage.zone("ground_truth"))
    op = JobOperator(task_id="ingest", module="jobs.ingest", spark=True, job_args=["--day", DAY.isoformat()])
    reference = op.execute(context={})
    part = Path(cfg.storage.partition("curated", DAY))
    before = checksums(part)
    zone = part.parent
    outcome: dict = {}
    import threading

    def run() -> None:
        try:
            outcome["result"] = op.execute(context={})
        except BaseException as exc:
            outcome["error"] = exc

    thread = threading.Thread(target=run)
    thread.start()
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and not staging_with_files(zone) and thread.is_alive():
        time.sleep(0.05)
    assert staging_with_files(zone), "the job finished before the server could be killed mid-write"
    os.killpg(own_server.running()["spark-connect"], signal.SIGKILL)
    thread.join(300)
    error = outcome.get("error")
    assert isinstance(error, AirflowException) and not isinstance(error, AirflowFailException), outcome
    assert f"Spark Connect server {own_server.spark_remote} unavailable" in str(error), str(error)
    assert checksums(part) == before  # nothing partial published
    up(own_server, only=("spark-connect",))  # the stack restarts it (make up)
    retried = op.execute(context={})
    assert checksums(part) == before and retried["rows"] == reference["rows"]
    assert [p.name for p in zone.iterdir() if p.name.startswith(".")] == []
