"""What runs in Spark's Python workers: load the model once per process, score ranges, write files."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from jobs.core.schema import recommendations_schema
from jobs.core.spark import task_location
from jobs.score.core import DEVICES, Exclusions, Scored, ScoringModel, score_users

if TYPE_CHECKING:
    import pyarrow as pa


_WORKER_MODELS: dict[tuple[str, str], ScoringModel] = {}


def resolve_device(requested: str) -> str:
    """``auto`` → cuda when torch sees a device, else cpu; ``cuda`` without a device raises."""
    import torch

    if requested not in DEVICES:
        raise ValueError(f"unknown device {requested!r}; choose from {', '.join(DEVICES)}")
    if requested == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if requested == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("scoring.device is 'cuda' but torch sees no CUDA device on this worker")
    return requested


def worker_model(path: str, device: str) -> tuple[ScoringModel, bool]:
    """The model at ``path`` on ``device``, loaded once per Python worker process.

    Returns the model and whether this call loaded it (False = served from the process cache).
    """
    key = (path, device)
    model = _WORKER_MODELS.get(key)
    if model is not None:
        return model, False
    from jobs.core.model import Recommender

    _WORKER_MODELS.clear()  # one model per process: a new version replaces the old one
    model = ScoringModel(Recommender.load(path), device)
    _WORKER_MODELS[key] = model
    return model, True


def scored_table(scored: Scored, model_version: str, model_run_id: str) -> pa.Table:
    """The contract's table for a ``Scored`` batch."""
    import pyarrow as pa

    n = len(scored)
    zeros = pa.array(np.zeros(n, dtype=np.int32))
    return pa.Table.from_arrays(
        [
            pa.array(scored.user_id, pa.int64()),
            pa.array(scored.rank, pa.int32()),
            pa.array(scored.item_id, pa.int64()),
            pa.array(scored.score, pa.float32()),
            pa.DictionaryArray.from_arrays(zeros, pa.array([model_version])).cast(pa.string()),
            pa.DictionaryArray.from_arrays(zeros, pa.array([model_run_id])).cast(pa.string()),
        ],
        schema=recommendations_schema(),
    )


def write_parquet(table: pa.Table, path: Path | str) -> None:
    """Deterministic Parquet bytes (fixed writer options): locally via a temporary sibling and a
    rename; on an object store one PUT into the writer's own attempt prefix (nobody reads it
    before the manifest lists it)."""
    import pyarrow.parquet as pq

    options = {"compression": "snappy", "write_statistics": True, "row_group_size": 1_000_000}
    if "://" in str(path) and not str(path).startswith("file://"):
        from jobs.core import fs

        filesystem, key = fs.filesystem(str(path))
        pq.write_table(table, key, filesystem=filesystem, **options)
        return
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}.tmp")
    pq.write_table(table, tmp, **options)
    os.replace(tmp, path)


def _partition_scorer(
    shipped: str, version: str, run_id: str, k: int, batch_users: int, device: str, threads: int, target: str
):
    """The ``mapInArrow`` function: score each user range (bucket) of a partition and write its file.

    Long because it is the worker closure: the model loaded once per process, then each bucket scored and written.
    """

    def run(batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        import pyarrow as pa
        import torch
        from pyspark import SparkFiles, TaskContext

        dev = resolve_device(device)
        if dev == "cpu" and threads > 0:
            torch.set_num_threads(threads)
        model, loaded = worker_model(SparkFiles.get(shipped), dev)
        partition, where = TaskContext.get().partitionId(), task_location()
        loads = [int(loaded)]  # reported once per partition
        pending: dict[str, list] = {"users": [], "extra": []}
        current: list[int | None] = [None]

        def flush() -> Iterator[pa.RecordBatch]:
            bucket = current[0]
            if bucket is None or not pending["users"]:
                return
            users = np.concatenate(pending["users"])
            extra = pa.concat_arrays(pending["extra"]) if pending["extra"] else None
            scored = score_users(
                model, users, Exclusions.from_arrow(extra) if extra is not None else None, k, batch_users=batch_users
            )
            write_parquet(scored_table(scored, version, run_id), f"{target}/.part-{bucket:05d}.parquet")
            pending["users"], pending["extra"] = [], []
            yield pa.RecordBatch.from_pydict(
                {
                    "bucket": pa.array([bucket], pa.int32()),
                    "users": pa.array([scored.users], pa.int64()),
                    "rows": pa.array([len(scored)], pa.int64()),
                    "unknown": pa.array([scored.unknown_users], pa.int64()),
                    "device": pa.array([dev], pa.string()),
                    "part": pa.array([partition], pa.int32()),
                    "pid": pa.array([where["pid"]], pa.int64()),
                    "executor": pa.array([f"{where['host']}/{where['executor']}"], pa.string()),
                    "loads": pa.array([loads[0]], pa.int32()),
                }
            )
            loads[0] = 0

        for batch in batches:
            if batch.num_rows == 0:
                continue
            buckets = batch.column("bucket").to_numpy(zero_copy_only=False)
            users = batch.column("user_id").to_numpy(zero_copy_only=False).astype(np.int64, copy=False)
            extra = batch.column("extra_items")
            cuts = np.flatnonzero(np.diff(buckets)) + 1
            for lo, hi in zip(np.r_[0, cuts], np.r_[cuts, len(buckets)], strict=True):
                if buckets[lo] != current[0]:
                    yield from flush()
                    current[0] = int(buckets[lo])
                pending["users"].append(users[lo:hi])
                pending["extra"].append(extra.slice(lo, hi - lo))
        yield from flush()

    return run
