"""Spark ingestion of one landing day into curated Parquet.

``python -m jobs.ingest --date YYYY-MM-DD`` (or under ``spark-submit`` on a cluster).

Steps
  1. **Schema check** before any row is read in full: the landing files must carry every
     required column. A renamed or dropped column fails the job at once, naming the missing
     and unexpected columns; nothing is written.
  2. **Read with an explicit schema**: every field as a string (so that a wrong type becomes
     a row-level reason, not a lost row), PERMISSIVE mode, the raw text of unparseable lines
     kept in ``_corrupt_record``.
  3. **Type and normalise**: ids to bigint, ``ts`` to a UTC timestamp, ``watch_seconds`` to
     double, ``rating`` to int, ``event_type``/``device`` lower-cased, ``country`` upper-cased.
  4. **Rules**: each row gets the list of rules it breaks (missing required field, value not of
     its type, unknown enum value, timestamp outside the logical day, value out of range).
     Rows breaking any rule go to ``quarantine/events/dt=D`` with the reasons, the source file
     and the raw line; nothing is dropped or repaired silently.
  5. **Deduplicate**: the event identity is ``event_id`` (the upstream's delivery id; a
     redelivered event repeats it). Among rows sharing an id the smallest
     ``(ts, user_id, item_id, event_type, ...)`` tuple is kept, so the result does not depend
     on file order; rows that share an id but differ in content are counted as conflicts.
  6. **Publish atomically** (``jobs.storage``): quarantine first, then curated, each staged in a
     hidden folder and renamed into place with a ``_SUCCESS`` manifest. Output files have
     deterministic names and row order, so a rerun of a day writes byte-identical files and
     replaces only that day.

A day with no valid row (all files empty, or every line rejected) publishes its quarantine and
fails without touching the curated zone. The result JSON (``--result-file``) holds the counts.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

from jobs import storage
from jobs.config import ConfigError, PipelineConfig, get_config
from jobs.generate import COLUMNS, DEVICES, EVENT_TYPES

if TYPE_CHECKING:
    from pyspark.sql import DataFrame, SparkSession

REQUIRED = ("event_id", "user_id", "item_id", "event_type", "ts", "device", "country")
OPTIONAL = ("watch_seconds", "rating")
# The landing contract is the generator's (it plays the upstream system).
LANDING_COLUMNS = COLUMNS
MAX_WATCH_SECONDS = 86_400.0
ROWS_PER_FILE = 2_000_000
CURATED_COLUMNS = LANDING_COLUMNS


class IngestError(RuntimeError):
    """The day cannot be ingested; the message names the day and the problem."""


def landing_schema(fmt: str):
    from pyspark.sql.types import StringType, StructField, StructType

    fields = [StructField(c, StringType(), True) for c in LANDING_COLUMNS]
    fields.append(StructField("_corrupt_record", StringType(), True))
    return StructType(fields)


def curated_schema():
    from pyspark.sql.types import DoubleType, IntegerType, LongType, StringType, StructField, StructType, TimestampType

    return StructType(
        [
            StructField("event_id", StringType(), False),
            StructField("user_id", LongType(), False),
            StructField("item_id", LongType(), False),
            StructField("event_type", StringType(), False),
            StructField("ts", TimestampType(), False),
            StructField("watch_seconds", DoubleType(), True),
            StructField("rating", IntegerType(), True),
            StructField("device", StringType(), False),
            StructField("country", StringType(), False),
        ]
    )


def landing_files(landing_day: str, fmt: str) -> list[Path]:
    folder = storage.local_path(landing_day)
    if not folder.is_dir():
        raise IngestError(f"no landing folder for this day: {landing_day}")
    files = sorted(p for p in folder.iterdir() if p.is_file() and p.suffix == f".{fmt}")
    if not files:
        raise IngestError(f"landing folder {landing_day} holds no *.{fmt} file")
    return files


def check_columns(spark: SparkSession, files: list[str], fmt: str, sample: int = 1000) -> None:
    """Fail when a required column is absent from the landing data (renamed/dropped)."""
    if fmt == "csv":
        seen: set[str] = set()
        for f in files:
            cols = spark.read.option("header", "true").csv(f).columns
            if cols:
                missing = [c for c in REQUIRED if c not in cols]
                if missing:
                    _raise_columns(f, missing, set(cols) - set(LANDING_COLUMNS))
                seen.update(cols)
        return
    lines = [r.value for r in spark.read.text(files).limit(sample).collect()]
    key_counts: dict[str, int] = {}
    parsed = 0
    for line in lines:
        try:
            obj = json.loads(line)
        except ValueError:
            continue
        if isinstance(obj, dict):
            parsed += 1
            for key in obj:
                key_counts[key] = key_counts.get(key, 0) + 1
    if parsed == 0:
        return
    missing = [c for c in REQUIRED if key_counts.get(c, 0) == 0]
    if missing:
        _raise_columns(
            files[0].rsplit("/", 2)[-2] if "/" in files[0] else files[0],
            missing,
            set(key_counts) - set(LANDING_COLUMNS),
        )


def _raise_columns(where: str, missing: list[str], unexpected: set[str]) -> None:
    hint = f"; unexpected column(s) {', '.join(sorted(unexpected))} (renamed?)" if unexpected else ""
    raise IngestError(f"landing data {where} lacks required column(s) {', '.join(missing)}{hint}")


def read_landing(spark: SparkSession, files: list[str], fmt: str) -> DataFrame:
    from pyspark.sql import functions as F

    reader = (
        spark.read.schema(landing_schema(fmt))
        .option("mode", "PERMISSIVE")
        .option("columnNameOfCorruptRecord", "_corrupt_record")
    )
    if fmt == "csv":
        df = reader.option("header", "true").option("enforceSchema", "false").csv(files)
    else:
        df = reader.json(files)
    return df.withColumn("source_file", F.col("_metadata.file_name"))


def parse(raw: DataFrame, day: date) -> DataFrame:
    """Typed, normalised columns plus ``reasons`` (empty string when the row is valid)."""
    from pyspark.sql import functions as F

    def trimmed(c: str):
        v = F.trim(F.col(c))
        return F.when(v == "", F.lit(None)).otherwise(v)

    malformed = F.col("_corrupt_record").isNotNull()
    s = {c: trimmed(c) for c in LANDING_COLUMNS}
    user_id = s["user_id"].try_cast("bigint")
    item_id = s["item_id"].try_cast("bigint")
    ts = s["ts"].try_cast("timestamp")
    watch = s["watch_seconds"].try_cast("double")
    rating_d = s["rating"].try_cast("double")
    event_type = F.lower(s["event_type"])
    device = F.lower(s["device"])
    country = F.upper(s["country"])
    day_start = F.lit(datetime(day.year, day.month, day.day)).cast("timestamp")
    day_end = F.lit(datetime.combine(day + timedelta(days=1), datetime.min.time())).cast("timestamp")

    def rule(cond, reason: str):
        return F.when(cond, F.lit(reason))

    checks = [
        rule(s["event_id"].isNull(), "event_id: missing"),
        rule(s["user_id"].isNull(), "user_id: missing"),
        rule(s["user_id"].isNotNull() & user_id.isNull(), "user_id: not an integer"),
        rule(user_id < 0, "user_id: negative"),
        rule(s["item_id"].isNull(), "item_id: missing"),
        rule(s["item_id"].isNotNull() & item_id.isNull(), "item_id: not an integer"),
        rule(item_id < 0, "item_id: negative"),
        rule(s["event_type"].isNull(), "event_type: missing"),
        rule(event_type.isNotNull() & ~event_type.isin(*EVENT_TYPES), "event_type: unknown value"),
        rule(s["ts"].isNull(), "ts: missing"),
        rule(s["ts"].isNotNull() & ts.isNull(), "ts: not a timestamp"),
        rule((ts < day_start) | (ts >= day_end), "ts: outside the logical day"),
        rule(s["watch_seconds"].isNotNull() & watch.isNull(), "watch_seconds: not a number"),
        rule((watch < 0) | (watch > MAX_WATCH_SECONDS) | F.isnan(watch), "watch_seconds: out of range"),
        rule((event_type == "play") & s["watch_seconds"].isNull(), "watch_seconds: missing for play"),
        rule(s["rating"].isNotNull() & rating_d.isNull(), "rating: not a number"),
        rule(
            rating_d.isNotNull() & ((rating_d < 1) | (rating_d > 5) | (rating_d != F.floor(rating_d))),
            "rating: not an integer 1-5",
        ),
        rule((event_type == "rating") & s["rating"].isNull(), "rating: missing for rating"),
        rule(s["device"].isNull(), "device: missing"),
        rule(device.isNotNull() & ~device.isin(*DEVICES), "device: unknown value"),
        rule(s["country"].isNull(), "country: missing"),
        rule(country.isNotNull() & ~country.rlike("^[A-Z]{2}$"), "country: not an ISO-3166 alpha-2 code"),
    ]
    reasons = F.when(malformed, F.lit("malformed line")).otherwise(
        F.array_join(F.array_compact(F.array(*checks)), "; ")
    )
    return raw.select(
        s["event_id"].alias("event_id"),
        user_id.alias("user_id"),
        item_id.alias("item_id"),
        event_type.alias("event_type"),
        ts.alias("ts"),
        watch.alias("watch_seconds"),
        rating_d.cast("int").alias("rating"),
        device.alias("device"),
        country.alias("country"),
        reasons.alias("reasons"),
        *[F.col(c).alias(f"raw_{c}") for c in LANDING_COLUMNS],
        F.col("_corrupt_record").alias("raw_line"),
        F.col("source_file"),
    )


def dedup(valid: DataFrame) -> DataFrame:
    """One row per ``event_id``: the smallest content tuple; adds ``variants`` (distinct contents)."""
    from pyspark.sql import functions as F

    content = [c for c in CURATED_COLUMNS if c != "event_id"]
    ordered = ["ts", "user_id", "item_id", "event_type", "watch_seconds", "rating", "device", "country"]
    assert sorted(ordered) == sorted(content)
    agg = valid.groupBy("event_id").agg(
        F.min(F.struct(*ordered)).alias("row"),
        F.count(F.lit(1)).alias("copies"),
        F.countDistinct(F.hash(*ordered)).alias("variants"),
    )
    return agg.select("event_id", *[F.col(f"row.{c}").alias(c) for c in ordered], "copies", "variants")


def _write_sorted(df: DataFrame, staging: Path, rows: int, sort_cols: list[str]) -> list[str]:
    """Write Parquet with deterministic names, row order and bytes; returns the file names.

    Spark's own Parquet writer (parquet-mr) lists column encodings in a Java HashSet order that
    changes from one JVM to the next, so identical data gives different bytes. Instead each
    executor writes its sorted partition with pyarrow (``mapInArrow``): same rows, same bytes,
    on a laptop or a cluster (pyarrow's filesystems cover local paths and S3).
    """
    n_files = max(1, -(-rows // ROWS_PER_FILE))
    target = str(staging)
    arrow_schema = _arrow_schema(df.schema)

    def write_partition(batches):
        import pyarrow as pa
        import pyarrow.parquet as pq
        from pyspark import TaskContext

        part = TaskContext.get().partitionId()
        name = f"{target}/.part-{part:05d}.parquet"
        writer = None
        count = 0
        for batch in batches:
            if batch.num_rows == 0:
                continue
            if writer is None:
                writer = pq.ParquetWriter(name, arrow_schema, compression="snappy", write_statistics=True)
            writer.write_table(pa.Table.from_batches([batch]).cast(arrow_schema))
            count += batch.num_rows
        if writer is not None:
            writer.close()
            yield pa.RecordBatch.from_arrays(
                [pa.array([part], pa.int32()), pa.array([count], pa.int64())], names=["part", "rows"]
            )

    written = (
        df.repartition(n_files, "event_id")
        .sortWithinPartitions(*sort_cols)
        .mapInArrow(write_partition, "part int, rows long")
        .collect()
    )
    names = []
    for idx, row in enumerate(sorted(written, key=lambda r: r["part"])):
        name = f"part-{idx:05d}.parquet"
        (staging / f".part-{row['part']:05d}.parquet").rename(staging / name)
        names.append(name)
    return names


def _arrow_schema(spark_schema):
    """The pyarrow schema for a Spark schema of flat columns (timestamps as UTC microseconds)."""
    import pyarrow as pa
    from pyspark.sql import types as T

    mapping = {
        T.StringType: pa.string(),
        T.LongType: pa.int64(),
        T.IntegerType: pa.int32(),
        T.DoubleType: pa.float64(),
        T.TimestampType: pa.timestamp("us", tz="UTC"),
    }
    return pa.schema([pa.field(f.name, mapping[type(f.dataType)], nullable=f.nullable) for f in spark_schema.fields])


def ingest_day(cfg: PipelineConfig, spark: SparkSession, day: date, landing_root: str | None = None) -> dict[str, Any]:
    """Ingest one day; returns the result dict. Raises IngestError with a clear message."""
    from pyspark import StorageLevel
    from pyspark.sql import functions as F

    started = time.perf_counter()
    fmt = cfg.ingest.landing_format
    landing_day = f"{landing_root or cfg.storage.zone('landing')}/dt={day.isoformat()}"
    curated_day = cfg.storage.partition("curated", day)
    quarantine_day = cfg.storage.partition("quarantine", day)
    files = [str(p) for p in landing_files(landing_day, fmt)]
    input_bytes = sum(Path(f).stat().st_size for f in files)
    if input_bytes:
        check_columns(spark, files, fmt)
    parsed = parse(read_landing(spark, files, fmt), day).persist(StorageLevel.MEMORY_AND_DISK)
    try:
        input_rows = parsed.count() if input_bytes else 0
        rejected = parsed.filter(F.col("reasons") != "")
        reason_counts = {
            r["reason"]: r["count"]
            for r in rejected.select(F.explode(F.split("reasons", "; ")).alias("reason"))
            .groupBy("reason")
            .count()
            .collect()
        }
        quarantined = int(rejected.count())
        with storage.staged_partition(quarantine_day) as staging:
            q_cols = ["reasons", "source_file", "raw_line", *[f"raw_{c}" for c in LANDING_COLUMNS]]
            q_files = _write_sorted(
                rejected.select(*q_cols).withColumnRenamed("raw_event_id", "event_id"),
                staging,
                max(quarantined, 1),
                ["source_file", "event_id", "raw_line"],
            )
            storage.publish(
                staging,
                quarantine_day,
                {"day": day.isoformat(), "rows": quarantined, "reasons": reason_counts, "files": q_files},
            )
        valid_rows = input_rows - quarantined
        if valid_rows == 0:
            why = (
                "all landing files are empty"
                if input_rows == 0
                else f"all {input_rows} rows were rejected: {reason_counts}"
            )
            raise IngestError(f"dt={day.isoformat()}: no valid rows ({why}); curated data left unchanged")
        deduped = dedup(parsed.filter(F.col("reasons") == "").select(*CURATED_COLUMNS)).persist(
            StorageLevel.MEMORY_AND_DISK
        )
        try:
            stats = deduped.agg(
                F.count(F.lit(1)).alias("rows"),
                F.sum(F.when(F.col("variants") > 1, 1).otherwise(0)).alias("conflicts"),
                F.countDistinct("user_id").alias("users"),
                F.countDistinct("item_id").alias("items"),
            ).first()
            rows = int(stats["rows"])
            typed = deduped.select(*[F.col(f.name).cast(f.dataType).alias(f.name) for f in curated_schema().fields])
            with storage.staged_partition(curated_day) as staging:
                files_out = _write_sorted(typed, staging, rows, ["event_id"])
                manifest = {
                    "day": day.isoformat(),
                    "rows": rows,
                    "input_rows": input_rows,
                    "quarantined": quarantined,
                    "duplicates_removed": valid_rows - rows,
                    "conflicting_duplicates": int(stats["conflicts"] or 0),
                    "users": int(stats["users"]),
                    "items": int(stats["items"]),
                    "input_files": [Path(f).name for f in files],
                    "input_bytes": input_bytes,
                    "files": files_out,
                    "schema": [f"{f.name}:{f.dataType.simpleString()}" for f in curated_schema().fields],
                }
                storage.publish(staging, curated_day, manifest)
        finally:
            deduped.unpersist()
    finally:
        parsed.unpersist()
    return {
        **manifest,
        "reasons": reason_counts,
        "quarantine_share": quarantined / input_rows if input_rows else 0.0,
        "curated_uri": curated_day,
        "quarantine_uri": quarantine_day,
        "seconds": round(time.perf_counter() - started, 3),
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m jobs.ingest", description=__doc__.split("\n\n")[0])
    ap.add_argument("--date", required=True, type=date.fromisoformat, help="logical day YYYY-MM-DD")
    ap.add_argument("--landing", help="landing zone root (default from config)")
    ap.add_argument("--master", help="Spark master override, e.g. local-cluster[2,1,1024]")
    ap.add_argument("--result-file", type=Path, help="write the result JSON here")
    args = ap.parse_args(argv)
    try:
        cfg = get_config()
    except ConfigError as exc:
        print(exc, file=sys.stderr)
        return 2
    from jobs.spark import get_spark

    spark = get_spark(cfg, "ingest", args.master or None)
    try:
        result = ingest_day(cfg, spark, args.date, args.landing)
        result["spark_master"] = spark.sparkContext.master
        # Block managers other than the driver's: the executors that took part.
        result["executors"] = max(spark.sparkContext._jsc.sc().getExecutorMemoryStatus().size() - 1, 0)
    except (IngestError, storage.PublishError) as exc:
        print(f"ingest failed: {exc}", file=sys.stderr)
        if args.result_file:
            storage.write_json_atomic(args.result_file, {"message": f"ingest failed: {exc}"})
        return 3
    finally:
        spark.stop()
    print(
        f"dt={result['day']}: {result['rows']} curated rows, {result['quarantined']} quarantined "
        f"({result['quarantine_share']:.2%}), {result['duplicates_removed']} duplicates removed in {result['seconds']}s"
    )
    if result["reasons"]:
        print("quarantine reasons: " + json.dumps(result["reasons"], sort_keys=True))
    if args.result_file:
        storage.write_json_atomic(args.result_file, result)
    print(json.dumps({"result": result}, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
