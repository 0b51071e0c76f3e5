"""Design limits of the pipeline: the need of each one-piece resource as a function of the world size.

Each ``Limit`` holds what breaks, the need (bytes or tasks) as a function of a ``Size``, the
capacity of the piece (one node, one GPU, one executor, one request) and the fix. A need is a
formula with the byte counts below (estimates from the code's data layouts) or, where the scale
benchmark measured it, a fitted law. ``find_binding`` walks the geometric path from the largest
measured size to the requested one (and past it) and returns where the need first reaches the
capacity. The limits, their formulas and fixes: docs/scale.md ("Design limits").
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, fields, replace
from typing import Any

import numpy as np

from benchmarks.scale_fit import DRIVERS, STAGE_DRIVERS, Coefficients, Law, Size

GIB = 1024.0**3
MIB = 1024.0**2
# The former snapshot (before jobs.snapshot.split) collected the split: --snapshot-collects models it.
SNAPSHOT_BYTES_PER_PAIR = 28.0  # user_id, item_id int64 + weight float32 + two int32 dense indices
INDEX_BYTES_PER_ID = 16.0  # users / items tables: id int64 + dense index (+ popularity)
# jobs.core.reference.compute_reference reads one day at a time (7 EVENT_COLUMNS, ~56 B an event in
# Arrow) but keeps each window event's item id (8 B: in the day parts, concatenated, sorted by
# np.unique) and the plays' watch seconds (≤ 8 B) until the end: ~32 B per window event.
REFERENCE_BYTES_PER_WINDOW_EVENT = 32.0
REFERENCE_BYTES_PER_DAY_EVENT = 56.0
TRAIN_BYTES_PER_PAIR = 20.0  # user and item index int64 + weight float32 in the trainer
SHUFFLE_BYTES_PER_PAIR = 24.0  # an UnsafeRow of (user_id, item_id): 8 B null bits + 2 × 8 B
CURATED_BYTES_PER_EVENT = 30.0  # Parquet on disk, when the ingest's bytes were not measured
RESULT_FIXED_BYTES = 4096.0
RESULT_BYTES_PER_SPLIT = 600.0  # an input file, an output file and a task entry of ~200 B each
MAX_BEYOND = 1e6  # how far past the requested size a limit is looked for


@dataclass(frozen=True)
class Capacities:
    """What one node, executor, GPU or service holds (docs/scale.md; override with --capacities FILE)."""

    gpu_memory_gib: float = 80.0  # one H100 (the cluster profile's H200 has 141)
    node_memory_gib: float = 128.0  # one process's node: snapshot client, reference, trainer host, EASE
    executor_memory_gib: float = 16.0
    executor_cores: int = 4
    memory_fraction: float = 0.6  # spark.memory.fraction
    shuffle_partitions: int = 200  # spark.shuffle_partitions of the cluster profile
    max_partition_bytes: float = 128 * MIB  # spark.sql.files.maxPartitionBytes
    max_tasks: int = 100_000  # tasks in one stage a driver schedules sanely
    xcom_budget_bytes: float = 1 * MIB  # a job's result JSON; beyond it, a pointer to the object store
    model_scratch_gib: float = 20.0  # training.scratch_size: where the trainer writes the model file
    score_batch_users: int = 4096  # scoring.batch_users
    optimizer_states: int = 2  # Adam: two moments per parameter


@dataclass(frozen=True)
class Limit:
    """A design limit: the need (bytes or tasks) at a size against what one piece holds."""

    name: str
    stage: str
    what: str  # what breaks
    formula: str
    capacity: float
    capacity_label: str
    need: Callable[[Size], float]
    fix: str
    unit: str = "bytes"  # or "tasks"
    source: str = "formula"  # or "measured law": the need is a fitted law of the scale run


def _law(coeffs: Coefficients | None, stage: str, resource: str) -> Law | None:
    return coeffs.laws.get(stage, {}).get(resource) if coeffs else None


def mf_model_bytes(s: Size) -> float:
    """The MF model file: user and item factors and item biases, float32."""
    return (s.users + s.items) * s.factors * 4.0 + s.items * 4.0


def ease_model_bytes(s: Size) -> float:
    """The EASE model file: X (users × items) and B (items × items), float32."""
    return s.users * s.items * 4.0 + s.items**2 * 4.0


def _one_node(
    coeffs: Coefficients | None, caps: Capacities, pairs_per_event: float, snapshot_collects: bool
) -> list[Limit]:
    node, label = caps.node_memory_gib * GIB, f"one node: {caps.node_memory_gib:g} GiB"
    out = []
    if snapshot_collects:
        out.append(
            Limit(
                name="snapshot_driver",
                stage="snapshot",
                what="the split and its dense indices collected into the snapshot job's process (the former design)",
                formula="window events × pairs/event × 28 B + (users + items) × 16 B",
                capacity=node,
                capacity_label=label,
                need=lambda s: (
                    s.window_events * pairs_per_event * SNAPSHOT_BYTES_PER_PAIR
                    + (s.users + s.items) * INDEX_BYTES_PER_ID
                ),
                fix="Spark builds the dense indices and writes the split (jobs.snapshot.split)",
            )
        )
    rss = _law(coeffs, "snapshot", "peak_rss_mib")
    if rss:
        out.append(
            Limit(
                name="snapshot_process",
                stage="snapshot",
                what="the snapshot job's process: the id maps and the reference statistics it computes",
                formula="snapshot job's peak RSS law(window events)",
                capacity=node,
                capacity_label=label,
                need=lambda s: rss.predict(s.window_events) * MIB,
                fix="incremental reference statistics (see reference_one_node); the id maps stay on the executors",
                source="measured law",
            )
        )
    return [
        *out,
        Limit(
            name="reference_one_node",
            stage="snapshot",
            what="the drift reference keeps every window event's item id (and plays' seconds) in one process",
            formula="window events × 32 B + events/day × 56 B",
            capacity=node,
            capacity_label=label,
            need=lambda s: (
                s.window_events * REFERENCE_BYTES_PER_WINDOW_EVENT + s.events_per_day * REFERENCE_BYTES_PER_DAY_EVENT
            ),
            fix="incremental reference statistics: per-day mergeable sketches and counts, merged per window",
        ),
        Limit(
            name="training_data_one_node",
            stage="train",
            what="the trainer reads the whole split into one process",
            formula="window events × pairs/event × 20 B",
            capacity=node,
            capacity_label=label,
            need=lambda s: s.window_events * pairs_per_event * TRAIN_BYTES_PER_PAIR,
            fix="stream the split from Parquet shards, one shard set per rank (data-parallel training)",
        ),
    ]


def _models(caps: Capacities, families: Sequence[str]) -> list[Limit]:
    executor, ex_label = caps.executor_memory_gib * GIB, f"one executor: {caps.executor_memory_gib:g} GiB"
    states = 1 + caps.optimizer_states
    out = []
    if "mf" in families:
        out += [
            Limit(
                name="mf_embeddings_one_gpu",
                stage="train",
                what="MF parameters and their Adam states on one GPU",
                formula=f"(users + items) × factors × 4 B × (1 + {caps.optimizer_states})",
                capacity=caps.gpu_memory_gib * GIB,
                capacity_label=f"one GPU: {caps.gpu_memory_gib:g} GiB",
                need=lambda s: (s.users + s.items) * s.factors * 4.0 * states,
                fix="row-wise sharded embedding tables over GPUs (TorchRec DistributedModelParallel)",
            ),
            Limit(
                name="mf_model_per_scoring_worker",
                stage="score",
                what="every scoring task loads the whole MF model file",
                formula="(users + items) × factors × 4 B",
                capacity=executor,
                capacity_label=ex_label,
                need=mf_model_bytes,
                fix="user factors partitioned by user range (each task reads its rows); item factors broadcast",
            ),
        ]
    if "ease" in families:
        out += [
            Limit(
                name="ease_training_one_node",
                stage="train",
                what="EASE's dense users × items X (float64) and its items² Gram matrix and inverse",
                formula="users × items × 8 B + 2 × items² × 8 B",
                capacity=caps.node_memory_gib * GIB,
                capacity_label=f"one node: {caps.node_memory_gib:g} GiB",
                need=lambda s: s.users * s.items * 8.0 + 2 * s.items**2 * 8.0,
                fix="a sparse X (CSR) for the Gram matrix; past ~50k items a pruned or low-rank B",
            ),
            Limit(
                name="ease_model_per_scoring_worker",
                stage="score",
                what="EASE exports X (users × items) and B into the model file every scoring task loads",
                formula="users × items × 4 B + items² × 4 B",
                capacity=executor,
                capacity_label=ex_label,
                need=ease_model_bytes,
                fix="score EASE from each user's history rows (CSR) × B; ship B only",
            ),
        ]
    sizes = [fn for fam, fn in (("mf", mf_model_bytes), ("ease", ease_model_bytes)) if fam in families]
    return [
        *out,
        Limit(
            name="score_batch_catalogue",
            stage="score",
            what="a batch's dense scores (batch users × items) and its top-k workspace",
            formula=f"{caps.score_batch_users} × items × 4 B × 2",
            capacity=executor / caps.executor_cores,
            capacity_label=f"one task: {caps.executor_memory_gib:g} GiB / {caps.executor_cores}",
            need=lambda s: caps.score_batch_users * s.items * 8.0,
            fix="two-tower item embeddings in an ANN index: top-k by index search, no dense score matrix",
        ),
        Limit(
            name="model_file_scratch",
            stage="train",
            what="the model file written to the trainer's scratch volume, then logged to MLflow as one file",
            formula="the largest trained family's model file",
            capacity=caps.model_scratch_gib * GIB,
            capacity_label=f"trainer scratch: {caps.model_scratch_gib:g} GiB (training.scratch_size)",
            need=lambda s: max((fn(s) for fn in sizes), default=0.0),
            fix="factors written as sharded files straight to the object store; MLflow logs a pointer and a checksum",
        ),
        Limit(
            name="gate_models_one_process",
            stage="evaluate",
            what="the gate loads the challenger and the champion into one task process",
            formula="2 × the largest trained family's model file",
            capacity=caps.node_memory_gib * GIB,
            capacity_label=f"one node: {caps.node_memory_gib:g} GiB",
            need=lambda s: 2 * max((fn(s) for fn in sizes), default=0.0),
            fix="the gate ranks a seeded sample of held-out users, reading only their factor rows",
        ),
    ]


def _spark(coeffs: Coefficients | None, caps: Capacities, pairs_per_event: float) -> list[Limit]:
    ingest = _law(coeffs, "ingest", "bytes_written")
    results = {st: law for st in STAGE_DRIVERS if (law := _law(coeffs, st, "result_bytes"))}

    def curated_day(s: Size) -> float:
        return ingest.predict(s.events_per_day) if ingest else s.events_per_day * CURATED_BYTES_PER_EVENT

    def result_bytes(s: Size) -> float:
        if results:
            return max(law.predict(DRIVERS[STAGE_DRIVERS[st]["work"]](s)) for st, law in results.items())
        return RESULT_FIXED_BYTES + RESULT_BYTES_PER_SPLIT * math.ceil(curated_day(s) / caps.max_partition_bytes)

    task_memory = caps.executor_memory_gib * GIB * caps.memory_fraction / caps.executor_cores
    return [
        Limit(
            name="xcom_result",
            stage="ingest",
            what="a job's result JSON (its file and task lists) pushed as XCom",
            formula=f"largest measured result JSON ({', '.join(results)})"
            if results
            else "4 KiB + 600 B × ⌈curated bytes/day ÷ 128 MiB⌉",
            capacity=caps.xcom_budget_bytes,
            capacity_label=f"{caps.xcom_budget_bytes / MIB:g} MiB budget",
            need=result_bytes,
            fix="results hold counts and a manifest URI in the object store, never per-file lists",
            source="measured law" if results or ingest else "formula",
        ),
        Limit(
            name="spark_shuffle_partition",
            stage="snapshot",
            what="one shuffle partition of the window's pairs at a fixed partition count",
            formula=f"window events × pairs/event × 24 B ÷ {caps.shuffle_partitions}",
            capacity=task_memory,
            capacity_label=f"a task's memory: {caps.executor_memory_gib:g} GiB × {caps.memory_fraction:g} "
            f"/ {caps.executor_cores}",
            need=lambda s: s.window_events * pairs_per_event * SHUFFLE_BYTES_PER_PAIR / caps.shuffle_partitions,
            fix="shuffle partitions sized from the input (bytes ÷ 128 MiB), AQE coalescing the small ones",
        ),
        Limit(
            name="spark_input_tasks",
            stage="snapshot",
            what="read tasks over the window's curated files",
            formula="window days × curated bytes/day ÷ 128 MiB",
            capacity=float(caps.max_tasks),
            capacity_label=f"{caps.max_tasks:,} tasks per stage",
            need=lambda s: s.window_days * curated_day(s) / caps.max_partition_bytes,
            fix="incremental snapshots: per-day pair aggregates, so a window reads 28 small inputs",
            unit="tasks",
            source="measured law" if ingest else "formula",
        ),
    ]


def design_limits(
    coeffs: Coefficients | None,
    caps: Capacities | None = None,
    pairs_per_event: float = 1.0,
    families: Sequence[str] = ("mf", "ease"),
    snapshot_collects: bool = False,
) -> list[Limit]:
    """The limits between the measured sizes and a very large one.

    Args:
        coeffs: the fitted laws (the snapshot process's memory, the ingest's bytes and the
            result sizes come from them where measured), or None for formulas only.
        caps: capacities of the pieces (default ``Capacities()``).
        pairs_per_event: positive (user, item) pairs per window event (1: the upper bound).
        families: the trained model families (``training.families``).
        snapshot_collects: model the former snapshot, which collected its split into the job
            process (today Spark builds the indices and writes the split).
    """
    caps = caps or Capacities()
    return [
        *_one_node(coeffs, caps, pairs_per_event, snapshot_collects),
        *_models(caps, families),
        *_spark(coeffs, caps, pairs_per_event),
    ]


def path_size(start: Size, end: Size, t: float) -> Size:
    """The size a fraction ``t`` of the way from ``start`` to ``end``, every variable geometric."""
    return Size(**{f.name: getattr(start, f.name) ** (1 - t) * getattr(end, f.name) ** t for f in fields(Size)})


def scaled(size: Size, factor: float) -> Size:
    """``size`` with events/day, users and items × ``factor`` (window and factors as they are)."""
    return replace(
        size, events_per_day=size.events_per_day * factor, users=size.users * factor, items=size.items * factor
    )


@dataclass(frozen=True)
class Binding:
    """Where a limit binds: ``where`` is "measured", "on the way", "beyond" or "never"."""

    limit: Limit
    where: str
    position: float  # t in [0, 1] on the way; the factor on the requested size beyond
    size: Size | None
    need_at_target: float

    def as_dict(self) -> dict[str, Any]:
        lim = self.limit
        return {
            "name": lim.name,
            "stage": lim.stage,
            "what": lim.what,
            "formula": lim.formula,
            "source": lim.source,
            "capacity": lim.capacity,
            "capacity_label": lim.capacity_label,
            "unit": lim.unit,
            "need_at_target": self.need_at_target,
            "where": self.where,
            "position": self.position if math.isfinite(self.position) else None,
            "binds_at": asdict(self.size) if self.size else None,
            "fix": lim.fix,
        }


def _first_crossing(need: Callable[[float], float], cap: float, lo: float, hi: float, log: bool) -> float | None:
    """The smallest p in (lo, hi] with need(p) ≥ cap (a 257-point scan, then bisection), or None."""
    grid = np.geomspace(lo, hi, 257) if log else np.linspace(lo, hi, 257)
    for a, b in itertools.pairwise(grid):
        if need(float(b)) >= cap:
            a, b = float(a), float(b)
            for _ in range(60):
                m = math.sqrt(a * b) if log else (a + b) / 2
                a, b = (a, m) if need(m) >= cap else (m, b)
            return b
    return None


def find_binding(limit: Limit, start: Size, target: Size) -> Binding:
    """Where ``limit`` first binds on the geometric path from ``start`` to ``target``, or past it
    (``target`` with events, users and items scaled up to ``MAX_BEYOND`` times)."""
    at_target = limit.need(target)
    if limit.need(start) >= limit.capacity:
        return Binding(limit, "measured", 0.0, start, at_target)
    t = _first_crossing(lambda t: limit.need(path_size(start, target, t)), limit.capacity, 0.0, 1.0, log=False)
    if t is not None:
        return Binding(limit, "on the way", t, path_size(start, target, t), at_target)
    f = _first_crossing(lambda f: limit.need(scaled(target, f)), limit.capacity, 1.0, MAX_BEYOND, log=True)
    if f is not None:
        return Binding(limit, "beyond", f, scaled(target, f), at_target)
    return Binding(limit, "never", math.inf, None, at_target)


def bindings(limits: Sequence[Limit], start: Size, target: Size) -> list[Binding]:
    """Every limit's binding, the first met first (at the measured size, on the way by t, beyond by factor)."""
    order = {"measured": 0, "on the way": 1, "beyond": 2, "never": 3}
    return sorted((find_binding(lim, start, target) for lim in limits), key=lambda b: (order[b.where], b.position))


def first_met(found: Sequence[Binding]) -> Binding | None:
    """The first limit met between the measured size and the requested one (None: none is)."""
    hits = [b for b in found if b.where in ("measured", "on the way")]
    return min(hits, key=lambda b: b.position) if hits else None
