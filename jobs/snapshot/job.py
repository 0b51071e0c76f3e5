"""Training snapshot: a time-based train/test split of validated curated days (Spark).

``python -m jobs.snapshot --day D [--window-days N]``

* train = positive interactions (``click``, ``play``, ``rating``) of the validated days
  ``[D - N, D - 1]``, one row per (user, item) with ``weight`` = number of positive events;
* test = positive pairs of day ``D`` not already in train, for users and items known in train
  (the held-out day the evaluation gate ranks);
* users / items map dense indices (in id order) to ids (``items`` carries the train
  popularity used by the baseline); every table is sorted by its indices and stored as part
  files ``<table>-00000.parquet``, … (``jobs.core.snapshots``);
* ``reference_stats.json``: the drift reference of the window (``jobs.core.reference``:
  feature bins, sketches and counts of the train days' curated events, the model's known ids,
  the unseen shares of day D), read from the same curated files with pyarrow; the trainer
  logs it with the model so the monitor never recomputes it from raw history.

Spark builds the indices, the split and the files (``jobs.snapshot.split``; the definition
they are tested against is ``jobs.snapshot.tables.index_split``): the driver never holds the
pairs, only counts, file digests and, for the drift reference, the id maps. A window of at most
``training.snapshot_collect_max_pairs`` train pairs is split in the job's process by
``index_split`` itself (the same files, byte for byte: the Spark path's fixed cost — its
shuffles, checkpoints and Python writer tasks — dominates small windows).

The snapshot lives at ``training/snapshots/dt=D_w=N/`` and is published atomically: the same
(day, window) over the same curated data gives the same files, so a retried task reuses it.
Days that are missing or failed validation are skipped and listed in the manifest; fewer than
one train day, or an unvalidated day D, fail with exit code 3.
"""

from __future__ import annotations

import argparse
import time
from datetime import date, timedelta
from typing import Any

from jobs.core import catalog, storage
from jobs.core.cli import pipeline_run, run_job, run_scoped
from jobs.core.config import PipelineConfig
from jobs.core.errors import SnapshotError
from jobs.core.results import SnapshotResult
from jobs.core.schema import POSITIVE_TYPES, REFERENCE_FILE


def reference_stats(cfg: PipelineConfig, train_days: list[str], day: date, users: Any, items: Any) -> str:
    """The drift reference (JSON text) of the train days, with day D's unseen shares as baseline."""
    from jobs.core.reference import compute_reference, dumps_reference, read_curated

    reference = compute_reference(
        ((d, read_curated(catalog.curated_files(cfg, [d]))) for d in train_days),
        known_users=users.column("user_id").to_numpy(),
        known_items=items.column("item_id").to_numpy(),
        holdout=(day.isoformat(), read_curated(catalog.curated_files(cfg, [day.isoformat()]))),
    )
    return dumps_reference(reference)


