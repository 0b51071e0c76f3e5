"""Batch scoring: top-K recommendations for every active user of a day, with one pinned model version.

``python -m jobs.score --date D --model-version V [--k K] [--device auto|cpu|cuda] [--master M]
[--result-file F]``

What is scored
  The **active users** of day D are the distinct users with at least one event (any type) in
  the validated curated partition ``curated/events/dt=D``; recommendations computed after day
  D are what those users are served on day D+1. A day that is missing, unpublished or failed
  validation is refused with exit code 3 and nothing is written.

Which model
  Exactly the registered version ``--model-version`` of ``mlflow.model_name``, never an alias:
  the DAG resolves ``champion`` once and passes the number, so a promotion while the run is
  in flight cannot mix versions. The version's logged pyfunc artifact (the ``.npz`` of
  ``jobs/model.py``) is downloaded once on the driver and shipped to the workers with
  ``SparkContext.addFile`` (works the same on a cluster); every Python worker loads it ONCE
  (a per-process cache keyed by the shipped file and the device) and reuses it for all the
  partitions it scores. An unknown version is a bad argument (exit 2); a version without the
  ``.npz`` (not a ``jobs.train`` model) exits 3.

What is excluded
  Items the user interacted with (positive events: click, play, rating — the snapshot's
  definition) in the model's training window (the model's ``seen`` CSR) and in the validated
  curated days after that window up to and including D (at most ``scoring.exclusion_days``
  days ending at D). The window end comes from the version's ``data_window`` tag or the
  training run's snapshot manifest; when neither exists every validated day of the lookback
  feeds the exclusion (over-excluding is safe, recommending a seen item is not). The extra
  items reach the workers as a per-user array column beside each active user.

How
  One Spark pass over D and the exclusion days groups the events by user: "active on D" and
  the sorted set of excluded items (one small row per user, kept in memory). The driver
  collects the sorted active user ids (one int64 each) and cuts them into contiguous
  ``user_id`` ranges, one output file per range (about ``scoring.rows_per_file`` rows each,
  at least one range per core for parallelism); the ranges are exact, so the same input gives
  the same files. ``mapInArrow`` hands each worker its ranges sorted by ``user_id``; the
  worker scores a range in matrix batches of ``scoring.batch_users`` users with
  ``jobs.model.top_k`` (one matrix product + bias, seen items masked, ``torch.topk`` — no
  per-user Python loop), writes it with pyarrow (deterministic bytes, as ``jobs/ingest.py``
  does) into the staging folder (a local/shared path, as for ingest) and reports its counts. Users the model does not know (not
  in the training snapshot) get the most popular items of the snapshot minus their own
  post-window items, with the item's training pair count as score (as the pyfunc does).

Ties
  Equal scores rank by item id, smaller first (the item with the smaller ``item_id`` wins a
  tie for the last slot too). ``torch.topk`` does not promise an order among equal values, so
  the core takes K+1, re-orders equal-score runs by item id and, for the rare user whose K-th
  and (K+1)-th scores are equal, re-ranks that user with a stable full sort.

Device
  ``scoring.device`` (``--device``): ``auto`` scores on CUDA when the worker's torch sees a
  device, else on the CPU; ``cuda`` fails (in the worker, since drivers often have no GPU)
  when there is none. On CPU each task uses ``cores / concurrent tasks`` torch threads.

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
import atexit
import json
import os
import re
import shutil
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import date, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # see jobs/train.py: spinning OpenMP threads on a loaded host

import numpy as np

from jobs import storage
from jobs.config import ConfigError, PipelineConfig, get_config

if TYPE_CHECKING:
    import pyarrow as pa
    from pyspark.sql import SparkSession

    from jobs.model import Recommender

POSITIVE_TYPES = ("click", "play", "rating")  # = jobs.snapshot.POSITIVE_TYPES (what the model's seen CSR holds)
ARTIFACT_FILE = "recsys.npz"
NPZ_KEYS = ("user_factors", "item_factors", "item_bias", "user_ids", "item_ids", "popularity", "seen_indptr")
MIN_USERS_PER_TASK = 50_000
# What each scoring task reports back (one row per user range it wrote).
WORKER_REPORT = "bucket int, users long, rows long, unknown long, device string, part int, pid long, loads int"
DEVICES = ("auto", "cpu", "cuda")


class ScoreError(RuntimeError):
    """The day or the model cannot be scored (data problem: exit code 3, not retried)."""


class ScoreArgumentError(ScoreError):
    """A bad argument, e.g. a model version that does not exist (exit code 2)."""


# ---- the scoring core (pure: numpy/torch only) --------------------------------------------


@dataclass(frozen=True)
class Exclusions:
    """Extra item ids per user: user ``j``'s ids are ``values[offsets[j]:offsets[j + 1]]``."""

    offsets: np.ndarray  # int64, n_users + 1
    values: np.ndarray  # int64 item ids

    @classmethod
    def from_lists(cls, lists: Sequence[Sequence[int] | np.ndarray | None]) -> Exclusions:
        lengths = np.array([0 if x is None else len(x) for x in lists], dtype=np.int64)
        offsets = np.zeros(len(lists) + 1, dtype=np.int64)
        np.cumsum(lengths, out=offsets[1:])
        parts = [np.asarray(x, dtype=np.int64) for x in lists if x is not None and len(x)]
        return cls(offsets, np.concatenate(parts) if parts else np.zeros(0, dtype=np.int64))

    @classmethod
    def none(cls, n: int) -> Exclusions:
        return cls(np.zeros(n + 1, dtype=np.int64), np.zeros(0, dtype=np.int64))

    @classmethod
    def from_arrow(cls, arr: pa.Array) -> Exclusions:
        """From an Arrow list<int64> array (null = no extra items); handles sliced arrays."""
        import pyarrow.compute as pc

        lengths = pc.fill_null(pc.list_value_length(arr), 0).to_numpy(zero_copy_only=False).astype(np.int64)
        offsets = np.zeros(len(arr) + 1, dtype=np.int64)
        np.cumsum(lengths, out=offsets[1:])
        values = arr.flatten().to_numpy(zero_copy_only=False).astype(np.int64, copy=False)
        return cls(offsets, values)

    def __len__(self) -> int:
        return len(self.offsets) - 1


