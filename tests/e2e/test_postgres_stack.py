"""Production shape on one machine: Airflow's metadata DB and MLflow's backend store on PostgreSQL,
first with the LocalExecutor, then with the CeleryExecutor (Redis broker and result backend).

A second stack, beside the session's SQLite one, on its own state folder and ports, started and
stopped through ``scripts/stack.py`` exactly as ``RECSYS_DB=postgres [RECSYS_EXECUTOR=celery]
make up`` does. Its databases (``recsys_<hash>_airflow``/``_mlflow``) and Redis keys are unique to
the state folder and removed at the end (``stack.py destroy``), also when a test fails.
Each executor runs ``recsys_ingest`` for one generated day through the real scheduler.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import subprocess
import sys
import time
import uuid
from datetime import date
from pathlib import Path

import psycopg2
import pytest
import redis
import requests

from jobs import sim as gen
from jobs.core import storage
from jobs.core.catalog import is_validated
from jobs.core.config import StorageConfig
from scripts.recsys_api import AirflowApi
from scripts.stack import Stack, _group_alive

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(1800)]

REPO = Path(__file__).resolve().parents[2]
STACK_PY = [sys.executable, str(REPO / "scripts" / "stack.py")]
WORLD = gen.WorldParams(users=200, items=80, factors=4, seed=5, events_per_day=1500)
LOCAL_DAY, CELERY_DAY = "2026-03-01", "2026-03-02"
INGEST_TASKS = ("wait_for_landing", "ingest", "validate", "publish_curated_event")


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class PgStack:
    """The second stack: its environment, its ``Stack`` description and ``stack.py`` runs."""

    def __init__(self, state: Path) -> None:
        self.state = state
        self.ports = (_free_port(), _free_port())
        self.spark_ports = (_free_port(), _free_port())
        self.storage = StorageConfig(root=str(state / "data"))

    def env(self, executor: str) -> dict[str, str]:
        # Nothing of the session's own stack leaks in (AIRFLOW__*, RECSYS*, MLFLOW_*).
        env = {k: v for k, v in os.environ.items() if not k.startswith(("AIRFLOW", "RECSYS", "MLFLOW"))}
        env.update(
            RECSYS_STATE_DIR=str(self.state),
            RECSYS_AIRFLOW_PORT=str(self.ports[0]),
            RECSYS_MLFLOW_PORT=str(self.ports[1]),
            RECSYS_SPARK_CONNECT_PORT=str(self.spark_ports[0]),
            RECSYS_SPARK_UI_PORT=str(self.spark_ports[1]),
            RECSYS_DB="postgres",
            RECSYS_EXECUTOR=executor,
        )
        return env

    def stack(self, executor: str) -> Stack:
        connect, ui = self.spark_ports
        return Stack(self.state, *self.ports, db="postgres", executor=executor, connect_port=connect, spark_ui_port=ui)

    def run(self, command: str, executor: str, timeout: float = 420) -> subprocess.CompletedProcess:
        return subprocess.run(
            [*STACK_PY, command], env=self.env(executor), capture_output=True, text=True, timeout=timeout, cwd=REPO
        )

    def up(self, executor: str) -> str:
        proc = self.run("up", executor)
        if proc.returncode != 0:
            logs = self.state / "logs"
            tails = {p.name: p.read_text(errors="replace")[-2500:] for p in sorted(logs.glob("*.log"))}
            pytest.fail(f"stack.py up ({executor}) failed: {proc.stdout[-2000:]}{proc.stderr[-2000:]}\n{tails}")
        return proc.stdout

    def api(self) -> AirflowApi:
        stack = self.stack("local")
        return AirflowApi(stack.airflow_url, "admin", stack.credentials()["admin"])

    def land(self, day: str) -> None:
        gen.generate(WORLD, date.fromisoformat(day), 1, self.storage.zone("landing"), self.storage.zone("ground_truth"))

    def ingest(self, day: str) -> tuple[str, dict]:
        """Trigger recsys_ingest for ``day`` through the scheduler; wait; return (run id, final run)."""
        api = self.api()
        api.wait_for_dag("recsys_ingest")
        run = api.trigger("recsys_ingest", {"wait_timeout_s": 600}, logical_date=f"{day}T00:00:00Z")
        if api.call("GET", "/dags/recsys_ingest")["is_paused"]:
            api.unpause("recsys_ingest")
        return run["dag_run_id"], api.wait_run("recsys_ingest", run["dag_run_id"], timeout=900)


def _pg(database: str):
    return contextlib.closing(psycopg2.connect(host="127.0.0.1", port=5432, user="postgres", dbname=database))


def _query(database: str, sql: str, args: tuple = ()) -> list[tuple]:
    with _pg(database) as conn, conn.cursor() as cur:
        cur.execute(sql, args)
        return cur.fetchall()


def test_stack_shapes_are_checked_and_isolated_per_state_folder(tmp_path, monkeypatch):
    """No servers: what ``RECSYS_DB``/``RECSYS_EXECUTOR`` change, and what they leave alone."""
    for var in ("RECSYS_AIRFLOW_DB", "RECSYS_MLFLOW_DB", "RECSYS_PG_URL", "RECSYS_REDIS_URL", "RECSYS_REDIS_DB"):
        monkeypatch.delenv(var, raising=False)
    with pytest.raises(ValueError, match="RECSYS_EXECUTOR=celery needs RECSYS_DB=postgres"):
        Stack(tmp_path, 1, 2, db="sqlite", executor="celery")
    with pytest.raises(ValueError, match="RECSYS_DB='mysql'"):
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

    monkeypatch.setenv("RECSYS_EXTRA_DAG_FOLDERS", str(tmp_path / "more_dags"))
    bundles = json.loads(default.env()["AIRFLOW__DAG_PROCESSOR__DAG_BUNDLE_CONFIG_LIST"])
    assert [b["name"] for b in bundles] == ["dags-folder", "extra-0-more_dags"]
    assert bundles[1]["kwargs"]["path"] == str(tmp_path / "more_dags")


@pytest.fixture(scope="module")
def pg(tmp_path_factory) -> PgStack:
    pg = PgStack(tmp_path_factory.mktemp("pg-stack") / "state")
    yield pg
    # Stop every component (celery worker included) and drop the databases and Redis keys.
    proc = pg.run("destroy", "celery", timeout=180)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_local_executor_on_postgres_runs_ingest_and_mlflow_uses_postgres(pg):
    stack = pg.stack("local")
    dbs = stack.pg_databases
    assert dbs["airflow"].startswith("recsys_") and dbs["airflow"] != "recsys_airflow"  # unique per state folder
    out = pg.up("local")
    assert "LocalExecutor on postgres" in out and "'metadatabase': 'healthy'" in out
    assert set(stack.running()) == {"spark-connect", "mlflow", "api-server", "scheduler", "dag-processor", "triggerer"}
    assert {r[0] for r in _query("postgres", "SELECT datname FROM pg_database")} >= set(dbs.values())
    env = {k: v for k, v in stack.env().items() if k.startswith("AIRFLOW__DATABASE")}
    assert (
        env["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"] == f"postgresql+psycopg2://postgres@127.0.0.1:5432/{dbs['airflow']}"
    )
    assert "AIRFLOW__DATABASE__SQL_ALCHEMY_CONNECT_ARGS" not in env  # the SQLite timeout is not for psycopg2

    pg.land(LOCAL_DAY)
    run_id, run = pg.ingest(LOCAL_DAY)
    assert run["state"] == "success", pg.api().call("GET", f"/dags/recsys_ingest/dagRuns/{run_id}/taskInstances")
    part = pg.storage.partition("curated", LOCAL_DAY)
    assert storage.read_manifest(part)["rows"] > 1400 and is_validated(pg, LOCAL_DAY)
    # The run, its task instances and the asset event live in Postgres.
    rows = _query(dbs["airflow"], "SELECT task_id, state FROM task_instance WHERE run_id = %s", (run_id,))
    assert dict(rows) == dict.fromkeys(INGEST_TASKS, "success")
    extras = [e for (e,) in _query(dbs["airflow"], "SELECT extra FROM asset_event")]
    extras = [json.loads(e) if isinstance(e, str) else e for e in extras]
    assert [e["day"] for e in extras if e.get("day")] == [LOCAL_DAY]

    # MLflow: an experiment and a run written over REST are rows of the Postgres backend store.
    name = f"pg-check-{uuid.uuid4().hex[:8]}"
    api = f"{stack.mlflow_url}/api/2.0/mlflow"
    exp_id = requests.post(f"{api}/experiments/create", json={"name": name}, timeout=60).json()["experiment_id"]
    mlrun = requests.post(f"{api}/runs/create", json={"experiment_id": exp_id}, timeout=60).json()["run"]["info"]
    logged = requests.post(
        f"{api}/runs/log-metric",
        json={"run_id": mlrun["run_id"], "key": "rows", "value": 1500.0, "timestamp": int(time.time() * 1000)},
        timeout=60,
    )
    assert logged.status_code == 200, logged.text
    assert (
        requests.get(f"{api}/experiments/get-by-name", params={"experiment_name": name}, timeout=60).json()[
            "experiment"
        ]["experiment_id"]
        == exp_id
    )
    assert _query(dbs["mlflow"], "SELECT experiment_id FROM experiments WHERE name = %s", (name,)) == [(int(exp_id),)]
    assert _query(
        dbs["mlflow"], "SELECT value FROM metrics WHERE run_uuid = %s AND key = 'rows'", (mlrun["run_id"],)
    ) == [(1500.0,)]
    assert not (pg.state / "mlflow" / "mlflow.db").exists()
    assert not (pg.state / "airflow" / "airflow.db").exists()


def test_celery_executor_with_redis_runs_ingest_on_the_worker(pg):
    assert pg.run("down", "local", timeout=120).returncode == 0
    stack = pg.stack("celery")
    out = pg.up("celery")
    assert "CeleryExecutor on postgres" in out and f"Celery queue {stack.celery_queue}" in out
    assert "celery-worker" in stack.running()

    pg.land(CELERY_DAY)
    run_id, run = pg.ingest(CELERY_DAY)
    tis = pg.api().call("GET", f"/dags/recsys_ingest/dagRuns/{run_id}/taskInstances")["task_instances"]
    assert run["state"] == "success", tis
    assert {t["task_id"]: (t["state"], t["queue"]) for t in tis} == dict.fromkeys(
        INGEST_TASKS, ("success", stack.celery_queue)
    )
    part = pg.storage.partition("curated", CELERY_DAY)
    assert storage.read_manifest(part)["rows"] > 1400 and is_validated(pg, CELERY_DAY)
    # Each task went through Redis to the Celery worker: the worker log names it, and every
    # broker/result key of this stack is under its own prefix.
    worker_log = (pg.state / "logs" / "celery-worker.log").read_text(errors="replace")
    for task_id in INGEST_TASKS:
        assert f"task_id='{task_id}', dag_id='recsys_ingest', run_id='{run_id}'" in worker_log, task_id
    # The task instance turns success (over the Execution API) before the Celery task returns
    # (the supervisor still flushes logs and lineage events): wait, bounded, for every result.
    client = redis.Redis.from_url(stack.redis_url)
    deadline = time.monotonic() + 120
    try:
        while True:
            keys = [k.decode() for k in client.scan_iter(match=stack.redis_key_prefix + "*")]
            results = [json.loads(client.get(k)) for k in keys if ":celery-task-meta-" in k]
            done = len(results) >= len(INGEST_TASKS) and {r["status"] for r in results} == {"SUCCESS"}
            if done or time.monotonic() > deadline:
                break
            time.sleep(1)
    finally:
        client.close()
    assert done, results
    assert f"{stack.redis_key_prefix}_kombu.binding.{stack.celery_queue}" in keys

    events = pg.api().call("GET", "/assets/events", params={"limit": 100})["asset_events"]
    assert sorted(e["extra"]["day"] for e in events if e["extra"].get("day")) == [LOCAL_DAY, CELERY_DAY]


def test_destroy_stops_everything_and_drops_databases_and_redis_keys(pg):
    stack = pg.stack("celery")
    groups = stack.running()
    assert set(groups) >= {"celery-worker", "scheduler", "api-server"}
    proc = pg.run("destroy", "celery", timeout=180)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert not stack.running()
    assert not [name for name, pgid in groups.items() if _group_alive(pgid)]
    assert not set(stack.pg_databases.values()) & {r[0] for r in _query("postgres", "SELECT datname FROM pg_database")}
    client = redis.Redis.from_url(stack.redis_url)
    try:
        assert list(client.scan_iter(match=stack.redis_key_prefix + "*")) == []
    finally:
        client.close()
