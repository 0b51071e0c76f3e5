"""Delivering the world's days as an upstream system would: shards of JSON lines or CSV, with
the scenario's corruptions, one atomically replaced landing folder per day (``_SUCCESS`` last),
and the ground truth beside it (``ground_truth/dt=D/truth.npz``, read by ``jobs.core.catalog``).
"""

from __future__ import annotations

import io
import os
import time
from collections import deque
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import asdict, replace
from datetime import date, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv

from jobs.core import storage
from jobs.sim.world import (
    DEFAULT_STRENGTH,
    ROW_CORRUPTIONS,
    VOLUME_KINDS,
    Scenario,
    WorldParams,
    WorldState,
    _rng,
    generate_day,
)


def _corrupt_frame(frame: pd.DataFrame, sc: Scenario, rng: np.random.Generator) -> tuple[pd.DataFrame, int]:
    """Apply a row/column corruption; returns the frame and the number of rows affected."""
    n = len(frame)
    k = round(n * float(sc.strength or 0)) if sc.strength is not None else 0
    rows = np.sort(rng.choice(n, min(k, n), replace=False)) if k else np.zeros(0, dtype=np.int64)
    frame = frame.copy()
    if sc.kind == "null_required":
        cols = rng.choice(["user_id", "item_id", "event_type", "ts", "event_id"], len(rows))
        for col in np.unique(cols):
            target = rows[cols == col]
            if frame[col].dtype == np.int64:
                frame[col] = frame[col].astype("Int64")
            frame.loc[frame.index[target], col] = None
        return frame, len(rows)
    if sc.kind == "wrong_types":
        frame["watch_seconds"] = frame["watch_seconds"].astype(object)
        frame["user_id"] = frame["user_id"].astype(object)
        half = len(rows) // 2
        frame.loc[frame.index[rows[:half]], "watch_seconds"] = "n/a"
        frame.loc[frame.index[rows[half:]], "user_id"] = "user-" + frame["user_id"].iloc[rows[half:]].astype(str)
        return frame, len(rows)
    if sc.kind == "future_timestamps":
        shifted = pd.to_datetime(frame["ts"].iloc[rows]) + pd.Timedelta(days=3)
        frame.loc[frame.index[rows], "ts"] = shifted.dt.strftime("%Y-%m-%dT%H:%M:%S.%f").str[:-3] + "Z"
        return frame, len(rows)
    if sc.kind == "unknown_event_type":
        frame.loc[frame.index[rows], "event_type"] = rng.choice(["purchase", "PLAY?", "share"], len(rows))
        return frame, len(rows)
    if sc.kind == "renamed_column":
        return frame.rename(columns={"user_id": "userId"}), n
    if sc.kind == "dropped_column":
        return frame.drop(columns=["device"]), n
    return frame, 0


def _json_lines(table: pa.Table) -> bytes:
    """JSON lines from a clean table, built column-wise by Arrow kernels (no per-row Python)."""
    pieces: list[Any] = []
    for idx, name in enumerate(table.column_names):
        col = table.column(name)
        if pa.types.is_string(col.type):
            text = pc.binary_join_element_wise('"', col, '"', "")
        else:
            text = pc.cast(col, pa.string())
        text = pc.fill_null(text, "null")
        pieces.append(("{" if idx == 0 else ",") + f'"{name}":')
        pieces.append(text)
    pieces.append("}\n")
    line = pc.binary_join_element_wise(*pieces, "").combine_chunks()
    offsets = np.frombuffer(line.buffers()[1], dtype=np.int32, count=len(line) + 1, offset=line.offset * 4)
    return line.buffers()[2].slice(offsets[0], offsets[-1] - offsets[0]).to_pybytes()


def _serialise(data: pa.Table | pd.DataFrame, fmt: str) -> bytes:
    if len(data) == 0:
        return b""
    if isinstance(data, pd.DataFrame):  # corrupted days: mixed types, small
        if fmt == "csv":
            return data.to_csv(index=False, lineterminator="\n").encode()
        return data.to_json(orient="records", lines=True, force_ascii=True).encode()
    if fmt == "csv":
        sink = pa.BufferOutputStream()
        pacsv.write_csv(data, sink, pacsv.WriteOptions(quoting_style="needed"))
        return sink.getvalue().to_pybytes()
    return _json_lines(data)


def _shards(frame: pa.Table | pd.DataFrame, fmt: str, rows_per_file: int) -> Iterator[bytes]:
    """Each file's bytes, in order. A clean day's next files are serialised on other threads
    while the caller writes this one (Arrow's kernels release the GIL): the same bytes, sooner."""

    def serialise(start: int) -> bytes:
        if isinstance(frame, pa.Table):
            return _serialise(frame.slice(start, rows_per_file), fmt)
        return _serialise(frame.iloc[start : start + rows_per_file], fmt)

    workers = min(2, os.cpu_count() or 1) if isinstance(frame, pa.Table) else 1
    with ThreadPoolExecutor(workers) as pool:
        window: deque[Future[bytes]] = deque()
        for start in range(0, max(len(frame), 1), rows_per_file):
            window.append(pool.submit(serialise, start))
            if len(window) > workers:
                yield window.popleft().result()
        while window:
            yield window.popleft().result()


