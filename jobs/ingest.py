"""Spark ingestion of one landing day into curated Parquet.

``python -m jobs.ingest --date YYYY-MM-DD`` (or under ``spark-submit`` on a cluster).

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
import io
import json
import sys
import time
from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any

from jobs import storage
from jobs.config import ConfigError, PipelineConfig, get_config
from jobs.generate import COLUMNS, DEVICES, EVENT_TYPES

if TYPE_CHECKING:
    import numpy as np
    import pyarrow as pa
    from pyspark.sql import SparkSession

REQUIRED = ("event_id", "user_id", "item_id", "event_type", "ts", "device", "country")
OPTIONAL = ("watch_seconds", "rating")
# The landing contract is the generator's (it plays the upstream system).
LANDING_COLUMNS = COLUMNS
MAX_WATCH_SECONDS = 86_400.0
ROWS_PER_FILE = 2_000_000
SPLIT_BYTES = 32 * 2**20  # landing bytes per stage-1 task
CURATED_COLUMNS = LANDING_COLUMNS
DEDUP_ORDER = ("ts", "user_id", "item_id", "event_type", "watch_seconds", "rating", "device", "country")
QUARANTINE_COLUMNS = ("reasons", "source_file", "raw_line", "event_id", *[f"raw_{c}" for c in LANDING_COLUMNS[1:]])


class IngestError(RuntimeError):
    """The day cannot be ingested; the message names the day and the problem."""


def curated_schema() -> pa.Schema:
    """The curated Parquet schema (timestamps as UTC microseconds; every field nullable in the
    file, as written since the first day, so that all days read as one dataset)."""
    import pyarrow as pa

    types = {"user_id": pa.int64(), "item_id": pa.int64(), "ts": pa.timestamp("us", tz="UTC")}
    types |= {"watch_seconds": pa.float64(), "rating": pa.int32()}
    return pa.schema([(c, types.get(c, pa.string())) for c in CURATED_COLUMNS])


def quarantine_schema() -> pa.Schema:
    """Rejected rows: the reasons, where they came from, and every field's raw text."""
    import pyarrow as pa

    return pa.schema(
        [pa.field("reasons", pa.string(), nullable=False), *[(c, pa.string()) for c in QUARANTINE_COLUMNS[1:]]]
    )


def _json_schema() -> pa.Schema:
    """The typed landing contract for pyarrow's JSON reader (``ts`` stays text: its raw form is
    the quarantine's evidence, and it is typed by the same code for every path)."""
    import pyarrow as pa

    types = {"user_id": pa.int64(), "item_id": pa.int64(), "watch_seconds": pa.float64(), "rating": pa.int64()}
    return pa.schema([(c, types.get(c, pa.string())) for c in LANDING_COLUMNS])


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
                missing = [c for c in REQUIRED if c not in cols]
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


# ---- stage 1: read a byte range, type it, judge every row (runs in Spark's Python workers) ----


def plan_splits(files: list[str], split_bytes: int = SPLIT_BYTES) -> list[tuple[str, int, int]]:
    """``(file, start, end)`` byte ranges of at most ``split_bytes``; empty files are left out."""
    splits = []
    for f in files:
        size = Path(f).stat().st_size
        splits += [(f, start, min(start + split_bytes, size)) for start in range(0, size, split_bytes)]
    return splits


def read_range(path: str, start: int, end: int, fmt: str) -> tuple[bytes, bytes]:
    """``(header, lines)``: the whole lines that *start* in ``[start, end)`` of ``path``.

    As Hadoop's line reader: a range after the first skips the line it begins inside (the range
    before finishes it), and every range reads on past ``end`` to the end of its last line. For
    CSV, ``header`` is the file's first line (and never part of ``lines``); b"" for JSON.
    """
    with open(path, "rb") as fh:
        header = fh.readline() if fmt == "csv" else b""
        if start > 0:
            fh.seek(start - 1)
            fh.readline()
        pos = max(fh.tell(), len(header))
        if pos >= end:
            return header, b""
        fh.seek(pos)
        data = fh.read(end - pos)
        if data and not data.endswith(b"\n"):
            data += fh.readline()
    return header, data


def _trimmed(col: pa.Array) -> pa.Array:
    """Text with surrounding spaces removed; blank text is missing (null)."""
    import pyarrow.compute as pc

    text = pc.utf8_trim(col, " ")
    return pc.if_else(pc.equal(text, ""), None, text)


