"""Throughput of the Spark ingestion job (``jobs.ingest``) and of the validation job.

Input: landing days of JSON lines from ``jobs.sim`` (50,000 users, 5,000 items, the
realistic world with its ~0.3% redelivered duplicates, 1M-row shards): 1M and 10M events
(``--quick``: 200k), in a temporary storage root (``RECSYS__STORAGE__ROOT``) that is removed
afterwards. A size that raises, or whose curated day validation refuses, gets a ``FAILED``
row; the other sizes still run, then the benchmark fails (``SizesFailed``, every row kept) and
so does ``python -m benchmarks``.

Measured
  * ``ingest_day`` as every profile runs it: a Spark Connect client (``jobs.core.spark.connect``)
    of one server started for the benchmark (the stack's ``spark-connect`` component, its
    ``local[N]`` master and memory from the configuration, on a free loopback port). The server's
    start-up, the client's connect and a first trivial job are timed separately and excluded from
    the ingest figures; each day runs in the same session, smallest first (the first day also pays
    JIT warm-up and the Python-worker start, as a fresh ``python -m jobs.ingest`` would).
  * Reference (the near-limit, same process, same files): pyarrow. ``convert`` reads each file
    with ``pyarrow.json.read_json`` and an explicit typed schema and writes it with
    ``pyarrow.parquet.write_table`` (snappy). ``convert+dedup`` reads every file, keeps per
    ``event_id`` the smallest ``(ts, user_id, ...)`` tuple (one multi-key sort, then the first
    row of each run of equal ids: the job's dedup rule and its event_id row order) and writes
    2M-row snappy files (the job's file size). Neither does the job's row rules, quarantine
    or manifests. ``ratio`` of the ingest row = Spark events/s / pyarrow convert+dedup
    events/s (goal: at least 0.5 at 10M on 2 cores).
  * ``validate_day`` (Great Expectations, both suites, report and marker) on each curated
    day with the pandas engine, and with the Spark engine on the smallest day; reported as
    seconds per million curated rows.
  * Peak resident memory, sampled every 0.2 s: this Python process, and the process tree
    below it (the Spark JVM and its Python workers), per phase.
"""

from __future__ import annotations

import gc
import os
import shutil
import tempfile
import threading
import time
import traceback
from contextlib import ExitStack, contextmanager
from datetime import date, timedelta
from pathlib import Path
from typing import Any

USERS = 50_000
ITEMS = 5_000
DAY0 = date(2026, 1, 1)
DAY_GAP = 30  # days between benchmark days: beyond ingest.recent_days (28), so row-count bounds stay neutral
OUT_ROWS_PER_FILE = 2_000_000  # jobs.ingest.ROWS_PER_FILE


def _mib(n_bytes: float) -> float:
    return n_bytes / 2**20


class _RssSampler:
    """Background sampler of this process's RSS and of its descendants' (JVM, workers)."""

    def __init__(self, interval: float = 0.2) -> None:
        import psutil

        self._psutil = psutil
        self._me = psutil.Process()
        self._interval = interval
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self.self_peak = 0
        self.tree_peak = 0
        self._thread = threading.Thread(target=self._loop, name="rss-sampler", daemon=True)
        self._thread.start()

    def _sample(self) -> None:
        try:
            mine = self._me.memory_info().rss
        except self._psutil.Error:
            return
        total = mine
        for child in self._me.children(recursive=True):
            try:
                total += child.memory_info().rss
            except self._psutil.Error:
                continue
        with self._lock:
            self.self_peak = max(self.self_peak, mine)
            self.tree_peak = max(self.tree_peak, total)

    def _loop(self) -> None:
        while not self._stop.wait(self._interval):
            self._sample()

    @contextmanager
    def phase(self):
        """Peaks over the body: yields a dict filled with ``self_mib`` and ``tree_mib`` on exit."""
        with self._lock:
            self.self_peak = 0
            self.tree_peak = 0
        self._sample()
        out: dict[str, float] = {}
        try:
            yield out
        finally:
            self._sample()
            with self._lock:
                out["self_mib"] = _mib(self.self_peak)
                out["tree_mib"] = _mib(self.tree_peak)

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=2)


def _tree_cpu_s() -> float:
    """CPU seconds (user + system) of this process and of every live descendant, with what
    those descendants reaped from their own children (PySpark workers forked by the daemon)."""
    import psutil

    total = 0.0
    me = psutil.Process()
    for proc in [me, *me.children(recursive=True)]:
        try:
            t = proc.cpu_times()
        except psutil.Error:
            continue
        total += t.user + t.system
        if proc is not me:
            total += t.children_user + t.children_system
    return total


