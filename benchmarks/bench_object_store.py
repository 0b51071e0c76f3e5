"""Ingestion with every zone on an S3 server vs on local disk, same run.

An S3-compatible server on loopback (moto in server mode, ``scripts/s3_service.py``) and a Spark
Connect server started after it (its Python workers inherit the endpoint and keys, as a
cluster's workers get them from their environment). The same generated landing day (50,000
users, 5,000 items, the realistic world's ~0.3% redelivered duplicates) is written once under a
local root and once under ``s3://``; ``ingest_day`` runs on each through the same session,
local first. ``value`` = S3 events/s, ``reference`` = local-disk events/s, ``ratio`` = S3 / local
(both sides do the same work: read the landing day, parse, judge, dedup, write curated and
quarantine, commit). The S3 side also pays the object store's protocol: the attempt prefix, the
server-side copy that names each file, the manifest PUT. moto is a Python server holding the
bucket in memory, far slower than a real object store: the ratio is a lower bound of what S3
costs, not a forecast. Sizes: 1M events (``--quick``: 200k), then 10M when the 1M run predicts
it fits ``BUDGET_S``.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import time
import uuid
from datetime import date
from pathlib import Path
from typing import Any

BUDGET_S = 900.0
DAY = date(2026, 2, 1)


def run(quick: bool = False) -> list[dict[str, Any]]:
    """Long because it is the benchmark's script: servers, both measured sides and the rows."""
    from benchmarks.spark_server import connect_server
    from scripts import s3_service
    from scripts.stack import free_port

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
                            "metric": f"ingest_day {events:,} events on S3 (not run)",
                            "note": f"predicted {predicted:.0f} s from the smaller size > budget {BUDGET_S:.0f} s",
                        }
                    )
                    continue
                params = WorldParams(users=50_000, items=5_000, events_per_day=events)
                walls, results = {}, {}
                for side, root in roots.items():
                    os.environ["RECSYS__STORAGE__ROOT"] = root
                    cfg = get_config()
                    write_day(params, DAY, cfg.storage.zone("landing"), cfg.storage.zone("ground_truth"))
                    started = time.perf_counter()
                    results[side] = ingest_day(cfg, spark, DAY)
                    walls[side] = time.perf_counter() - started
                n = results["local"]["input_rows"]
                same = all(results["s3"][k] == results["local"][k] for k in ("rows", "quarantined", "input_rows"))
                rows.append(
                    {
                        "metric": f"ingest_day {events:,} events: zones on S3 (moto) vs local disk",
                        "value": n / walls["s3"],
                        "unit": "events/s",
                        "reference": n / walls["local"],
                        "note": f"S3 {walls['s3']:.1f} s, local {walls['local']:.1f} s wall for {n:,} landing rows; "
                        f"{results['s3']['rows']:,} curated rows ({'same counts' if same else 'COUNTS DIFFER'}); "
                        "one Spark Connect session (local[2]); moto: a Python S3 server, slower than real S3",
                    }
                )
                predicted = walls["s3"] * 10
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
