"""Spark scale-out: ``jobs.ingest`` and ``jobs.score`` on a standalone cluster of 1 and of 2 one-core workers, same input.

Input, made once: landing days of JSON lines from ``jobs.sim`` (50,000 users, 5,000 items, the
realistic world with its redelivered duplicates; ``--quick``: one day of 1M events, full: two
days of 3M) and, for scoring, a synthetic model registered in a SQLite MLflow store with a
validated curated day of its users (``benchmarks.bench_score``'s: ``--quick`` 100,000 users x
2,000 items, full 300,000 x 10,000; more than ``jobs.score.job.MIN_USERS_PER_TASK`` users, so the
job gives each core its own user range).

For workers in (1, 2): a standalone cluster (a Master, that many Workers of
``scripts.spark_service.WORKER_CORES`` = 1 core, a Spark Connect server in front:
``benchmarks.spark_server.connect_server(workers=N)``) in its own state folder, a storage root
of its own, the landing days shared. In one client process, as ``bench_ingest`` does, a session
tagged like the job (``recsys-ingest``, then ``recsys-score``; connect and a first trivial job
excluded) runs ``jobs.ingest.job.ingest_day`` on every day, then ``jobs.score.job.score_day``
on the scoring day. The wall time of each stage is measured; then the cluster's REST API says
which executors ran the tasks of each tag, and the cluster is stopped (by its process groups).

Checked, or the benchmark fails (its rows kept): both runs published the same rows (curated
and quarantine of every day, recommendations): row counts and a content digest of the rows,
independent of how they were split into files; and each stage ran tasks on as many executors
as the cluster had workers (the 2-worker run used both).

Rows: per stage, ``value`` = wall seconds with 2 workers, ``reference`` = with 1, ``ratio`` =
2-worker / 1-worker wall (ideal 0.5; the note gives the speed-up and CPU seconds of the process
tree). On a 2-core machine the two one-core executors share the cores with the Connect server
(the driver), the Master and Worker daemons and the client, so 2x is out of reach there.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
import time
from datetime import date, timedelta
from pathlib import Path
from typing import Any

SIM_USERS, SIM_ITEMS = 50_000, 5_000
SIZES = {
    "quick": {"events": 1_000_000, "days": 1, "score_users": 100_000, "score_items": 2_000},
    "full": {"events": 3_000_000, "days": 2, "score_users": 300_000, "score_items": 10_000},
}
WORKER_COUNTS = (1, 2)
DAY0 = date(2026, 1, 1)
DAY_GAP = 30  # as bench_ingest: beyond ingest.recent_days
SCORE_DAY = date(2026, 3, 2)  # bench_score's day: the model's window ends two days before
STAGES = ("ingest", "score")


class ScaleOutFailed(RuntimeError):
    """The runs disagree or a stage did not spread: the benchmark fails, its measured rows kept
    (``partial_rows``, recorded by the harness)."""

    def __init__(self, problems: list[str], rows: list[dict[str, Any]]) -> None:
        super().__init__("; ".join(problems))
        self.partial_rows = rows


# ---- pure parts (tests/unit/test_bench_scaleout.py) -----------------------------------------


def table_digest(table: Any) -> dict[str, Any]:
    """Rows and a digest of a pyarrow table's content: its columns and types, and the multiset of
    its rows (a 64-bit hash per row, sorted), so the same rows in other files or another order
    give the same digest."""
    import numpy as np
    import pandas as pd

    digest = hashlib.sha256(str([(f.name, str(f.type)) for f in table.schema]).encode())
    if table.num_rows:
        hashes = pd.util.hash_pandas_object(table.to_pandas(), index=False).to_numpy(dtype=np.uint64)
        digest.update(np.sort(hashes).tobytes())
    return {"rows": table.num_rows, "digest": digest.hexdigest()[:16]}


def output_mismatches(outputs: dict[int, dict[str, dict[str, Any]]]) -> list[str]:
    """What differs between the runs' outputs (``{workers: {output: {"rows", "digest"}}}``),
    each run against the first; empty when every run published the same rows."""
    (first, base), *others = sorted(outputs.items())
    problems = []
    for workers, out in others:
        for name in sorted(set(base) | set(out)):
            if base.get(name) != out.get(name):
                problems.append(
                    f"{name} differs: {first} worker(s) {base.get(name)} vs {workers} worker(s) {out.get(name)}"
                )
    return problems


def executors_used(per_executor: dict[str, int]) -> list[str]:
    """Executor ids that ran at least one task (the driver is not an executor)."""
    return sorted(e for e, n in per_executor.items() if n > 0 and e != "driver")


def spread_problems(tasks: dict[int, dict[str, dict[str, int]]]) -> list[str]:
    """Each stage of a ``workers``-worker run must have run tasks on at least ``workers``
    executors (``{workers: {stage: {executor id: tasks}}}``)."""
    problems = []
    for workers, by_stage in sorted(tasks.items()):
        for stage, per_executor in sorted(by_stage.items()):
            used = executors_used(per_executor)
            if len(used) < workers:
                problems.append(f"{stage} with {workers} workers ran on executors {used or 'none'}: {per_executor}")
    return problems


def cores_note(cpus: int) -> str:
    """What the machine's cores allow two one-core workers."""
    if cpus <= 2:
        return (
            f"this machine has {cpus} cores: the 2 one-core executors share them with the Connect server "
            "(the driver), the Master and Worker daemons and the client, so the ideal 2x (ratio 0.5) cannot "
            "be reached; the ratio is what 2 cores allow"
        )
    return (
        f"this machine has {cpus} cores: each one-core executor can have its own, the driver and daemons "
        "use the rest; ideal 2x (ratio 0.5)"
    )


