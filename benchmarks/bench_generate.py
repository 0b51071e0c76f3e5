"""Throughput of the synthetic event generator (``jobs.sim``).

One landing day of 10M events (``--quick``: 1M) for 50,000 users and 5,000 items, written
once as JSON lines and once as CSV through ``write_day`` (generation, serialisation, atomic
publish), in a temporary folder that is removed afterwards.

Reference: the raw cost of writing the same number of rows with ``pyarrow.csv.write_csv``
from an in-memory table of the same columns (the generator's own clean table, built
beforehand and not timed). ``ratio`` = generator events/s / pyarrow write rows/s, i.e. the
share of a bare columnar CSV writer's speed that the whole generator reaches.

Scale world: one day of 10M events (``--quick``: 1M) over 1M users and 20,000 items with the
``fast`` item sampler (``WorldParams(sampler="fast")``), written as JSON lines through
``write_day``; reference: ``pyarrow.csv.write_csv`` of that day's table, as above. A second row
sets the fast sampler against the ``exact`` one (the default) on the same world and a day of
100,000 events (``generate_day`` in memory): ``ratio`` is the speed-up. Notes give CPU seconds
beside wall seconds: on a shared machine the wall time includes waiting for a core.

Memory: the day is built in memory (about 150 bytes an event for the table) and serialised
in 1M-row shards; the benchmark holds one day at a time and reports the peak RSS.
"""

from __future__ import annotations

import gc
import resource
import shutil
import tempfile
import time
from dataclasses import replace
from datetime import date
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow.csv as pacsv

from jobs.sim import WorldParams, generate_day, write_day

USERS = 50_000
ITEMS = 5_000
DAY = date(2026, 1, 1)
SCALE_USERS = 1_000_000
SCALE_ITEMS = 20_000
SAMPLER_EVENTS = 100_000  # the exact sampler's day in the comparison (10M took 216 s of CPU, 4.4x the fast one)


def _peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


def _folder_mib(folder: Path) -> float:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file()) / 2**20


def run(quick: bool = False) -> list[dict[str, Any]]:
    """Long because it is the benchmark's script: both measured sides and the result rows, top to bottom."""
    events = 1_000_000 if quick else 10_000_000
    params = WorldParams(users=USERS, items=ITEMS, events_per_day=events)
    shape = f"{events:,} events/day, {USERS:,} users, {ITEMS:,} items, 1 day"
    rows: list[dict[str, Any]] = []
    tmp = Path(tempfile.mkdtemp(prefix="bench-generate-"))
    try:
        # Reference: bare pyarrow CSV write of an in-memory table with the same columns.
        started = time.perf_counter()
        table, _ = generate_day(params, DAY)
        build_s = time.perf_counter() - started
        n_rows = table.num_rows
        ref_file = tmp / "reference.csv"
        started = time.perf_counter()
        pacsv.write_csv(table, str(ref_file), pacsv.WriteOptions(quoting_style="needed"))
        ref_s = time.perf_counter() - started
        ref_rate = n_rows / ref_s
        ref_mib = ref_file.stat().st_size / 2**20
        del table
        ref_file.unlink()
        gc.collect()

        for fmt in ("jsonl", "csv"):
            out = tmp / fmt
            started = time.perf_counter()
            manifest = write_day(params, DAY, str(out / "landing"), str(out / "truth"), fmt)
            seconds = time.perf_counter() - started
            written = manifest["rows_written"]
            rate = written / seconds
            size = _folder_mib(out / "landing")
            files = len(manifest["files"])
            rows += [
                {
                    "metric": f"write_day {fmt} throughput",
                    "value": rate,
                    "unit": "events/s",
                    "reference": ref_rate,
                    "ratio": rate / ref_rate,
                    "note": f"{shape}; {written:,} rows incl. redeliveries; {files} files, {size:,.0f} MiB; "
                    "reference: pyarrow.csv.write_csv rows/s",
                },
                {
                    "metric": f"write_day {fmt} wall time",
                    "value": seconds,
                    "unit": "s",
                    "reference": ref_s,
                    "ratio": seconds / ref_s,
                    "note": "generation + serialisation + atomic publish; reference: pyarrow write seconds",
                },
            ]
            shutil.rmtree(out)
            gc.collect()

        rows += _scale_rows(tmp, quick)
        rows += [
            {
                "metric": "generate_day in memory",
                "value": n_rows / build_s,
                "unit": "events/s",
                "reference": ref_rate,
                "ratio": n_rows / build_s / ref_rate,
                "note": f"build the Arrow table only, no serialisation ({build_s:.1f} s)",
            },
            {
                "metric": "pyarrow.csv.write_csv (reference)",
                "value": ref_rate,
                "unit": "rows/s",
                "note": f"{n_rows:,} rows, same 9 columns, {ref_mib:,.0f} MiB in {ref_s:.2f} s",
            },
            {
                "metric": "peak RSS",
                "value": _peak_rss_mib(),
                "unit": "MiB",
                "note": "whole benchmark process (ru_maxrss)",
            },
        ]
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return rows