def _arrow_schema():
    import pyarrow as pa

    return pa.schema(
        [
            ("event_id", pa.string()),
            ("user_id", pa.int64()),
            ("item_id", pa.int64()),
            ("event_type", pa.string()),
            ("ts", pa.timestamp("us", tz="UTC")),
            ("watch_seconds", pa.float64()),
            ("rating", pa.int32()),
            ("device", pa.string()),
            ("country", pa.string()),
        ]
    )


def _read_json(path: Path):
    import pyarrow.json as pj

    return pj.read_json(
        str(path),
        parse_options=pj.ParseOptions(explicit_schema=_arrow_schema(), unexpected_field_behavior="ignore"),
    )


def _spark_reader(spark, files: list[str], fmt: str):
    """Spark's own reader of the landing files: every field as text, malformed lines kept."""
    from pyspark.sql import functions as F
    from pyspark.sql.types import StringType, StructField, StructType

    from jobs.core.schema import LANDING_COLUMNS

    schema = StructType([StructField(c, StringType(), True) for c in [*LANDING_COLUMNS, "_corrupt_record"]])
    reader = (
        spark.read.schema(schema).option("mode", "PERMISSIVE").option("columnNameOfCorruptRecord", "_corrupt_record")
    )
    df = reader.option("header", "true").csv(files) if fmt == "csv" else reader.json(files)
    return df.withColumn("source_file", F.col("_metadata.file_name"))


def _pyarrow_convert(files: list[Path], out: Path) -> int:
    """Plain typed conversion, file by file: read_json (explicit schema) → write_table (snappy)."""
    import pyarrow.parquet as pq

    out.mkdir(parents=True, exist_ok=True)
    rows = 0
    for idx, path in enumerate(files):
        table = _read_json(path)
        pq.write_table(table, str(out / f"part-{idx:05d}.parquet"), compression="snappy")
        rows += table.num_rows
        del table
    return rows


def _pyarrow_convert_dedup(files: list[Path], out: Path) -> tuple[int, int]:
    """Typed read of the day, one row per event_id (smallest content tuple), sorted, 2M-row files."""
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    out.mkdir(parents=True, exist_ok=True)
    table = pa.concat_tables([_read_json(p) for p in files]).combine_chunks()
    n_in = table.num_rows
    keys = ["event_id", "ts", "user_id", "item_id", "event_type", "watch_seconds", "rating", "device", "country"]
    table = table.take(pc.sort_indices(table, sort_keys=[(k, "ascending") for k in keys]))
    ids = table.column("event_id")
    first = pc.not_equal(ids.slice(1), ids.slice(0, max(n_in - 1, 0)))
    keep = pa.concat_arrays([pa.array([True]), first.combine_chunks()]) if n_in else pa.array([], pa.bool_())
    table = table.filter(keep)
    for idx, start in enumerate(range(0, max(table.num_rows, 1), OUT_ROWS_PER_FILE)):
        pq.write_table(
            table.slice(start, OUT_ROWS_PER_FILE), str(out / f"part-{idx:05d}.parquet"), compression="snappy"
        )
    return n_in, table.num_rows


class SizesFailed(RuntimeError):
    """Some sizes failed: the benchmark fails; ``partial_rows`` keeps what every size measured
    (the harness, ``benchmarks/__main__.py``, records them and marks the run failed)."""

    def __init__(self, failures: list[str], rows: list[dict[str, Any]]) -> None:
        super().__init__(f"{len(failures)} size(s) failed: {'; '.join(failures)}")
        self.partial_rows = rows


def failed_size_row(label: str, exc: BaseException) -> dict[str, Any]:
    """The row of a size that raised: no value, the error in the note, marked FAILED."""
    first = str(exc).splitlines()[0][:300] if str(exc) else ""
    return {"metric": f"ingest {label} FAILED", "note": f"FAILED: {type(exc).__name__}: {first}"}


def checked(rows: list[dict[str, Any]], failures: list[str]) -> list[dict[str, Any]]:
    """``rows`` when every size ran; otherwise raise ``SizesFailed`` carrying them."""
    if failures:
        raise SizesFailed(failures, rows)
    return rows


def _label(events: int) -> str:
    return f"{events // 1_000_000}M" if events % 1_000_000 == 0 else f"{events // 1000}k"