def _ids(staging: storage.Staging, table: str, parts: int, column: str) -> Any:
    """One id column of a table just written into ``staging`` (its parts, in order)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from jobs.core.snapshots import part_name

    chunks = []
    for k in range(parts):
        fs, path = storage.filesystem(storage.join(str(staging), part_name(table, k)))
        chunks.append(pq.read_table(path, filesystem=fs, columns=[column]))
    return pa.concat_tables(chunks)


def build_snapshot(cfg: PipelineConfig, spark: Any, day: date, window_days: int) -> SnapshotResult:
    """Build (or rebuild) the snapshot for ``day``; returns its manifest plus ``uri``.

    Spark reads the window's curated files, aggregates the positive pairs (checkpointed on the
    executors: three queries read them), numbers the ids and writes the four tables into the
    staging folder (``jobs.snapshot.split``); the driver holds counts and file digests, then
    the id maps for the drift reference. A small window's pairs are collected and split here
    (``training.snapshot_collect_max_pairs``), into the same files. Long because it is the job's
    sequence: the window's days, the split, the files and the manifest.
    """
    from pyspark.sql import functions as F

    from jobs.core.spark import read_parquet
    from jobs.snapshot.split import SplitPlan, plan_split, write_split, write_tables
    from jobs.snapshot.tables import digest, index_split

    started = time.perf_counter()
    wanted = [(day - timedelta(days=k)).isoformat() for k in range(window_days, 0, -1)]
    train_days = [d for d in wanted if catalog.is_validated(cfg, d)]
    skipped = sorted(set(wanted) - set(train_days))
    if not train_days:
        raise SnapshotError(f"no validated curated day in the window {wanted[0]} … {wanted[-1]}")
    if not catalog.is_validated(cfg, day):
        raise SnapshotError(f"the held-out day dt={day.isoformat()} is not a validated curated partition")

    def positives(days: list[str]):
        return (
            read_parquet(spark, catalog.curated_files(cfg, days))
            .where(F.col("event_type").isin(*POSITIVE_TYPES))
            .select("user_id", "item_id")
        )

    train_pairs = (
        positives(train_days).groupBy("user_id", "item_id").agg(F.count(F.lit(1)).cast("float").alias("weight"))
    ).localCheckpoint(eager=True)
    test_pairs = positives([day.isoformat()]).distinct()
    collect = cfg.training.snapshot_collect_max_pairs
    collected = None
    if collect and train_pairs.count() <= collect:  # small: split here, the same files (tables.index_split)
        collected = index_split(train_pairs.toArrow(), test_pairs.toArrow())
        plan = SplitPlan.collected(collected, len(train_days))
    else:
        plan = plan_split(train_pairs, test_pairs, len(train_days))
    if plan.train_rows == 0:
        raise SnapshotError(f"the window {train_days[0]} … {train_days[-1]} holds no positive interaction")
    if max(plan.n_users, plan.n_items) >= 2**31:
        raise SnapshotError(f"{plan.n_users} users × {plan.n_items} items: indices are int32 (at most 2^31 - 1 ids)")
    uri = catalog.snapshot_uri(cfg, day, window_days)
    with storage.staged_partition(uri) as staging:
        if collected is not None:
            written = write_tables(collected, plan.parts, staging)
            users, items = collected["users"], collected["items"]
        else:
            written = write_split(spark, plan, staging)
            users = _ids(staging, "users", plan.parts["users"], "user_id")
            items = _ids(staging, "items", plan.parts["items"], "item_id")
        reference = reference_stats(cfg, train_days, day, users, items)
        storage.write_text_atomic(staging / REFERENCE_FILE, reference)
        manifest = {
            "day": day.isoformat(),
            "window_days": window_days,
            "window_start": train_days[0],
            "window_end": train_days[-1],
            "train_days": train_days,
            "skipped_days": skipped,
            "n_users": plan.n_users,
            "n_items": plan.n_items,
            "train_rows": written.rows["train"],
            "test_rows": written.rows["test"],
            "test_users": written.test_users,
            "positive_types": list(POSITIVE_TYPES),
            "reference_stats": REFERENCE_FILE,
            # What the snapshot holds, by content: the same data gives the same files (names and
            # bytes), so the same hash (a trainer's cache key starts from it), locally and on S3.
            "files": sorted([*written.digests, REFERENCE_FILE]),
            "content_hash": written.content_hash({REFERENCE_FILE: digest(reference.encode())}),
        }
        storage.publish(staging, uri, manifest)
    return {**manifest, "uri": uri, "seconds": round(time.perf_counter() - started, 3)}


def run(cfg: PipelineConfig, args: argparse.Namespace) -> SnapshotResult:
    from jobs.core.spark import spark_session

    with spark_session(cfg, "snapshot") as spark:
        return build_snapshot(cfg, spark, args.day, args.window_days or cfg.training.window_days)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m jobs.snapshot", description=__doc__.split("\n\n")[0])
    ap.add_argument("--day", required=True, type=date.fromisoformat, help="held-out day D")
    ap.add_argument(
        "--window-days", type=int, choices=range(1, 366), metavar="N", help="train days before D (default: config)"
    )
    return run_job(
        "snapshot",
        ap,
        run,
        argv,
        ledger=lambda r: run_scoped(f"snapshot/{r['uri'].rstrip('/').rsplit('/', 1)[-1]}", pipeline_run()),
        summary=lambda r: (
            f"snapshot {r['uri']}: {r['train_rows']} train pairs over {len(r['train_days'])} days, "
            f"{r['test_rows']} test pairs ({r['n_users']} users, {r['n_items']} items)"
        ),
    )
