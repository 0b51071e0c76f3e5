"""Moving rows between the two stages of ingestion, and stage 2: dedup and write one bucket.

``stage_split`` (stage 1, one task per byte range) sends valid rows to bucket
``hash(event_id) mod n`` and rejected rows with the range's counts to bucket ``n``, as Arrow IPC
streams; ``stage_bucket`` (stage 2, one task per bucket) sorts, deduplicates and writes one
Parquet file. Both run in Spark's Python workers.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import date
from pathlib import Path
from typing import TYPE_CHECKING, Any

from jobs.core.schema import LANDING_COLUMNS, curated_schema
from jobs.core.spark import task_location
from jobs.ingest.rows import QUARANTINE_COLUMNS, judge, quarantine_schema, read_range, read_split

if TYPE_CHECKING:
    import numpy as np
    import pyarrow as pa

ROWS_PER_FILE = 2_000_000
DEDUP_ORDER = ("ts", "user_id", "item_id", "event_type", "watch_seconds", "rating", "device", "country")


_FNV_PRIME = 1_099_511_628_211


def bucket_of(ids: pa.Array, n: int) -> np.ndarray:
    """``hash(id) mod n`` for each text id: a polynomial hash of its UTF-8 bytes, the same in
    every process and on every machine (Python's ``hash`` of a str is salted per process)."""
    import numpy as np
    import pyarrow as pa

    if n == 1 or len(ids) == 0:
        return np.zeros(len(ids), dtype=np.int64)
    ids = ids.cast(pa.large_string())
    offsets = np.frombuffer(ids.buffers()[1], dtype=np.int64, count=len(ids) + 1, offset=ids.offset * 8)
    data = np.frombuffer(ids.buffers()[2] or b"", dtype=np.uint8)[offsets[0] : offsets[-1]].astype(np.uint64)
    starts, lengths = offsets[:-1] - offsets[0], np.diff(offsets)
    powers = np.cumprod(np.full(max(int(lengths.max()), 1), _FNV_PRIME, dtype=np.uint64))
    powers = np.concatenate([np.ones(1, dtype=np.uint64), powers[:-1]])
    position = np.arange(len(data), dtype=np.int64) - np.repeat(starts, lengths)
    with np.errstate(over="ignore"):
        sums = np.concatenate([np.zeros(1, dtype=np.uint64), np.cumsum(data * powers[position], dtype=np.uint64)])
        h = sums[starts + lengths] - sums[starts] + lengths.astype(np.uint64)
        h ^= h >> np.uint64(29)
        h *= np.uint64(0xBF58476D1CE4E5B9)
        h ^= h >> np.uint64(32)
    return (h % np.uint64(n)).astype(np.int64)


def _to_ipc(table: pa.Table) -> bytes:
    import pyarrow as pa

    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, table.schema) as writer:
        writer.write_table(table)
    return sink.getvalue().to_pybytes()


def _from_ipc(payload: bytes) -> pa.Table:
    import pyarrow as pa

    return pa.ipc.open_stream(payload).read_all()


def stage_split(split: tuple[str, int, int], day: str, fmt: str, n_out: int) -> Iterator[tuple[int, tuple[str, bytes]]]:
    """Stage 1 for one byte range: ``(bucket, (kind, payload))`` records.

    Curated rows go to bucket ``hash(event_id) mod n_out`` (kind ``c``); rejected rows and the
    range's counts go to bucket ``n_out`` (kinds ``q`` and ``s``).
    """
    import numpy as np
    import pyarrow as pa
    import pyarrow.compute as pc

    path, start, end = split
    header, data = read_range(path, start, end, fmt)
    stats: dict[str, Any] = {"rows": 0, "reasons": {}}
    if data.strip():
        raw, text, typed, raw_line = read_split(header, data, fmt)
        reasons = judge(text, typed, raw_line, date.fromisoformat(day))
        rejected = pc.not_equal(reasons, "")
        stats["rows"] = len(reasons)
        if pc.any(rejected).as_py():
            stats["reasons"] = {
                str(r["values"]): int(r["counts"]) for r in pc.value_counts(reasons.filter(rejected)).to_pylist()
            }
            quarantine = pa.table(
                {
                    "reasons": reasons,
                    "source_file": pa.array([Path(path).name] * len(reasons), pa.string()),
                    "raw_line": raw_line,
                    "event_id": raw.column("event_id").combine_chunks(),
                    **{f"raw_{c}": raw.column(c).combine_chunks() for c in LANDING_COLUMNS[1:]},
                }
            ).filter(rejected)
            yield n_out, ("q", _to_ipc(quarantine.cast(quarantine_schema())))
        valid = typed.filter(pc.invert(rejected)).cast(curated_schema())
        buckets = bucket_of(valid.column("event_id").combine_chunks(), n_out)
        for b in np.unique(buckets):
            yield int(b), ("c", _to_ipc(valid.filter(pa.array(buckets == b))))
    yield n_out, ("s", json.dumps(stats).encode())


def _dedup_sorted(table: pa.Table) -> tuple[pa.Table, int, int]:
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


def _sorted(table: pa.Table, keys: tuple[str, ...]) -> pa.Table:
    """Ascending by ``keys``, missing values first (as Spark's ``ORDER BY ... ASC``)."""
    import pyarrow.compute as pc

    order = pc.sort_indices(table, sort_keys=[(k, "ascending", "at_start") for k in keys])
    return table.take(order)


def _write_parquet(table: pa.Table, path: str) -> None:
    import pyarrow.parquet as pq

    pq.write_table(table, path, compression="snappy", write_statistics=True, row_group_size=1024 * 1024)