@dataclass(frozen=True)
class Scored:
    """Long-format top-K: one entry per (user, rank), ordered by input user order then rank."""

    user_id: np.ndarray  # int64
    rank: np.ndarray  # int32, 1 = best
    item_id: np.ndarray  # int64
    score: np.ndarray  # float32
    users: int
    unknown_users: int

    def __len__(self) -> int:
        return len(self.user_id)


class ScoringModel:
    """A ``Recommender`` laid out for batch scoring on one device, items in ``item_id`` order.

    Keeping the items sorted by id makes "smaller item index" and "smaller item id" the same
    thing, which is the tie rule. Models written by ``jobs.train`` are already in that order
    (the snapshot numbers items by id); another order is permuted once here.
    """

    def __init__(self, rec: Recommender, device: str = "cpu") -> None:
        import torch

        from jobs.model import CSR

        self.rec = rec
        self.device = torch.device(device)
        order = np.argsort(rec.item_ids, kind="stable")
        self.item_ids = np.ascontiguousarray(rec.item_ids[order])
        if len(self.item_ids) > 1 and (np.diff(self.item_ids) == 0).any():
            raise ScoreError("the model's item_ids are not unique")
        identity = np.array_equal(order, np.arange(len(order)))
        item_factors = rec.item_factors if identity else rec.item_factors[torch.from_numpy(order)]
        item_bias = rec.item_bias if identity else rec.item_bias[torch.from_numpy(order)]
        popularity = rec.popularity if identity else rec.popularity[order]
        if identity:
            self.seen = rec.seen
        else:
            inverse = np.empty_like(order)
            inverse[order] = np.arange(len(order))
            self.seen = CSR(rec.seen.indptr, inverse[rec.seen.indices], rec.seen.n_cols)
        self.user_factors = rec.user_factors.to(self.device)
        self.item_factors = item_factors.contiguous().to(self.device)
        self.item_bias = item_bias.contiguous().to(self.device)
        # Unknown users rank by popularity: a zero embedding plus the popularity as the "bias"
        # goes through exactly the same masked top-k as the model's scores.
        self.pop_bias = torch.as_tensor(popularity.astype(np.float32)).to(self.device)
        self.pop_factors = torch.zeros((len(self.item_ids), 1), dtype=torch.float32, device=self.device)

    @property
    def n_items(self) -> int:
        return len(self.item_ids)

    def user_index(self, user_ids: np.ndarray) -> np.ndarray:
        return self.rec.user_index(user_ids)

    def item_index(self, item_ids: np.ndarray) -> np.ndarray:
        """Column of each item id, -1 for an id outside the model's catalogue."""
        item_ids = np.asarray(item_ids, dtype=np.int64)
        if not self.n_items:
            return np.full(len(item_ids), -1, dtype=np.int64)
        pos = np.searchsorted(self.item_ids, item_ids).clip(0, self.n_items - 1)
        return np.where(self.item_ids[pos] == item_ids, pos, -1)


