"""Run one job with the pre-Connect session: a classic Spark session in the job's own process.

``python -m benchmarks.classic_job jobs.<stage> ARGS...`` runs ``jobs.<stage>`` exactly as
``python -m jobs.<stage> ARGS...`` does, except that ``jobs.core.spark.connect`` returns a classic
``local[N]`` session (a JVM started by this process, as every job did before Spark Connect) with the
pipeline's SQL confs. Session artifacts map to what the classic API has: ``pyfile`` archives are
not needed (the workers inherit this process's ``PYTHONPATH``) and ``file`` artifacts become
``SparkContext.addFile`` (read back with ``SparkFiles.get``, as the Connect path does).

The reference side of ``benchmarks/bench_connect.py``; not used by the pipeline.
"""

from __future__ import annotations

import os
import runpy
import shutil
import sys
import tempfile
from pathlib import Path

from jobs.core import spark as spark_module
from jobs.core.config import PipelineConfig


def classic_session(cfg: PipelineConfig, app: str, session_id: str | None = None):
    """A classic in-process session with the job's confs (the pre-Connect ``get_spark``)."""
    from pyspark.sql import SparkSession

    conf = {"spark.sql.shuffle.partitions": str(cfg.spark.shuffle_partitions), **cfg.spark.conf}
    conf.setdefault("spark.sql.parquet.outputTimestampType", "TIMESTAMP_MICROS")
    builder = (
        SparkSession.builder.master(cfg.spark.master)
        .appName(f"{cfg.spark.app_name}-{app}")
        .config("spark.driver.memory", cfg.spark.server_memory)
        .config("spark.ui.enabled", "false")
        .config("spark.driver.bindAddress", "127.0.0.1")
        .config("spark.driver.host", "127.0.0.1")
    )
    for key, value in conf.items():
        builder = builder.config(key, value)
    session = builder.getOrCreate()

    def add_artifacts(*paths: str, pyfile: bool = False, archive: bool = False, file: bool = False) -> None:
        if file:  # addFile reads the file when a task first needs it: keep a copy until exit
            keep = Path(tempfile.mkdtemp(prefix="classic-files-"))
            for path in paths:
                session.sparkContext.addFile(str(shutil.copy2(path, keep / Path(path).name)))

    session.addArtifacts = add_artifacts  # type: ignore[method-assign]
    return session


def main() -> None:
    if len(sys.argv) < 2 or not sys.argv[1].startswith("jobs."):
        raise SystemExit("usage: python -m benchmarks.classic_job jobs.<stage> [ARGS...]")
    os.environ["PYSPARK_PYTHON"] = sys.executable  # workers run this virtualenv, as the server's do
    spark_module.connect = classic_session  # type: ignore[assignment]
    module = sys.argv[1]
    sys.argv = [module, *sys.argv[2:]]
    runpy.run_module(module, run_name="__main__", alter_sys=True)


if __name__ == "__main__":
    main()
