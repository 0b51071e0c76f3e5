"""Spark ingestion of one landing day into curated Parquet.

``python -m jobs.ingest --day YYYY-MM-DD``.

Reads the day's landing files with an explicit schema, types and normalises every row, sends
each row that breaks a rule to the quarantine zone with its reasons, deduplicates by
``event_id`` and publishes curated Parquet and the quarantine atomically, with deterministic
names, row order and bytes (a rerun writes byte-identical files). How (two Spark stages of
Arrow kernels, byte ranges, buckets, dedup order, publish): ``docs/stages.md``.

A renamed or dropped required column fails the job before any row is read in full, naming the
missing and unexpected columns. A day without events (every file empty or blank) is published
as an empty partition (one Parquet file of no rows, manifest ``rows: 0``): real logs have quiet
days, and validation judges them by the source's ``ingest.empty_day`` policy. A day whose every
row was rejected is a broken delivery, not a quiet day: it publishes its quarantine and fails
without touching the curated zone. The result JSON (``--result-file``) holds the counts.
"""

from __future__ import annotations

import argparse
import csv
import json
from datetime import date
from typing import TYPE_CHECKING, Any

from jobs.core import storage
from jobs.core.cli import BadInput, run_job
from jobs.core.config import PipelineConfig
from jobs.core.results import IngestResult
from jobs.core.schema import LANDING_COLUMNS, REQUIRED_COLUMNS, curated_schema, schema_text
from jobs.core.timing import Stages
from jobs.ingest.buckets import ROWS_PER_FILE, STAGE1_SCHEMA, STAGE2_SCHEMA, one_task, stage1, stage2
from jobs.ingest.rows import is_gzip, open_landing

if TYPE_CHECKING:
    from pyspark.sql import SparkSession

SPLIT_BYTES = 32 * 2**20  # landing bytes per stage-1 task, at least ...
MAX_SPLIT_BYTES = 256 * 2**20  # ... and at most (a task holds its range in memory while parsing)


