"""Training snapshot: a time-based train/test split of validated curated days (Spark).

``python -m jobs.snapshot --date D [--window-days N]``

* train = positive interactions (``click``, ``play``, ``rating``) of the validated days
  ``[D - N, D - 1]``, one row per (user, item) with ``weight`` = number of positive events;
* test = positive pairs of day ``D`` not already in train, for users and items known in train
  (the held-out day the evaluation gate ranks);
* ``users.parquet`` / ``items.parquet`` map dense indices to ids (``items`` carries the train
  popularity used by the baseline);
* ``reference_stats.json``: the drift reference of the window (``jobs/drift_metrics.py``:
  feature bins, sketches and counts of the train days' curated events, the model's known ids,
  the unseen shares of day D), read from the same curated files with pyarrow; the trainer
  logs it with the model so the monitor never recomputes it from raw history.

The snapshot lives at ``training/snapshots/dt=D_w=N/`` and is published atomically: the same
(day, window) over the same curated data gives the same files, so a retried task reuses it.
Days that are missing or failed validation are skipped and listed in the manifest; fewer than
one train day, or an unvalidated day D, fail with exit code 3.

Collecting the split to the driver is deliberate: the trainer reads the whole set anyway
(one node, one or several GPUs), so the snapshot is bounded by what a trainer can hold.
"""

from __future__ import annotations

import argparse
import sys
import time
from datetime import date, timedelta
from pathlib import Path
from typing import Any

from jobs import storage
from jobs.config import ConfigError, PipelineConfig, get_config

POSITIVE_TYPES = ("click", "play", "rating")
REFERENCE_STATS = "reference_stats.json"


class SnapshotError(RuntimeError):
    """Not enough validated data for the requested window."""


def snapshot_uri(cfg: PipelineConfig, day: date, window_days: int) -> str:
    return f"{cfg.storage.zone('training')}/dt={day.isoformat()}_w={window_days}"


def _curated_files(cfg: PipelineConfig, days: list[str]) -> list[str]:
    files = []
    for d in days:
        part = cfg.storage.partition("curated", d)
        manifest = storage.read_manifest(part)
        files += [f"{part}/{name}" for name in manifest["files"]]
    return files


def reference_stats(cfg: PipelineConfig, train_days: list[str], day: date, users: Any, items: Any) -> str:
    """The drift reference (JSON text) of the train days, with day D's unseen shares as baseline."""
    from jobs.drift_metrics import compute_reference, dumps_reference, read_curated

    reference = compute_reference(
        ((d, read_curated(_curated_files(cfg, [d]))) for d in train_days),
        known_users=users.column("user_id").to_numpy(),
        known_items=items.column("item_id").to_numpy(),
        holdout=(day.isoformat(), read_curated(_curated_files(cfg, [day.isoformat()]))),
    )
    return dumps_reference(reference)