def _timed(fn: Any, *args: Any) -> tuple[Any, float, float]:
    """(result, wall seconds, CPU seconds of this process)."""
    wall, cpu = time.perf_counter(), time.process_time()
    out = fn(*args)
    return out, time.perf_counter() - wall, time.process_time() - cpu


def _scale_rows(tmp: Path, quick: bool) -> list[dict[str, Any]]:
    """The scale world with the fast sampler: a JSON-lines day, and fast vs exact on a small day."""
    events = 1_000_000 if quick else 10_000_000
    params = WorldParams(users=SCALE_USERS, items=SCALE_ITEMS, events_per_day=events, sampler="fast")
    shape = f"{events:,} events/day, {SCALE_USERS:,} users, {SCALE_ITEMS:,} items, fast sampler"
    (table, _), build_s, build_cpu = _timed(generate_day, params, DAY)
    ref_file = tmp / "scale-reference.csv"
    _, ref_s, _ = _timed(pacsv.write_csv, table, str(ref_file), pacsv.WriteOptions(quoting_style="needed"))
    ref_rate = table.num_rows / ref_s
    del table
    ref_file.unlink()
    gc.collect()
    out = tmp / "scale"
    manifest, seconds, cpu = _timed(write_day, params, DAY, str(out / "landing"), str(out / "truth"), "jsonl")
    written = manifest["rows_written"]
    size = _folder_mib(out / "landing")
    shutil.rmtree(out)
    gc.collect()

    small = replace(params, events_per_day=SAMPLER_EVENTS)
    (fast, _), fast_s, _ = _timed(generate_day, small, DAY)
    (exact, _), exact_s, _ = _timed(generate_day, replace(small, sampler="exact"), DAY)
    same_item = float(np.mean(fast.column("item_id").to_numpy() == exact.column("item_id").to_numpy()))
    return [
        {
            "metric": "scale world write_day jsonl throughput",
            "value": written / seconds,
            "unit": "events/s",
            "reference": ref_rate,
            "ratio": written / seconds / ref_rate,
            "note": f"{shape}; {written:,} rows, {size:,.0f} MiB in {seconds:.1f} s wall, {cpu:.1f} s CPU; "
            f"generate_day alone {build_s:.1f} s wall, {build_cpu:.1f} s CPU; "
            "reference: pyarrow.csv.write_csv rows/s of the same day",
        },
        {
            "metric": "scale world fast vs exact sampler",
            "value": fast.num_rows / fast_s,
            "unit": "events/s",
            "reference": exact.num_rows / exact_s,
            "ratio": exact_s / fast_s,
            "note": f"generate_day in memory, {SAMPLER_EVENTS:,} events over the same users and items, same seed: "
            f"fast {fast_s:.1f} s, exact {exact_s:.1f} s; the same item for {same_item:.2%} of events "
            "(the rest: float32 rounding, mostly the exact sampler's running sum over the catalogue)",
        },
    ]
