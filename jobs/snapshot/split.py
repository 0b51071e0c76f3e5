"""The snapshot's tables built by Spark: dense indices, the split and the files, no pairs on the driver.

``plan_split`` numbers the ids of the window's positive pairs and counts what the manifest
needs; ``write_split`` writes the four tables, each part by one Spark task. The driver collects
only a count per id range and one short report per file.

Dense index in id order, without a single-partition window: the distinct ids are range-
partitioned and sorted within each partition, and each row gets its partition number and
``monotonically_increasing_id`` (the partition number above bit 33, the row's position in the
partition below); that frame is checkpointed on the executors, so that the counts and the
numbering read the same partitions. The ids of each partition are counted (one aggregate,
collected: a number per partition); the index of an id is the count of the partitions before
its own (an offset) plus its position in its partition. Which partition an id fell in may
differ from build to build; its index cannot (the rank of the id among the sorted ids).

Parts: rows go to part ``index * parts div n`` of their table (``tables.layout``), each part to
the task ``part mod slots``, sorted within the task by (part, indices); the task writes each of
its parts as one Parquet file (``tables.encode``) into the staging folder or prefix through
``jobs.core.fs`` (as ingestion does) and reports its name, rows and sha256.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from jobs.core import storage
from jobs.core.snapshots import TABLES, part_name
from jobs.snapshot.tables import SCHEMAS, content_hash, digest, encode, layout, part_of

POSITION_BITS = 33  # monotonically_increasing_id: partition number << 33 | position in the partition
ROWS_SCHEMA = "file int, a int, b int, weight float, id long, popularity long"
REPORT_SCHEMA = "report string"
COLUMNS = {  # a table's columns in the shared row shape of the write job
    "train": ("a", "b", "weight"),
    "test": ("a", "b"),
    "users": ("a", "id"),
    "items": ("a", "id", "popularity"),
}


@dataclass
class SplitPlan:
    """The Spark frames of the four tables (not yet computed) and the counts of the manifest."""

    frames: dict[str, Any]
    n_users: int
    n_items: int
    train_rows: int
    parts: dict[str, int]

    @classmethod
    def collected(cls, tables: dict[str, Any], train_days: int) -> SplitPlan:
        """The plan of tables built in this process (``tables.index_split``): counts and parts only."""
        n_users, n_items, train_rows = (tables[t].num_rows for t in ("users", "items", "train"))
        return cls({}, n_users, n_items, train_rows, layout(n_users, n_items, train_rows, train_days))

    def files(self) -> list[tuple[str, int]]:
        """(table, part) of every file, in file-number order."""
        return [(table, k) for table in TABLES for k in range(self.parts[table])]


def _ranged(frame: Any, key: str) -> Any:
    """``frame`` (distinct ``key``) range-partitioned and sorted by ``key``, with each row's
    partition (``_pid``) and ``monotonically_increasing_id`` (``_mid``), checkpointed."""
    from pyspark.sql import functions as F

    return (
        frame.repartitionByRange(key)
        .sortWithinPartitions(key)
        .withColumn("_pid", F.spark_partition_id())
        .withColumn("_mid", F.monotonically_increasing_id())
        .localCheckpoint(eager=True)
    )


def _offsets(rows: list[Any], table: str) -> tuple[list[int], int, int]:
    """Ids before each partition of ``table``, its ids in all and the sum of its ``rows`` column."""
    counts: dict[int, int] = {}
    sums = 0
    for row in rows:
        if row["table"] == table:
            counts[int(row["_pid"])] = int(row["n"])
            sums += int(row["rows"])
    offsets, total = [], 0
    for pid in range(max(counts, default=-1) + 1):
        offsets.append(total)
        total += counts.get(pid, 0)
    return offsets, total, sums


def _numbered(ranged: Any, index: str, offsets: list[int]) -> Any:
    """The checkpointed ids with ``index`` = offset of their partition + position in it."""
    from pyspark.sql import functions as F

    if not offsets:
        return ranged.withColumn(index, F.lit(0)).drop("_pid", "_mid")
    offset = F.element_at(F.array(*[F.lit(o).cast("long") for o in offsets]), F.col("_pid") + 1)
    position = F.col("_mid") - F.shiftleft(F.col("_pid").cast("long"), POSITION_BITS)
    return ranged.withColumn(index, (offset + position).cast("int")).drop("_pid", "_mid")


def plan_split(train_pairs: Any, test_pairs: Any, train_days: int) -> SplitPlan:
    """Number the ids of the train pairs and define the four tables (the distinct ids are
    checkpointed; one small query collects their counts).

    Args:
        train_pairs: ``user_id``, ``item_id``, ``weight`` (float), one row per pair (checkpoint
            it: several queries read it).
        test_pairs: distinct ``user_id``, ``item_id`` of the held-out day.
        train_days: days in the window (sizes the test table's parts).
    """
    from pyspark.sql import functions as F

    users = _ranged(train_pairs.select("user_id").distinct(), "user_id")
    items = _ranged(train_pairs.groupBy("item_id").agg(F.count(F.lit(1)).alias("popularity")), "item_id")
    counted = (
        users.groupBy("_pid")
        .agg(F.count(F.lit(1)).alias("n"), F.lit(0).cast("long").alias("rows"))
        .withColumn("table", F.lit("users"))
        .unionByName(
            items.groupBy("_pid")
            .agg(F.count(F.lit(1)).alias("n"), F.sum("popularity").alias("rows"))
            .withColumn("table", F.lit("items"))
        )
        .collect()
    )
    user_offsets, n_users, _ = _offsets(counted, "users")
    item_offsets, n_items, train_rows = _offsets(counted, "items")
    users = _numbered(users, "user_idx", user_offsets)
    items = _numbered(items, "item_idx", item_offsets)
    item_index = items.select("item_id", "item_idx")
    train = train_pairs.join(users, "user_id").join(item_index, "item_id").select("user_idx", "item_idx", "weight")
    test = (
        test_pairs.join(train_pairs.select("user_id", "item_id"), ["user_id", "item_id"], "left_anti")
        .join(users, "user_id")
        .join(item_index, "item_id")
        .select("user_idx", "item_idx")
    )
    return SplitPlan(
        frames={"train": train, "test": test, "users": users, "items": items},
        n_users=n_users,
        n_items=n_items,
        train_rows=train_rows,
        parts=layout(n_users, n_items, train_rows, train_days),
    )


def _rows(plan: SplitPlan) -> Any:
    """The four tables as one frame of ``ROWS_SCHEMA`` rows, each with its file number."""
    from pyspark.sql import functions as F

    first, frames = 0, []
    n = {"train": plan.n_users, "test": plan.n_users, "users": plan.n_users, "items": plan.n_items}
    for table in TABLES:
        lead = "item_idx" if table == "items" else "user_idx"
        part = F.expr(f"cast(cast({lead} as bigint) * {plan.parts[table]} div {max(n[table], 1)} as int)")
        names = dict(zip(COLUMNS[table], SCHEMAS[table].names, strict=True))
        frames.append(
            plan.frames[table].select(
                (F.lit(first) + part).alias("file"),
                *[
                    F.col(names[c]).alias(c) if c in names else F.lit(None).cast(kind).alias(c)
                    for c, kind in (("a", "int"), ("b", "int"), ("weight", "float"), ("id", "long"))
                ],
                (F.col("popularity") if table == "items" else F.lit(None).cast("long")).alias("popularity"),
            )
        )
        first += plan.parts[table]
    out = frames[0]
    for frame in frames[1:]:
        out = out.unionByName(frame)
    return out


def part_table(table: str, rows: Any) -> Any:
    """One part of ``table`` from its rows in the write job's shape (a ``pyarrow.Table``)."""
    import pyarrow as pa

    return pa.Table.from_arrays([rows.column(c) for c in COLUMNS[table]], schema=SCHEMAS[table])


def _writer(files: list[tuple[str, int]], staging: str) -> Any:
    """``mapInArrow`` function over rows sorted by (file, indices): write each file, report it.

    A write that fails (full disk, store down) is reported, not raised, so that the driver
    raises it as what it is (``OSError`` with its errno, or ``PublishError``)."""

    def run(batches: Iterator[Any]) -> Iterator[Any]:
        import numpy as np
        import pyarrow as pa

        from jobs.core.fs import write_bytes_atomic

        def written(file: int, chunks: list[Any]) -> Any:
            table, part = files[file]
            name = part_name(table, part)
            out = part_table(table, pa.Table.from_batches(chunks))
            report: dict[str, Any] = {"file": name, "rows": out.num_rows}
            if table == "test":
                users = out.column("user_idx").to_numpy()
                report["users"] = int(np.count_nonzero(np.diff(users))) + 1 if len(users) else 0
            try:
                payload = encode(out)
                write_bytes_atomic(f"{staging}/{name}", payload)
                report["sha256"] = digest(payload)
            except (OSError, storage.PublishError) as exc:
                cause = exc if isinstance(exc, OSError) else exc.__cause__
                report["error"] = str(exc)
                report["errno"] = getattr(cause, "errno", None)
            return pa.RecordBatch.from_pydict({"report": pa.array([json.dumps(report)], pa.string())})

        current, chunks = -1, []
        for batch in batches:
            numbers = batch.column("file").to_numpy()
            starts = [0, *(np.flatnonzero(np.diff(numbers)) + 1).tolist()]
            for start, end in zip(starts, [*starts[1:], len(numbers)], strict=True):
                if int(numbers[start]) != current and chunks:
                    yield written(current, chunks)
                    chunks = []
                current = int(numbers[start])
                chunks.append(batch.slice(start, end - start))
        if chunks:
            yield written(current, chunks)

    return run


@dataclass
class Written:
    """What ``write_split`` wrote: sha256 of each file, and the counts only the files know."""

    digests: dict[str, str]
    rows: dict[str, int]
    test_users: int

    def content_hash(self, extra: dict[str, str]) -> str:
        return content_hash({**self.digests, **extra})


def write_tables(tables: dict[str, Any], parts: dict[str, int], staging: storage.Staging) -> Written:
    """Write tables already built in this process (``tables.index_split``) into ``staging``, cut
    into ``parts`` as ``write_split`` cuts them: the same files, byte for byte.

    Raises:
        OSError: a file could not be written (with the errno it got: a full disk).
        PublishError: the object store refused a file.
    """
    import numpy as np

    digests = {}
    for table in TABLES:
        rows = tables[table]
        lead = rows.column(0).to_numpy()  # sorted: a part is a contiguous range
        which = part_of(lead, parts[table], tables["items" if table == "items" else "users"].num_rows)
        for k in range(parts[table]):
            lo, hi = np.searchsorted(which, k, "left"), np.searchsorted(which, k, "right")
            payload = encode(rows.slice(int(lo), int(hi - lo)) if hi > lo else SCHEMAS[table].empty_table())
            try:
                storage.write_bytes_atomic(storage.join(str(staging), part_name(table, k)), payload)
            except storage.PublishError as exc:  # as write_split raises it: OSError with its errno
                errno = getattr(exc.__cause__, "errno", None)
                if errno:
                    raise OSError(errno, str(exc)) from exc
                raise
            digests[part_name(table, k)] = digest(payload)
    test_users = np.unique(tables["test"].column("user_idx").to_numpy())
    return Written(digests, {t: tables[t].num_rows for t in TABLES}, len(test_users))


def write_split(spark: Any, plan: SplitPlan, staging: storage.Staging) -> Written:
    """Write the plan's tables into ``staging`` (one Spark job; a file per part, also for the
    parts no row falls in) and return what was written.

    Raises:
        OSError: a task could not write its file (with the errno it got: a full disk).
        PublishError: the object store refused a file.
    """
    from pyspark.sql import functions as F

    from jobs.core.spark import parallelism, place

    files = plan.files()
    slots = min(len(files), parallelism(spark))
    rows = place(spark, _rows(plan), F.col("file") % slots, slots).sortWithinPartitions("file", "a", "b")
    reports = [
        json.loads(r)
        for r in rows.mapInArrow(_writer(files, str(staging)), REPORT_SCHEMA).toArrow().column("report").to_pylist()
    ]
    failed = next((r for r in reports if "error" in r), None)
    if failed is not None:
        if failed["errno"]:
            raise OSError(failed["errno"], failed["error"])
        raise storage.PublishError(failed["error"])
    by_name = {r["file"]: r for r in reports}
    for table, part in files:  # a part no row fell in: an empty file, so every table has its parts
        name = part_name(table, part)
        if name not in by_name:
            payload = encode(SCHEMAS[table].empty_table())
            storage.write_bytes_atomic(storage.join(str(staging), name), payload)
            by_name[name] = {"file": name, "rows": 0, "users": 0, "sha256": digest(payload)}
    return Written(
        digests={name: r["sha256"] for name, r in by_name.items()},
        rows={t: sum(by_name[part_name(t, k)]["rows"] for k in range(plan.parts[t])) for t in TABLES},
        test_users=sum(by_name[part_name("test", k)]["users"] for k in range(plan.parts["test"])),
    )