def run(quick: bool = False) -> list[dict[str, Any]]:
    """Long because it is the benchmark's script: both measured sides and the result rows, top to bottom."""
    sizes = [200_000] if quick else [1_000_000, 10_000_000]
    tmp = Path(tempfile.mkdtemp(prefix="bench-ingest-"))
    saved_env = {k: os.environ.get(k) for k in ("RECSYS__STORAGE__ROOT", "GX_ANALYTICS_ENABLED")}
    os.environ["RECSYS__STORAGE__ROOT"] = str(tmp / "data")
    os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")
    rows: list[dict[str, Any]] = []
    failures: list[str] = []
    sampler = _RssSampler()
    spark = None
    servers = ExitStack()
    try:
        from benchmarks.spark_server import connect_server
        from jobs.core.config import get_config
        from jobs.core.spark import connect, parallelism
        from jobs.ingest.job import ingest_day
        from jobs.sim import WorldParams, write_day
        from jobs.validate.job import validate_day

        server = servers.enter_context(connect_server("bench-ingest-spark-"))
        cfg = get_config()
        landing = cfg.storage.zone("landing")
        truth = cfg.storage.zone("ground_truth")
        fmt = cfg.ingest.landing_format

        started = time.perf_counter()
        spark = connect(cfg, "bench-ingest")
        client_s = time.perf_counter() - started
        spark.range(1000).count()
        startup_s = time.perf_counter() - started
        cores = parallelism(spark)
        setting = (
            f"Spark Connect server, master {cfg.spark.master} ({cores} task slots), server memory "
            f"{cfg.spark.server_memory}, shuffle partitions {cfg.spark.shuffle_partitions}"
        )
        rows.append(
            {
                "metric": "spark connect start-up",
                "value": startup_s,
                "unit": "s",
                "note": f"client connect + artifact upload {client_s:.1f} s + a first trivial job; the server itself "
                f"took {server['start_s']:.1f} s to become healthy (once per stack, not per job); both excluded "
                f"from the ingest figures below; {setting}",
            }
        )

        for i, events in enumerate(sizes):
            label = _label(events)
            day = DAY0 + timedelta(days=DAY_GAP * i)
            try:
                params = WorldParams(users=USERS, items=ITEMS, events_per_day=events)
                gen_started = time.perf_counter()
                manifest = write_day(params, day, landing, truth, fmt)
                gen_s = time.perf_counter() - gen_started
                day_dir = Path(landing) / f"dt={day.isoformat()}"
                files = [day_dir / f for f in manifest["files"]]
                n_input = int(manifest["rows_written"])
                in_mib = _mib(sum(f.stat().st_size for f in files))
                shape = (
                    f"{n_input:,} landing rows ({events:,} events + {manifest['duplicates']:,} redelivered), "
                    f"{len(files)} {fmt} files, {in_mib:,.0f} MiB"
                )
                gc.collect()

                # Spark ingestion job.
                with sampler.phase() as spark_mem:
                    cpu0 = _tree_cpu_s()
                    started = time.perf_counter()
                    result = ingest_day(cfg, spark, day)
                    spark_s = time.perf_counter() - started
                    spark_cpu = _tree_cpu_s() - cpu0
                spark_rate = n_input / spark_s
                gc.collect()
                # Spark's own JSON reader alone (what the job used before its Arrow stages), every
                # column consumed, nothing written: the ceiling of any design built on it.
                cpu0 = _tree_cpu_s()
                started = time.perf_counter()
                _spark_reader(spark, [str(f) for f in files], fmt).write.format("noop").mode("overwrite").save()
                read_s = time.perf_counter() - started
                read_cpu = _tree_cpu_s() - cpu0

                # pyarrow references on the same files (page cache as warm as for Spark).
                ref_dir = tmp / "reference"
                with sampler.phase() as conv_mem:
                    cpu0 = time.process_time()
                    started = time.perf_counter()
                    conv_rows = _pyarrow_convert(files, ref_dir / "convert")
                    conv_s = time.perf_counter() - started
                    conv_cpu = time.process_time() - cpu0
                shutil.rmtree(ref_dir, ignore_errors=True)
                gc.collect()
                with sampler.phase() as dedup_mem:
                    cpu0 = time.process_time()
                    started = time.perf_counter()
                    dedup_in, dedup_out = _pyarrow_convert_dedup(files, ref_dir / "dedup")
                    dedup_s = time.perf_counter() - started
                    dedup_cpu = time.process_time() - cpu0
                shutil.rmtree(ref_dir, ignore_errors=True)
                gc.collect()
                conv_rate = conv_rows / conv_s
                dedup_rate = dedup_in / dedup_s
                agree = "same" if dedup_out == result["rows"] else f"differs from Spark's {result['rows']:,}"

                read_rate = n_input / read_s
                rows += [
                    {
                        "metric": f"ingest_day {label} throughput",
                        "value": spark_rate,
                        "unit": "events/s",
                        "reference": dedup_rate,
                        "ratio": spark_rate / dedup_rate,
                        "note": f"{shape}; {spark_s:.1f} s wall, {spark_cpu:.1f} CPU-s, excl. JVM start-up; "
                        f"{result['rows']:,} curated, {result['duplicates_removed']:,} duplicates removed, "
                        f"{result['quarantined']:,} quarantined, {len(result['files'])} parquet files; {setting}; "
                        "reference: pyarrow convert+dedup events/s",
                    },
                    {
                        "metric": f"ingest_day {label} per CPU-second",
                        "value": n_input / spark_cpu,
                        "unit": "events/CPU-s",
                        "reference": dedup_in / dedup_cpu,
                        "ratio": (n_input / spark_cpu) / (dedup_in / dedup_cpu),
                        "note": "CPU (user+system) of the Python driver, the JVM and the Python workers; reference: "
                        "pyarrow convert+dedup events per CPU-second of this process (less sensitive to other load "
                        "on the machine than wall time)",
                    },
                    {
                        "metric": f"ingest_day {label} vs plain pyarrow convert",
                        "value": spark_rate,
                        "unit": "events/s",
                        "reference": conv_rate,
                        "ratio": spark_rate / conv_rate,
                        "note": "reference: pyarrow read_json (typed) → write_table snappy, file by file, no dedup",
                    },
                    {
                        "metric": f"spark JSON reader only {label}",
                        "value": read_rate,
                        "unit": "events/s",
                        "reference": dedup_rate,
                        "ratio": read_rate / dedup_rate,
                        "note": f"{read_s:.1f} s wall, {read_cpu:.1f} CPU-s: Spark's JSON reader (string schema, PERMISSIVE, "
                        "_corrupt_record, source file) into the noop sink, no rules, dedup or write: the ceiling of the "
                        "job's previous design, which parsed with it; the job now parses with pyarrow in its tasks",
                    },
                    {
                        "metric": f"pyarrow convert+dedup {label} (reference)",
                        "value": dedup_rate,
                        "unit": "events/s",
                        "note": f"{dedup_s:.1f} s wall, {dedup_cpu:.1f} CPU-s: read_json typed, sort by (event_id, ts, ...), "
                        f"first row per id, 2M-row snappy files; {dedup_out:,} rows out ({agree}); "
                        f"peak RSS {dedup_mem['self_mib']:,.0f} MiB",
                    },
                    {
                        "metric": f"pyarrow convert {label} (reference)",
                        "value": conv_rate,
                        "unit": "events/s",
                        "note": f"{conv_s:.1f} s wall, {conv_cpu:.1f} CPU-s; peak RSS {conv_mem['self_mib']:,.0f} MiB",
                    },
                    {
                        "metric": f"ingest_day {label} peak RSS",
                        "value": spark_mem["tree_mib"],
                        "unit": "MiB",
                        "note": f"Python driver + Spark JVM + Python workers, sampled every 0.2 s "
                        f"(Python driver alone {spark_mem['self_mib']:,.0f} MiB); landing day generated in {gen_s:.1f} s",
                    },
                ]

                # Great Expectations validation of the curated day.
                engines = ["pandas", "spark"] if i == 0 else ["pandas"]
                refused = []
                for engine in engines:
                    with sampler.phase() as val_mem:
                        started = time.perf_counter()
                        summary = validate_day(cfg, day, engine=engine, spark=spark)
                        val_s = time.perf_counter() - started
                    gc.collect()
                    n_rows = int(summary["rows"])
                    per_m = val_s / (n_rows / 1e6)
                    status = "passed" if summary["success"] else "FAILED: " + "; ".join(summary["failures"])
                    if not summary["success"]:
                        refused.append(f"{engine}: {'; '.join(summary['failures'])}")
                    rows.append(
                        {
                            "metric": f"validate_day {engine} {label}",
                            "value": per_m,
                            "unit": "s per 1M rows",
                            "note": f"{val_s:.1f} s for {n_rows:,} curated rows, {summary['expectations']} expectations, "
                            f"{status}; peak RSS {val_mem['self_mib' if engine == 'pandas' else 'tree_mib']:,.0f} MiB "
                            f"({'this process' if engine == 'pandas' else 'process tree'})",
                        }
                    )
                if refused:  # the job's own day refused by its own suites: the size did not work
                    raise RuntimeError(f"validate_day refused the curated {label} day ({' | '.join(refused)})")
            except Exception as exc:  # the other sizes still run; the run fails at the end
                traceback.print_exc()
                rows.append(failed_size_row(label, exc))
                failures.append(f"{label}: {type(exc).__name__}")
            # Free the disk before the next (larger) day.
            for zone in ("landing", "curated", "quarantine"):
                shutil.rmtree(Path(cfg.storage.partition(zone, day)), ignore_errors=True)
    finally:
        sampler.close()
        if spark is not None:
            try:
                spark.stop()
            except Exception as exc:  # a server that died (OOM) must not hide the rows measured before
                print(f"spark.stop() failed: {type(exc).__name__}: {exc}", flush=True)
        servers.close()
        for key, value in saved_env.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        shutil.rmtree(tmp, ignore_errors=True)
    return checked(rows, failures)
