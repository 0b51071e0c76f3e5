"""Spark ingestion of one landing day into curated Parquet.

``python -m jobs.ingest --day YYYY-MM-DD``.

Spark distributes the work and moves the rows; every row-level step is an Arrow kernel in
Spark's Python workers. One Spark job, two stages:

**Stage 1, one task per ~32 MiB of landing data** (a byte range of a file, cut at line ends as
Hadoop's line reader does, so a 10M-event day keeps every core busy):

  1. **Read with an explicit schema** (no inference). JSON lines are parsed by pyarrow's reader
     against the typed landing contract; where a range does not fit it (a malformed line, a
     value of the wrong JSON type), that range is read line by line instead, every value kept
     as text, so that a wrong type becomes a row-level reason, not a lost row or a failed job.
     CSV is read as text columns; a row of the wrong shape is a malformed line.
  2. **Type and normalise**: ids to bigint, ``ts`` to a UTC timestamp, ``watch_seconds`` to
     double, ``rating`` to int, ``event_type``/``device`` lower-cased, ``country`` upper-cased,
     blank text as missing.
  3. **Rules**: each row gets the list of rules it breaks (missing required field, value not of
     its type, unknown enum value, timestamp outside the logical day, value out of range),
     ``"; "``-joined in a fixed order; ``malformed line`` when the line is not a JSON object.
  4. Valid rows are sent to the curated bucket ``hash(event_id) mod n`` (``n`` = output files,
     from the day's size); rejected rows, with the reasons, the source file and their raw
     text, to the quarantine bucket. The buckets travel through Spark's shuffle as Arrow IPC
     streams (a few large records per task instead of one per row).

**Stage 2, one task per bucket**:

  5. **Deduplicate**: the event identity is ``event_id`` (the upstream's delivery id; a
     redelivered event repeats it). The bucket is sorted by ``(event_id, ts, user_id, item_id,
     event_type, ...)`` (missing values first) and the first row of each id is kept, so the
     result does not depend on file order; ids whose copies differ in content are counted as
     conflicts. Then the bucket is written as one Parquet file (pyarrow, snappy).
  6. The quarantine bucket is sorted by all its columns and written the same way.

**Publish atomically** (``jobs.storage``): quarantine first, then curated, each staged in a
hidden folder and renamed into place with a ``_SUCCESS`` manifest. Output files have
deterministic names, row order and bytes (pyarrow, not Spark's parquet-mr writer, whose column
encoding order changes from one JVM to the next), so a rerun of a day writes byte-identical
files and replaces only that day.

A renamed or dropped required column fails the job before any row is read in full, naming the
missing and unexpected columns. A day with no valid row (all files empty, or every line
rejected) publishes its quarantine and fails without touching the curated zone. The result
JSON (``--result-file``) holds the counts.
"""

from __future__ import annotations

import argparse
import json
import time
from datetime import date
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any

from jobs.core import storage
from jobs.core.cli import BadInput, run_job
from jobs.core.config import PipelineConfig
from jobs.core.schema import LANDING_COLUMNS, REQUIRED_COLUMNS, curated_schema, schema_text
from jobs.ingest.buckets import ROWS_PER_FILE, _identity, stage_bucket, stage_split

if TYPE_CHECKING:
    from pyspark.sql import SparkSession

SPLIT_BYTES = 32 * 2**20  # landing bytes per stage-1 task


class IngestError(BadInput):
    """The day cannot be ingested; the message names the day and the problem."""


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
        for f in files:
            cols = spark.read.option("header", "true").csv(f).columns
            if cols:
                missing = [c for c in REQUIRED_COLUMNS if c not in cols]
                if missing:
                    _raise_columns(f, missing, set(cols) - set(LANDING_COLUMNS))
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
    missing = [c for c in REQUIRED_COLUMNS if key_counts.get(c, 0) == 0]
    if missing:
        _raise_columns(
            files[0].rsplit("/", 2)[-2] if "/" in files[0] else files[0],
            missing,
            set(key_counts) - set(LANDING_COLUMNS),
        )


def _raise_columns(where: str, missing: list[str], unexpected: set[str]) -> None:
    hint = f"; unexpected column(s) {', '.join(sorted(unexpected))} (renamed?)" if unexpected else ""
    raise IngestError(f"landing data {where} lacks required column(s) {', '.join(missing)}{hint}")


def plan_splits(files: list[str], split_bytes: int = SPLIT_BYTES) -> list[tuple[str, int, int]]:
    """``(file, start, end)`` byte ranges of at most ``split_bytes``; empty files are left out."""
    splits = []
    for f in files:
        size = Path(f).stat().st_size
        splits += [(f, start, min(start + split_bytes, size)) for start in range(0, size, split_bytes)]
    return splits


