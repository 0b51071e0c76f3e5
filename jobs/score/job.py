"""Batch scoring: top-K recommendations for every active user of a day, with one pinned model version.

``python -m jobs.score --day D --model-version V [--k K] [--device auto|cpu|cuda]
[--zone recommendations|rescored] [--served-by RUN_ID] [--result-file F]``

Scores the **active users** of day D (at least one event in the validated curated partition
``curated/events/dt=D``) with exactly the registered version ``--model-version`` (never an
alias), excluding the items each user interacted with in the model's training window and in the
validated days after it up to D. A day missing, unpublished or not validated exits 3 and writes
nothing; an unknown version is a bad argument (exit 2); a version without the ``.npz`` exits 3.
How (Spark pass, user ranges, workers, ties, device): ``docs/stages.md``; the vectorised core is
``jobs.score.core``, the worker side ``jobs.score.worker``.

Output (the scoring/monitoring contract)
  ``recommendations/dt=D/part-NNNNN.parquet``: ``user_id`` int64, ``rank`` int32 (1 = best),
  ``item_id`` int64, ``score`` float32, ``model_version`` string, ``model_run_id`` string, one
  row per (user, rank), ordered by (user_id, rank) within and across files; K =
  ``scoring.k`` (``--k``), fewer rows only for a user with fewer than K eligible items.
  Published atomically with a ``_SUCCESS`` manifest (day, model name/version/run id, k,
  users, rows, source_days, seconds, ...); a rerun replaces the day with identical bytes.
  The result JSON (``--result-file``) holds uri, day, model_version, model_run_id, users,
  rows and seconds.

Reuse: ``score_users(recommender, user_ids, extra_seen, k)`` is the scoring core as a pure
function (no Spark, no MLflow).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import tempfile
import time
from datetime import date, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # see jobs.train: spinning OpenMP threads on a loaded host

import numpy as np

from jobs.core import catalog, storage, tracking
from jobs.core.cli import BadArgument, model_version, run_job
from jobs.core.config import PipelineConfig
from jobs.core.results import ScoreResult
from jobs.core.schema import POSITIVE_TYPES, recommendations_schema
from jobs.core.spark import parallelism as spark_parallelism
from jobs.core.timing import Stages
from jobs.score.core import DEVICES, ScoreError
from jobs.score.worker import _partition_scorer

if TYPE_CHECKING:
    from pyspark.sql import SparkSession


MIN_USERS_PER_TASK = 50_000
SCORE_ZONES = ("recommendations", "rescored")  # served record; explicit re-scoring of a served day


WORKER_REPORT = (
    "bucket int, users long, rows long, unknown long, device string, part int, pid long, executor string, loads int"
)


def ship_model(spark: SparkSession, info: tracking.ModelFiles) -> str:
    """The model's npz as a file artifact of the session, named by (model, version, run); the name.

    Workers read it with ``SparkFiles.get(name)``: the artifact travels with the session, so a
    server (and workers) on other hosts get exactly this file.
    """
    name = re.sub(r"[^A-Za-z0-9_.-]", "_", f"recsys-{info.name}-v{info.version}-{info.run_id[:12]}.npz")
    with tempfile.TemporaryDirectory(prefix="recsys-ship-") as tmp:
        staged = Path(tmp) / name
        shutil.copyfile(info.artifact, staged)
        spark.addArtifacts(str(staged), file=True)
    return name


def exclusion_days(cfg: PipelineConfig, day: date, window_end: str | None) -> tuple[list[str], list[str]]:
    """(validated days feeding the exclusion, skipped days) in ``(window_end, day]`` ∩ the lookback."""
    first = day - timedelta(days=cfg.scoring.exclusion_days - 1)
    if window_end:
        first = max(first, date.fromisoformat(window_end) + timedelta(days=1))
    days, skipped = [], []
    current = first
    while current <= day:
        d = current.isoformat()
        (days if catalog.is_validated(cfg, d) else skipped).append(d)
        current += timedelta(days=1)
    return days, skipped


def plan_buckets(user_ids: np.ndarray, k: int, rows_per_file: int, parallelism: int) -> np.ndarray:
    """Lower user-id bounds of buckets 1..n-1 (bucket 0 starts at the smallest id).

    n = max(files needed for ``rows_per_file``, one per core up to one per
    ``MIN_USERS_PER_TASK`` users), rounded up to whole waves of ``parallelism`` tasks (3 equal
    tasks on 2 cores take as long as 4); buckets hold equal numbers of users.
    """
    n_users = len(user_ids)
    if n_users == 0:
        return np.zeros(0, dtype=np.int64)
    by_rows = -(-n_users * k // rows_per_file)
    by_cores = min(parallelism, -(-n_users // MIN_USERS_PER_TASK))
    n = max(1, by_rows, by_cores)
    if n > 1 and parallelism > 1:
        n = min(-(-n // parallelism) * parallelism, n_users)
    per = -(-n_users // n)
    return np.asarray(user_ids[per::per], dtype=np.int64)


def spread_buckets(spark: SparkSession, keyed: Any, n_buckets: int) -> Any:
    """``keyed`` (with an int ``bucket`` column 0..n-1) with bucket ``b`` in partition ``b``, exactly
    (``jobs.core.spark.place``)."""
    from pyspark.sql import functions as F

    from jobs.core.spark import place

    return place(spark, keyed, F.col("bucket"), n_buckets)


def _arguments(cfg: PipelineConfig, k: int | None, device: str | None) -> tuple[int, str]:
    k = int(k or cfg.scoring.k)
    if k < 1:
        raise BadArgument(f"k must be at least 1, got {k}")
    device = device or cfg.scoring.device
    if device not in DEVICES:
        raise BadArgument(f"unknown device {device!r}; choose from {', '.join(DEVICES)}")
    return k, device


def active_users(spark: SparkSession, cfg: PipelineConfig, day: str, excl_days: list[str]) -> Any:
    """One pass over D and the exclusion days: per user active on D, the sorted positive items of
    the exclusion days (``user_id``, ``extra_items``); persisted, the caller unpersists it."""
    from pyspark import StorageLevel
    from pyspark.sql import functions as F

    from jobs.core.spark import read_parquet

    day_of_file = F.regexp_extract(F.col("_file"), r"dt=(\d{4}-\d{2}-\d{2})", 1)
    excluded_item = F.when(
        F.col("event_type").isin(*POSITIVE_TYPES) & day_of_file.isin(*excl_days), F.col("item_id").cast("long")
    )
    return (
        read_parquet(spark, catalog.curated_files(cfg, sorted({day, *excl_days})), file_column="_file")
        .groupBy(F.col("user_id").cast("long").alias("user_id"))
        .agg(
            F.max((day_of_file == F.lit(day)).cast("int")).alias("active"),
            F.array_sort(F.collect_set(excluded_item)).alias("extra_items"),
        )
        .where(F.col("active") == 1)
        .select("user_id", "extra_items")
        .persist(StorageLevel.MEMORY_AND_DISK)
    )


def _score_buckets(spark: SparkSession, per_user: Any, user_ids: np.ndarray, scorer_args: dict[str, Any]) -> list:
    """Score the user ranges in Spark (one range per partition); one report row per range written."""
    from pyspark.sql import functions as F

    if not len(user_ids):
        return []
    parallelism = spark_parallelism(spark)
    bounds = plan_buckets(user_ids, scorer_args["k"], scorer_args["rows_per_file"], parallelism)
    n_buckets = len(bounds) + 1
    bucket = F.lit(0)
    for b in bounds.tolist():
        bucket = bucket + F.when(F.col("user_id") >= F.lit(b), 1).otherwise(0)
    keyed = per_user.select(bucket.cast("int").alias("bucket"), "user_id", "extra_items")
    # One user range (bucket) per partition, its users sorted: each task writes whole, ordered files.
    spread = spread_buckets(spark, keyed, n_buckets)
    executor_cores = int(spark.conf.get("spark.executor.cores", None) or 0) or parallelism
    threads = max(1, min(executor_cores, parallelism // n_buckets))
    scorer = _partition_scorer(
        scorer_args["shipped"],
        scorer_args["version"],
        scorer_args["run_id"],
        scorer_args["k"],
        scorer_args["batch_users"],
        scorer_args["device"],
        threads,
        scorer_args["target"],
    )
    return (
        spread.sortWithinPartitions("bucket", "user_id")
        .mapInArrow(scorer, WORKER_REPORT)
        .toArrow()
        .sort_by("bucket")
        .to_pylist()
    )


def score_day(
    cfg: PipelineConfig,
    spark: SparkSession,
    day: date,
    version: str,
    k: int | None = None,
    device: str | None = None,
    zone: str = "recommendations",
    airflow_run_id: str | None = None,
) -> dict[str, Any]:
    """Score the active users of ``day`` with model ``version`` and publish the partition.

    ``zone`` is ``recommendations`` (what is served) or ``rescored`` (an explicit re-scoring of
    a served day, which never touches the served record); ``airflow_run_id`` is recorded in the
    manifest (``served_by``): the run that wrote it may rewrite it (a clear), no other may. The
    job's timed stages, in order: model, active users (with their exclusions), score and write,
    publish.
    """
    if zone not in SCORE_ZONES:
        raise BadArgument(f"--zone must be one of {', '.join(SCORE_ZONES)}, got {zone!r}")
    started = time.perf_counter()
    k, device = _arguments(cfg, k, device)
    d = catalog.require_validated(cfg, day, "scored")
    stages = Stages(started)
    with tempfile.TemporaryDirectory(prefix="recsys-score-dl-") as tmp:
        info = tracking.fetch_model(cfg, version, Path(tmp))
        print(
            f"scoring dt={d} with {info.name} version {info.version} (run {info.run_id}); "
            f"training window ends {info.window_end or 'unknown'}",
            flush=True,
        )
        shipped = ship_model(spark, info)
    stages.mark("model")
    excl_days, skipped = exclusion_days(cfg, day, info.window_end)
    if not info.window_end:
        print(
            f"warning: no training window recorded for version {version}: excluding the items of every "
            f"validated day of the last {cfg.scoring.exclusion_days} days",
            flush=True,
        )
    per_user = active_users(spark, cfg, d, excl_days)
    part = catalog.partition(cfg, zone, d)
    try:
        user_ids = np.sort(per_user.select("user_id").toArrow().column("user_id").to_numpy())
        stages.mark("active_users")
        with storage.staged_partition(part) as staging:
            counts = _score_buckets(
                spark,
                per_user,
                user_ids,
                {
                    "shipped": shipped,
                    "version": info.version,
                    "run_id": info.run_id,
                    "k": k,
                    "batch_users": cfg.scoring.batch_users,
                    "rows_per_file": cfg.scoring.rows_per_file,
                    "device": device,
                    "target": str(staging),
                },
            )
            stages.mark("score_and_write")
            manifest = _publish(
                staging, part, counts, len(user_ids), info, d, k, excl_days, skipped, stages, airflow_run_id
            )
    finally:
        per_user.unpersist()
    print(f"dt={d}: stage seconds {json.dumps(stages.seconds)}", flush=True)
    return _result(part, zone, manifest, counts, stages)


def _result(part: str, zone: str, manifest: dict, counts: list[dict], stages: Stages) -> dict[str, Any]:
    """The job's result: the published manifest's keys and how the work spread over Spark."""
    return {
        "uri": part,
        "zone": zone,
        **{key: manifest[key] for key in ("day", "model_name", "model_version", "model_run_id", "k", "users", "rows")},
        "unknown_users": manifest["unknown_users"],
        "source_days": manifest["source_days"],
        "files": manifest["files"],
        "device": manifest["device"],
        # how the work spread: Spark partitions, Python worker processes, model loads (≤ one per process)
        "partitions": len({r["part"] for r in counts}),
        "worker_processes": len({r["pid"] for r in counts}),
        "executors": sorted({r["executor"] for r in counts}),
        "model_loads": sum(r["loads"] for r in counts),
        "stages": stages.seconds,
        "seconds": manifest["seconds"],
    }


def _publish(
    staging: storage.Staging,
    part: str,
    counts: list[dict[str, Any]],
    n_users: int,
    info: tracking.ModelFiles,
    d: str,
    k: int,
    excl_days: list[str],
    skipped: list[str],
    stages: Stages,
    served_by: str | None = None,
) -> dict[str, Any]:
    """Name the staged files, check every active user was scored, write the manifest, publish."""
    files = []
    for row in counts:
        name = f"part-{row['bucket']:05d}.parquet"
        storage.rename_staged(staging, f".part-{row['bucket']:05d}.parquet", name)
        files.append(name)
    users = sum(r["users"] for r in counts)
    if users != n_users:
        raise ScoreError(f"scored {users} users but dt={d} has {n_users} active users")
    manifest = {
        "day": d,
        "model_name": info.name,
        "model_version": info.version,
        "model_run_id": info.run_id,
        "k": k,
        "users": users,
        "unknown_users": sum(r["unknown"] for r in counts),
        "rows": sum(r["rows"] for r in counts),
        "files": files,
        "source_days": sorted({d, *excl_days}),
        "exclusion_days": excl_days,
        "skipped_days": skipped,
        "training_window_end": info.window_end,
        "device": sorted({r["device"] for r in counts}),
        "columns": [f"{f.name}:{f.type}" for f in recommendations_schema()],
        "stages": stages.seconds,
        "seconds": stages.total(),
        "served_by": served_by,
    }
    storage.publish(staging, part, manifest)
    return manifest


def run(cfg: PipelineConfig, args: argparse.Namespace) -> ScoreResult:
    from jobs.core.spark import spark_session

    if args.k is not None and args.k < 1:
        raise BadArgument("--k must be at least 1")
    catalog.require_validated(cfg, args.day, "scored")  # before Spark: a refused day costs nothing
    with spark_session(cfg, "score") as spark:
        return score_day(cfg, spark, args.day, args.model_version, args.k, args.device, args.zone, args.served_by)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m jobs.score", description=__doc__.split("\n\n")[0])
    ap.add_argument("--day", required=True, type=date.fromisoformat, help="curated day D (YYYY-MM-DD)")
    ap.add_argument(
        "--model-version",
        required=True,
        type=model_version,
        help="registered version of mlflow.model_name (not an alias)",
    )
    ap.add_argument("--k", type=int, help="recommendations per user (default scoring.k)")
    ap.add_argument("--device", choices=DEVICES, help="default scoring.device")
    ap.add_argument(
        "--zone",
        choices=SCORE_ZONES,
        default="recommendations",
        help="recommendations (served) or rescored (an explicit re-scoring of a served day)",
    )
    ap.add_argument("--served-by", help="the Airflow run id recorded in the manifest (served_by)")
    return run_job(
        "scoring",
        ap,
        run,
        argv,
        summary=lambda r: (
            f"dt={r['day']}: {r['rows']} recommendations for {r['users']} users ({r['unknown_users']} unknown to "
            f"the model) with {r['model_name']} version {r['model_version']} on {','.join(r['device'])} "
            f"in {r['seconds']}s → {r['uri']}"
        ),
    )
