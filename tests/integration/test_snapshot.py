"""Training snapshot: time-based split of validated curated days (real Spark)."""

from __future__ import annotations

from datetime import date, timedelta

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from jobs import sim as gen
from jobs.core import storage
from jobs.core.schema import POSITIVE_TYPES
from jobs.core.snapshots import TABLES, load_snapshot, snapshot_table
from jobs.ingest.job import ingest_day
from jobs.snapshot import tables as snapshot_tables
from jobs.snapshot.job import SnapshotError, build_snapshot
from jobs.validate.job import validate_day

pytestmark = pytest.mark.integration

START = date(2026, 1, 1)


def _curate(cfg, spark, days: int, skip_validation: tuple[int, ...] = ()) -> None:
    params = gen.WorldParams(users=250, items=100, factors=4, seed=13, events_per_day=2500)
    gen.generate(params, START, days, cfg.storage.zone("landing"), cfg.storage.zone("ground_truth"))
    for i in range(days):
        day = START + timedelta(days=i)
        ingest_day(cfg, spark, day)
        if i not in skip_validation:
            assert validate_day(cfg, day)["success"]


def test_split_is_time_based_and_indexed(cfg, spark):
    _curate(cfg, spark, 4, skip_validation=(1,))
    result = build_snapshot(cfg, spark, START + timedelta(days=3), window_days=3)
    assert result["train_days"] == ["2026-01-01", "2026-01-03"]
    assert result["skipped_days"] == ["2026-01-02"]
    train = snapshot_table(result["uri"], "train").to_pandas()
    test = snapshot_table(result["uri"], "test").to_pandas()
    users = snapshot_table(result["uri"], "users").to_pandas()
    items = snapshot_table(result["uri"], "items").to_pandas()
    assert list(users["user_idx"]) == list(range(len(users)))
    assert list(items["item_idx"]) == list(range(len(items)))
    assert users["user_id"].is_monotonic_increasing
    assert not train.duplicated(["user_idx", "item_idx"]).any()
    assert (train["weight"] >= 1).all()
    pairs = set(zip(train.user_idx, train.item_idx, strict=True))
    assert not any(p in pairs for p in zip(test.user_idx, test.item_idx, strict=True))
    # Train counts equal the positive events of the train days (curated, event types click/play/rating).
    curated = (
        pq.ParquetDataset(
            [
                str(p)
                for d in result["train_days"]
                for p in storage.local_path(cfg.storage.partition("curated", d)).glob("*.parquet")
            ],
            partitioning=None,
        )
        .read()
        .to_pandas()
    )
    positives = curated[curated.event_type.isin(["click", "play", "rating"])]
    assert train["weight"].sum() == len(positives)
    assert items["popularity"].sum() == len(train)
    assert result["test_rows"] == len(test) > 0
    assert storage.read_manifest(result["uri"])["train_rows"] == len(train)


def test_rebuild_gives_identical_files(cfg, spark):
    _curate(cfg, spark, 3)
    first = build_snapshot(cfg, spark, START + timedelta(days=2), window_days=2)
    before = {p.name: p.read_bytes() for p in storage.local_path(first["uri"]).glob("*.parquet")}
    second = build_snapshot(cfg, spark, START + timedelta(days=2), window_days=2)
    after = {p.name: p.read_bytes() for p in storage.local_path(first["uri"]).glob("*.parquet")}
    assert before == after and len(before) == 4
    assert second["content_hash"] == first["content_hash"]


def _reference_tables(cfg, result) -> dict:
    """``index_split`` (the reference) over the snapshot's days, from the curated files with pyarrow."""
    import pyarrow.compute as pc

    def positives(days):
        files = [
            str(p) for d in days for p in storage.local_path(cfg.storage.partition("curated", d)).glob("*.parquet")
        ]
        table = pq.ParquetDataset(files, partitioning=None).read(columns=["user_id", "item_id", "event_type"])
        return table.filter(pc.is_in(table["event_type"], pa.array(POSITIVE_TYPES))).select(["user_id", "item_id"])

    pairs = positives(result["train_days"]).group_by(["user_id", "item_id"]).aggregate([([], "count_all")])
    pairs = pairs.append_column("weight", pc.cast(pairs["count_all"], pa.float32())).drop_columns(["count_all"])
    held_out = positives([result["day"]]).group_by(["user_id", "item_id"]).aggregate([])
    return snapshot_tables.index_split(pairs, held_out)


def _path(monkeypatch, collect: int):
    """The configuration with ``training.snapshot_collect_max_pairs`` = ``collect`` (0: the Spark build)."""
    from jobs.core.config import get_config

    monkeypatch.setenv("RECSYS__TRAINING__SNAPSHOT_COLLECT_MAX_PAIRS", str(collect))
    return get_config()


