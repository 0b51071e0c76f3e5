"""Faults at the publishing layer (``jobs.core.storage``) that every writer relies on.

* Two writers of one partition at once — what happens when a task's process outlives its
  worker (an orphan) while Airflow runs the retry: the second writer waits for the first
  (a per-partition lock) instead of having its staging folder deleted under it, and a reader
  never sees a partial partition.
* A swap that fails half-way (the old partition moved aside, the new one cannot be renamed in):
  the previous partition is put back and the error names the path. An I/O error at exactly
  that rename cannot be produced for real on one machine, so this one case replaces
  ``os.rename`` for the second call only (fault injection at the system-call boundary).
* The JSON writers (result files, reports, markers) on a read-only folder, a file in place of
  the folder, and a full disk: a ``PublishError`` naming the path, no temporary file left,
  the previous file intact.
"""

from __future__ import annotations

import errno
import json
import os
import threading
import time

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from jobs.core import storage
from tests.reliability.harness import (
    CaseResult,
    PartitionPoller,
    Tally,
    full_disk,
    leftovers,
    partition_checksums,
    partition_whole,
    read_only,
)

pytestmark = pytest.mark.reliability


def _write(staging, rows: int, tag: str) -> dict:
    table = pa.table({"event_id": [f"{tag}-{i:05d}" for i in range(rows)]})
    pq.write_table(table, staging / "part-00000.parquet")
    return {"rows": rows, "files": ["part-00000.parquet"], "writer": tag}


def test_second_writer_of_a_partition_waits_for_the_first(tmp_path, report):
    started = time.monotonic()
    zone = tmp_path / "curated"
    uri = str(zone / "dt=2026-06-01")
    staged = {"a": threading.Event(), "b": threading.Event()}
    release = {"a": threading.Event(), "b": threading.Event()}
    errors: dict[str, BaseException] = {}

    def writer(name: str, rows: int) -> None:
        try:
            with storage.staged_partition(uri) as staging:
                manifest = _write(staging, rows, name)
                staged[name].set()
                release[name].wait(20)
                storage.publish(staging, uri, manifest)
        except BaseException as exc:
            errors[name] = exc

    with PartitionPoller([zone], interval=0.002) as poller:
        first = threading.Thread(target=writer, args=("a", 300))
        first.start()
        assert staged["a"].wait(10)
        second = threading.Thread(target=writer, args=("b", 500))
        second.start()
        overlapped = staged["b"].wait(1.0)
        release["a"].set()
        first.join(20)
        release["b"].set()
        second.join(20)
    assert errors == {}, errors
    assert not overlapped, "the second writer staged while the first still held the partition"
    manifest = storage.read_manifest(uri)
    assert manifest["writer"] == "b" and manifest["rows"] == 500
    assert partition_whole(zone / "dt=2026-06-01") is None
    assert leftovers(zone) == []
    assert poller.violations == []
    report.record(
        CaseResult(
            "publish: concurrent writers",
            "test_second_writer_of_a_partition_waits_for_the_first",
            faults_injected=1,
            runs_recovered=sum(name not in errors for name in ("b",)),  # the writer that waited, then published
            seconds=round(time.monotonic() - started, 1),
            details={"reader_checks": poller.checks},
        )
    )


def test_failed_swap_puts_the_previous_partition_back(tmp_path, monkeypatch, report):
    zone = tmp_path / "curated"
    uri = str(zone / "dt=2026-06-01")
    with storage.staged_partition(uri) as staging:
        storage.publish(staging, uri, _write(staging, 200, "old"))
    before = partition_checksums(zone / "dt=2026-06-01")
    real_rename = os.rename
    calls = []

    def rename(src, dst):
        calls.append((str(src), str(dst)))
        if len(calls) == 2:  # staging → dt=D, after dt=D → .trash-*
            raise OSError(errno.EIO, "Input/output error", str(dst))
        return real_rename(src, dst)

    def publish_new() -> None:
        with storage.staged_partition(uri) as staging:
            manifest = _write(staging, 900, "new")
            monkeypatch.setattr(storage.os, "rename", rename)
            storage.publish(staging, uri, manifest)

    tally = Tally()
    with pytest.raises(storage.PublishError, match=r"dt=2026-06-01") as failed:
        publish_new()
    tally.fault()
    monkeypatch.setattr(storage.os, "rename", real_rename)
    assert "Input/output error" in str(failed.value)
    assert ".trash-" in calls[0][1] and ".staging-" in calls[1][0]
    assert partition_checksums(zone / "dt=2026-06-01") == before
    assert storage.read_manifest(uri)["writer"] == "old"
    assert leftovers(zone) == []
    with storage.staged_partition(uri) as staging:  # the retry, the fault lifted: the new version is published
        storage.publish(staging, uri, _write(staging, 900, "new"))
    assert tally.recover(storage.read_manifest(uri))["writer"] == "new"
    report.record(
        CaseResult(
            "publish: swap fails half-way",
            "test_failed_swap_puts_the_previous_partition_back",
            faults_injected=tally.faults,
            runs_recovered=tally.recovered,
            rows_expected=200,
        )
    )


def test_json_writers_on_read_only_missing_and_full_folders(tmp_path, report):
    out = tmp_path / "results"
    out.mkdir()
    target = out / "result.json"
    storage.write_json_atomic(target, {"version": 1})
    tally = Tally()

    with read_only(out):
        with pytest.raises(storage.PublishError, match=str(target)):
            storage.write_json_atomic(target, {"version": 2})
        tally.fault()
    assert json.loads(target.read_text()) == {"version": 1}

    blocker = tmp_path / "not-a-folder"
    blocker.write_text("a file where a folder is expected")
    with pytest.raises(storage.PublishError, match=str(blocker)):
        storage.write_json_atomic(blocker / "result.json", {"version": 2})
    tally.fault()

    with full_disk(out, free_kb=4) as small:
        with pytest.raises(storage.PublishError, match=str(small / "result.json")) as full:
            storage.write_json_atomic(small / "result.json", {"blob": "x" * 200_000})
        tally.fault()
        assert "No space left on device" in str(full.value)
        assert sorted(p.name for p in small.iterdir()) == ["result.json"]
    assert json.loads(target.read_text()) == {"version": 1}
    assert sorted(p.name for p in out.iterdir()) == ["result.json"]
    storage.write_json_atomic(target, {"version": 2})  # the fault lifted: the same write succeeds
    assert tally.recover(json.loads(target.read_text())) == {"version": 2}
    report.record(
        CaseResult(
            "publish: JSON writer faults",
            "test_json_writers_on_read_only_missing_and_full_folders",
            faults_injected=tally.faults,
            runs_recovered=tally.recovered,
            details={"mechanisms": ["read-only folder", "file in place of folder", "ENOSPC"]},
        )
    )