def _ranked_chunk(
    model: ScoringModel,
    factors: Any,
    item_factors: Any,
    bias: Any,
    exclude_rows: np.ndarray,
    exclude_cols: np.ndarray,
    k: int,
) -> tuple[np.ndarray, np.ndarray]:
    """Top-``k`` item columns and scores for a chunk of users, ties broken by item index.

    ``factors`` (n, F) are the chunk's user rows; ``exclude_rows/cols`` the (position, column)
    pairs to mask. Returns (n, k) int64 columns (-1 = no eligible item) and float32 scores.
    """
    import torch

    from jobs.model import CSR, top_k

    n, n_items = factors.shape[0], model.n_items
    exclude = CSR.from_pairs(exclude_rows, exclude_cols, n, n_items)
    probe = min(k + 1, n_items)  # one more slot to see a tie at the K-th place
    cols, vals = top_k(factors, item_factors, bias, np.arange(n), probe, exclude=exclude, batch_users=max(n, 1))
    if probe > k:
        boundary = np.isfinite(vals[:, k - 1]) & (vals[:, k - 1] == vals[:, k])
        cols, vals = cols[:, :k].copy(), vals[:, :k].copy()
    else:
        boundary = np.zeros(n, dtype=bool)
    # Equal scores inside the top k: order them by column (= item id order).
    same = (vals[:, 1:] == vals[:, :-1]) & np.isfinite(vals[:, 1:])
    tied = np.flatnonzero(same.any(axis=1) & ~boundary)
    if len(tied):
        sub_cols, sub_vals = cols[tied], vals[tied]
        order = np.lexsort((np.where(sub_cols < 0, n_items, sub_cols), -sub_vals), axis=1)
        cols[tied] = np.take_along_axis(sub_cols, order, axis=1)
        vals[tied] = np.take_along_axis(sub_vals, order, axis=1)
    rows = np.flatnonzero(boundary)
    if len(rows):  # an equal score just outside the top k: re-rank these users with a stable full sort
        with torch.no_grad():
            sub = factors[torch.as_tensor(rows, device=factors.device)]
            scores = (sub @ item_factors.T + bias).float()
            pos, col = exclude.gather(rows)
            if len(pos):
                scores[
                    torch.as_tensor(pos, device=scores.device), torch.as_tensor(col, device=scores.device)
                ] = -torch.inf
            best, idx = torch.sort(scores, dim=1, descending=True, stable=True)
            best, idx = best[:, :k], idx[:, :k]
            idx = torch.where(torch.isneginf(best), torch.full_like(idx, -1), idx)
        cols[rows] = idx.cpu().numpy()
        vals[rows] = best.cpu().numpy()
    return cols, vals


