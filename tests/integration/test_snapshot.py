"""Training snapshot: time-based split of validated curated days (real Spark)."""

from __future__ import annotations

from datetime import date, timedelta

import pyarrow.parquet as pq
import pytest

from jobs import sim as gen
from jobs.core import storage
from jobs.ingest.job import ingest_day
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
    folder = storage.local_path(result["uri"])
    assert result["train_days"] == ["2026-01-01", "2026-01-03"]
    assert result["skipped_days"] == ["2026-01-02"]
    train = pq.read_table(folder / "train.parquet").to_pandas()
    test = pq.read_table(folder / "test.parquet").to_pandas()
    users = pq.read_table(folder / "users.parquet").to_pandas()
    items = pq.read_table(folder / "items.parquet").to_pandas()
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
    build_snapshot(cfg, spark, START + timedelta(days=2), window_days=2)
    after = {p.name: p.read_bytes() for p in storage.local_path(first["uri"]).glob("*.parquet")}
    assert before == after


def test_unvalidated_evaluation_day_is_refused(cfg, spark):
    _curate(cfg, spark, 2, skip_validation=(1,))
    with pytest.raises(SnapshotError, match="dt=2026-01-02 is not a validated curated partition"):
        build_snapshot(cfg, spark, START + timedelta(days=1), window_days=1)
    with pytest.raises(SnapshotError, match="no validated curated day in the window"):
        build_snapshot(cfg, spark, START, window_days=3)