def _try_cast(text: pa.Array, target: pa.DataType, pattern: str) -> pa.Array:
    """``text`` cast to ``target``, null where it is not of the form ``pattern``."""
    import pyarrow as pa
    import pyarrow.compute as pc

    ok = pc.fill_null(pc.match_substring_regex(text, pattern), False)
    candidates = pc.if_else(ok, pc.replace_substring_regex(text, r"^\+", ""), None)
    try:
        return pc.cast(candidates, target)
    except pa.ArrowInvalid:  # a form the pattern admits and Arrow's parser does not: one by one
        convert = int if pa.types.is_integer(target) else float

        def one(value: str) -> int | float | None:
            try:
                return convert(value)
            except ValueError:
                return None

        return pa.array([None if t is None else one(t) for t in candidates.to_pylist()], target)


INT_PATTERN = r"^[+-]?\d{1,18}$"
FLOAT_PATTERN = r"^[+-]?((\d+\.?\d*|\.\d+)([eE][+-]?\d+)?|[Nn]a[Nn]|[Ii]nf(inity)?)$"


def _parse_ts(text: str) -> datetime | None:
    try:
        value = datetime.fromisoformat(text)
    except ValueError:
        return None
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def _timestamps(text: pa.Array) -> pa.Array:
    """ISO-8601 text → UTC timestamps (naive text is UTC), null where it is not a timestamp."""
    import pyarrow as pa
    import pyarrow.compute as pc

    target = pa.timestamp("us", tz="UTC")
    try:  # every value zoned and valid (the upstream's form): one vectorised cast
        return pc.cast(text, target)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
        return pa.array([None if t is None else _parse_ts(t) for t in text.to_pylist()], target)


def _as_text(value: Any) -> str | None:
    """A JSON value as Spark's JSON reader gives it for a string column."""
    if value is None or isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return json.dumps(value)
    return json.dumps(value, separators=(",", ":"))


def _json_lines_as_text(data: bytes) -> tuple[pa.Table, list[str | None]]:
    """Line by line: every field as text; ``raw_line`` set where a line is not a JSON object."""
    import pyarrow as pa

    columns: dict[str, list[str | None]] = {c: [] for c in LANDING_COLUMNS}
    raw_lines: list[str | None] = []
    for line in data.split(b"\n"):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except ValueError:
            obj = None
        if isinstance(obj, dict):
            for c in LANDING_COLUMNS:
                columns[c].append(_as_text(obj.get(c)))
            raw_lines.append(None)
        else:
            for c in LANDING_COLUMNS:
                columns[c].append(None)
            raw_lines.append(line.decode("utf-8", errors="replace"))
    return pa.table({c: pa.array(v, pa.string()) for c, v in columns.items()}), raw_lines


def _csv_lines_as_text(names: list[str], data: bytes) -> tuple[pa.Table, list[str | None]]:
    """CSV line by line (``csv`` module): a line whose width is not the header's is malformed."""
    import csv

    import pyarrow as pa

    columns: dict[str, list[str | None]] = {c: [] for c in LANDING_COLUMNS}
    raw_lines: list[str | None] = []
    for raw in data.split(b"\n"):
        if not raw.strip():
            continue
        line = raw.decode("utf-8", errors="replace").rstrip("\r")
        fields = next(csv.reader([line]), [])
        good = len(fields) == len(names)
        record = dict(zip(names, fields, strict=False)) if good else {}
        for c in LANDING_COLUMNS:
            columns[c].append(record.get(c) or None)
        raw_lines.append(None if good else line)
    return pa.table({c: pa.array(v, pa.string()) for c, v in columns.items()}), raw_lines