def stage_bucket(
    index: int, records: Iterator[tuple[int, tuple[str, bytes]]], n_out: int, curated: str, quarantine: str
) -> Iterator[dict[str, Any]]:
    """Stage 2 for one bucket: write it, yield what was written.

    A curated bucket (``index < n_out``) is sorted, deduplicated and written to
    ``curated/.part-<index>.parquet``; the quarantine bucket is sorted by all its columns and
    written in files of at most ``ROWS_PER_FILE`` rows, and sums the ranges' counts.
    """
    import pyarrow as pa
    import pyarrow.compute as pc

    tables, stats = [], []
    for _, (kind, payload) in records:
        if kind == "s":
            stats.append(json.loads(payload))
        else:
            tables.append(_from_ipc(payload))
    if index < n_out:
        if not tables:
            return
        table, removed, conflicts = _dedup_sorted(
            _sorted(pa.concat_tables(tables).combine_chunks(), ("event_id", *DEDUP_ORDER))
        )
        _write_parquet(table, f"{curated}/.part-{index:05d}.parquet")
        yield {
            "kind": "curated",
            "part": index,
            "rows": table.num_rows,
            "removed": removed,
            "conflicts": conflicts,
            "users": pc.unique(table.column("user_id")).to_pylist(),
            "items": pc.unique(table.column("item_id")).to_pylist(),
        }
        return
    reasons: dict[str, int] = {}
    for s in stats:
        for reason_list, count in s["reasons"].items():
            for reason in reason_list.split("; "):
                reasons[reason] = reasons.get(reason, 0) + count
    files = []
    rows = 0
    if tables:
        table = _sorted(pa.concat_tables(tables).combine_chunks(), QUARANTINE_COLUMNS)
        rows = table.num_rows
        for k, offset in enumerate(range(0, rows, ROWS_PER_FILE)):
            files.append(f"part-{k:05d}.parquet")
            _write_parquet(table.slice(offset, ROWS_PER_FILE), f"{quarantine}/{files[-1]}")
    yield {
        "kind": "quarantine",
        "input_rows": sum(s["rows"] for s in stats),
        "rows": rows,
        "reasons": dict(sorted(reasons.items())),
        "files": files,
        "read_tasks": [s["task"] for s in stats if "task" in s],
    }


# ---- the two stages as Spark (Connect) DataFrame functions -----------------------------------

STAGE1_SCHEMA = "bucket int, kind string, payload binary"
STAGE2_SCHEMA = "report string"


def _located(record: tuple[int, tuple[str, bytes]]) -> tuple[int, tuple[str, bytes]]:
    """A split's counts record (kind ``s``) with the location of the task that read the split."""
    bucket, (kind, payload) = record
    if kind != "s":
        return record
    return bucket, (kind, json.dumps({**json.loads(payload), "task": task_location()}).encode())


def stage1(tasks: list[list[tuple[str, int, int]]], day: str, fmt: str, n_out: int) -> Any:
    """``mapInArrow`` function: each input row is the index of one task, which reads its byte
    ranges one after the other (one batch of records per range: memory holds one range)."""

    def run(batches: Iterator[Any]) -> Iterator[Any]:
        import pyarrow as pa

        for batch in batches:
            for index in batch.column("id").to_pylist():
                for split in tasks[index]:
                    records = [_located(r) for r in stage_split(split, day, fmt, n_out)]
                    yield pa.RecordBatch.from_arrays(
                        [
                            pa.array([bucket for bucket, _ in records], pa.int32()),
                            pa.array([kind for _, (kind, _) in records], pa.string()),
                            pa.array([payload for _, (_, payload) in records], pa.binary()),
                        ],
                        names=["bucket", "kind", "payload"],
                    )

    return run


def stage2(n_out: int, curated: str, quarantine: str) -> Any:
    """``mapInArrow`` function over a partition of stage-1 records sorted by bucket (several
    buckets a task: one Python worker each): write each bucket, report what was written (JSON)."""

    def run(batches: Iterator[Any]) -> Iterator[Any]:
        import pyarrow as pa

        def written(bucket: int, records: list[tuple[int, tuple[str, bytes]]]) -> Any:
            reports = [
                {**r, "task": task_location()} for r in stage_bucket(bucket, iter(records), n_out, curated, quarantine)
            ]
            return pa.RecordBatch.from_pydict({"report": pa.array([json.dumps(r) for r in reports], pa.string())})

        current = -1  # no bucket yet
        records: list[tuple[int, tuple[str, bytes]]] = []
        for batch in batches:
            columns = (batch.column(c).to_pylist() for c in ("bucket", "kind", "payload"))
            for bucket, kind, payload in zip(*columns, strict=True):
                if bucket != current and records:
                    yield written(current, records)
                    records = []
                current = bucket
                records.append((bucket, (kind, payload)))
        if records:
            yield written(current, records)

    return run


def one_task(split: tuple[str, int, int], day: str, fmt: str, n_out: int, curated: str, quarantine: str) -> Any:
    """``mapInArrow`` function doing both stages in one task: a day that is one split needs no
    shuffle (and one Python worker instead of two; each costs ~1.6 s to start on the server)."""

    def run(batches: Iterator[Any]) -> Iterator[Any]:
        import pyarrow as pa

        for batch in batches:
            if not batch.num_rows:
                continue
            by_bucket: dict[int, list[tuple[int, tuple[str, bytes]]]] = {}
            for bucket, record in map(_located, stage_split(split, day, fmt, n_out)):
                by_bucket.setdefault(bucket, []).append((bucket, record))
            reports = [
                {**r, "task": task_location()}
                for bucket in sorted(by_bucket)
                for r in stage_bucket(bucket, iter(by_bucket[bucket]), n_out, curated, quarantine)
            ]
            yield pa.RecordBatch.from_pydict({"report": pa.array([json.dumps(r) for r in reports], pa.string())})

    return run
