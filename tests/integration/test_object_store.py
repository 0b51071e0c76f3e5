"""Every zone on an object store: the S3 publish protocol, and ingestion + validation on S3.

Against the session's S3-compatible server (moto in server mode on loopback, ``s3_server``) and
the session's Spark Connect server, whose Python workers reach the bucket with the endpoint and
credentials of their environment. The same landing day is ingested once with the storage root
on local disk and once on ``s3://``: the curated and quarantine files are byte-identical, the
manifest on S3 commits exactly the files of one attempt, and nothing is written locally.
"""

from __future__ import annotations

import hashlib
import json
import uuid
from datetime import date
from pathlib import Path

import boto3
import pytest

from jobs import sim as gen
from jobs.core import catalog, storage

pytestmark = pytest.mark.integration

DAY = date(2026, 4, 1)
BUCKET = "recsys-test"
REPO = Path(__file__).resolve().parents[2]


def _keys(prefix: str) -> list[str]:
    client = boto3.client("s3")
    pages = client.get_paginator("list_objects_v2").paginate(Bucket=BUCKET, Prefix=prefix)
    return sorted(o["Key"] for page in pages for o in page.get("Contents", []))


def _digests(cfg, zone: str) -> list[tuple[str, str]]:
    """(file name without the attempt prefix, sha256) of a published day, in manifest order."""
    files = catalog.files_of(cfg, zone, [DAY.isoformat()])
    return [(f.rsplit("/", 1)[-1], hashlib.sha256(storage.read_bytes(f)).hexdigest()) for f in files]


def _tree(root: Path) -> dict[str, int]:
    return {str(p.relative_to(root)): p.stat().st_mtime_ns for p in sorted(root.rglob("*"))}


@pytest.fixture
def s3_root(s3_server, monkeypatch, tmp_path):
    """A fresh storage root in the bucket (and a local root that must stay empty)."""
    prefix = f"runs/{uuid.uuid4().hex[:10]}"
    monkeypatch.setenv("RECSYS__STORAGE__ROOT", f"s3://{BUCKET}/{prefix}")
    return prefix


def test_the_manifest_is_the_commit_on_an_object_store(s3_root):
    part = f"s3://{BUCKET}/{s3_root}/curated/events/dt=2026-04-02"
    zone = part.rsplit("/", 1)[0]
    # A writer killed after its data files and before its commit: nothing visible.
    with storage.staged_partition(part) as dead:
        storage.write_bytes_atomic(dead / "part-00000.parquet", b"half")
    dead_keys = [k for k in _keys(s3_root) if dead.name in k]
    assert dead_keys and storage.published_days(zone) == [] and storage.read_manifest(part) is None

    with storage.staged_partition(part) as first:
        storage.write_bytes_atomic(first / "part-00000.parquet", b"v1")
        storage.publish(first, part, {"rows": 1, "files": ["part-00000.parquet"]})
    manifest = storage.read_manifest(part)
    assert manifest["files"] == [f"{first.name}/part-00000.parquet"]
    assert storage.published_days(zone) == ["2026-04-02"]
    # A verdict about this publish holds; after a re-publish it is stale without being rewritten.
    storage.write_json_atomic(f"{part}/_VALIDATION", {"success": True, "manifest": storage.manifest_digest(part)})
    assert storage.read_text(f"{part}/_VALIDATION") and json.loads(storage.read_text(f"{part}/_VALIDATION"))["success"]

    with storage.staged_partition(part) as second:
        storage.write_bytes_atomic(second / "part-00000.parquet", b"v2")
        storage.publish(second, part, {"rows": 1, "files": ["part-00000.parquet"]})
    keys = _keys(s3_root)
    assert not [k for k in keys if first.name in k], keys  # the replaced attempt is deleted
    assert [k for k in keys if dead.name in k] == dead_keys  # a recent unreferenced one is kept
    assert storage.vacuum(part, grace_s=0) == [dead.name]  # ... until the vacuum
    assert storage.read_bytes(f"{part}/{storage.read_manifest(part)['files'][0]}") == b"v2"
    stale = json.loads(storage.read_text(f"{part}/_VALIDATION"))
    assert stale["manifest"] != storage.manifest_digest(part)

    # A body that raises removes its own attempt and leaves the published day as it was.
    attempts: list[str] = []
    with pytest.raises(RuntimeError, match="writer failed"):
        _failing_writer(part, attempts)
    assert attempts and not [k for k in _keys(s3_root) if attempts[0] in k]
    assert storage.read_bytes(f"{part}/{storage.read_manifest(part)['files'][0]}") == b"v2"


