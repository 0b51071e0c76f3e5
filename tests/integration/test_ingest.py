"""The Spark ingestion job on generated data, through the real Spark (one shared session)."""

from __future__ import annotations

import hashlib
import json
import shutil
from datetime import date
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from jobs import sim as gen
from jobs.core import storage
from jobs.ingest.job import IngestError, ingest_day

pytestmark = pytest.mark.integration

DAY1, DAY2, DAY3 = date(2026, 1, 1), date(2026, 1, 2), date(2026, 1, 3)


def make_world(cfg, days=2, start=DAY1, scenarios=(), events=3000, fmt="jsonl") -> list[dict]:
    params = gen.WorldParams(
        users=300, items=120, factors=4, seed=11, events_per_day=events, scenarios=tuple(scenarios)
    )
    return gen.generate(params, start, days, cfg.storage.zone("landing"), cfg.storage.zone("ground_truth"), fmt)


def checksums(folder: str) -> dict[str, str]:
    root = storage.local_path(folder)
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(root.glob("*.parquet"))}


def read_day(cfg, zone: str, day: date):
    part = storage.local_path(cfg.storage.partition(zone, day))
    return pq.ParquetDataset(sorted(str(p) for p in part.glob("*.parquet")), partitioning=None).read()


def test_clean_day_is_typed_deduplicated_and_published(cfg, spark):
    manifests = make_world(cfg)
    result = ingest_day(cfg, spark, DAY1)
    m = manifests[0]
    assert result["input_rows"] == m["clean_rows"]
    assert result["quarantined"] == 0
    assert result["duplicates_removed"] == m["duplicates"] > 0
    assert result["rows"] == m["clean_rows"] - m["duplicates"]
    table = read_day(cfg, "curated", DAY1)
    assert table.num_rows == result["rows"]
    assert table.column_names == list(gen.COLUMNS)
    assert str(table.schema.field("ts").type) == "timestamp[us, tz=UTC]"
    assert str(table.schema.field("user_id").type) == "int64"
    ids = table.column("event_id").to_pylist()
    assert len(set(ids)) == len(ids) and ids == sorted(ids)
    published = storage.read_manifest(cfg.storage.partition("curated", DAY1))
    assert published["rows"] == result["rows"]
    leftovers = [p.name for p in storage.local_path(cfg.storage.zone("curated")).iterdir() if p.name.startswith(".")]
    assert leftovers == []


def test_rerun_is_byte_identical_and_touches_no_other_day(cfg, spark):
    make_world(cfg)
    ingest_day(cfg, spark, DAY1)
    ingest_day(cfg, spark, DAY2)
    day1 = checksums(cfg.storage.partition("curated", DAY1))
    day2_marker = storage.local_path(cfg.storage.partition("curated", DAY2)) / storage.SUCCESS
    day2_mtime = day2_marker.stat().st_mtime_ns
    ingest_day(cfg, spark, DAY1)
    assert checksums(cfg.storage.partition("curated", DAY1)) == day1
    assert day2_marker.stat().st_mtime_ns == day2_mtime


def test_csv_landing_gives_the_same_curated_rows(cfg, spark, monkeypatch):
    make_world(cfg, days=1)
    ingest_day(cfg, spark, DAY1)
    jsonl_rows = read_day(cfg, "curated", DAY1).sort_by("event_id")
    shutil.rmtree(storage.local_path(cfg.storage.zone("landing")))
    monkeypatch.setenv("RECSYS__INGEST__LANDING_FORMAT", "csv")
    from jobs.core.config import get_config

    csv_cfg = get_config()
    make_world(csv_cfg, days=1, fmt="csv")
    ingest_day(csv_cfg, spark, DAY1)
    assert read_day(csv_cfg, "curated", DAY1).sort_by("event_id").equals(jsonl_rows)


