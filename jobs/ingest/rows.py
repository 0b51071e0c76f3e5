"""Stage 1 of ingestion, row by row in Arrow kernels: read a byte range, type it, judge every row.

Runs in Spark's Python workers (``jobs.ingest.buckets.stage_split`` calls it); no Spark here.
The rules and their order are documented in ``jobs.ingest``.
"""

from __future__ import annotations

import io
import json
from datetime import UTC, date, datetime, timedelta
from typing import IO, TYPE_CHECKING, Any

from jobs.core.schema import DEVICES, EVENT_TYPES, LANDING_COLUMNS, MAX_WATCH_SECONDS

if TYPE_CHECKING:
    import pyarrow as pa

QUARANTINE_COLUMNS = ("reasons", "source_file", "raw_line", "event_id", *[f"raw_{c}" for c in LANDING_COLUMNS[1:]])


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


def is_gzip(path: str) -> bool:
    """A gzip-compressed landing file (``*.jsonl.gz``, ``*.csv.gz``): read whole, never by range."""
    return path.endswith(".gz")


def open_landing(path: str) -> IO[bytes]:
    """The landing file's bytes, decompressed when it is gzip."""
    import gzip

    from jobs.core import fs

    if not is_gzip(path):
        return fs.open_input(path)
    if fs.is_local(path):
        return gzip.open(fs.local_path(path), "rb")
    stream = gzip.GzipFile(fileobj=fs.open_input(path), mode="rb")
    stream.myfileobj = stream.fileobj  # closed with the gzip stream, as gzip.open(filename) does
    return stream


def read_range(path: str, start: int, end: int, fmt: str) -> tuple[bytes, bytes]:
    """``(header, lines)``: the whole lines that *start* in ``[start, end)`` of ``path``.

    As Hadoop's line reader: a range after the first skips the line it begins inside (the range
    before finishes it), and every range reads on past ``end`` to the end of its last line. For
    CSV, ``header`` is the file's first line (and never part of ``lines``); b"" for JSON.
    A gzip file has no byte ranges: its one range is the whole file, decompressed.
    """
    if is_gzip(path):
        if start != 0:
            raise ValueError(f"{path}: a gzip file is read whole, not from byte {start}")
        with open_landing(path) as fh:
            header = fh.readline() if fmt == "csv" else b""
            data = fh.read()
        return header, data
    with open_landing(path) as fh:
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
    """The reasons of each row, ``"; "``-joined in rule order; ``""`` for a valid row.

    Long because the rules are listed in their documented order, one block each.
    """
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
        (pc.and_(present(v["device"]), pc.invert(pc.is_in(v["device"], pa.array(DEVICES)))), "device: unknown value"),
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
