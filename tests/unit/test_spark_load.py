"""A loaded machine: a Python worker that starts too slowly is retried and, if it never starts, named.

Spark waits a fixed 10 s for a Python worker to connect back; on 2 busy cores a worker can miss
that. Under ``local[N]`` a task has one attempt, so one slow worker failed a whole ingest with
"Spark Connect server … unavailable" although the server was healthy.
"""

from __future__ import annotations

import pytest

from jobs.core.cli import ExitCode
from jobs.core.config import load_config
from jobs.core.spark import is_unavailable, unavailable
from scripts import spark_service

pytestmark = pytest.mark.unit

PORTS = {"connect": 15002, "ui": 4040, "master": 7077}


def _master(cluster: str, master: str, tmp_path) -> str:
    argv = spark_service.commands(cluster, master, PORTS, "1g", {}, tmp_path)[spark_service.CONNECT]
    return argv[argv.index("--master") + 1]


def test_a_local_server_retries_a_task_like_a_cluster_does(tmp_path):
    assert _master("local", "local[2]", tmp_path) == f"local[2,{spark_service.TASK_ATTEMPTS}]"
    assert _master("local", "local[*]", tmp_path) == f"local[*,{spark_service.TASK_ATTEMPTS}]"
    assert _master("local", "local[2,8]", tmp_path) == "local[2,8]"  # a user's own attempts are kept
    assert _master("standalone", "local[2]", tmp_path).startswith("spark://")  # spark.task.maxFailures: 4
    assert spark_service.TASK_ATTEMPTS > 1


def test_a_worker_that_did_not_start_is_not_called_an_unavailable_server():
    from pyspark.errors.exceptions.connect import SparkConnectGrpcException

    cfg = load_config(environ={})
    slow = SparkConnectGrpcException(
        "(org.apache.spark.SparkException) Job aborted due to stage failure: Task 0 in stage 3.0 failed 4 times, "
        "most recent failure: org.apache.spark.SparkException: Python worker failed to connect back."
    )
    assert is_unavailable(slow)  # still retryable: the next try may find the cores free
    error = unavailable(cfg, slow)
    assert error.exit_code == ExitCode.RETRYABLE
    assert "Python worker did not start in time" in str(error) and "unavailable" not in str(error)

    down = SparkConnectGrpcException("<_MultiThreadedRendezvous of RPC that terminated with: StatusCode.UNAVAILABLE")
    assert is_unavailable(down) and f"Spark Connect server {cfg.spark.remote} unavailable" in str(
        unavailable(cfg, down)
    )