def test_gzip_landing_gives_the_same_curated_and_quarantine_bytes(cfg, spark, tmp_path):
    import gzip

    manifests = make_world(cfg, days=1, scenarios=[gen.Scenario("malformed_lines", DAY1, 0.02)])
    plain = ingest_day(cfg, spark, DAY1)
    curated = checksums(cfg.storage.partition("curated", DAY1))
    quarantine = read_day(cfg, "quarantine", DAY1)
    landing = storage.local_path(cfg.storage.zone("landing")) / f"dt={DAY1}"
    packed = tmp_path / "landing-gz" / f"dt={DAY1}"
    packed.mkdir(parents=True)
    for f in landing.iterdir():
        target = packed / (f.name + ".gz" if f.suffix == ".jsonl" else f.name)
        target.write_bytes(gzip.compress(f.read_bytes()) if f.suffix == ".jsonl" else f.read_bytes())
    assert [p.name for p in packed.glob("*.jsonl")] == []
    result = ingest_day(cfg, spark, DAY1, landing_root=str(packed.parent))
    assert checksums(cfg.storage.partition("curated", DAY1)) == curated
    # The quarantine holds the same rows; their source_file names the compressed file.
    got = read_day(cfg, "quarantine", DAY1)
    assert got.drop(["source_file"]).equals(quarantine.drop(["source_file"]))
    assert {Path(f).name for f in got.column("source_file").to_pylist()} == {
        Path(f).name + ".gz" for f in quarantine.column("source_file").to_pylist()
    }
    for key in ("rows", "input_rows", "quarantined", "duplicates_removed", "reasons"):
        assert result[key] == plain[key], key
    assert result["quarantined"] >= manifests[0]["corruptions"]["malformed_lines"] > 0


@pytest.mark.parametrize(
    ("kind", "reason"),
    [
        ("malformed_lines", "malformed line"),
        ("future_timestamps", "ts: outside the logical day"),
        ("unknown_event_type", "event_type: unknown value"),
    ],
)
def test_row_corruptions_are_quarantined_with_their_reason(cfg, spark, kind, reason):
    manifests = make_world(cfg, days=1, scenarios=[gen.Scenario(kind, DAY1, 0.04)])
    affected = manifests[0]["corruptions"][kind]
    result = ingest_day(cfg, spark, DAY1)
    assert affected > 0
    assert result["reasons"] == {reason: result["quarantined"]}
    # A corrupted row that was also redelivered is quarantined twice (both copies are kept).
    assert affected <= result["quarantined"] <= affected + manifests[0]["duplicates"]
    quarantine = read_day(cfg, "quarantine", DAY1)
    assert quarantine.num_rows == result["quarantined"]
    assert set(quarantine.column("reasons").to_pylist()) == {reason}
    assert result["rows"] + result["quarantined"] + result["duplicates_removed"] == result["input_rows"]


def test_nulls_and_wrong_types_name_the_field(cfg, spark):
    manifests = make_world(
        cfg, days=2, scenarios=[gen.Scenario("null_required", DAY1, 0.05), gen.Scenario("wrong_types", DAY2, 0.05)]
    )
    nulls = ingest_day(cfg, spark, DAY1)
    assert nulls["quarantined"] >= manifests[0]["corruptions"]["null_required"] > 0
    assert set(nulls["reasons"]) <= {
        "event_id: missing",
        "user_id: missing",
        "item_id: missing",
        "event_type: missing",
        "ts: missing",
    }
    assert len(nulls["reasons"]) == 5
    wrong = ingest_day(cfg, spark, DAY2)
    assert set(wrong["reasons"]) == {"user_id: not an integer", "watch_seconds: not a number"}
    sample = read_day(cfg, "quarantine", DAY2).to_pylist()[0]
    assert sample["raw_user_id"].startswith("user-") or sample["raw_watch_seconds"] == "n/a"


@pytest.mark.parametrize(
    ("kind", "message"),
    [
        ("renamed_column", "lacks required column(s) user_id; unexpected column(s) userId"),
        ("missing_day", "no landing folder for this day"),
    ],
)
def test_unusable_days_fail_clearly_and_leave_curated_untouched(cfg, spark, kind, message):
    make_world(cfg, days=2)
    ingest_day(cfg, spark, DAY1)
    ingest_day(cfg, spark, DAY2)
    before = {d: checksums(cfg.storage.partition("curated", d)) for d in (DAY1, DAY2)}
    make_world(cfg, days=1, start=DAY2, scenarios=[gen.Scenario(kind, DAY2)])
    with pytest.raises(IngestError, match=message.replace("(", r"\(").replace(")", r"\)")):
        ingest_day(cfg, spark, DAY2)
    assert {d: checksums(cfg.storage.partition("curated", d)) for d in (DAY1, DAY2)} == before


