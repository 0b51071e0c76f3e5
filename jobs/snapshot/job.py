"""Training snapshot: a time-based train/test split of validated curated days (Spark).

``python -m jobs.snapshot --day D [--window-days N]``

* train = positive interactions (``click``, ``play``, ``rating``) of the validated days
  ``[D - N, D - 1]``, one row per (user, item) with ``weight`` = number of positive events;
* test = positive pairs of day ``D`` not already in train, for users and items known in train
  (the held-out day the evaluation gate ranks);
* ``users.parquet`` / ``items.parquet`` map dense indices to ids (``items`` carries the train
  popularity used by the baseline);
* ``reference_stats.json``: the drift reference of the window (``jobs.core.reference``:
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
import hashlib
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


def index_split(train_pairs: Any, test_pairs: Any) -> dict[str, Any]:
    """The snapshot's four tables from the aggregated pairs (pure; pyarrow and numpy on the driver).

    Args:
        train_pairs: ``user_id``, ``item_id``, ``weight`` (float32), one row per pair, any order.
        test_pairs: distinct ``user_id``, ``item_id`` of the held-out day, any order.

    Returns:
        ``train`` (``user_idx``, ``item_idx``, ``weight``), ``test`` (``user_idx``, ``item_idx``: the
        held-out pairs of known users and items not in train), ``users`` (``user_idx``, ``user_id``)
        and ``items`` (``item_idx``, ``item_id``, ``popularity`` = train pairs of the item), indices
        dense in id order, every table sorted by its indices.
    """
    import numpy as np
    import pyarrow as pa

    users_np = train_pairs.column("user_id").to_numpy()
    items_np = train_pairs.column("item_id").to_numpy()
    user_ids, user_idx = np.unique(users_np, return_inverse=True)
    item_ids, item_idx, popularity = np.unique(items_np, return_inverse=True, return_counts=True)
    n_items = len(item_ids)
    order = np.lexsort((item_idx, user_idx))
    train_codes = user_idx.astype(np.int64) * n_items + item_idx

    def lookup(ids: Any, values: Any) -> tuple[Any, Any]:
        pos = np.clip(np.searchsorted(ids, values), 0, max(len(ids) - 1, 0))
        return pos, (ids[pos] == values) if len(ids) else np.zeros(len(values), bool)

    test_users, user_known = lookup(user_ids, test_pairs.column("user_id").to_numpy())
    test_items, item_known = lookup(item_ids, test_pairs.column("item_id").to_numpy())
    codes = test_users[user_known & item_known].astype(np.int64) * n_items + test_items[user_known & item_known]
    codes = np.setdiff1d(codes, train_codes)  # sorted and distinct: (user_idx, item_idx) order

    def idx(name: str) -> Any:
        return pa.field(name, pa.int32(), nullable=False)

    return {
        "train": pa.table(
            [
                user_idx[order].astype(np.int32),
                item_idx[order].astype(np.int32),
                train_pairs.column("weight").to_numpy()[order].astype(np.float32),
            ],
            schema=pa.schema([idx("user_idx"), idx("item_idx"), pa.field("weight", pa.float32(), nullable=False)]),
        ),
        "test": pa.table(
            [(codes // n_items).astype(np.int32), (codes % n_items).astype(np.int32)] if n_items else [[], []],
            schema=pa.schema([idx("user_idx"), idx("item_idx")]),
        ),
        "users": pa.table(
            [np.arange(len(user_ids), dtype=np.int32), user_ids],
            schema=pa.schema([idx("user_idx"), pa.field("user_id", pa.int64())]),
        ),
        "items": pa.table(
            [np.arange(n_items, dtype=np.int32), item_ids, popularity.astype(np.int64)],
            schema=pa.schema(
                [idx("item_idx"), pa.field("item_id", pa.int64()), pa.field("popularity", pa.int64(), nullable=False)]
            ),
        ),
    }


def build_snapshot(cfg: PipelineConfig, spark: Any, day: date, window_days: int) -> SnapshotResult:
    """Build (or rebuild) the snapshot for ``day``; returns its manifest plus ``uri``.

    Spark reads the window's curated files and aggregates the positive pairs (one shuffle per
    side); the dense indices and the split are computed on the driver (``index_split``), which
    holds the result anyway (see the module docstring). Long because it is the job's sequence:
    the window's days, the split, the files and the manifest.
    """
    import pyarrow.parquet as pq
    from pyspark.sql import functions as F

    from jobs.core.spark import read_parquet

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
    ).toArrow()
    tables = index_split(train_pairs, positives([day.isoformat()]).distinct().toArrow())
    if tables["train"].num_rows == 0:
        raise SnapshotError(f"the window {train_days[0]} … {train_days[-1]} holds no positive interaction")
    uri = catalog.snapshot_uri(cfg, day, window_days)
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
        "reference_stats": REFERENCE_FILE,
    }
    reference = reference_stats(cfg, train_days, day, tables["users"], tables["items"])
    with storage.staged_partition(uri) as staging:
        for name, table in tables.items():
            pq.write_table(table, staging / f"{name}.parquet", compression="snappy")
        storage.write_text_atomic(staging / REFERENCE_FILE, reference)
        # What the snapshot holds, by content: the same data gives the same bytes, so the same
        # hash (a trainer's cache key starts from it), on local disk and on an object store alike.
        digest = hashlib.sha256()
        manifest["files"] = storage.staged_files(staging)
        for name in manifest["files"]:
            digest.update(name.encode() + b"\0" + hashlib.sha256(storage.read_bytes(staging / name)).digest())
        manifest["content_hash"] = digest.hexdigest()
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