def _csv_as_text(header: bytes, data: bytes) -> tuple[pa.Table, list[str | None]]:
    """CSV rows as text columns; a row of the wrong shape is kept whole as a malformed line."""
    import csv

    import pyarrow as pa

    bad: list[str] = []

    def invalid(row: Any) -> str:
        bad.append(row.text)
        return "skip"

    names = [n.strip() for n in next(csv.reader([header.decode("utf-8", errors="replace").rstrip("\r\n")]), [])]
    try:
        table = _read_csv(header + data, names, invalid)
    except pa.ArrowInvalid:  # e.g. a quote still open at the end of the range
        return _csv_lines_as_text(names, data)
    table = table.cast(pa.schema([(c, pa.string()) for c in LANDING_COLUMNS]))
    if table.num_rows + len(bad) != sum(1 for line in data.split(b"\n") if line.strip()):
        # A quote left open ran over line ends: read line by line, as Spark's CSV reader does
        # (one record per line, a line of the wrong width is malformed).
        return _csv_lines_as_text(names, data)
    if bad:
        empty = pa.nulls(len(bad), pa.string())
        table = pa.concat_tables([table, pa.table({c: empty for c in LANDING_COLUMNS})])
    return table, [None] * (table.num_rows - len(bad)) + bad


def _read_csv(data: bytes, names: list[str], invalid: Any) -> pa.Table:
    import pyarrow as pa
    import pyarrow.csv as pacsv

    return pacsv.read_csv(
        io.BytesIO(data),
        read_options=pacsv.ReadOptions(use_threads=False),
        parse_options=pacsv.ParseOptions(invalid_row_handler=invalid),
        convert_options=pacsv.ConvertOptions(
            column_types={n: pa.string() for n in names},
            include_columns=list(LANDING_COLUMNS),
            include_missing_columns=True,
            strings_can_be_null=True,
            null_values=[""],  # an empty field is missing, as for Spark's CSV reader; "n/a" is text
        ),
    )


def read_split(header: bytes, data: bytes, fmt: str) -> tuple[pa.Table, pa.Table, pa.Table, pa.Array]:
    """``(raw, text, typed, raw_line)`` of one range's rows: each field's raw text, its trimmed
    text (blank = null), its typed and normalised value (same column names), and the line
    itself where it is malformed (null elsewhere)."""
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.json as pj

    string_schema = pa.schema([(c, pa.string()) for c in LANDING_COLUMNS])
    typed: dict[str, pa.Array] = {}
    if fmt == "jsonl":
        try:
            table = pj.read_json(
                io.BytesIO(data),
                read_options=pj.ReadOptions(use_threads=False, block_size=max(1 << 20, len(data) + 1)),
                parse_options=pj.ParseOptions(explicit_schema=_json_schema(), unexpected_field_behavior="ignore"),
            )
        except pa.ArrowInvalid:  # a malformed line or a value of the wrong type somewhere in it
            raw, lines = _json_lines_as_text(data)
            raw_line = pa.array(lines, pa.string())
        else:
            # Every value fits its type (the common case): the numbers are typed already.
            table = table.combine_chunks()
            for c in ("user_id", "item_id", "watch_seconds", "rating"):
                typed[c] = table.column(c).combine_chunks()
            raw = table.cast(string_schema)
            raw_line = pa.nulls(table.num_rows, pa.string())
    else:
        raw, lines = _csv_as_text(header, data)
        raw_line = pa.array(lines, pa.string())
    raw = raw.combine_chunks()
    text = {c: _trimmed(raw.column(c).combine_chunks()) for c in LANDING_COLUMNS}
    if not typed:
        for c in ("user_id", "item_id"):
            typed[c] = _try_cast(text[c], pa.int64(), INT_PATTERN)
        typed["watch_seconds"] = _try_cast(text["watch_seconds"], pa.float64(), FLOAT_PATTERN)
        typed["rating"] = _try_cast(text["rating"], pa.float64(), FLOAT_PATTERN)
    typed["rating"] = pc.cast(typed["rating"], pa.float64())
    typed["event_id"] = text["event_id"]
    typed["ts"] = _timestamps(text["ts"])
    typed["event_type"] = pc.utf8_lower(text["event_type"])
    typed["device"] = pc.utf8_lower(text["device"])
    typed["country"] = pc.utf8_upper(text["country"])
    return raw, pa.table(text), pa.table({c: typed[c] for c in LANDING_COLUMNS}), raw_line


