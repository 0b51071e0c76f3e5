"""Faults on the object store: killed writers, two writers of one day, the S3 endpoint down.

Ingestion of one landing day with every zone in the session's S3 bucket (moto on loopback; the
Spark Connect server's Python workers write the data files there), run through the real task
launcher (``JobOperator``), compared with a clean run of the same landing day on local disk:

* **a writer killed between its data files and its commit** — the job's process is frozen the
  moment its first curated file appears in its attempt prefix (so the server finishes writing
  and the commit can never happen), then SIGKILLed: the day stays invisible (no manifest), the
  task fails as retryable, and the retry publishes the reference rows;
* **two writers of one partition at once** (an orphan and its retry): both succeed, the manifest
  lists exactly one attempt's files, rows match the reference — none lost, none twice;
* **the endpoint down** for the job's own process (a TCP proxy in front of the S3 server that
  refuses connections): at the start (listing the landing day) and during the publish (the
  manifest commit) — a retryable failure whose message names the endpoint, nothing partial
  visible, and the retry once the endpoint is back publishes the reference bytes.

The Connect server's workers reach the bucket directly (their environment is the server's):
the outage hits the client's reads and its commit, which is what decides visibility.
"""

from __future__ import annotations

import hashlib
import os
import socket
import threading
import time
import uuid
from datetime import date

import boto3
import pytest

from tests.reliability.harness import CaseResult, crash_tree, event_ids, launch_job, wait_until
from tests.reliability.outages import pipe

pytestmark = pytest.mark.reliability

DAY = date(2026, 6, 20)
BUCKET = "recsys-test"


class SwitchableProxy:
    """A TCP forwarder to the S3 server that can be switched off (connections refused) and on."""

    def __init__(self, upstream_port: int) -> None:
        self.upstream = upstream_port
        self.port = 0
        self._server: socket.socket | None = None
        self._thread: threading.Thread | None = None
        self.up()

    def up(self) -> None:
        server = socket.create_server(("127.0.0.1", self.port))
        self.port = server.getsockname()[1]
        self._server = server
        self._thread = threading.Thread(target=self._accept, args=(server,), daemon=True)
        self._thread.start()

    def down(self) -> None:
        if self._server is not None:
            self._server.close()
            self._server = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def _accept(self, server: socket.socket) -> None:
        while True:
            try:
                client, _ = server.accept()
            except OSError:
                return
            if self._server is not server:  # switched off meanwhile
                client.close()
                return
            upstream = socket.create_connection(("127.0.0.1", self.upstream))
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=pipe, args=(a, b), daemon=True).start()


def _keys(prefix: str) -> list[str]:
    pages = boto3.client("s3").get_paginator("list_objects_v2").paginate(Bucket=BUCKET, Prefix=prefix)
    return sorted(o["Key"] for page in pages for o in page.get("Contents", []))


def _published(cfg, zone: str) -> dict[str, str] | None:
    """{file name: sha256} of the published day, or None when it is not published."""
    from jobs.core import catalog, storage

    if catalog.manifest(cfg, zone, DAY) is None:
        return None
    return {
        f.rsplit("/", 1)[-1]: hashlib.sha256(storage.read_bytes(f)).hexdigest()
        for f in catalog.files_of(cfg, zone, [DAY.isoformat()])
    }


def _event_ids(cfg) -> list[str]:
    from jobs.core import catalog

    return event_ids(catalog.partition(cfg, "curated", DAY))


def _ingest(name: str, endpoint: str | None = None) -> tuple:
    """Launch an ingest task; ``endpoint``: the S3 endpoint of the job's process only."""
    saved = os.environ.get("AWS_ENDPOINT_URL")
    if endpoint:
        os.environ["AWS_ENDPOINT_URL"] = endpoint
    try:
        return launch_job(name, "jobs.ingest", ["--day", DAY.isoformat()])
    finally:
        os.environ["AWS_ENDPOINT_URL"] = saved or ""


