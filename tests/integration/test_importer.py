"""Real logs: ML-100K through the importer, then through the real ingest job, and the cluster shape.

ML-100K is fetched once by ``jobs.importer.datasets.ml100k`` (RecBole's wheel, cached under
``.local/datasets``); the per-day counts are checked against the file counted here on its own.
"""

from __future__ import annotations

import uuid
from collections import Counter
from datetime import UTC, date, datetime

import boto3
import pyarrow.parquet as pq
import pytest

from jobs.core import catalog, storage
from jobs.importer import datasets
from jobs.importer.landing import FILE_NAME, import_ratings

pytestmark = pytest.mark.integration

BUCKET = "recsys-test"
# The first day, one of ML-100K's two quiet days (an empty landing file) and the day after it.
INGESTED = (date(1997, 9, 20), date(1997, 12, 11), date(1997, 12, 12))


@pytest.fixture(scope="module")
def ml100k():
    return datasets.ml100k()  # the package index is reachable here and on CI: no skip


def counted_days(path) -> Counter:
    """Ratings per UTC day, counted from the file with the standard library only."""
    lines = path.read_text().splitlines()[1:]
    return Counter(
        datetime.fromtimestamp(int(float(line.split("\t")[3])), UTC).date().isoformat() for line in lines if line
    )


def test_ml100k_lands_day_by_day_and_ingests_with_null_context(cfg, spark, ml100k):
    from jobs.ingest.job import ingest_day
    from jobs.validate.job import validate_day

    out = import_ratings(ml100k, cfg.storage.zone("landing"))
    expected = counted_days(ml100k)
    assert out["rows"] == out["source_rows"] == sum(expected.values()) == datasets.ML100K_ROWS
    assert {d: n for d, n in out["rows_per_day"].items() if n} == dict(expected)
    assert out["empty_days"] == ["1997-12-11", "1997-12-16"] and out["days"] == 215
    assert storage.published_days(cfg.storage.zone("landing"))[0] == "1997-09-20"
    for day in INGESTED:
        result = ingest_day(cfg, spark, day)
        assert result["input_rows"] == expected[day.isoformat()]
        assert result["rows"] + result["quarantined"] + result["duplicates_removed"] == result["input_rows"]
        assert result["quarantined"] == result["duplicates_removed"] == 0
        files = catalog.files_of(cfg, "curated", [day.isoformat()])
        table = pq.ParquetDataset(files, partitioning=None).read()
        assert table.num_rows == expected[day.isoformat()]
        assert table.column("device").null_count == table.column("country").null_count == table.num_rows
        assert set(table.column("event_type").to_pylist()) <= {"rating"}
    verdict = validate_day(cfg, INGESTED[0])  # the GX suite on a day without device/country
    assert not [f for f in verdict["failures"] if "device" in f or "country" in f], verdict["failures"]


def test_importer_on_the_object_store_writes_the_same_days_as_locally(s3_server, tmp_path, ml100k):
    first, last = date(1997, 12, 10), date(1997, 12, 11)  # a day with ratings, a quiet one
    local = import_ratings(ml100k, str(tmp_path / "landing"), first=first, last=last)
    prefix = f"runs/{uuid.uuid4().hex[:10]}/landing/events"
    remote = import_ratings(ml100k, f"s3://{BUCKET}/{prefix}", first=first, last=last)
    assert remote["rows_per_day"] == local["rows_per_day"] and remote["days_written"] == 2
    pages = boto3.client("s3").get_paginator("list_objects_v2").paginate(Bucket=BUCKET, Prefix=prefix)
    keys = sorted(o["Key"][len(prefix) + 1 :] for page in pages for o in page.get("Contents", []))
    days = [f"dt={d}/{n}" for d in ("1997-12-10", "1997-12-11") for n in ("_SUCCESS", FILE_NAME)]
    assert keys == sorted([*days, "_imports/" + remote["manifest_uri"].rsplit("/", 1)[-1]])
    for day in ("1997-12-10", "1997-12-11"):
        assert (
            storage.read_bytes(f"s3://{BUCKET}/{prefix}/dt={day}/{FILE_NAME}")
            == (tmp_path / "landing" / f"dt={day}" / FILE_NAME).read_bytes()
        )
    assert storage.published_days(f"s3://{BUCKET}/{prefix}") == ["1997-12-10", "1997-12-11"]
    assert import_ratings(ml100k, f"s3://{BUCKET}/{prefix}", first=first, last=last)["days_written"] == 0