def build_snapshot(cfg: PipelineConfig, spark: Any, day: date, window_days: int) -> dict[str, Any]:
    """Build (or rebuild) the snapshot for ``day``; returns its manifest plus ``uri``."""
    import pyarrow.parquet as pq
    from pyspark.sql import Window
    from pyspark.sql import functions as F

    from jobs.validate import is_validated

    started = time.perf_counter()
    wanted = [(day - timedelta(days=k)).isoformat() for k in range(window_days, 0, -1)]
    train_days = [d for d in wanted if is_validated(cfg.storage.partition("curated", d))]
    skipped = sorted(set(wanted) - set(train_days))
    if not train_days:
        raise SnapshotError(f"no validated curated day in the window {wanted[0]} … {wanted[-1]}")
    if not is_validated(cfg.storage.partition("curated", day)):
        raise SnapshotError(f"the evaluation day dt={day.isoformat()} is not a validated curated partition")

    def positives(days: list[str]):
        return (
            spark.read.parquet(*_curated_files(cfg, days))
            .where(F.col("event_type").isin(*POSITIVE_TYPES))
            .select("user_id", "item_id")
        )

    train = positives(train_days).groupBy("user_id", "item_id").agg(F.count(F.lit(1)).cast("float").alias("weight"))
    train = train.persist()
    users = (
        train.select("user_id")
        .distinct()
        .withColumn("user_idx", (F.row_number().over(Window.orderBy("user_id")) - 1).cast("int"))
    )
    items = (
        train.groupBy("item_id")
        .agg(F.count(F.lit(1)).alias("popularity"))
        .withColumn("item_idx", (F.row_number().over(Window.orderBy("item_id")) - 1).cast("int"))
    )
    train_idx = (
        train.join(users, "user_id")
        .join(items.select("item_id", "item_idx"), "item_id")
        .select("user_idx", "item_idx", "weight")
        .orderBy("user_idx", "item_idx")
    )
    test_idx = (
        positives([day.isoformat()])
        .distinct()
        .join(users, "user_id")
        .join(items.select("item_id", "item_idx"), "item_id")
        .select("user_idx", "item_idx")
        .join(train_idx.select("user_idx", "item_idx"), ["user_idx", "item_idx"], "left_anti")
        .orderBy("user_idx", "item_idx")
    )
    tables = {
        "train": train_idx.toArrow(),
        "test": test_idx.toArrow(),
        "users": users.select("user_idx", "user_id").orderBy("user_idx").toArrow(),
        "items": items.select("item_idx", "item_id", "popularity").orderBy("item_idx").toArrow(),
    }
    train.unpersist()
    if tables["train"].num_rows == 0:
        raise SnapshotError(f"the window {train_days[0]} … {train_days[-1]} holds no positive interaction")
    uri = snapshot_uri(cfg, day, window_days)
    manifest = {
        "day": day.isoformat(),
        "window_days": window_days,
        "window_start": train_days[0],
        "window_end": train_days[-1],
        "train_days": train_days,
        "skipped_days": skipped,
        "n_users": tables["users"].num_rows,
        "n_items": tables["items"].num_rows,
        "train_rows": tables["train"].num_rows,
        "test_rows": tables["test"].num_rows,
        "test_users": len(set(tables["test"].column("user_idx").to_pylist())),
        "positive_types": list(POSITIVE_TYPES),
        "reference_stats": REFERENCE_STATS,
    }
    reference = reference_stats(cfg, train_days, day, tables["users"], tables["items"])
    with storage.staged_partition(uri) as staging:
        for name, table in tables.items():
            pq.write_table(table, staging / f"{name}.parquet", compression="snappy")
        (staging / REFERENCE_STATS).write_text(reference)
        storage.publish(staging, uri, manifest)
    return {**manifest, "uri": uri, "seconds": round(time.perf_counter() - started, 3)}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m jobs.snapshot", description=__doc__.split("\n\n")[0])
    ap.add_argument("--date", required=True, type=date.fromisoformat, help="evaluation day D")
    ap.add_argument("--window-days", type=int, help="train days before D (default: training.window_days)")
    ap.add_argument("--master", help="Spark master override")
    ap.add_argument("--result-file", type=Path)
    args = ap.parse_args(argv)
    try:
        cfg = get_config()
    except ConfigError as exc:
        print(exc, file=sys.stderr)
        return 2
    window = args.window_days or cfg.training.window_days
    if window < 1:
        ap.error("--window-days must be at least 1")
    from jobs.spark import get_spark

    spark = get_spark(cfg, "snapshot", args.master or None)
    try:
        result = build_snapshot(cfg, spark, args.date, window)
    except (SnapshotError, storage.PublishError) as exc:  # PublishError names the unwritable path
        print(f"snapshot failed: {exc}", file=sys.stderr)
        if args.result_file:
            storage.write_json_atomic(args.result_file, {"message": f"snapshot failed: {exc}"})
        return 3
    finally:
        spark.stop()
    if args.result_file:
        storage.write_json_atomic(args.result_file, result)
    print(
        f"snapshot {result['uri']}: {result['train_rows']} train pairs over {len(result['train_days'])} days, "
        f"{result['test_rows']} test pairs ({result['n_users']} users, {result['n_items']} items)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