def judge(text: pa.Table, typed: pa.Table, malformed: pa.Array, day: date) -> pa.Array:
    """The reasons of each row, ``"; "``-joined in rule order; ``""`` for a valid row."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.compute as pc

    s = {c: text.column(c) for c in LANDING_COLUMNS}
    v = {c: typed.column(c) for c in LANDING_COLUMNS}
    missing, present = pc.is_null, pc.is_valid

    def unparsed(c: str) -> pa.Array:
        return pc.and_(present(s[c]), missing(v[c]))

    start = pa.scalar(datetime(day.year, day.month, day.day, tzinfo=UTC), pa.timestamp("us", tz="UTC"))
    end = pa.scalar(
        datetime.combine(day + timedelta(days=1), datetime.min.time(), tzinfo=UTC), pa.timestamp("us", tz="UTC")
    )
    watch, rating, event_type = v["watch_seconds"], v["rating"], v["event_type"]
    rules = [
        (missing(s["event_id"]), "event_id: missing"),
        (missing(s["user_id"]), "user_id: missing"),
        (unparsed("user_id"), "user_id: not an integer"),
        (pc.less(v["user_id"], 0), "user_id: negative"),
        (missing(s["item_id"]), "item_id: missing"),
        (unparsed("item_id"), "item_id: not an integer"),
        (pc.less(v["item_id"], 0), "item_id: negative"),
        (missing(s["event_type"]), "event_type: missing"),
        (
            pc.and_(present(event_type), pc.invert(pc.is_in(event_type, pa.array(EVENT_TYPES)))),
            "event_type: unknown value",
        ),
        (missing(s["ts"]), "ts: missing"),
        (unparsed("ts"), "ts: not a timestamp"),
        (pc.or_(pc.less(v["ts"], start), pc.greater_equal(v["ts"], end)), "ts: outside the logical day"),
        (unparsed("watch_seconds"), "watch_seconds: not a number"),
        (
            pc.or_(pc.or_(pc.less(watch, 0), pc.greater(watch, MAX_WATCH_SECONDS)), pc.is_nan(watch)),
            "watch_seconds: out of range",
        ),
        (pc.and_(pc.equal(event_type, "play"), missing(s["watch_seconds"])), "watch_seconds: missing for play"),
        (unparsed("rating"), "rating: not a number"),
        (
            pc.or_(pc.or_(pc.less(rating, 1), pc.greater(rating, 5)), pc.not_equal(rating, pc.floor(rating))),
            "rating: not an integer 1-5",
        ),
        (pc.and_(pc.equal(event_type, "rating"), missing(s["rating"])), "rating: missing for rating"),
        (missing(s["device"]), "device: missing"),
        (pc.and_(present(v["device"]), pc.invert(pc.is_in(v["device"], pa.array(DEVICES)))), "device: unknown value"),
        (missing(s["country"]), "country: missing"),
        (pc.invert(pc.match_substring_regex(v["country"], "^[A-Z]{2}$")), "country: not an ISO-3166 alpha-2 code"),
    ]
    # A rule whose inputs are missing does not fire (null → false), as in SQL. Each row's
    # broken rules as bits of one integer, then one text per distinct combination (a handful).
    codes = np.zeros(len(malformed), dtype=np.int64)
    for bit, (cond, _) in enumerate(rules):
        codes |= pc.fill_null(cond, False).to_numpy(zero_copy_only=False).astype(np.int64) << bit
    codes[pc.is_valid(malformed).to_numpy(zero_copy_only=False)] = -1
    combos, index = np.unique(codes, return_inverse=True)
    texts = [
        "malformed line" if code < 0 else "; ".join(r for bit, (_, r) in enumerate(rules) if code >> bit & 1)
        for code in combos.tolist()
    ]
    return pa.array(texts, pa.string()).take(pa.array(index.astype(np.int32)))


# ---- buckets and the shuffle payload ----------------------------------------------------

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


def _identity(key: int) -> int:
    return key


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


# ---- stage 2: one bucket → one sorted, deduplicated Parquet file --------------------------


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
    }


def estimate_rows(files: list[str], total_bytes: int, sample_bytes: int = 1 << 16) -> int:
    """Landing rows in ``total_bytes`` of ``files``, from the line length at the start of the
    first non-empty file."""
    for f in files:
        with open(f, "rb") as fh:
            head = fh.read(sample_bytes)
        if head:
            return -(-total_bytes * max(head.count(b"\n"), 1) // len(head))
    return 0


CURATED_SCHEMA_TEXT = (
    "event_id:string",
    "user_id:bigint",
    "item_id:bigint",
    "event_type:string",
    "ts:timestamp",
    "watch_seconds:double",
    "rating:int",
    "device:string",
    "country:string",
)


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
            "schema": list(CURATED_SCHEMA_TEXT),
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