def _failing_writer(part: str, attempts: list[str]) -> None:
    with storage.staged_partition(part) as staging:
        attempts.append(staging.name)
        storage.write_bytes_atomic(staging / "part-00000.parquet", b"v3")
        raise RuntimeError("writer failed")


def test_an_unreachable_store_is_a_retryable_error_naming_the_endpoint(monkeypatch):
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:9")  # nothing listens on port 9
    with pytest.raises(storage.PublishError, match=r"object store http://127\.0\.0\.1:9"):
        storage.write_bytes_atomic(f"s3://{BUCKET}/down/x.json", b"{}")
    with pytest.raises(storage.PublishError, match=r"127\.0\.0\.1:9"):
        storage.read_bytes(f"s3://{BUCKET}/down/x.json")


def test_ingest_and_validate_on_s3_match_the_local_run_byte_for_byte(s3_root, spark, data_root, monkeypatch):
    from jobs.core.config import get_config
    from jobs.ingest.job import ingest_day
    from jobs.validate.job import validate_day

    params = gen.WorldParams(users=300, items=120, factors=4, seed=11, events_per_day=3000)
    # Local run first (the reference), then the same day with every zone in the bucket.
    s3_env = f"s3://{BUCKET}/{s3_root}"
    monkeypatch.setenv("RECSYS__STORAGE__ROOT", str(data_root))
    local = get_config()
    gen.write_day(params, DAY, local.storage.zone("landing"), local.storage.zone("ground_truth"))
    local_result = ingest_day(local, spark, DAY)
    local_curated, local_quarantine = _digests(local, "curated"), _digests(local, "quarantine")
    local_tree = _tree(data_root)

    monkeypatch.setenv("RECSYS__STORAGE__ROOT", s3_env)
    cfg = get_config()
    landing = gen.write_day(params, DAY, cfg.storage.zone("landing"), cfg.storage.zone("ground_truth"))
    assert _keys(f"{s3_root}/landing/events/dt={DAY}/") == sorted(
        f"{s3_root}/landing/events/dt={DAY}/{f}" for f in [*landing["files"], "_SUCCESS"]
    )
    result = ingest_day(cfg, spark, DAY)
    assert {k: result[k] for k in ("rows", "quarantined", "duplicates_removed", "input_rows")} == {
        k: local_result[k] for k in ("rows", "quarantined", "duplicates_removed", "input_rows")
    }
    assert result["curated_uri"].startswith("s3://")
    assert _digests(cfg, "curated") == local_curated and _digests(cfg, "quarantine") == local_quarantine
    # Exactly the committed attempt's files are in the bucket (no staging leftovers).
    manifest = catalog.manifest(cfg, "curated", DAY)
    prefix = f"{s3_root}/curated/events/dt={DAY}/"
    assert _keys(prefix) == sorted([prefix + "_SUCCESS", *(prefix + f for f in manifest["files"])])

    # Great Expectations on the S3 day: the pandas engine here, the Spark engine in the server's
    # workers (read through jobs.core.fs); the verdict marker is about this manifest.
    pandas = validate_day(cfg, DAY, engine="pandas")
    on_spark = validate_day(cfg, DAY, engine="spark", spark=spark)
    assert pandas["success"] and on_spark["success"], (pandas["failures"], on_spark["failures"])
    assert pandas["rows"] == on_spark["rows"] == result["rows"]
    assert catalog.is_validated(cfg, DAY) and catalog.validated_days(cfg) == [DAY.isoformat()]
    assert storage.read_text(catalog.report_html(cfg, "validation", DAY)).lstrip().startswith("<")
    # A re-ingest publishes a new attempt: the old verdict no longer counts until re-validated.
    ingest_day(cfg, spark, DAY)
    assert _digests(cfg, "curated") == local_curated
    assert not catalog.is_validated(cfg, DAY)
    # Nothing of the S3 run was written locally: the reference run's tree is as it was, and no
    # "s3:" folder appeared (a URI opened as a local path would make one in the working dir).
    assert _tree(data_root) == local_tree
    assert not any(Path(p, "s3:").exists() for p in (Path.cwd(), REPO, data_root))