def estimate_rows(files: list[str], total_bytes: int, sample_bytes: int = 1 << 16) -> int:
    """Landing rows in ``total_bytes`` of ``files``, from the line length at the start of the
    first non-empty file."""
    for f in files:
        with open(f, "rb") as fh:
            head = fh.read(sample_bytes)
        if head:
            return -(-total_bytes * max(head.count(b"\n"), 1) // len(head))
    return 0


def ingest_day(cfg: PipelineConfig, spark: SparkSession, day: date, landing_root: str | None = None) -> dict[str, Any]:
    """Ingest one day; returns the result dict. Raises IngestError with a clear message."""
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
    splits = plan_splits(files)
    n_out = max(1, -(-estimate_rows(files, input_bytes) // ROWS_PER_FILE))
    with storage.staged_partition(quarantine_day) as q_staging, storage.staged_partition(curated_day) as c_staging:
        written: list[dict[str, Any]] = []
        if splits:
            written = (
                spark.sparkContext.parallelize(splits, len(splits))
                .flatMap(partial(stage_split, day=day.isoformat(), fmt=fmt, n_out=n_out))
                .partitionBy(n_out + 1, _identity)
                .mapPartitionsWithIndex(
                    partial(stage_bucket, n_out=n_out, curated=str(c_staging), quarantine=str(q_staging))
                )
                .collect()
            )
        stage("read, type, judge, dedup and write (one Spark job)")
        q = next(
            (w for w in written if w["kind"] == "quarantine"),
            {"input_rows": 0, "rows": 0, "reasons": {}, "files": []},
        )
        input_rows, quarantined, reason_counts = q["input_rows"], q["rows"], q["reasons"]
        storage.publish(
            q_staging,
            quarantine_day,
            {"day": day.isoformat(), "rows": quarantined, "reasons": reason_counts, "files": q["files"]},
        )
        stage("quarantine published")
        if input_rows == quarantined:
            why = (
                "all landing files are empty"
                if input_rows == 0
                else f"all {input_rows} rows were rejected: {reason_counts}"
            )
            raise IngestError(f"dt={day.isoformat()}: no valid rows ({why}); curated data left unchanged")
        parts = sorted((w for w in written if w["kind"] == "curated"), key=lambda w: w["part"])
        files_out = []
        for idx, part in enumerate(parts):
            files_out.append(f"part-{idx:05d}.parquet")
            (c_staging / f".part-{part['part']:05d}.parquet").rename(c_staging / files_out[-1])
        manifest = {
            "day": day.isoformat(),
            "rows": sum(p["rows"] for p in parts),
            "input_rows": input_rows,
            "quarantined": quarantined,
            "duplicates_removed": sum(p["removed"] for p in parts),
            "conflicting_duplicates": sum(p["conflicts"] for p in parts),
            "users": len({u for p in parts for u in p["users"]}),
            "items": len({i for p in parts for i in p["items"]}),
            "input_files": [Path(f).name for f in files],
            "input_bytes": input_bytes,
            "files": files_out,
            "schema": schema_text(curated_schema()),
        }
        storage.publish(c_staging, curated_day, manifest)
        stage("curated published")
    return {
        **manifest,
        "reasons": reason_counts,
        "quarantine_share": quarantined / input_rows if input_rows else 0.0,
        "curated_uri": curated_day,
        "quarantine_uri": quarantine_day,
        "stages": stages,
        "seconds": round(time.perf_counter() - started, 3),
    }


def run(cfg: PipelineConfig, args: argparse.Namespace) -> dict[str, Any]:
    """The CLI's job: a session, the day, and where the work ran."""
    from jobs.core.spark import get_spark

    spark = get_spark(cfg, "ingest", args.master or None)
    try:
        result = ingest_day(cfg, spark, args.day, args.landing)
        result["spark_master"] = spark.sparkContext.master
        # Block managers other than the driver's: the executors that took part.
        result["executors"] = max(spark.sparkContext._jsc.sc().getExecutorMemoryStatus().size() - 1, 0)
    finally:
        spark.stop()
    if result["reasons"]:
        print("quarantine reasons: " + json.dumps(result["reasons"], sort_keys=True))
    return result


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m jobs.ingest", description=__doc__.split("\n\n")[0])
    ap.add_argument("--day", required=True, type=date.fromisoformat, help="logical day YYYY-MM-DD")
    ap.add_argument("--landing", help="landing zone root (default from config)")
    ap.add_argument("--master", help="Spark master override, e.g. local-cluster[2,1,1024]")
    return run_job(
        "ingest",
        ap,
        run,
        argv,
        summary=lambda r: (
            f"dt={r['day']}: {r['rows']} curated rows, {r['quarantined']} quarantined ({r['quarantine_share']:.2%}), "
            f"{r['duplicates_removed']} duplicates removed in {r['seconds']}s"
        ),
    )