def _malform(payload: bytes, fraction: float, rng: np.random.Generator, fmt: str) -> tuple[bytes, int]:
    lines = payload.split(b"\n")
    header = 1 if fmt == "csv" else 0
    body = [i for i in range(header, len(lines)) if lines[i]]
    k = round(len(body) * fraction)
    picked = rng.choice(body, k, replace=False) if k else []
    for i in picked:
        line = lines[i]
        cut = int(rng.integers(1, max(2, len(line) // 2)))
        lines[i] = line[:cut] + (b"\x00garbage{" if fmt == "jsonl" else b',"unterminated')
    return b"\n".join(lines), k


def write_day(
    p: WorldParams, day: date, landing: str, truth: str, fmt: str = "jsonl", rows_per_file: int = 1_000_000
) -> dict[str, Any]:
    """Generate, corrupt and atomically publish one landing day; returns its manifest.

    Long because it is the delivery sequence: generate, corrupt, split into files, write, publish.
    """
    started = time.perf_counter()
    corruptions = [s for s in p.scenarios if s.category == "corruption" and s.day == day]
    factor = {s.kind: float(s.strength or DEFAULT_STRENGTH[s.kind]) for s in corruptions if s.kind in VOLUME_KINDS}
    surge = round(p.events_per_day * factor["volume_surge"]) if "volume_surge" in factor else p.events_per_day
    table, state = generate_day(replace(p, events_per_day=surge), day)
    manifest: dict[str, Any] = {
        "day": day.isoformat(),
        "format": fmt,
        "clean_rows": len(table),
        "duplicates": int(len(table) - pc.count_distinct(table.column("event_id")).as_py()),
        "corruptions": {},
    }
    rng = _rng(p.seed, 3, day.toordinal())
    if "volume_surge" in factor:
        manifest["corruptions"]["volume_surge"] = surge - p.events_per_day
    if "volume_drop" in factor:  # an outage upstream: a random 1/factor of the day's events arrives
        keep = round(len(table) / factor["volume_drop"])
        table = table.take(pa.array(np.sort(rng.choice(len(table), keep, replace=False))))
        manifest["corruptions"]["volume_drop"] = manifest["clean_rows"] - keep
    frame: pa.Table | pd.DataFrame = table
    for sc in corruptions:
        if sc.kind in ROW_CORRUPTIONS:
            df = frame.to_pandas() if isinstance(frame, pa.Table) else frame
            frame, affected = _corrupt_frame(df, sc, rng)
            manifest["corruptions"][sc.kind] = affected
    kinds = {s.kind for s in corruptions}
    _write_truth(p, day, state, truth)
    final = f"{landing}/dt={day.isoformat()}"
    if "missing_day" in kinds:
        storage.remove_tree(final)
        manifest["files"] = []
        manifest["corruptions"]["missing_day"] = len(frame)
        return manifest
    if "empty_day" in kinds:
        manifest["corruptions"]["empty_day"] = len(frame)
        frame = frame.slice(0, 0) if isinstance(frame, pa.Table) else frame.iloc[0:0]
    files: list[str] = []
    with _delivery(final) as staging:
        for part, payload in enumerate(_shards(frame, fmt, rows_per_file)):
            if "malformed_lines" in kinds:
                share = next(s.strength for s in corruptions if s.kind == "malformed_lines") or 0.0
                payload, bad = _malform(payload, float(share), rng, fmt)
                manifest["corruptions"]["malformed_lines"] = manifest["corruptions"].get("malformed_lines", 0) + bad
            name = f"part-{part:05d}.{fmt}"
            storage.write_bytes_atomic(staging / name, payload)
            files.append(name)
        if "empty_file" in kinds:
            name = f"part-{len(files):05d}.{fmt}"
            storage.write_bytes_atomic(staging / name, b"")
            files.append(name)
            manifest["corruptions"]["empty_file"] = 0
        manifest["files"] = files
        manifest["rows_written"] = len(frame)
        # The published marker holds only deterministic fields (same arguments, same bytes);
        # the timing is returned to the caller only.
        if isinstance(staging, Path):
            storage.publish(staging, final, manifest)
        else:  # an upstream's delivery to a bucket: the files, then the _SUCCESS marker last
            storage.write_json_atomic(f"{final}/{storage.SUCCESS}", manifest)
    manifest["seconds"] = round(time.perf_counter() - started, 3)
    return manifest


@contextmanager
def _delivery(final: str) -> Iterator[Path | str]:
    """Where a landing day's files go: a staged local folder (published by rename), or the
    day's prefix itself on an object store, as an upstream system delivers to a bucket (files
    first, the ``_SUCCESS`` marker last; the landing sensor waits for the marker)."""
    if storage.is_local(final):
        with storage.staged_partition(final) as staging:
            yield staging
        return
    storage.remove_tree(final)
    yield _Prefix(final)


class _Prefix(str):
    def __truediv__(self, name: str) -> str:
        return f"{self}/{name}"


def _write_truth(p: WorldParams, day: date, state: WorldState, truth: str) -> None:
    buffer = io.BytesIO()
    np.savez(
        buffer,
        user_factors=state.user_factors,
        item_factors=state.item_factors,
        item_bias=state.item_bias,
        beta=np.array(p.beta),
    )
    storage.write_bytes_atomic(f"{truth}/dt={day.isoformat()}/truth.npz", buffer.getvalue())


def generate(
    p: WorldParams,
    start: date,
    days: int,
    landing: str,
    truth: str,
    fmt: str = "jsonl",
    rows_per_file: int = 1_000_000,
) -> list[dict[str, Any]]:
    """Write ``days`` landing days from ``start``; returns the per-day manifests."""
    manifests = [write_day(p, start + timedelta(days=i), landing, truth, fmt, rows_per_file) for i in range(days)]
    log = {
        "params": {k: v for k, v in asdict(p).items() if k != "scenarios" and (k, v) != ("sampler", "exact")},
        "scenarios": [s.to_json() for s in p.scenarios],
        "format": fmt,
    }
    storage.write_json_atomic(f"{truth}/scenarios.json", log)
    return manifests
