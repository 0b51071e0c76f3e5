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
    assert storage.vacuum_root(zone) == {}  # still within the grace period
    assert storage.vacuum_root(zone, grace_s=0) == {part: [dead.name]}  # ... until the vacuum
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


def _curated_day(cfg, day: str, seed: int) -> None:
    """A validated curated day (ingest layout) of 300 users × 120 items, through the storage API."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.parquet as pq

    from jobs.core.schema import curated_schema

    rng = np.random.default_rng(seed)
    n = 2400
    start = np.datetime64(f"{day}T00:00:00", "us")
    types = rng.choice(np.array(["impression", "click", "play", "rating"]), n)
    table = pa.table(
        {
            "event_id": pa.array([f"{day}-{i:05d}" for i in range(n)]),
            "user_id": pa.array(rng.integers(1, 301, n)),
            "item_id": pa.array(rng.integers(1, 121, n)),
            "event_type": pa.array(types),
            "ts": pa.array(start + rng.integers(0, 86_400_000_000, n).astype("m8[us]"), pa.timestamp("us", tz="UTC")),
            "watch_seconds": pa.array(np.full(n, 30.0), mask=types != "play"),
            "rating": pa.array(np.full(n, 4, np.int32), mask=types != "rating"),
            "device": pa.array(np.full(n, "tv")),
            "country": pa.array(np.full(n, "DE")),
        }
    ).cast(curated_schema())
    part = catalog.partition(cfg, "curated", day)
    with storage.staged_partition(part) as staging:
        pq.write_table(table, staging / "part-00000.parquet", compression="snappy")
        storage.publish(staging, part, {"day": day, "rows": n, "files": ["part-00000.parquet"]})
    storage.write_json_atomic(
        f"{part}/{catalog.VALIDATION_MARKER}", {"success": True, "manifest": storage.manifest_digest(part)}
    )


def test_snapshot_training_data_and_scoring_on_s3_match_the_local_run(
    s3_root, spark, data_root, mlflow_env, monkeypatch
):
    """The training snapshot (Spark reads S3 in its Python workers), the trainer's loader and
    batch scoring with a registered model, on S3 and locally: the same content hash, the same
    training arrays, byte-identical recommendations; every object in the bucket accounted for.
    The S3 snapshot is Spark's build (its tasks write the parts into the bucket), the local one
    the small-window build in the job's process (``snapshot_collect_max_pairs``)."""
    import numpy as np

    from jobs.core.config import get_config
    from jobs.core.snapshots import load_snapshot
    from jobs.score.job import score_day
    from jobs.snapshot.job import build_snapshot
    from tests.integration.test_score import log_and_register, make_arrays

    days = ["2026-04-10", "2026-04-11", "2026-04-12", "2026-04-13"]
    held_out = date.fromisoformat(days[-1])
    out = {}
    model = None
    for root in (str(data_root), f"s3://{BUCKET}/{s3_root}"):
        monkeypatch.setenv("RECSYS__STORAGE__ROOT", root)
        monkeypatch.setenv(
            "RECSYS__TRAINING__SNAPSHOT_COLLECT_MAX_PAIRS", "0" if root.startswith("s3://") else "1000000"
        )
        cfg = get_config()
        for i, day in enumerate(days):
            _curated_day(cfg, day, seed=i)
        snap = build_snapshot(cfg, spark, held_out, 3)
        data = load_snapshot(snap["uri"])
        if model is None:  # one registered model (user ids 1..300, items 100..219 → some unknown)
            model = log_and_register(cfg, make_arrays(seed=5), promote_it=False)
        scored = score_day(cfg, spark, held_out, model["version"], k=4)
        out[root] = {
            "hash": snap["content_hash"],
            "arrays": [data.users.tolist(), data.items.tolist(), data.weights.tolist(), data.user_ids.tolist()],
            "recs": [
                hashlib.sha256(storage.read_bytes(f)).hexdigest()
                for f in catalog.files_of(cfg, "recommendations", [days[-1]])
            ],
            "rows": scored["rows"],
            "uri": snap["uri"],
        }
    local, s3 = out[str(data_root)], out[f"s3://{BUCKET}/{s3_root}"]
    assert s3["uri"].startswith("s3://") and s3["hash"] == local["hash"]
    assert s3["arrays"] == local["arrays"] and len(s3["arrays"][0]) > 100
    assert s3["recs"] == local["recs"] and s3["rows"] == local["rows"] > 0
    assert np.isfinite(np.array(s3["arrays"][2])).all()
    # Every object in the bucket under this root is a committed file or a manifest/marker.
    cfg = get_config()
    listed = set()
    for zone, zone_days in (("curated", days), ("recommendations", days[-1:])):
        for day in zone_days:
            part = catalog.partition(cfg, zone, day)
            listed |= {f.split(f"s3://{BUCKET}/", 1)[1] for f in catalog.files_of(cfg, zone, [day])}
            listed |= {f"{part.split(f's3://{BUCKET}/', 1)[1]}/{m}" for m in ("_SUCCESS", "_VALIDATION")}
    snap_manifest = storage.read_manifest(s3["uri"])
    snap_key = s3["uri"].split(f"s3://{BUCKET}/", 1)[1]
    listed |= {f"{snap_key}/{f}" for f in snap_manifest["files"]} | {f"{snap_key}/_SUCCESS"}
    keys = set(_keys(s3_root))
    assert keys <= listed, sorted(keys - listed)


def test_mlflow_on_postgres_keeps_model_artifacts_in_the_bucket(s3_server, data_root, tmp_path, monkeypatch):
    """MLflow in the cluster shape: tracking server on Postgres with ``--artifacts-destination
    s3://…``. A model logged and registered through the trainer's tracker lands in the bucket (not
    on the server's disk) and loads back through the registry the way scoring loads it."""
    import numpy as np

    from jobs.core.config import get_config
    from jobs.core.tracking import fetch_model
    from scripts.stack import Stack, destroy, up
    from tests.integration.test_score import log_and_register, make_arrays

    prefix = f"mlflow-{uuid.uuid4().hex[:8]}"
    stack = Stack.on_free_ports(tmp_path / "state", db="postgres", mlflow_artifacts=f"s3://{BUCKET}/{prefix}")
    up(stack, only=("mlflow",))
    try:
        for key, value in {
            "RECSYS__MLFLOW__TRACKING_URI": stack.mlflow_url,
            "MLFLOW_TRACKING_URI": stack.mlflow_url,
            "RECSYS__MLFLOW__MODEL_NAME": "recsys-s3",
            "RECSYS__MLFLOW__EXPERIMENT": "recsys-s3",
        }.items():
            monkeypatch.setenv(key, value)
        cfg = get_config()
        arrays = make_arrays(seed=5)
        model = log_and_register(cfg, arrays, promote_it=True)
        keys = _keys(prefix)
        assert any(k.endswith(".npz") for k in keys), keys
        assert not any((tmp_path / "state" / "mlflow" / "artifacts").rglob("*.npz"))
        files = fetch_model(cfg, model["version"], tmp_path / "download")
        with np.load(files.artifact) as npz:
            assert np.array_equal(npz["user_factors"], arrays["user_factors"])
        assert stack.mlflow_db_url.startswith("postgresql")
    finally:
        destroy(stack)
