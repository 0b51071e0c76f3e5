"""One way to build a SparkSession from the pipeline config.

Under ``spark-submit`` (the cluster profile) the master and resources come from the submit
command line and this builder only adds the pipeline's ``spark.conf`` entries; under plain
``python -m jobs.<job>`` (the local profile) it sets the master from the config.
"""

from __future__ import annotations

import os
import sys
from typing import TYPE_CHECKING

from jobs.core.config import PipelineConfig

if TYPE_CHECKING:
    from pyspark.sql import SparkSession


def get_spark(cfg: PipelineConfig, app: str, master: str | None = None) -> SparkSession:
    """Return the active session or build one for ``app``.

    Args:
        cfg: pipeline configuration (``spark`` section).
        app: suffix for the application name shown in the Spark UI / history server.
        master: override of ``cfg.spark.master`` (tests use ``local-cluster[...]``).
    """
    from pyspark.sql import SparkSession

    active = SparkSession.getActiveSession()
    if active is not None:
        return active
    builder = SparkSession.builder.appName(f"{cfg.spark.app_name}-{app}")
    submitted = "SPARK_SUBMIT_OPTS" in os.environ or os.environ.get("RECSYS_SPARK_SUBMITTED") == "1"
    if not submitted:
        # Local masters run Python workers on this machine: use this interpreter (its venv).
        os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
        builder = builder.master(master or cfg.spark.master).config("spark.driver.memory", cfg.spark.driver_memory)
    builder = (
        builder.config("spark.sql.shuffle.partitions", str(cfg.spark.shuffle_partitions))
        .config("spark.sql.parquet.outputTimestampType", "TIMESTAMP_MICROS")
        .config("spark.ui.showConsoleProgress", "false")
        .config("spark.hadoop.mapreduce.fileoutputcommitter.marksuccessfuljobs", "false")
        .config("spark.hadoop.mapreduce.fileoutputcommitter.algorithm.version", "1")
    )
    for key, value in cfg.spark.conf.items():
        builder = builder.config(key, value)
    spark = builder.getOrCreate()
    spark.sparkContext.setLogLevel("WARN")
    return spark
