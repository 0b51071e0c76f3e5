"""Ingestion with every zone on an S3 server vs on local disk, same run.

An S3-compatible server on loopback (moto in server mode, ``scripts/s3_service.py``) and a Spark
Connect server started after it (its Python workers inherit the endpoint and keys, as a
cluster's workers get them from their environment). The same generated landing day (50,000
users, 5,000 items, the realistic world's ~0.3% redelivered duplicates) is written once under a
local root and once under ``s3://``; ``ingest_day`` runs on each through the same session,
``REPEATS`` times per side, interleaved with the order alternated (local, S3 | S3, local | local,
S3), so that neither side always pays the session's first-run warm-up or always follows the
other; the day's curated and quarantine partitions are removed (untimed) before each run, so
every run is a first publish. ``value`` = S3 events/s, ``reference`` = local-disk events/s, each
from the median wall time of its side, ``ratio`` = S3 / local (both sides do the same work:
read the landing day, parse, judge, dedup, write curated and quarantine, commit). The S3 side also pays the object store's protocol: the attempt prefix, the
server-side copy that names each file, the manifest PUT. moto is a Python server holding the
bucket in memory, far slower than a real object store: the ratio is a lower bound of what S3
costs, not a forecast. Sizes: 1M events (``--quick``: 200k), then 10M when ten times the 1M
measurement (every run of both sides) fits ``BUDGET_S``; otherwise its row is marked not run
and the extrapolation stays in the note, never in the value column.
"""

from __future__ import annotations

import os
import shutil
import statistics
import tempfile
import time
import uuid
from collections.abc import Callable, Sequence
from datetime import date
from pathlib import Path
from typing import Any

BUDGET_S = 1800.0
REPEATS = 3
DAY = date(2026, 2, 1)


def schedule(sides: Sequence[str], repeats: int) -> list[str]:
    """Run order: every side once per repeat, the order reversed on every other repeat."""
    order: list[str] = []
    for rep in range(repeats):
        order += list(sides) if rep % 2 == 0 else list(reversed(sides))
    return order


def interleaved(sides: Sequence[str], repeats: int, once: Callable[[str], float]) -> dict[str, list[float]]:
    """Wall seconds of ``once(side)`` per side, run in ``schedule`` order (``repeats`` >= 3)."""
    if repeats < 3:
        raise ValueError(f"a median needs at least 3 runs per side, got {repeats}")
    walls: dict[str, list[float]] = {side: [] for side in sides}
    for side in schedule(sides, repeats):
        walls[side].append(once(side))
    return walls


def median_rates(n: int, walls: dict[str, list[float]], side: str = "s3", baseline: str = "local") -> dict[str, float]:
    """``value``/``reference``/``ratio`` of a row: events/s from each side's median wall time."""
    value = n / statistics.median(walls[side])
    reference = n / statistics.median(walls[baseline])
    return {"value": value, "reference": reference, "ratio": value / reference}


KEYS = ("rows", "quarantined", "input_rows")  # what both sides must agree on, in every run


def comparison_row(
    events: int, walls: dict[str, list[float]], results: dict[str, list[dict[str, Any]]], kept: list[dict[str, Any]]
) -> dict[str, Any]:
    """The S3-vs-local row of one size from every run's wall time and job result.

    Raises (``partial_rows`` = ``kept``) when a run's counts differ from the others': the two
    sides did not do the same work, so their ratio means nothing.
    """
    first = results["local"][0]
    if any(r[k] != first[k] for runs in results.values() for r in runs for k in KEYS):
        counts = {side: [[r[k] for k in KEYS] for r in runs] for side, runs in results.items()}
        error = RuntimeError(f"runs disagree on {KEYS}: {counts}")
        error.partial_rows = kept  # type: ignore[attr-defined]  # kept by benchmarks/__main__.py
        raise error
    n = first["input_rows"]
    order = " ".join(schedule(list(walls), REPEATS))
    runs = "; ".join(f"{side} " + ", ".join(f"{w:.1f}" for w in ws) + " s" for side, ws in walls.items())
    return {
        "metric": f"ingest_day {events:,} events: zones on S3 (moto) vs local disk",
        **median_rates(n, walls),
        "unit": "events/s",
        "note": f"median of {min(map(len, walls.values()))} runs per side, interleaved, order alternated ({order}); "
        f"wall per run, each side in run order: {runs}; {n:,} landing rows, {first['rows']:,} curated rows (same counts in "
        "every run); one Spark Connect session (local[2]); moto: a Python S3 server, slower than real S3",
    }


def run(quick: bool = False) -> list[dict[str, Any]]:
    """Long because it is the benchmark's script: servers, both measured sides and the rows."""
    from benchmarks.spark_server import connect_server
    from scripts import s3_service
    from scripts.stack_shape import free_port

    sizes = [200_000] if quick else [1_000_000, 10_000_000]
    tmp = Path(tempfile.mkdtemp(prefix="bench-s3-"))
    saved = {k: os.environ.get(k) for k in [*s3_service.env(0), "RECSYS__STORAGE__ROOT"]}
    server = s3_service.start(free_port(), tmp / "s3.log")
    rows: list[dict[str, Any]] = []
    try:
        os.environ.update(s3_service.env(int(server.args[-1])))
        s3_service.create_bucket("recsys-bench")
        with connect_server("bench-s3-spark-"):
            from jobs.core.config import get_config
            from jobs.core.fs import remove_tree
            from jobs.core.spark import connect
            from jobs.ingest.job import ingest_day
            from jobs.sim import WorldParams, write_day

            roots = {"local": str(tmp / "data"), "s3": f"s3://recsys-bench/{uuid.uuid4().hex[:8]}"}
            os.environ["RECSYS__STORAGE__ROOT"] = roots["local"]
            spark = connect(get_config(), "bench-object-store")
            spark.range(10).count()
            predicted = 0.0
            for events in sizes:
                if predicted > BUDGET_S:
                    rows.append(
                        {
                            "metric": f"ingest_day {events:,} events on S3 vs local disk (not run)",
                            "note": f"not run: extrapolated {predicted:.0f} s (10x the smaller size's "
                            f"{2 * REPEATS} runs) > budget {BUDGET_S:.0f} s; an extrapolation, not a measurement",
                        }
                    )
                    continue
                params = WorldParams(users=50_000, items=5_000, events_per_day=events)
                results: dict[str, list[dict[str, Any]]] = {side: [] for side in roots}
                for root in roots.values():
                    os.environ["RECSYS__STORAGE__ROOT"] = root
                    cfg = get_config()
                    write_day(params, DAY, cfg.storage.zone("landing"), cfg.storage.zone("ground_truth"))

                def once(side: str, results: dict[str, list[dict[str, Any]]] = results) -> float:
                    os.environ["RECSYS__STORAGE__ROOT"] = roots[side]
                    cfg = get_config()
                    for zone in ("curated", "quarantine"):
                        remove_tree(cfg.storage.partition(zone, DAY))
                    started = time.perf_counter()
                    results[side].append(ingest_day(cfg, spark, DAY))
                    return time.perf_counter() - started

                walls = interleaved(list(roots), REPEATS, once)
                rows.append(comparison_row(events, walls, results, rows))
                predicted = 10 * sum(sum(ws) for ws in walls.values())
            spark.stop()
    finally:
        s3_service.stop(server)
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        shutil.rmtree(tmp, ignore_errors=True)
    return rows