def score_users(
    recommender: Recommender | ScoringModel,
    user_ids: Sequence[int] | np.ndarray,
    extra_seen: Exclusions | Sequence[Sequence[int] | np.ndarray | None] | None,
    k: int,
    *,
    batch_users: int = 4096,
    device: str | None = None,
) -> Scored:
    """Top-``k`` items for each user: the scoring core of the batch job, as a pure function.

    Args:
        recommender: the model (``jobs.model.Recommender``, or a prepared ``ScoringModel``
            to reuse across calls).
        user_ids: users to score (int64 ids; known or not to the model).
        extra_seen: per user (aligned with ``user_ids``), item ids to exclude besides the
            model's training-window ``seen`` items; ``None`` = nothing extra.
        k: recommendations per user (at most the catalogue size).
        batch_users: users per matrix product.
        device: ``cpu``/``cuda`` when a ``Recommender`` is given (default cpu).

    Returns:
        Long-format ``Scored``: for each user in input order, ranks 1..k by descending score
        (ties: smaller item id first), items never seen by that user; unknown users get the
        snapshot's most popular items (score = training pair count).
    """
    import torch

    if k < 1:
        raise ValueError("k must be at least 1")
    model = recommender if isinstance(recommender, ScoringModel) else ScoringModel(recommender, device or "cpu")
    users = np.asarray(user_ids, dtype=np.int64)
    n = len(users)
    if extra_seen is None:
        extra = Exclusions.none(n)
    elif isinstance(extra_seen, Exclusions):
        extra = extra_seen
    else:
        extra = Exclusions.from_lists(extra_seen)
    if len(extra) != n:
        raise ValueError(f"extra_seen has {len(extra)} rows for {n} users")
    kk = min(int(k), model.n_items)
    cols = np.full((n, kk), -1, dtype=np.int64)
    vals = np.full((n, kk), -np.inf, dtype=np.float32)
    # Extra exclusions as (user position, item column) pairs, items outside the catalogue dropped.
    extra_pos = np.repeat(np.arange(n, dtype=np.int64), np.diff(extra.offsets))
    extra_col = model.item_index(extra.values)
    keep = extra_col >= 0
    extra_pos, extra_col = extra_pos[keep], extra_col[keep]
    rows = model.user_index(users)
    known = np.flatnonzero(rows >= 0)
    unknown = np.flatnonzero(rows < 0)
    if kk:
        for group, is_known in ((known, True), (unknown, False)):
            # the group's extra pairs, with users numbered 0.. inside the group (ascending)
            rank_in_group = np.full(n, -1, dtype=np.int64)
            rank_in_group[group] = np.arange(len(group))
            g_rows = rank_in_group[extra_pos]
            g_keep = g_rows >= 0
            g_rows, g_cols = g_rows[g_keep], extra_col[g_keep]
            for lo in range(0, len(group), batch_users):
                chunk = group[lo : lo + batch_users]
                a, b = np.searchsorted(g_rows, [lo, lo + len(chunk)])
                e_rows, e_cols = g_rows[a:b] - lo, g_cols[a:b]
                if is_known:
                    s_rows, s_cols = model.seen.gather(rows[chunk])
                    ex_rows, ex_cols = np.concatenate([s_rows, e_rows]), np.concatenate([s_cols, e_cols])
                    factors = model.user_factors[torch.as_tensor(rows[chunk], device=model.device)]
                    c, v = _ranked_chunk(model, factors, model.item_factors, model.item_bias, ex_rows, ex_cols, kk)
                else:
                    factors = torch.zeros((len(chunk), 1), dtype=torch.float32, device=model.device)
                    c, v = _ranked_chunk(model, factors, model.pop_factors, model.pop_bias, e_rows, e_cols, kk)
                cols[chunk], vals[chunk] = c, v
    valid = cols >= 0
    counts = valid.sum(axis=1)
    flat_cols = cols[valid]
    return Scored(
        user_id=np.repeat(users, counts),
        rank=np.nonzero(valid)[1].astype(np.int32) + 1,
        item_id=model.item_ids[flat_cols] if len(flat_cols) else np.zeros(0, dtype=np.int64),
        score=vals[valid].astype(np.float32),
        users=n,
        unknown_users=len(unknown),
    )


# ---- worker side --------------------------------------------------------------------------

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
    from jobs.model import Recommender

    _WORKER_MODELS.clear()  # one model per process: a new version replaces the old one
    model = ScoringModel(Recommender.load(path), device)
    _WORKER_MODELS[key] = model
    return model, True


