"""MovieLens rating files → typed record chunks, streamed, with every bad line named.

Formats (``FORMATS``): ``udata`` (ML-100K ``u.data``: tab-separated ``user item rating ts``, no
header), ``inter`` (RecBole's ``ml-100k.inter``: tab-separated, header
``user_id:token item_id:token rating:float timestamp:float``), ``dat`` (ML-1M ``ratings.dat``:
``::``-separated, no header) and ``csv`` (ML-20M/25M/32M ``ratings.csv``: header
``userId,movieId,rating,timestamp``).

A file is read in blocks of whole lines (``CHUNK_BYTES``) and each block parsed by Arrow's CSV
reader; only a block that does not parse or holds an invalid value is read again line by line,
to name the first bad line. Ratings are kept in half stars (``half_stars`` = 2 × rating, 1..10),
so ML-20M's 3.5 is exact here; ``jobs.importer.landing`` decides how they meet the contract.
"""

from __future__ import annotations

import hashlib
import io
import math
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

FORMATS = ("inter", "udata", "dat", "csv")
CHUNK_BYTES = 8 << 20  # peak memory ~150 MB + ~10x this (Arrow parse and copies), whatever the file size
RECORD = np.dtype([("user", "<i8"), ("item", "<i8"), ("ts", "<i8"), ("half_stars", "u1")])
HEADERS = {  # the header names of user, item, rating, timestamp
    "inter": ("user_id", "item_id", "rating", "timestamp"),
    "csv": ("userId", "movieId", "rating", "timestamp"),
}


class SourceError(ValueError):
    """A source file that is not a MovieLens ratings file of its format (names file and line)."""

    def __init__(self, path: Path | str, line: int | None, why: str) -> None:
        super().__init__(f"{path}{f':{line}' if line else ''}: {why}")


@dataclass(frozen=True)
class Layout:
    """Where the four fields are in a line of one format."""

    fmt: str
    sep: bytes
    width: int
    columns: tuple[int, int, int, int]  # user, item, rating, timestamp
    header: bool


def detect_format(path: Path, first_line: bytes) -> str:
    """The format from the file name (``*.inter``, ``u.data``/``*.data``, ``*.dat``, ``*.csv``),
    else from the first line; raises ``SourceError`` when neither tells."""
    name = path.name.lower()
    for suffix, fmt in ((".inter", "inter"), (".data", "udata"), (".dat", "dat"), (".csv", "csv")):
        if name.endswith(suffix):
            return fmt
    line = first_line.decode("utf-8", errors="replace")
    if line.startswith("user_id:"):
        return "inter"
    if line.startswith("userId,"):
        return "csv"
    if "::" in line:
        return "dat"
    if "\t" in line:
        return "udata"
    raise SourceError(path, 1, f"cannot tell the format; name it with --format ({', '.join(FORMATS)})")


def layout(fmt: str, path: Path, first_line: bytes) -> Layout:
    """The layout of ``fmt``; for formats with a header, the positions come from ``first_line``."""
    if fmt in ("udata", "dat"):
        return Layout(fmt, b"\t" if fmt == "udata" else b"::", 4, (0, 1, 2, 3), header=False)
    sep = b"\t" if fmt == "inter" else b","
    names = [
        n.strip().strip('"').split(":", 1)[0]
        for n in first_line.decode("utf-8", errors="replace").strip().split(sep.decode())
    ]
    wanted = HEADERS[fmt]
    missing = [w for w in wanted if w not in names]
    if missing:
        raise SourceError(path, 1, f"header {first_line.strip()[:200]!r} lacks {', '.join(missing)} ({fmt} format)")
    cols = tuple(names.index(w) for w in wanted)
    return Layout(fmt, sep, len(names), cols, header=True)  # type: ignore[arg-type]