def test_spark_tables_equal_the_reference_split_byte_for_byte(cfg, spark, monkeypatch):
    """Spark's indices, split and files equal ``index_split``'s: rows, schemas, and (one part per
    table on this world) the very bytes the driver-side build wrote; manifest counts agree. The
    build of a small window in the job's process (``snapshot_collect_max_pairs``) writes the
    same files."""
    _curate(cfg, spark, 4)
    collected = build_snapshot(_path(monkeypatch, 10**6), spark, START + timedelta(days=3), window_days=3)
    folder = storage.local_path(collected["uri"])
    collected_files = {p.name: p.read_bytes() for p in folder.glob("*.parquet")}
    result = build_snapshot(_path(monkeypatch, 0), spark, START + timedelta(days=3), window_days=3)
    assert {p.name: p.read_bytes() for p in folder.glob("*.parquet")} == collected_files
    assert result["content_hash"] == collected["content_hash"] and result["files"] == collected["files"]
    expected = _reference_tables(cfg, result)
    manifest = storage.read_manifest(result["uri"])
    folder = storage.local_path(result["uri"])
    for name in TABLES:
        got = snapshot_table(result["uri"], name)
        assert got.schema == expected[name].schema, name
        assert got.equals(expected[name]), name
        assert (folder / f"{name}-00000.parquet").read_bytes() == snapshot_tables.encode(expected[name]), name
    assert manifest["files"] == sorted([*(f"{n}-00000.parquet" for n in TABLES), "reference_stats.json"])
    assert (manifest["n_users"], manifest["n_items"]) == (expected["users"].num_rows, expected["items"].num_rows)
    assert (manifest["train_rows"], manifest["test_rows"]) == (expected["train"].num_rows, expected["test"].num_rows)
    assert manifest["test_users"] == len(set(expected["test"]["user_idx"].to_pylist())) > 0
    assert load_snapshot(result["uri"]).n_users == manifest["n_users"]


def test_tables_cut_into_parts_read_back_as_the_reference(cfg, spark, monkeypatch):
    """With parts of a few hundred rows (tens of files, some test parts empty) and the ids in
    several range partitions (no coalescing of small partitions), every part is the reference
    table's range of its leading index, and two builds give the same content hash: Spark's, and
    the one in the job's process (``snapshot_collect_max_pairs``)."""
    import numpy as np

    from jobs.snapshot.split import _ranged

    monkeypatch.setattr(snapshot_tables, "ROWS_PER_FILE", 300)
    _curate(cfg, spark, 3)
    coalesce = "spark.sql.adaptive.coalescePartitions.enabled"
    before = spark.conf.get(coalesce)
    spark.conf.set(coalesce, "false")
    try:
        assert _ranged(spark.range(0, 1000).withColumnRenamed("id", "u"), "u").select("_pid").distinct().count() > 1
        first = build_snapshot(_path(monkeypatch, 0), spark, START + timedelta(days=2), window_days=2)
        again = build_snapshot(_path(monkeypatch, 10**6), spark, START + timedelta(days=2), window_days=2)
    finally:
        spark.conf.set(coalesce, before)
    expected = _reference_tables(cfg, first)
    manifest = storage.read_manifest(first["uri"])
    parts = snapshot_tables.layout(first["n_users"], first["n_items"], first["train_rows"], 2)
    assert parts["train"] > 3 and parts["users"] == 1 and sum(parts.values()) + 1 == len(manifest["files"])
    folder = storage.local_path(first["uri"])
    for name in TABLES:
        assert snapshot_table(first["uri"], name).equals(expected[name]), name
        lead, n = ("item_idx", first["n_items"]) if name == "items" else ("user_idx", first["n_users"])
        of = snapshot_tables.part_of(expected[name][lead].to_numpy(), parts[name], n)
        for k in range(parts[name]):
            part = pq.read_table(folder / f"{name}-{k:05d}.parquet")
            assert part.equals(expected[name].filter(pa.array(of == k))), (name, k)
    data = load_snapshot(first["uri"])
    assert np.array_equal(data.users, expected["train"]["user_idx"].to_numpy())
    assert again["content_hash"] == first["content_hash"] and again["files"] == first["files"]


def test_unvalidated_evaluation_day_is_refused(cfg, spark):
    _curate(cfg, spark, 2, skip_validation=(1,))
    with pytest.raises(SnapshotError, match="dt=2026-01-02 is not a validated curated partition"):
        build_snapshot(cfg, spark, START + timedelta(days=1), window_days=1)
    with pytest.raises(SnapshotError, match="no validated curated day in the window"):
        build_snapshot(cfg, spark, START, window_days=3)