def split_bytes_for(total_bytes: int, slots: int) -> int:
    """Bytes per stage-1 task: one wave of tasks over the server's task slots when that stays in
    [SPLIT_BYTES, MAX_SPLIT_BYTES]. Few, large tasks: every Python task on the Connect server
    starts its own Python worker (about 1.5 s; ``spark.python.use.daemon`` is off, see
    ``pipeline.yaml``), so a 10M-event day in 32 MiB ranges paid that 55 times."""
    return int(min(MAX_SPLIT_BYTES, max(SPLIT_BYTES, -(-total_bytes // max(1, slots)))))


class IngestError(BadInput):
    """The day cannot be ingested; the message names the day and the problem."""


def landing_files(landing_day: str, fmt: str) -> list[str]:
    """The day's landing files (local paths or object-store URIs), sorted by name."""
    if not storage.is_dir(landing_day):
        raise IngestError(f"no landing folder for this day: {landing_day}")
    suffixes = (f".{fmt}", f".{fmt}.gz")
    files = [storage.join(landing_day, n) for n in storage.list_files(landing_day) if n.endswith(suffixes)]
    if not files:
        raise IngestError(f"landing folder {landing_day} holds no *.{fmt} or *.{fmt}.gz file")
    return files


def _head_lines(path: str, n: int) -> list[bytes]:
    with open_landing(path) as fh:
        return [line for _, line in zip(range(n), fh, strict=False)]


def check_columns(files: list[str], fmt: str, sample: int = 1000) -> None:
    """Fail when a required column is absent from the landing data (renamed or dropped), before
    any Spark work: CSV headers of every file, JSON keys of the first ``sample`` lines."""
    if fmt == "csv":
        for f in files:
            head = _head_lines(f, 1)
            line = head[0].decode("utf-8", errors="replace").strip() if head else ""
            cols = [c.strip() for c in next(csv.reader([line]), [])] if line else []
            if cols:
                missing = [c for c in REQUIRED_COLUMNS if c not in cols]
                if missing:
                    _raise_columns(f, missing, set(cols) - set(LANDING_COLUMNS))
        return
    key_counts: dict[str, int] = {}
    parsed = 0
    for f in files:
        for line in _head_lines(f, sample - parsed):
            try:
                obj = json.loads(line)
            except ValueError:
                continue
            if isinstance(obj, dict):
                parsed += 1
                for key in obj:
                    key_counts[key] = key_counts.get(key, 0) + 1
        if parsed >= sample:
            break
    missing = [c for c in REQUIRED_COLUMNS if key_counts.get(c, 0) == 0]
    if parsed and missing:
        where = files[0].rsplit("/", 2)[-2] if "/" in files[0] else files[0]
        _raise_columns(where, missing, set(key_counts) - set(LANDING_COLUMNS))


def _raise_columns(where: str, missing: list[str], unexpected: set[str]) -> None:
    hint = f"; unexpected column(s) {', '.join(sorted(unexpected))} (renamed?)" if unexpected else ""
    raise IngestError(f"landing data {where} lacks required column(s) {', '.join(missing)}{hint}")


def plan_splits(files: list[str], split_bytes: int = SPLIT_BYTES) -> list[tuple[str, int, int]]:
    """``(file, start, end)`` byte ranges of at most ``split_bytes``; empty files are left out.
    A gzip file is one range (a compressed stream cannot be entered in the middle)."""
    splits = []
    for f in files:
        size = storage.file_size(f)
        if is_gzip(f):
            splits += [(f, 0, size)] if size else []
            continue
        splits += [(f, start, min(start + split_bytes, size)) for start in range(0, size, split_bytes)]
    return splits


def uncompressed_size(path: str) -> int:
    """Bytes of the landing file once decompressed: gzip's trailer (ISIZE, the size modulo 2^32)
    for a ``.gz`` file, its size otherwise."""
    size = storage.file_size(path)
    if not is_gzip(path) or size < 18:
        return size
    with storage.open_input(path) as fh:
        fh.seek(size - 4)
        return int.from_bytes(fh.read(4), "little")


def estimate_rows(files: list[str], sample_bytes: int = 1 << 16) -> int:
    """Landing rows of ``files``, from the line length at the start of the first non-empty file
    and the day's uncompressed bytes."""
    total_bytes = sum(uncompressed_size(f) for f in files)
    for f in files:
        with open_landing(f) as fh:
            head = fh.read(sample_bytes)
        if head:
            return -(-total_bytes * max(head.count(b"\n"), 1) // len(head))
    return 0


def assign_tasks(splits: list[tuple[str, int, int]], slots: int) -> list[list[tuple[str, int, int]]]:
    """The byte ranges as at most ``slots`` stage-1 tasks (one wave), balanced by bytes: largest
    range first, each to the least loaded task (the lowest index on a tie); a task reads its
    ranges in file order. Every Python task on the Connect server starts its own worker (~1.6 s),
    so ten ranges in ten tasks paid that ten times."""
    n = max(1, min(slots, len(splits)))
    tasks: list[list[tuple[str, int, int]]] = [[] for _ in range(n)]
    load = [0] * n
    for split in sorted(splits, key=lambda s: s[1] - s[2]):  # stable: equal sizes keep file order
        k = load.index(min(load))
        tasks[k].append(split)
        load[k] += split[2] - split[1]
    return [sorted(t) for t in tasks if t]


def output_files(rows: int, slots: int) -> int:
    """Curated files (buckets) of a day of about ``rows`` rows: at most ``ROWS_PER_FILE`` rows
    each, and, when there are several, a multiple of ``slots``: each stage-2 task (one per slot)
    writes as many, so the slots finish together."""
    n = max(1, -(-rows // ROWS_PER_FILE))
    return n if n == 1 else -(-n // max(1, slots)) * max(1, slots)


def run_stages(
    spark: SparkSession,
    splits: list[tuple[str, int, int]],
    day: str,
    fmt: str,
    n_out: int,
    curated: str,
    quarantine: str,
    slots: int = 1,
) -> list[dict[str, Any]]:
    """The one Spark job: stage 1 over the ranges (``assign_tasks``), stage 2 over the buckets
    (bucket ``b`` in partition ``b mod P``, ``P`` = min(slots, buckets): one Python worker per
    task slot, each writing its buckets in turn); the reports.

    A day of one split runs both stages in one task (no shuffle)."""
    from pyspark.sql import functions as F

    from jobs.core.spark import place

    if len(splits) == 1:
        plan = spark.range(0, 1, 1, 1)
        written = plan.mapInArrow(one_task(splits[0], day, fmt, n_out, curated, quarantine), STAGE2_SCHEMA)
        return [json.loads(r) for r in written.toArrow().column("report").to_pylist()]
    tasks = assign_tasks(splits, slots)
    plan = spark.range(0, len(tasks), 1, len(tasks))  # exactly one task index per partition
    records = plan.mapInArrow(stage1(tasks, day, fmt, n_out), STAGE1_SCHEMA)
    parts = max(1, min(slots, n_out + 1))
    spread = place(spark, records, F.col("bucket") % parts, parts).sortWithinPartitions("bucket")
    written = spread.mapInArrow(stage2(n_out, curated, quarantine), STAGE2_SCHEMA)
    return [json.loads(r) for r in written.toArrow().column("report").to_pylist()]


def _curated_manifest(day: str, parts: list[dict[str, Any]], q: dict[str, Any], files: list[str], size: int) -> dict:
    return {
        "day": day,
        "rows": sum(p["rows"] for p in parts),
        "input_rows": q["input_rows"],
        "quarantined": q["rows"],
        "duplicates_removed": sum(p["removed"] for p in parts),
        "conflicting_duplicates": sum(p["conflicts"] for p in parts),
        "users": len({u for p in parts for u in p["users"]}),
        "items": len({i for p in parts for i in p["items"]}),
        "input_files": [f.rsplit("/", 1)[-1] for f in files],
        "input_bytes": size,
        "files": [f"part-{idx:05d}.parquet" for idx in range(len(parts))],
        "schema": schema_text(curated_schema()),
    }


def _empty_part(staging: storage.Staging) -> dict[str, Any]:
    """Stage one Parquet file of no rows (the curated schema) as stage 2 would; its report."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    sink = pa.BufferOutputStream()
    pq.write_table(curated_schema().empty_table(), sink, compression="snappy")
    storage.write_bytes_atomic(staging / ".part-00000.parquet", sink.getvalue().to_pybytes())
    return {"kind": "curated", "part": 0, "rows": 0, "removed": 0, "conflicts": 0, "users": [], "items": []}


def ingest_day(cfg: PipelineConfig, spark: SparkSession, day: date, landing_root: str | None = None) -> dict[str, Any]:
    """Ingest one day; returns the result dict. Raises IngestError with a clear message."""
    stages = Stages()
    d = day.isoformat()
    fmt = cfg.ingest.landing_format
    curated_day, quarantine_day = cfg.storage.partition("curated", day), cfg.storage.partition("quarantine", day)
    # Both zones writable before any work: a read-only curated zone must not leave the day's
    # quarantine published without its curated partition.
    storage.check_writable(curated_day, quarantine_day)
    files = landing_files(f"{landing_root or cfg.storage.zone('landing')}/dt={d}", fmt)
    input_bytes = sum(storage.file_size(f) for f in files)
    if input_bytes:
        check_columns(files, fmt)
    stages.mark("list files and check columns")
    from jobs.core.spark import parallelism

    slots = parallelism(spark) if input_bytes > SPLIT_BYTES else 0  # asked only where it matters
    splits = plan_splits(files, split_bytes_for(input_bytes, slots) if slots else SPLIT_BYTES)
    if len(splits) > 1 and not slots:
        slots = parallelism(spark)
    n_out = output_files(estimate_rows(files), slots)
    with storage.staged_partition(quarantine_day) as q_staging, storage.staged_partition(curated_day) as c_staging:
        written = run_stages(spark, splits, d, fmt, n_out, str(c_staging), str(q_staging), slots) if splits else []
        stages.mark("read, type, judge, dedup and write (one Spark job)")
        empty = {"input_rows": 0, "rows": 0, "reasons": {}, "files": []}
        q = next((w for w in written if w["kind"] == "quarantine"), empty)
        q_manifest = {"day": d, "rows": q["rows"], "reasons": q["reasons"], "files": q["files"]}
        storage.publish(q_staging, quarantine_day, q_manifest)
        stages.mark("quarantine published")
        if q["input_rows"] and q["input_rows"] == q["rows"]:
            why = f"all {q['input_rows']} rows were rejected: {q['reasons']}"
            raise IngestError(f"dt={d}: no valid rows ({why}); curated data left unchanged")
        parts = sorted((w for w in written if w["kind"] == "curated"), key=lambda w: w["part"])
        if not q["input_rows"]:  # a day without events: an empty partition, judged by validation
            parts = [_empty_part(c_staging)]
        manifest = _curated_manifest(d, parts, q, files, input_bytes)
        for part, name in zip(parts, manifest["files"], strict=True):
            storage.rename_staged(c_staging, f".part-{part['part']:05d}.parquet", name)
        storage.publish(c_staging, curated_day, manifest)
        stages.mark("curated published")
    return {
        **manifest,
        "reasons": q["reasons"],
        "quarantine_share": q["rows"] / q["input_rows"] if q["input_rows"] else 0.0,
        "curated_uri": curated_day,
        "quarantine_uri": quarantine_day,
        "tasks": sorted(
            {json.dumps(t, sort_keys=True) for w in written for t in [w["task"], *w.get("read_tasks", [])]}
        ),
        "stages": stages.seconds,
        "seconds": stages.total(),
    }


def run(cfg: PipelineConfig, args: argparse.Namespace) -> IngestResult:
    """The CLI's job: a Spark Connect session, the day, and where the work ran."""
    from jobs.core.spark import server_info, spark_session

    with spark_session(cfg, "ingest") as spark:
        result = ingest_day(cfg, spark, args.day, args.landing)
        result["spark"] = server_info(spark)
    result["tasks"] = [json.loads(t) for t in result["tasks"]]
    result["executors"] = sorted({f"{t['host']}/{t['executor']}" for t in result["tasks"]})
    if result["reasons"]:
        print("quarantine reasons: " + json.dumps(result["reasons"], sort_keys=True))
    return result


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m jobs.ingest", description=__doc__.split("\n\n")[0])
    ap.add_argument("--day", required=True, type=date.fromisoformat, help="logical day YYYY-MM-DD")
    ap.add_argument("--landing", help="landing zone root (default from config)")
    return run_job(
        "ingest",
        ap,
        run,
        argv,
        ledger=lambda r: f"ingest/dt={r['day']}",
        summary=lambda r: (
            f"dt={r['day']}: {r['rows']} curated rows, {r['quarantined']} quarantined ({r['quarantine_share']:.2%}), "
            f"{r['duplicates_removed']} duplicates removed in {r['seconds']}s"
        ),
    )