def stage_row(stage: str, what: str, walls: dict[int, float], cpu: dict[int, float], detail: str) -> dict[str, Any]:
    """The row of one stage: 2-worker wall as ``value``, 1-worker wall as ``reference``."""
    one, two = walls[1], walls[2]
    return {
        "metric": f"scale-out {stage} wall, {what}: 2 vs 1 standalone workers",
        "value": two,
        "unit": "s",
        "reference": one,
        "ratio": two / one,
        "note": f"speed-up {one / two:.2f}x (1 worker {one:.1f} s, {cpu[1]:.0f} CPU-s; 2 workers {two:.1f} s, "
        f"{cpu[2]:.0f} CPU-s of the process tree); {cores_note(os.cpu_count() or 1)}; {detail}",
    }


# ---- measurement ------------------------------------------------------------------------------


def partition_digest(part: str) -> dict[str, Any]:
    """``table_digest`` of a published partition's files (through its manifest)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from jobs.core import storage

    manifest = storage.read_manifest(part)
    if manifest is None:
        raise RuntimeError(f"{part} is not published")
    tables = [pq.read_table(storage.partition_file(part, manifest, name)) for name in manifest["files"]]
    table = pa.concat_tables(tables) if tables else pa.table({})
    return {**table_digest(table), "files": len(tables)}


def _one_run(workers: int, days: list[date], landing: str, tmp: Path, score: dict[str, Any]) -> dict[str, Any]:
    """Start a ``workers``-worker cluster, run both stages on it, read back what they published."""
    from benchmarks.bench_ingest import _tree_cpu_s
    from benchmarks.bench_score import write_curated_day
    from benchmarks.spark_server import connect_server
    from jobs.core.config import get_config
    from jobs.core.spark import connect
    from jobs.ingest.job import ingest_day
    from jobs.score.job import score_day
    from scripts import spark_service

    root = tmp / f"data-{workers}w"
    os.environ["RECSYS__STORAGE__ROOT"] = str(root)
    users = score["arrays"]["user_ids"]
    write_curated_day(root, SCORE_DAY.isoformat(), users, score["items"], seed=1)
    write_curated_day(root, (SCORE_DAY - timedelta(days=1)).isoformat(), users[::3], score["items"], seed=2)
    out: dict[str, Any] = {"wall": {}, "cpu": {}, "results": {}, "load": os.getloadavg()[0]}
    with connect_server(f"bench-scaleout-{workers}w-", workers=workers) as server:
        out["start_s"] = server["start_s"]
        cfg = get_config()
        for stage in STAGES:
            spark = connect(cfg, stage)
            try:
                spark.range(1000).count()
                cpu0, started = _tree_cpu_s(), time.perf_counter()
                if stage == "ingest":
                    out["results"][stage] = [ingest_day(cfg, spark, day, landing) for day in days]
                else:
                    out["results"][stage] = [score_day(cfg, spark, SCORE_DAY, score["version"])]
                out["wall"][stage] = time.perf_counter() - started
                out["cpu"][stage] = _tree_cpu_s() - cpu0
            finally:
                spark.stop()
        ui = server["stack"].spark_ui_port
        out["tasks"] = {s: spark_service.executor_tasks(ui, tag=f"{cfg.spark.app_name}-{s}") for s in STAGES}
        outputs = {}
        for day in days:
            for zone in ("curated", "quarantine"):
                outputs[f"{zone} dt={day}"] = partition_digest(cfg.storage.partition(zone, day))
        outputs[f"recommendations dt={SCORE_DAY}"] = partition_digest(
            cfg.storage.partition("recommendations", SCORE_DAY)
        )
    ingested, (scored,) = out["results"].pop("ingest"), out["results"].pop("score")
    out["summary"] = {
        "ingest": f"{sum(r['rows'] for r in ingested):,} curated, "
        f"{sum(r['duplicates_removed'] for r in ingested):,} duplicates removed, "
        f"{sum(r['quarantined'] for r in ingested):,} quarantined",
        "score": f"{scored['partitions']} user range(s) on executors {scored['executors']}, {scored['rows']:,} rows",
    }
    out["files"] = {name: o.pop("files") for name, o in outputs.items()}
    out["outputs"] = outputs
    shutil.rmtree(root, ignore_errors=True)
    return out


def _rows(runs: dict[int, dict[str, Any]], what: dict[str, str]) -> list[dict[str, Any]]:
    """The start-up row and one row per stage (``stage_row``)."""
    rows = [
        {
            "metric": "scale-out cluster start-up: 2 vs 1 standalone workers",
            "value": runs[2]["start_s"],
            "unit": "s",
            "reference": runs[1]["start_s"],
            "note": "Master, Workers and Connect server until every worker's executor is live (once per cluster; "
            "excluded from the stage walls, as are each session's connect and a first trivial job)",
        }
    ]
    for stage in STAGES:
        detail = "; ".join(
            f"{w} worker(s): {runs[w]['summary'][stage]}, tasks per executor {runs[w]['tasks'][stage]}, "
            f"load average {runs[w]['load']:.1f} before the run"
            for w in WORKER_COUNTS
        )
        walls = {w: runs[w]["wall"][stage] for w in WORKER_COUNTS}
        rows.append(stage_row(stage, what[stage], walls, {w: runs[w]["cpu"][stage] for w in WORKER_COUNTS}, detail))
    return rows


def run(quick: bool = False) -> list[dict[str, Any]]:
    """Long because it is the benchmark's script: the input, both runs, the checks, the rows."""
    from benchmarks.bench_score import register_model, synthetic_arrays
    from jobs.core.config import get_config
    from jobs.sim import WorldParams, write_day
    from scripts.stack_stores import patched_environ

    size = SIZES["quick" if quick else "full"]
    tmp = Path(tempfile.mkdtemp(prefix="bench-scaleout-"))
    env = {
        "RECSYS__MLFLOW__TRACKING_URI": f"sqlite:///{tmp / 'mlflow.db'}",
        "RECSYS__MLFLOW__MODEL_NAME": "bench-scaleout",
        "RECSYS__MLFLOW__EXPERIMENT": "bench-scaleout",
        "MLFLOW_TRACKING_URI": f"sqlite:///{tmp / 'mlflow.db'}",
        "GX_ANALYTICS_ENABLED": "false",
    }
    try:
        # the job settings (and the storage root each run sets) restored afterwards
        with patched_environ({**env, "RECSYS__STORAGE__ROOT": str(tmp / "data")}):
            cfg = get_config()
            landing = str(tmp / "landing")
            days = [DAY0 + timedelta(days=DAY_GAP * i) for i in range(size["days"])]
            world = WorldParams(users=SIM_USERS, items=SIM_ITEMS, events_per_day=size["events"])
            landed = [write_day(world, day, landing, str(tmp / "truth"), cfg.ingest.landing_format) for day in days]
            arrays = synthetic_arrays(size["score_users"], size["score_items"], cfg.training.factors, seed=1)
            window = f"2026-02-22..{(SCORE_DAY - timedelta(days=2)).isoformat()}"
            version = register_model(arrays, env, tmp / "artifacts", window)
            score = {"arrays": arrays, "items": size["score_items"], "version": version}

            runs = {w: _one_run(w, days, landing, tmp, score) for w in WORKER_COUNTS}

            in_rows = sum(int(m["rows_written"]) for m in landed)
            what = {
                "ingest": f"{len(days)} landing day(s) of {size['events']:,} events ({in_rows:,} rows)",
                "score": f"{size['score_users']:,} users x {size['score_items']:,} items",
            }
            rows = _rows(runs, what)
            mismatches = output_mismatches({w: runs[w]["outputs"] for w in WORKER_COUNTS})
            problems = mismatches + spread_problems({w: runs[w]["tasks"] for w in WORKER_COUNTS})
            files = {w: runs[w]["files"] for w in WORKER_COUNTS}
            checked = f"rows and content digest per output with 1 worker {runs[1]['outputs']}; files per output {files}"
            rows.append(
                {
                    "metric": "scale-out outputs: rows published with 2 vs 1 workers",
                    "value": sum(o["rows"] for o in runs[2]["outputs"].values()),
                    "unit": "rows",
                    "reference": sum(o["rows"] for o in runs[1]["outputs"].values()),
                    "note": (f"DIFFER: {'; '.join(mismatches)}; " if mismatches else "identical with 1 and 2 workers: ")
                    + checked,
                }
            )
            if problems:
                raise ScaleOutFailed(problems, rows)
            return rows
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    import sys

    for row in run(quick="--quick" in sys.argv):
        print(row)
