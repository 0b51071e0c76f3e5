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

    # Three projections, each expression computed once per row: trimmed text (``_s_*``), typed
    # values (``_v_*``), then the rules over those columns. Written as one projection, Spark
    # re-evaluated the trims and casts inside every rule (no common-subexpression elimination
    # inside CASE WHEN branches), and ``reasons`` once more for each raw column below.
    keep = [*LANDING_COLUMNS, "_corrupt_record", "source_file"]
    trim = raw.select(*keep, *[trimmed(c).alias(f"_s_{c}") for c in LANDING_COLUMNS])
    s = {c: F.col(f"_s_{c}") for c in LANDING_COLUMNS}
    typed = trim.select(
        *keep,
        *s.values(),
        s["user_id"].try_cast("bigint").alias("_v_user_id"),
        s["item_id"].try_cast("bigint").alias("_v_item_id"),
        s["ts"].try_cast("timestamp").alias("_v_ts"),
        s["watch_seconds"].try_cast("double").alias("_v_watch"),
        s["rating"].try_cast("double").alias("_v_rating"),
        F.lower(s["event_type"]).alias("_v_event_type"),
        F.lower(s["device"]).alias("_v_device"),
        F.upper(s["country"]).alias("_v_country"),
    )
    malformed = F.col("_corrupt_record").isNotNull()
    user_id, item_id, ts = F.col("_v_user_id"), F.col("_v_item_id"), F.col("_v_ts")
    watch, rating_d = F.col("_v_watch"), F.col("_v_rating")
    event_type, device, country = F.col("_v_event_type"), F.col("_v_device"), F.col("_v_country")
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
    # concat_ws skips nulls: the failed rules' reasons, "; "-separated, "" when none failed
    # (the same string as array_join(array_compact(array(...))) without an array per row).
    reasons = F.when(malformed, F.lit("malformed line")).otherwise(F.concat_ws("; ", *checks))
    judged = typed.select("*", reasons.alias("reasons"))
    rejected = F.col("reasons") != ""
    return judged.select(
        s["event_id"].alias("event_id"),
        user_id.alias("user_id"),
        item_id.alias("item_id"),
        event_type.alias("event_type"),
        ts.alias("ts"),
        watch.alias("watch_seconds"),
        rating_d.cast("int").alias("rating"),
        device.alias("device"),
        country.alias("country"),
        F.col("reasons"),
        # The raw text is kept for rejected rows only (the quarantine's evidence): null for the
        # valid ones, it costs nothing in the cached frame — at 10M rows the raw copies of every
        # field doubled the cache, and reading evicted blocks back ran a 2 GiB driver out of heap.
        *[F.when(rejected, F.col(c)).alias(f"raw_{c}") for c in LANDING_COLUMNS],
        F.when(rejected, F.col("_corrupt_record")).alias("raw_line"),
        F.when(rejected, F.col("source_file")).alias("source_file"),  # quarantine evidence only
    )


DEDUP_ORDER = ("ts", "user_id", "item_id", "event_type", "watch_seconds", "rating", "device", "country")


def _dedup_sorted(table):
    """Dedup a table sorted by ``(event_id, *DEDUP_ORDER)``: first row per id, plus counts.

    Returns ``(kept, removed, conflicts)``: the first (smallest) row of each id, how many rows
    were dropped as copies, and how many ids had copies whose content differs.
    """
    import numpy as np
    import pyarrow as pa
    import pyarrow.compute as pc

    n = table.num_rows
    if n < 2:
        return table, 0, 0

    def same_as_previous(column) -> np.ndarray:
        col = column.combine_chunks() if isinstance(column, pa.ChunkedArray) else column
        a, b = col.slice(1), col.slice(0, n - 1)
        eq = pc.fill_null(pc.equal(a, b), False)
        both_null = pc.and_(pc.is_null(a), pc.is_null(b))
        return np.asarray(pc.or_(eq, both_null), dtype=bool)

    same_id = same_as_previous(table.column("event_id"))
    keep = np.concatenate([[True], ~same_id])
    removed = int(n - keep.sum())
    conflicts = 0
    if removed:
        same_content = np.ones(n - 1, dtype=bool)
        for name in DEDUP_ORDER:
            same_content &= same_as_previous(table.column(name))
        new_variant = same_id & ~same_content  # a copy that differs from the copy before it
        if new_variant.any():
            ids = table.column("event_id").combine_chunks().slice(1).filter(pa.array(new_variant))
            conflicts = len(pc.unique(ids))
    return table.filter(pa.array(keep)), removed, conflicts