def test_a_day_without_an_optional_context_column_ingests_with_it_null(cfg, spark):
    manifests = make_world(cfg, days=1, scenarios=[gen.Scenario("dropped_column", DAY1)])  # drops device
    result = ingest_day(cfg, spark, DAY1)
    assert result["quarantined"] == 0
    assert result["rows"] == manifests[0]["clean_rows"] - manifests[0]["duplicates"]
    table = read_day(cfg, "curated", DAY1)
    assert table.column("device").null_count == table.num_rows
    assert table.column("country").null_count == 0


def test_day_of_entirely_malformed_lines_keeps_every_line_in_quarantine(cfg, spark):
    manifests = make_world(cfg, days=1, scenarios=[gen.Scenario("malformed_lines", DAY1, 1.0)])
    with pytest.raises(IngestError, match=r"no valid rows \(all \d+ rows were rejected"):
        ingest_day(cfg, spark, DAY1)
    assert storage.read_manifest(cfg.storage.partition("curated", DAY1)) is None
    q = storage.read_manifest(cfg.storage.partition("quarantine", DAY1))
    assert q["rows"] == manifests[0]["rows_written"] == manifests[0]["corruptions"]["malformed_lines"]


def test_empty_file_beside_data_changes_nothing(cfg, spark):
    manifests = make_world(cfg, days=1, scenarios=[gen.Scenario("empty_file", DAY1)])
    assert len(manifests[0]["files"]) == 2
    result = ingest_day(cfg, spark, DAY1)
    assert result["quarantined"] == 0
    assert result["rows"] == manifests[0]["clean_rows"] - manifests[0]["duplicates"]


def test_day_without_events_is_an_empty_partition_judged_by_the_source_policy(cfg, spark):
    """A quiet day (files empty, or only blank lines) publishes zero rows in the curated schema;
    validation refuses it under the live stream's policy and passes it for a sparse source."""
    from jobs.core.schema import curated_schema
    from jobs.validate.job import validate_day

    make_world(cfg, days=2)
    ingest_day(cfg, spark, DAY1)
    make_world(cfg, days=1, start=DAY2, scenarios=[gen.Scenario("empty_day", DAY2)])
    result = ingest_day(cfg, spark, DAY2)
    assert (result["rows"], result["input_rows"], result["quarantined"], result["users"]) == (0, 0, 0, 0)
    manifest = storage.read_manifest(cfg.storage.partition("curated", DAY2))
    assert manifest["rows"] == 0 and manifest["files"] == ["part-00000.parquet"]
    table = read_day(cfg, "curated", DAY2)
    assert table.num_rows == 0 and table.schema.equals(curated_schema())
    refused = validate_day(cfg, DAY2)
    assert not refused["success"] and "empty day: refused" in " ".join(refused["failures"])
    sparse = cfg.model_copy(update={"ingest": cfg.ingest.model_copy(update={"empty_day": "pass"})})
    assert validate_day(sparse, DAY2)["success"]
    blank = Path(storage.local_path(cfg.storage.partition("landing", DAY2))) / "part-00000.jsonl"
    blank.write_text("\n  \n\n")
    assert ingest_day(cfg, spark, DAY2)["rows"] == 0


def test_unwritable_output_zone_fails_naming_the_path(cfg, spark):
    """The curated zone's parent is a plain file (works as root too, unlike chmod)."""
    make_world(cfg, days=1)
    blocker = storage.local_path(cfg.storage.zone("curated")).parent
    blocker.parent.mkdir(parents=True, exist_ok=True)
    blocker.write_text("not a folder")
    with pytest.raises(storage.PublishError, match=str(blocker)):
        ingest_day(cfg, spark, DAY1)
    assert blocker.read_text() == "not a folder"


def test_result_manifest_is_json_serialisable(cfg, spark):
    make_world(cfg, days=1)
    json.dumps(ingest_day(cfg, spark, DAY1))
    assert Path(cfg.storage.partition("curated", DAY1)).is_dir()
