"""Stack shapes without servers: what ``stack.db``, ``stack.executor`` and ``stack.object_store``
(``RECSYS__STACK__*``) change in ``scripts/stack.py``, and what they leave alone.

The shapes themselves run in the cluster rehearsal (``tests/reliability/test_chaos_rehearsal.py``): Airflow on
PostgreSQL with the CeleryExecutor and Redis, MLflow on PostgreSQL and S3, a standalone Spark
cluster, the whole loop.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from scripts.stack import Stack

pytestmark = pytest.mark.e2e

REPO = Path(__file__).resolve().parents[2]


def test_stack_shapes_are_checked_and_isolated_per_state_folder(tmp_path, monkeypatch):
    """No servers: what ``stack.db``/``stack.executor`` change, and what they leave alone."""
    with pytest.raises(ValueError, match="RECSYS__STACK__EXECUTOR=celery needs RECSYS__STACK__DB=postgres"):
        Stack(tmp_path, 1, 2, db="sqlite", executor="celery")
    with pytest.raises(ValueError, match="RECSYS__STACK__DB='mysql'"):
        Stack(tmp_path, 1, 2, db="mysql")

    default = Stack(tmp_path / "a", 1, 2)
    env = default.env()
    assert env["AIRFLOW__CORE__EXECUTOR"] == "LocalExecutor"
    assert env["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"] == f"sqlite:///{tmp_path / 'a' / 'airflow' / 'airflow.db'}"
    assert env["AIRFLOW__DATABASE__SQL_ALCHEMY_CONNECT_ARGS"] == "recsys_airflow.sqlite.CONNECT_ARGS"
    assert not [k for k in env if "CELERY" in k]
    assert default.components == ("spark-connect", "mlflow", "api-server", "scheduler", "dag-processor", "triggerer")
    assert Stack(REPO / ".local", 1, 2, db="postgres").pg_databases == {
        "airflow": "recsys_airflow",
        "mlflow": "recsys_mlflow",
    }

    a = Stack(tmp_path / "a", 1, 2, db="postgres", executor="celery")
    b = Stack(tmp_path / "b", 1, 2, db="postgres", executor="celery")
    assert a.instance != b.instance and a.pg_databases != b.pg_databases and a.celery_queue != b.celery_queue
    env = a.env()
    assert env["AIRFLOW__CORE__EXECUTOR"] == "CeleryExecutor"
    assert env["AIRFLOW__CELERY__BROKER_URL"] == env["AIRFLOW__CELERY__RESULT_BACKEND"] == a.redis_url
    assert env["AIRFLOW__CELERY_BROKER_TRANSPORT_OPTIONS__GLOBAL_KEYPREFIX"] == f"{a.instance}:"
    assert env["AIRFLOW__OPERATORS__DEFAULT_QUEUE"] == a.celery_queue
    assert a.components[-1] == "celery-worker"
    worker = a.commands()["celery-worker"]
    assert worker[worker.index("--queues") + 1] == a.celery_queue and "--skip-serve-logs" in worker
    assert "--skip-serve-logs" in a.commands()["triggerer"] and "--skip-serve-logs" in a.commands()["scheduler"][-1]

    # The object-store shape: the S3 server starts first; every component (the Spark JVMs too)
    # gets its endpoint and keys from the environment, and the stack names them nowhere else.
    with pytest.raises(ValueError, match="RECSYS__STACK__OBJECT_STORE='gcs'"):
        Stack(tmp_path, 1, 2, object_store="gcs")
    s3 = Stack(tmp_path / "s3", 1, 2, object_store="s3", s3_port=19999)
    assert s3.components[0] == "s3" and s3.commands()["s3"][-2:] == ["-p", "19999"]
    assert s3.env()["AWS_ENDPOINT_URL"] == "http://127.0.0.1:19999" and s3.object_store_env()
    assert "AWS_ENDPOINT_URL" not in default.object_store_env()
    # Something between the clients and the server (the chaos run's proxy): every client is given
    # its endpoint, the server still listens on s3_port, and another process sees the same stack.
    fronted = Stack(tmp_path / "s3", 1, 2, object_store="s3", s3_port=19999, s3_endpoint="http://127.0.0.1:19998")
    assert fronted.env()["AWS_ENDPOINT_URL"] == "http://127.0.0.1:19998" and fronted.commands()["s3"][-1] == "19999"
    assert Stack.from_env(fronted.port_env()).s3_endpoint == "http://127.0.0.1:19998"
    assert Stack.from_env().object_store == os.environ.get("RECSYS__STACK__OBJECT_STORE", "")

    more = Stack(tmp_path / "a", 1, 2, extra_dag_folders=(str(tmp_path / "more_dags"),))
    bundles = json.loads(more.env()["AIRFLOW__DAG_PROCESSOR__DAG_BUNDLE_CONFIG_LIST"])
    assert [b["name"] for b in bundles] == ["dags-folder", "extra-0-more_dags"]
    assert bundles[1]["kwargs"]["path"] == str(tmp_path / "more_dags")

    # The shape is the configuration's typed ``stack`` section: a wrong value is refused naming the
    # key; the variables a stack hands to another process rebuild exactly that stack; the
    # ``cluster`` profile's section is the loopback rehearsal of that profile.
    with pytest.raises(ValueError, match=r"RECSYS_DB \(now RECSYS__STACK__DB\)"):
        Stack.from_env({"RECSYS_DB": "postgres"})  # a variable of before: refused, not ignored
    with pytest.raises(ValueError, match=r"stack\.db"):
        Stack.from_env({"RECSYS__STACK__DB": "mysql"})
    with pytest.raises(ValueError, match=r"stack\.executor celery needs stack\.db postgres"):
        Stack.from_env({"RECSYS__STACK__EXECUTOR": "celery"})
    shaped = Stack.on_free_ports(tmp_path / "c", db="postgres", executor="celery", redis_db=3)
    assert Stack.from_env({"RECSYS_PROFILE": "local", **shaped.port_env()}) == shaped
    rehearsal = Stack.from_env({"RECSYS_PROFILE": "cluster"})
    assert (rehearsal.db, rehearsal.executor, rehearsal.spark_cluster, rehearsal.object_store) == (
        "postgres",
        "celery",
        "standalone",
        "s3",
    )
    assert (
        rehearsal.state == REPO / ".local" / "rehearsal" and rehearsal.airflow_port != Stack.from_env({}).airflow_port
    )