@pytest.mark.timeout(1500)
def test_object_store_faults_lose_and_duplicate_nothing(s3_server, spark, data_root, monkeypatch, report):
    """Long because it is one world and its reference shared by the three fault cases."""
    from airflow.sdk.exceptions import AirflowException, AirflowFailException

    from jobs import sim as gen
    from jobs.core import catalog, storage
    from jobs.core.config import get_config
    from jobs.ingest.job import ingest_day

    params = gen.WorldParams(users=300, items=120, factors=4, seed=23, events_per_day=4000)
    # The reference: the same landing day ingested on local disk, in process.
    local = get_config()
    gen.write_day(params, DAY, local.storage.zone("landing"), local.storage.zone("ground_truth"))
    ingest_day(local, spark, DAY)
    ref_curated, ref_quarantine, ref_ids = (
        _published(local, "curated"),
        _published(local, "quarantine"),
        _event_ids(local),
    )
    assert ref_curated and len(ref_ids) == len(set(ref_ids)) > 3000

    prefix = f"faults-{uuid.uuid4().hex[:8]}"
    monkeypatch.setenv("RECSYS__STORAGE__ROOT", f"s3://{BUCKET}/{prefix}")
    cfg = get_config()
    gen.write_day(params, DAY, cfg.storage.zone("landing"), cfg.storage.zone("ground_truth"))
    curated_prefix = f"{prefix}/curated/events/dt={DAY}/"

    def check(case: str, started: float, faults: int, recovered: int, **details) -> None:
        assert _published(cfg, "curated") == ref_curated and _published(cfg, "quarantine") == ref_quarantine
        ids = _event_ids(cfg)
        lost, duplicated = len(set(ref_ids) - set(ids)), len(ids) - len(set(ids))
        assert lost == 0 and duplicated == 0 and sorted(ids) == sorted(ref_ids)
        report.record(
            CaseResult(
                case,
                "test_object_store_faults_lose_and_duplicate_nothing",
                faults_injected=faults,
                runs_recovered=recovered,
                rows_expected=len(ref_ids),
                rows_lost=lost,
                rows_duplicated=duplicated,
                seconds=round(time.monotonic() - started, 1),
                details=details,
            )
        )

    # 1. Killed between its data files and its commit.
    started = time.monotonic()
    op, thread, outcome = _ingest("s3-ingest-killed")
    wait_until(
        lambda: any("/.attempt-" in k for k in _keys(curated_prefix)) or op._proc.poll() is not None,
        300,
        interval=0.02,
        what="a curated data file in the attempt prefix",
    )
    assert op._proc.poll() is None, "the job finished before its first curated file was seen"
    crash_tree(op._proc.pid)
    thread.join(120)
    error = outcome.get("error")
    assert isinstance(error, AirflowException) and not isinstance(error, AirflowFailException), outcome
    assert catalog.manifest(cfg, "curated", DAY) is None and catalog.published_days(cfg, "curated") == []
    orphans = {k.split("/")[-2] for k in _keys(curated_prefix) if "/.attempt-" in k}
    assert orphans  # the dead writer's files are there, and invisible
    op, thread, outcome = _ingest("s3-ingest-retry")
    thread.join(600)
    assert "result" in outcome, outcome
    manifest = catalog.manifest(cfg, "curated", DAY)
    assert not orphans & {f.split("/")[0] for f in manifest["files"]}
    assert storage.vacuum(catalog.partition(cfg, "curated", DAY), grace_s=0) == sorted(orphans)
    check("object store: writer killed before its commit", started, 1, 1, orphan_attempts=sorted(orphans))

    # 2. Two writers of one partition at once.
    started = time.monotonic()
    writers = [_ingest(name) for name in ("s3-ingest-orphan", "s3-ingest-twin")]
    for _, thread, _ in writers:
        thread.join(600)
    assert all("result" in outcome for _, _, outcome in writers), [o for _, _, o in writers]
    committed = {f.split("/")[0] for f in catalog.manifest(cfg, "curated", DAY)["files"]}
    assert len(committed) == 1
    storage.vacuum(catalog.partition(cfg, "curated", DAY), grace_s=0)
    left = {k.split("/")[-2] for k in _keys(curated_prefix) if "/.attempt-" in k}
    assert left == committed, (left, committed)
    check("object store: two writers of one partition", started, 1, 2, committed=sorted(committed))

    # 3. The endpoint down for the job: at the start (reads), then during the publish (commit).
    started = time.monotonic()
    proxy = SwitchableProxy(int(s3_server.rsplit(":", 1)[1]))
    before = catalog.manifest(cfg, "curated", DAY)
    proxy.down()
    op, thread, outcome = _ingest("s3-ingest-endpoint-down", proxy.url)
    thread.join(300)
    error = outcome.get("error")
    assert isinstance(error, AirflowException) and not isinstance(error, AirflowFailException), outcome
    assert f"127.0.0.1:{proxy.port}" in str(error), str(error)[-2000:]
    proxy.up()
    assert catalog.manifest(cfg, "curated", DAY) == before
    op, thread, outcome = _ingest("s3-ingest-down-at-publish", proxy.url)
    wait_until(
        lambda: (
            {k.split("/")[-2] for k in _keys(curated_prefix) if "/.attempt-" in k} - committed
            or op._proc.poll() is not None
        ),
        300,
        interval=0.02,
        what="the second writer's attempt files",
    )
    proxy.down()
    thread.join(300)
    publish_error = outcome.get("error")
    assert isinstance(publish_error, AirflowException) and not isinstance(publish_error, AirflowFailException)
    assert f"127.0.0.1:{proxy.port}" in str(publish_error), str(publish_error)[-2000:]
    assert catalog.manifest(cfg, "curated", DAY) == before  # the old day, whole
    proxy.up()
    op, thread, outcome = _ingest("s3-ingest-endpoint-back", proxy.url)
    thread.join(600)
    assert "result" in outcome, outcome
    proxy.down()
    storage.vacuum(catalog.partition(cfg, "curated", DAY), grace_s=0)
    check("object store: endpoint down at read and at publish", started, 2, 1)
