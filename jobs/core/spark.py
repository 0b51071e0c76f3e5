"""Every job is a thin Spark Connect client: one long-running Spark server, no JVM in the job.

``spark_session(cfg, app)`` opens a session on ``spark.remote`` (``sc://host:port``; the local
stack runs the server on loopback, a cluster runs it next to its Spark master) and ships the
code that runs in Spark's Python workers as a session artifact: the ``jobs`` package zipped
(``addArtifacts(..., pyfile=True)``), so a server on another host runs exactly the code of the
job that asked, and two jobs with different code never see each other's. Sessions are
isolated (artifacts, SQL confs, temporary views); the session's SQL confs come from
``spark.conf``.

Failures of the endpoint itself — refused connection, a server killed mid-job, a stopped
context — become ``SparkUnavailable`` (retryable, exit 1) with a message naming the endpoint;
the client retries a few times first (``spark.connect_retries``, short back-off) instead of
pyspark's default of about ten minutes.

A job started by the orchestrator gets its session id from ``RECSYS_SPARK_SESSION_ID``, so the
launcher can attach to the session of a job it kills and interrupt what it was running (a
killed client does not stop its server-side work by itself).
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import tempfile
import uuid
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from jobs.core.config import REPO_ROOT, PipelineConfig
from jobs.core.errors import Retryable

if TYPE_CHECKING:
    from pyspark.sql import SparkSession

SESSION_ENV = "RECSYS_SPARK_SESSION_ID"
_UNAVAILABLE = (
    "UNAVAILABLE",
    "failed to connect",
    "Connection refused",
    "stopped SparkContext",
    "Socket closed",
    "RETRIES_EXCEEDED",
    "DEADLINE_EXCEEDED",
)
_ARCHIVE: list[Path] = []


class SparkUnavailable(Retryable):
    """The Spark Connect endpoint cannot be reached or died under the job (retryable)."""


def jobs_archive() -> Path:
    """The ``jobs`` package as a zip, built once per process; its name carries a content hash."""
    if _ARCHIVE:
        return _ARCHIVE[0]
    root = REPO_ROOT / "jobs"
    files = sorted(p for p in root.rglob("*.py") if "__pycache__" not in p.parts)
    digest = hashlib.sha256()
    for path in files:
        digest.update(str(path.relative_to(REPO_ROOT)).encode() + b"\0" + path.read_bytes())
    folder = Path(tempfile.mkdtemp(prefix="recsys-artifacts-"))
    archive = folder / f"recsys_jobs_{digest.hexdigest()[:16]}.zip"
    with zipfile.ZipFile(archive, "w", zipfile.ZIP_DEFLATED) as zf:
        for path in files:
            zf.write(path, path.relative_to(REPO_ROOT).as_posix())
    _ARCHIVE.append(archive)
    return archive


def session_url(cfg: PipelineConfig, session_id: str) -> str:
    """The connection string of one session on the configured endpoint."""
    return f"{cfg.spark.remote.rstrip('/')}/;session_id={session_id};user_id=recsys"


def is_unavailable(exc: BaseException) -> bool:
    """True when ``exc`` says the endpoint is gone (not that the job's own code failed)."""
    if type(exc).__name__ == "PythonException":  # an error in our own code on a worker
        return False
    text = f"{type(exc).__name__}: {exc}"
    return any(marker in text for marker in _UNAVAILABLE) and (
        type(exc).__module__.startswith(("pyspark", "grpc")) or isinstance(exc, ConnectionError)
    )


_WORKER_START = ("Python worker failed to connect back", "waiting for the Python worker to connect back")


def unavailable(cfg: PipelineConfig, exc: BaseException) -> SparkUnavailable:
    """The retryable failure of an endpoint, named for what failed: a Python worker that did not
    start within Spark's fixed 10 s (a loaded machine; the server itself is fine) is not an
    unavailable server."""
    text = str(exc).strip()
    first = text.splitlines()[0] if text else type(exc).__name__
    if any(marker in text for marker in _WORKER_START):
        return SparkUnavailable(
            f"a Spark Python worker did not start in time on {cfg.spark.remote} (Spark waits 10 s for it to "
            f"connect back, on each task attempt: is the machine overloaded?): {first[:400]}"
        )
    return SparkUnavailable(f"Spark Connect server {cfg.spark.remote} unavailable: {first[:500]}")


def connect(cfg: PipelineConfig, app: str, session_id: str | None = None) -> SparkSession:
    """A new session on ``spark.remote`` with the job's code and SQL confs (see the module docstring)."""
    from pyspark.sql import SparkSession
    from pyspark.sql.connect.client.retries import DefaultPolicy

    session_id = session_id or os.environ.get(SESSION_ENV) or str(uuid.uuid4())
    try:
        spark = SparkSession.builder.remote(session_url(cfg, session_id)).create()
        spark.client.set_retry_policies(
            [DefaultPolicy(max_retries=cfg.spark.connect_retries, initial_backoff=200, max_backoff=2000)]
        )
        conf = {"spark.sql.shuffle.partitions": str(cfg.spark.shuffle_partitions), **cfg.spark.conf}
        conf.setdefault("spark.sql.parquet.outputTimestampType", "TIMESTAMP_MICROS")
        for key, value in conf.items():
            spark.conf.set(key, value)
        spark.addTag(f"{cfg.spark.app_name}-{app}")
        spark.addArtifacts(str(jobs_archive()), pyfile=True)
    except Exception as exc:
        if is_unavailable(exc):
            raise unavailable(cfg, exc) from None
        raise
    return spark


@contextlib.contextmanager
def spark_session(cfg: PipelineConfig, app: str, session_id: str | None = None) -> Iterator[SparkSession]:
    """``connect`` for the length of a block; endpoint failures inside it become ``SparkUnavailable``."""
    spark = connect(cfg, app, session_id)
    try:
        yield spark
    except Exception as exc:
        if is_unavailable(exc):
            raise unavailable(cfg, exc) from None
        raise
    finally:
        with contextlib.suppress(Exception):
            spark.stop()


def interrupt(cfg: PipelineConfig, session_id: str) -> list[str]:
    """Attach to a session and interrupt everything it runs (a killed client's leftovers)."""
    from pyspark.sql import SparkSession

    spark = SparkSession.builder.remote(session_url(cfg, session_id)).create()
    try:
        return list(spark.interruptAll())
    finally:
        with contextlib.suppress(Exception):
            spark.stop()


def parallelism(spark: SparkSession) -> int:
    """Task slots of the server's cluster (there is no SparkContext in a Connect client)."""
    from pyspark.sql import functions as F

    return max(1, spark.range(0, 1 << 16).select(F.spark_partition_id().alias("p")).distinct().count())


def place(spark: SparkSession, frame: Any, partition: Any, n: int) -> Any:
    """``frame`` with each row in partition ``partition`` (an int column expression in
    ``[0, n)``), exactly.

    ``repartition(n, col)`` places a row in partition ``pmod(hash(col), n)`` (Spark's Murmur3
    hash with seed 42, which ``F.hash`` also computes). One tiny Spark query finds, for each
    partition, a small integer key that hashes to it, and the rows are repartitioned by that
    key: no sampling pass and no two groups sharing a task by accident of hashing. Falls back to
    ``repartitionByRange`` on ``partition`` if a key is missing (not seen in practice).
    """
    from pyspark.sql import functions as F

    if n == 1:
        return frame.coalesce(1)
    found = (
        spark.range(0, 64 * n)
        .select("id", F.expr(f"pmod(hash(id), {n})").alias("partition"))
        .groupBy("partition")
        .agg(F.min("id").alias("key"))
        .collect()
    )
    keys = {int(r["partition"]): int(r["key"]) for r in found}
    if len(keys) < n:
        return frame.repartitionByRange(n, partition)
    key = F.element_at(F.array(*[F.lit(keys[p]).cast("long") for p in range(n)]), partition + 1)
    return frame.withColumn("_key", key).repartition(n, "_key").drop("_key")


def server_info(spark: SparkSession) -> dict[str, Any]:
    """Where the session's work runs: the server's master and application id."""
    info: dict[str, Any] = {"remote": None, "master": None, "app_id": None}
    for key, conf in (("master", "spark.master"), ("app_id", "spark.app.id")):
        with contextlib.suppress(Exception):
            info[key] = spark.conf.get(conf)
    return info


def task_location() -> dict[str, Any]:
    """Where the calling Spark task runs (call it in a worker): the executor id (read from the
    executor JVM's command line; ``driver`` under a local master), the host and the Python
    process. How a job proves which executors did its work."""
    executor = "driver"
    try:
        with open(f"/proc/{os.getppid()}/cmdline", "rb") as fh:
            argv = fh.read().decode(errors="replace").split("\0")
        if "--executor-id" in argv:
            executor = argv[argv.index("--executor-id") + 1]
    except OSError:
        pass
    import socket

    return {"executor": executor, "host": socket.gethostname(), "pid": os.getpid()}


def read_parquet(spark: SparkSession, files: list[str], file_column: str | None = None) -> Any:
    """A DataFrame of Parquet files, local or on an object store (with the file of each row in
    ``file_column`` when given).

    Local paths go to Spark's own reader. Object-store URIs are read in Spark's Python workers
    through ``jobs.core.fs`` (pyarrow; endpoint and credentials from the workers' environment):
    the pyspark wheel carries no Hadoop S3 connector (``hadoop-aws``) and none can be fetched
    here, and the workers then need no JVM-side credentials either. One task per
    ``READ_TASK_BYTES`` of files (``file_groups``): every Python task starts its own worker
    (~1.6 s, ``pipeline.yaml``), so a task per small file cost more than reading it.
    """
    from jobs.core import fs

    if not files:
        raise ValueError("no Parquet file to read")
    if all(fs.is_local(f) for f in files):
        frame = spark.read.parquet(*files)
        if file_column:
            from pyspark.sql import functions as F

            frame = frame.withColumn(file_column, F.col("_metadata.file_path"))
        return frame
    import pyarrow as pa
    import pyarrow.parquet as pq
    from pyspark.sql.pandas.types import from_arrow_schema

    fsys, path = fs.filesystem(files[0])
    schema = pq.read_schema(path, filesystem=fsys)
    out = schema.append(pa.field(file_column, pa.string())) if file_column else schema
    groups = file_groups(files, [fs.file_size(f) for f in files])
    paths = spark.createDataFrame([("\n".join(g),) for g in groups], "uris string").repartition(len(groups))
    return paths.mapInArrow(_parquet_reader(schema, file_column), from_arrow_schema(out))


READ_TASK_BYTES = 128 * 2**20  # Parquet bytes per reading task on an object store (Spark's maxPartitionBytes)


def file_groups(files: list[str], sizes: list[int], target: int = READ_TASK_BYTES) -> list[list[str]]:
    """``files`` in order, cut into consecutive groups of at most ``target`` bytes (a larger file
    is a group of its own): one reading task each."""
    groups: list[list[str]] = []
    current: list[str] = []
    size = 0
    for name, n in zip(files, sizes, strict=True):
        if current and size + n > target:
            groups.append(current)
            current, size = [], 0
        current.append(name)
        size += n
    return [*groups, current] if current else groups


def _parquet_reader(schema: Any, file_column: str | None):
    def read(batches: Iterator[Any]) -> Iterator[Any]:
        import pyarrow as pa
        import pyarrow.parquet as pq

        from jobs.core import fs

        for batch in batches:
            for uri in (u for group in batch.column("uris").to_pylist() for u in group.split("\n")):
                fsys, path = fs.filesystem(uri)
                for part in pq.read_table(path, filesystem=fsys, schema=schema).to_batches():
                    if file_column:
                        part = part.append_column(file_column, pa.array([uri] * part.num_rows, pa.string()))
                    yield part

    return read