def _write_sorted(
    df: DataFrame, staging: Path, rows: int, sort_cols: list[str], dedup: bool = False
) -> tuple[list[str], dict[str, Any]]:
    """Write Parquet with deterministic names, row order and bytes; returns (file names, stats).

    Spark's own Parquet writer (parquet-mr) lists column encodings in a Java HashSet order that
    changes from one JVM to the next, so identical data gives different bytes. Instead each
    executor writes its sorted partition with pyarrow (``mapInArrow``): same rows, same bytes,
    on a laptop or a cluster (pyarrow's filesystems cover local paths and S3).

    With ``dedup`` the rows are hash-partitioned by ``event_id`` and sorted by
    ``(event_id, *DEDUP_ORDER)``, so each executor drops the copies of an id in the same pass
    that writes (one shuffle for dedup and write). ``stats`` then holds rows, removed copies,
    conflicting ids, and distinct users/items.
    """
    n_files = max(1, -(-rows // ROWS_PER_FILE))
    target = str(staging)
    arrow_schema = _arrow_schema(df.schema)
    order = ["event_id", *DEDUP_ORDER] if dedup else sort_cols

    def write_partition(batches):
        import pyarrow as pa
        import pyarrow.compute as pc
        import pyarrow.parquet as pq
        from pyspark import TaskContext

        part = TaskContext.get().partitionId()
        name = f"{target}/.part-{part:05d}.parquet"
        batches = [b for b in batches if b.num_rows]
        if not batches:
            return
        table = pa.Table.from_batches(batches).cast(arrow_schema)
        removed = conflicts = 0
        if dedup:
            table, removed, conflicts = _dedup_sorted(table)
            users = pc.unique(table.column("user_id")).cast(pa.int64())
            items = pc.unique(table.column("item_id")).cast(pa.int64())
        else:
            users = items = pa.array([], pa.int64())
        pq.write_table(table, name, compression="snappy", write_statistics=True, row_group_size=1024 * 1024)
        yield pa.RecordBatch.from_arrays(
            [
                pa.array([part], pa.int32()),
                pa.array([table.num_rows], pa.int64()),
                pa.array([removed], pa.int64()),
                pa.array([conflicts], pa.int64()),
                pa.array([users.to_pylist()], pa.list_(pa.int64())),
                pa.array([items.to_pylist()], pa.list_(pa.int64())),
            ],
            names=["part", "rows", "removed", "conflicts", "users", "items"],
        )

    written = (
        df.repartition(n_files, "event_id")
        .sortWithinPartitions(*order)
        .mapInArrow(
            write_partition,
            "part int, rows long, removed long, conflicts long, users array<long>, items array<long>",
        )
        .collect()
    )
    names = []
    users: set[int] = set()
    items: set[int] = set()
    for idx, row in enumerate(sorted(written, key=lambda r: r["part"])):
        name = f"part-{idx:05d}.parquet"
        (staging / f".part-{row['part']:05d}.parquet").rename(staging / name)
        names.append(name)
        users.update(row["users"])
        items.update(row["items"])
    stats = {
        "rows": sum(r["rows"] for r in written),
        "removed": sum(r["removed"] for r in written),
        "conflicts": sum(r["conflicts"] for r in written),
        "users": len(users),
        "items": len(items),
    }
    return names, stats


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
    # Both zones writable before any work: a read-only curated zone must not leave the day's
    # quarantine published without its curated partition.
    storage.check_writable(curated_day, quarantine_day)
    files = [str(p) for p in landing_files(landing_day, fmt)]
    input_bytes = sum(Path(f).stat().st_size for f in files)
    if input_bytes:
        check_columns(spark, files, fmt)
    stages: dict[str, float] = {}
    mark = [started]

    def stage(name: str) -> None:  # wall seconds per step, in the result (never in the manifest)
        now = time.perf_counter()
        stages[name] = round(now - mark[0], 3)
        mark[0] = now

    stage("list files and check columns")
    parsed = parse(read_landing(spark, files, fmt), day).persist(StorageLevel.MEMORY_AND_DISK)
    try:
        # One pass counts everything: rows per distinct reason list (a handful of groups).
        by_reasons = parsed.groupBy("reasons").count().collect() if input_bytes else []
        stage("read, parse, rules and count")
        input_rows = sum(int(r["count"]) for r in by_reasons)
        reason_counts: dict[str, int] = {}
        quarantined = 0
        for r in by_reasons:
            if r["reasons"]:
                quarantined += int(r["count"])
                for reason in r["reasons"].split("; "):
                    reason_counts[reason] = reason_counts.get(reason, 0) + int(r["count"])
        reason_counts = dict(sorted(reason_counts.items()))
        with storage.staged_partition(quarantine_day) as staging:
            q_files: list[str] = []
            if quarantined:
                q_cols = ["reasons", "source_file", "raw_line", *[f"raw_{c}" for c in LANDING_COLUMNS]]
                q_files, _ = _write_sorted(
                    parsed.filter(F.col("reasons") != "").select(*q_cols).withColumnRenamed("raw_event_id", "event_id"),
                    staging,
                    quarantined,
                    ["source_file", "event_id", "raw_line"],
                )
            storage.publish(
                staging,
                quarantine_day,
                {"day": day.isoformat(), "rows": quarantined, "reasons": reason_counts, "files": q_files},
            )
        stage("quarantine written")
        valid_rows = input_rows - quarantined
        if valid_rows == 0:
            why = (
                "all landing files are empty"
                if input_rows == 0
                else f"all {input_rows} rows were rejected: {reason_counts}"
            )
            raise IngestError(f"dt={day.isoformat()}: no valid rows ({why}); curated data left unchanged")
        typed = parsed.filter(F.col("reasons") == "").select(
            *[F.col(f.name).cast(f.dataType).alias(f.name) for f in curated_schema().fields]
        )
        with storage.staged_partition(curated_day) as staging:
            files_out, stats = _write_sorted(typed, staging, valid_rows, ["event_id"], dedup=True)
            stage("dedup, sort and curated write")
            rows = stats["rows"]
            manifest = {
                "day": day.isoformat(),
                "rows": rows,
                "input_rows": input_rows,
                "quarantined": quarantined,
                "duplicates_removed": stats["removed"],
                "conflicting_duplicates": stats["conflicts"],
                "users": stats["users"],
                "items": stats["items"],
                "input_files": [Path(f).name for f in files],
                "input_bytes": input_bytes,
                "files": files_out,
                "schema": [f"{f.name}:{f.dataType.simpleString()}" for f in curated_schema().fields],
            }
            storage.publish(staging, curated_day, manifest)
    finally:
        parsed.unpersist()
    return {
        **manifest,
        "reasons": reason_counts,
        "quarantine_share": quarantined / input_rows if input_rows else 0.0,
        "curated_uri": curated_day,
        "quarantine_uri": quarantine_day,
        "stages": stages,
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