def read_records(path: Path, fmt: str = "auto", digest=None, chunk_bytes: int = CHUNK_BYTES) -> Iterator[np.ndarray]:
    """Yield the file's ratings as ``RECORD`` arrays, one per block of lines, in file order.

    Args:
        fmt: one of ``FORMATS`` or ``auto`` (``detect_format``).
        digest: a ``hashlib`` object updated with every byte of the file (the source's sha256).

    Raises:
        SourceError: the first bad line (file and line number), or an unusable header.
    """
    digest = digest or hashlib.sha256()
    with open(path, "rb") as fh:
        first = fh.readline()
        digest.update(first)
        if fmt == "auto":
            fmt = detect_format(path, first)
        lay = layout(fmt, path, first)
        # The number of the next block's first line, and the bytes it starts with.
        line_no, carry = (2, b"") if lay.header else (1, first)
        while True:
            block = fh.read(chunk_bytes)
            digest.update(block)
            data = carry + block
            if not block:
                if data.strip():
                    yield parse_block(data, lay, line_no, path)
                return
            cut = data.rfind(b"\n") + 1
            if cut == 0:
                carry = data
                continue
            yield parse_block(data[:cut], lay, line_no, path)
            line_no += data.count(b"\n", 0, cut)
            carry = data[cut:]


def parse_block(data: bytes, lay: Layout, first_line: int, path: Path | str) -> np.ndarray:
    """The ratings of whole lines ``data`` (line ``first_line`` first) as a ``RECORD`` array."""
    import pyarrow as pa
    import pyarrow.csv as pacsv

    text = data.replace(b"::", b"\t") if lay.sep == b"::" else data
    names = [f"c{i}" for i in range(lay.width)]
    u, i, r, t = (names[c] for c in lay.columns)
    try:
        table = pacsv.read_csv(
            io.BytesIO(text),
            read_options=pacsv.ReadOptions(column_names=names, block_size=max(1 << 20, len(text) + 1)),
            parse_options=pacsv.ParseOptions(delimiter="," if lay.sep == b"," else "\t", quote_char=False),
            convert_options=pacsv.ConvertOptions(
                column_types={u: pa.int64(), i: pa.int64(), r: pa.float64(), t: pa.float64()},
                include_columns=[u, i, r, t],
            ),
        )
    except (pa.ArrowInvalid, pa.ArrowTypeError):
        raise _first_bad_line(data, lay, first_line, path) from None
    cols = [table.column(c).to_numpy() if table.column(c).null_count == 0 else None for c in (u, i, r, t)]
    if any(c is None for c in cols):
        raise _first_bad_line(data, lay, first_line, path)
    users, items, rating, ts = cols
    half = rating * 2
    with np.errstate(invalid="ignore"):
        ok = (users >= 0) & (items >= 0) & (half >= 1) & (half <= 10) & (half == np.round(half))
        ok &= np.isfinite(ts) & (ts >= 0) & (ts == np.floor(ts))
    if not ok.all():
        raise _first_bad_line(data, lay, first_line, path)
    out = np.empty(len(users), dtype=RECORD)
    out["user"], out["item"], out["ts"], out["half_stars"] = users, items, ts.astype(np.int64), half.astype(np.uint8)
    return out


def line_problem(fields: list[str], lay: Layout) -> str | None:
    """Why one line's fields are not a rating of this layout, or None."""
    if len(fields) != lay.width:
        return f"expected {lay.width} fields separated by {lay.sep.decode()!r}, found {len(fields)}"
    user, item, rating, ts = (fields[c].strip() for c in lay.columns)
    for name, value in (("user id", user), ("item id", item)):
        if not value.isdigit():
            return f"{name} {value!r} is not a non-negative integer"
    try:
        stars = float(rating)
    except ValueError:
        stars = math.nan
    if not (0.5 <= stars <= 5 and (stars * 2).is_integer()):
        return f"rating {rating!r} is not 0.5-5 in half stars"
    try:
        seconds = float(ts)
    except ValueError:
        seconds = math.nan
    if not (math.isfinite(seconds) and seconds >= 0 and seconds.is_integer()):
        return f"timestamp {ts!r} is not a unix time in whole seconds"
    return None


def _first_bad_line(data: bytes, lay: Layout, first_line: int, path: Path | str) -> SourceError:
    sep = lay.sep.decode()
    for n, raw in enumerate(data.split(b"\n"), start=first_line):
        line = raw.decode("utf-8", errors="replace").rstrip("\r")
        if not line.strip():
            continue
        if why := line_problem(line.split(sep), lay):
            return SourceError(path, n, f"{why}: {line[:200]!r}")
    last = first_line + data.count(b"\n")
    return SourceError(path, first_line, f"lines {first_line}-{last} do not parse as the {lay.fmt} format")