def output_schema() -> pa.Schema:
    import pyarrow as pa

    return pa.schema(
        [
            pa.field("user_id", pa.int64(), nullable=False),
            pa.field("rank", pa.int32(), nullable=False),
            pa.field("item_id", pa.int64(), nullable=False),
            pa.field("score", pa.float32(), nullable=False),
            pa.field("model_version", pa.string(), nullable=False),
            pa.field("model_run_id", pa.string(), nullable=False),
        ]
    )


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
        schema=output_schema(),
    )


def write_parquet(table: pa.Table, path: Path) -> None:
    """Deterministic Parquet bytes (fixed writer options), written via a temporary sibling."""
    import pyarrow.parquet as pq

    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}.tmp")
    pq.write_table(table, tmp, compression="snappy", write_statistics=True, row_group_size=1_000_000)
    os.replace(tmp, path)


def _partition_scorer(
    shipped: str, version: str, run_id: str, k: int, batch_users: int, device: str, threads: int, target: str
):
    """The ``mapInArrow`` function: score each user range (bucket) of a partition and write its file."""

    def run(batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        import pyarrow as pa
        import torch
        from pyspark import SparkFiles, TaskContext

        dev = resolve_device(device)
        if dev == "cpu" and threads > 0:
            torch.set_num_threads(threads)
        model, loaded = worker_model(SparkFiles.get(shipped), dev)
        partition, pid = TaskContext.get().partitionId(), os.getpid()
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
            write_parquet(scored_table(scored, version, run_id), Path(target) / f".part-{bucket:05d}.parquet")
            pending["users"], pending["extra"] = [], []
            yield pa.RecordBatch.from_pydict(
                {
                    "bucket": pa.array([bucket], pa.int32()),
                    "users": pa.array([scored.users], pa.int64()),
                    "rows": pa.array([len(scored)], pa.int64()),
                    "unknown": pa.array([scored.unknown_users], pa.int64()),
                    "device": pa.array([dev], pa.string()),
                    "part": pa.array([partition], pa.int32()),
                    "pid": pa.array([pid], pa.int64()),
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


# ---- driver side --------------------------------------------------------------------------


@dataclass(frozen=True)
class ModelInfo:
    name: str
    version: str
    run_id: str
    artifact: Path  # the downloaded .npz
    window_end: str | None  # last day of the training window, if known


_SHIPPED: dict[tuple[str, str], str] = {}  # (Spark app id, file name) → path shipped with addFile
_SHIP_DIR: list[Path] = []


def _ship_dir() -> Path:
    if not _SHIP_DIR:
        path = Path(tempfile.mkdtemp(prefix="recsys-score-"))
        atexit.register(shutil.rmtree, path, True)
        _SHIP_DIR.append(path)
    return _SHIP_DIR[0]


def ship_model(spark: SparkSession, info: ModelInfo) -> str:
    """``addFile`` the model's npz under a name unique to (model, version, run); returns that name.

    A Spark application refuses a second file of the same name from another path, so each
    (application, name) is added once and its staged copy lives as long as this process.
    """
    sc = spark.sparkContext
    name = re.sub(r"[^A-Za-z0-9_.-]", "_", f"recsys-{info.name}-v{info.version}-{info.run_id[:12]}.npz")
    key = (sc.applicationId, name)
    if key not in _SHIPPED:
        staged = _ship_dir() / name
        if not staged.exists():
            shutil.copyfile(info.artifact, staged)
        sc.addFile(str(staged))
        _SHIPPED[key] = str(staged)
    return name


def fetch_model(cfg: PipelineConfig, version: str, workdir: Path) -> ModelInfo:
    """Resolve ``version`` of the configured model and download its npz once."""
    import mlflow
    import yaml
    from mlflow.exceptions import MlflowException

    from jobs.registry import client

    name = cfg.mlflow.model_name
    cl = client(cfg)
    try:
        mv = cl.get_model_version(name, version)
    except MlflowException as exc:
        if "RESOURCE_DOES_NOT_EXIST" in str(exc.error_code) or "not found" in str(exc).lower():
            raise ScoreArgumentError(f"model {name!r} has no version {version!r} in the registry") from None
        raise
    run_id = mv.run_id or ""
    local = Path(
        mlflow.artifacts.download_artifacts(artifact_uri=f"models:/{name}/{version}", dst_path=str(workdir / "model"))
    )
    artifact = None
    mlmodel = local / "MLmodel"
    if mlmodel.is_file():
        flavor = (yaml.safe_load(mlmodel.read_text()) or {}).get("flavors", {}).get("python_function", {})
        rel = ((flavor.get("artifacts") or {}).get("recsys") or {}).get("path")
        if rel and (local / rel).is_file():
            artifact = local / rel
    if artifact is None:
        found = sorted(local.rglob(ARTIFACT_FILE))
        artifact = found[0] if found else None
    if artifact is None:
        raise ScoreError(f"model {name} version {version} has no {ARTIFACT_FILE} artifact (not a jobs.train model)")
    with np.load(artifact) as npz:
        missing = [key for key in NPZ_KEYS if key not in npz.files]
    if missing:
        raise ScoreError(f"model {name} version {version}: {ARTIFACT_FILE} lacks {', '.join(missing)}")
    return ModelInfo(name, str(version), run_id, artifact, _window_end(cl, mv))


def _window_end(cl: Any, mv: Any) -> str | None:
    """Last training day of a version: its ``data_window`` tag, else the run's snapshot manifest."""
    window = (mv.tags or {}).get("data_window", "")
    if ".." in window:
        end = window.split("..", 1)[1].strip()
        try:
            return date.fromisoformat(end).isoformat()
        except ValueError:
            pass
    if not mv.run_id:
        return None
    run = cl.get_run(mv.run_id)
    snapshot = run.data.tags.get("snapshot_uri") or run.data.params.get("snapshot")
    if snapshot and "://" not in snapshot.replace("file://", ""):
        manifest = storage.read_manifest(snapshot)
        if manifest and manifest.get("window_end"):
            return str(manifest["window_end"])
    return None


def exclusion_days(cfg: PipelineConfig, day: date, window_end: str | None) -> tuple[list[str], list[str]]:
    """(validated days feeding the exclusion, skipped days) in ``(window_end, day]`` ∩ the lookback."""
    from jobs.validate import is_validated

    first = day - timedelta(days=cfg.scoring.exclusion_days - 1)
    if window_end:
        first = max(first, date.fromisoformat(window_end) + timedelta(days=1))
    days, skipped = [], []
    current = first
    while current <= day:
        d = current.isoformat()
        (days if is_validated(cfg.storage.partition("curated", d)) else skipped).append(d)
        current += timedelta(days=1)
    return days, skipped


def _curated_files(cfg: PipelineConfig, days: list[str]) -> list[str]:
    files = []
    for d in days:
        part = cfg.storage.partition("curated", d)
        manifest = storage.read_manifest(part) or {}
        files += [f"{part}/{name}" for name in manifest.get("files", [])]
    return files


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
    """``keyed`` (with an int ``bucket`` column 0..n-1) with bucket ``b`` in partition ``b``, exactly.

    ``repartition(n, col)`` places a row in partition ``pmod(hash(col), n)`` (Spark's Murmur3
    hash with seed 42, which ``F.hash`` also computes). For each bucket one tiny Spark query
    finds a small integer key that hashes to that bucket's partition, and the rows are
    repartitioned by that key: no sampling pass and no two buckets sharing a task, which
    ``repartitionByRange`` on a handful of bucket values does not guarantee. Falls back to
    ``repartitionByRange`` if a key is missing (not seen in practice).
    """
    from pyspark.sql import functions as F

    if n_buckets == 1:
        return keyed.coalesce(1)
    found = (
        spark.range(0, 64 * n_buckets)
        .select("id", F.expr(f"pmod(hash(id), {n_buckets})").alias("partition"))
        .groupBy("partition")
        .agg(F.min("id").alias("key"))
        .collect()
    )
    keys = {int(r["partition"]): int(r["key"]) for r in found}
    if len(keys) < n_buckets:
        return keyed.repartitionByRange(n_buckets, "bucket")
    key = F.element_at(F.array(*[F.lit(keys[b]).cast("long") for b in range(n_buckets)]), F.col("bucket") + 1)
    return keyed.withColumn("_key", key).repartition(n_buckets, "_key").drop("_key")


def check_day(cfg: PipelineConfig, day: date) -> None:
    """Raise ``ScoreError`` unless ``day`` is a published curated partition that passed validation."""
    from jobs.validate import is_validated

    curated = cfg.storage.partition("curated", day.isoformat())
    if not is_validated(curated):
        reason = "is not published" if storage.read_manifest(curated) is None else "did not pass validation"
        raise ScoreError(f"curated day dt={day.isoformat()} {reason} ({curated}): only validated days are scored")


def score_day(
    cfg: PipelineConfig,
    spark: SparkSession,
    day: date,
    version: str,
    k: int | None = None,
    device: str | None = None,
) -> dict[str, Any]:
    """Score the active users of ``day`` with model ``version`` and publish the partition."""
    from pyspark import StorageLevel
    from pyspark.sql import functions as F

    started = time.perf_counter()
    k = int(k or cfg.scoring.k)
    if k < 1:
        raise ScoreArgumentError(f"k must be at least 1, got {k}")
    device = device or cfg.scoring.device
    if device not in DEVICES:
        raise ScoreArgumentError(f"unknown device {device!r}; choose from {', '.join(DEVICES)}")
    d = day.isoformat()
    check_day(cfg, day)
    stages: dict[str, float] = {}
    mark = [started]

    def stage(name: str) -> None:
        now = time.perf_counter()
        stages[name] = round(now - mark[0], 3)
        mark[0] = now

    with tempfile.TemporaryDirectory(prefix="recsys-score-dl-") as tmp:
        info = fetch_model(cfg, version, Path(tmp))
        print(
            f"scoring dt={d} with {info.name} version {info.version} (run {info.run_id}); "
            f"training window ends {info.window_end or 'unknown'}",
            flush=True,
        )
        shipped = ship_model(spark, info)
    stage("model")
    excl_days, skipped = exclusion_days(cfg, day, info.window_end)
    if not info.window_end:
        print(
            f"warning: no training window recorded for version {version}: excluding the items of every "
            f"validated day of the last {cfg.scoring.exclusion_days} days",
            flush=True,
        )

    # One pass over D and the exclusion days: per user, "active on D" and the positive items of
    # the exclusion days; kept (one small row per user) for the id collection and the scoring.
    day_of_file = F.regexp_extract(F.col("_metadata.file_path"), r"dt=(\d{4}-\d{2}-\d{2})", 1)
    excluded_item = F.when(
        F.col("event_type").isin(*POSITIVE_TYPES) & day_of_file.isin(*excl_days), F.col("item_id").cast("long")
    )
    per_user = (
        spark.read.parquet(*_curated_files(cfg, sorted({d, *excl_days})))
        .groupBy(F.col("user_id").cast("long").alias("user_id"))
        .agg(
            F.max((day_of_file == F.lit(d)).cast("int")).alias("active"),
            F.array_sort(F.collect_set(excluded_item)).alias("extra_items"),
        )
        .where(F.col("active") == 1)
        .select("user_id", "extra_items")
        .persist(StorageLevel.MEMORY_AND_DISK)
    )
    part = cfg.storage.partition("recommendations", d)
    try:
        user_ids = np.sort(per_user.select("user_id").toArrow().column("user_id").to_numpy())
        stage("active_users")
        parallelism = spark.sparkContext.defaultParallelism
        bounds = plan_buckets(user_ids, k, cfg.scoring.rows_per_file, parallelism)
        n_buckets = len(bounds) + 1
        bucket = F.lit(0)
        for b in bounds.tolist():
            bucket = bucket + F.when(F.col("user_id") >= F.lit(b), 1).otherwise(0)
        keyed = per_user.select(bucket.cast("int").alias("bucket"), "user_id", "extra_items")
        # One user range (bucket) per partition, its users sorted: each task writes whole, ordered files.
        spread = spread_buckets(spark, keyed, n_buckets)
        executor_cores = int(spark.conf.get("spark.executor.cores", "0") or 0) or parallelism
        threads = max(1, min(executor_cores, parallelism // n_buckets))
        with storage.staged_partition(part) as staging:
            scorer = _partition_scorer(
                shipped, info.version, info.run_id, k, cfg.scoring.batch_users, device, threads, str(staging)
            )
            counts = (
                spread.sortWithinPartitions("bucket", "user_id")
                .mapInArrow(scorer, WORKER_REPORT)
                .toArrow()
                .sort_by("bucket")
                .to_pylist()
                if len(user_ids)
                else []
            )
            stage("score_and_write")
            files = []
            for row in counts:
                name = f"part-{row['bucket']:05d}.parquet"
                (staging / f".part-{row['bucket']:05d}.parquet").rename(staging / name)
                files.append(name)
            users = sum(r["users"] for r in counts)
            if users != len(user_ids):
                raise ScoreError(f"scored {users} users but dt={d} has {len(user_ids)} active users")
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
                "columns": [f"{f.name}:{f.type}" for f in output_schema()],
                "stages": stages,
                "seconds": round(time.perf_counter() - started, 3),
            }
            storage.publish(staging, part, manifest)
    finally:
        per_user.unpersist()
    print(f"dt={d}: stage seconds {json.dumps(stages)}", flush=True)
    return {
        "uri": part,
        **{key: manifest[key] for key in ("day", "model_name", "model_version", "model_run_id", "k", "users", "rows")},
        "unknown_users": manifest["unknown_users"],
        "source_days": manifest["source_days"],
        "files": files,
        "device": manifest["device"],
        # how the work spread: Spark partitions, Python worker processes, model loads (≤ one per process)
        "partitions": len({r["part"] for r in counts}),
        "worker_processes": len({r["pid"] for r in counts}),
        "model_loads": sum(r["loads"] for r in counts),
        "stages": stages,
        "seconds": manifest["seconds"],
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m jobs.score", description=__doc__.split("\n\n")[0])
    ap.add_argument("--date", required=True, type=date.fromisoformat, help="curated day D (YYYY-MM-DD)")
    ap.add_argument("--model-version", required=True, help="registered version of mlflow.model_name (not an alias)")
    ap.add_argument("--k", type=int, help="recommendations per user (default scoring.k)")
    ap.add_argument("--device", choices=DEVICES, help="default scoring.device")
    ap.add_argument("--master", help="Spark master override")
    ap.add_argument("--result-file", type=Path)
    args = ap.parse_args(argv)
    if not re.fullmatch(r"[1-9][0-9]*", args.model_version):
        ap.error(f"--model-version must be a registered version number, got {args.model_version!r}")
    if args.k is not None and args.k < 1:
        ap.error("--k must be at least 1")
    try:
        cfg = get_config()
    except ConfigError as exc:
        print(exc, file=sys.stderr)
        return 2

    def failed(exc: ScoreError) -> int:
        print(f"scoring failed: {exc}", file=sys.stderr)
        if args.result_file:
            storage.write_json_atomic(args.result_file, {"message": f"scoring failed: {exc}"})
        return 2 if isinstance(exc, ScoreArgumentError) else 3

    try:
        check_day(cfg, args.date)  # before the JVM starts: a refused day costs nothing
    except ScoreError as exc:
        return failed(exc)
    from jobs.spark import get_spark

    spark = get_spark(cfg, "score", args.master or None)
    try:
        result = score_day(cfg, spark, args.date, args.model_version, args.k, args.device)
    except ScoreError as exc:
        return failed(exc)
    except storage.PublishError as exc:
        return failed(ScoreError(str(exc)))
    finally:
        spark.stop()
    print(
        f"dt={result['day']}: {result['rows']} recommendations for {result['users']} users "
        f"({result['unknown_users']} unknown to the model) with {result['model_name']} version "
        f"{result['model_version']} on {','.join(result['device'])} in {result['seconds']}s → {result['uri']}"
    )
    if args.result_file:
        storage.write_json_atomic(args.result_file, result)
    print(json.dumps({"result": result}, default=str))
    return 0


if __name__ == "__main__":
    # Run the importable module's main, not this ``__main__`` copy: Spark pickles the worker
    # functions by reference to ``jobs.score``, so the per-process model cache is shared by
    # every task a worker runs (a ``__main__`` function would be pickled by value, cache and all).
    from jobs.score import main as _main

    sys.exit(_main())
