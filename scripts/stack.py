"""The local stack: Airflow 3 (api-server, scheduler, dag-processor, triggerer) and MLflow.

``python scripts/stack.py up|down|status|env|init``; the Makefile wraps these as ``make up``,
``make down`` and ``make status``.

This module runs the stack: init, the processes (one process group each), health checks, up,
down, status, destroy. What a stack *is* (its shape, ports, environment and each component's
command line: ``Stack``) is ``scripts/stack_shape.py``; the stores it uses outside its state
folder (Postgres databases, Redis keys, S3 buckets) are ``scripts/stack_stores.py``.

The stack's shape is the ``stack`` section of the configuration (``include/config/pipeline.yaml``,
``jobs.core.config.StackConfig``; the reference is generated into the docs), overridden per
key as ``RECSYS__STACK__<KEY>`` like every other setting: ``RECSYS__STACK__DB=postgres``,
``RECSYS__STACK__EXECUTOR=celery``, ports, the state folder. The ``cluster`` profile's section
is that profile's loopback rehearsal (Postgres, Celery, standalone Spark, S3, its own ports and
``.local/rehearsal``): ``RECSYS_PROFILE=cluster python scripts/stack.py up|status|destroy``.

Everything binds to 127.0.0.1. State lives in ``stack.state_dir`` (default ``.local/`` in the
repository, ignored by git): ``airflow/`` is ``AIRFLOW_HOME`` (SQLite DB, logs, generated
passwords), ``mlflow/`` the tracking store and artifacts, ``run/`` one PID file per component
and ``logs/`` their output. Each component is started in its own process group, so ``down``
stops exactly what ``up`` started (SIGTERM to the group, SIGKILL after a grace period) and
never looks processes up by name.

With ``db: postgres`` Airflow's metadata DB and MLflow's backend store move to PostgreSQL
(``pg_url``; databases ``<instance>_airflow`` and ``<instance>_mlflow`` are created by
``init``); with ``executor: celery`` tasks go through Redis (``redis_url``) to a
``celery-worker`` component. ``<instance>`` is ``recsys`` for the default state folder and
``recsys_<hash of the folder>`` otherwise, so stacks with different state folders (test
sessions) never share a database, a Redis key or a Celery queue. ``python scripts/stack.py
destroy`` stops the stack and drops those databases and Redis keys.

With ``object_store: s3`` an S3-compatible server (moto) runs as the first component; every
other component and every task gets its endpoint and keys as ``AWS_*`` variables (never in
config), and ``up`` creates the buckets that the storage root and ``mlflow_artifacts`` name.
Its objects live in memory: a restarted server starts empty.

No component opens a port beyond the two above: the scheduler's and the triggerer's log
servers (``serve_logs`` binds every interface) are switched off, because every component
writes its task logs into the one local log folder the api-server reads.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import os
import shlex
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from scripts import spark_service
from scripts.stack_shape import (
    ALL_COMPONENTS,
    CELERY_WORKER,
    COMPONENTS,
    EXECUTORS,
    REPO,
    S3,
    USERS,
    Stack,
    _airflow_bin,
    _read_pid,
)
from scripts.stack_stores import _pg_admin, create_buckets, create_databases, delete_redis_keys


def _group_alive(pgid: int) -> bool:
    """True while any non-zombie process is in process group ``pgid`` (reaps our own zombies)."""
    with contextlib.suppress(ChildProcessError, OSError):
        while os.waitpid(-pgid, os.WNOHANG)[0] > 0:
            pass
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[-1].split()
        except OSError:
            continue
        if int(fields[2]) == pgid and fields[0] != "Z":
            return True
    return False


def port_open(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.settimeout(0.5)
        return sock.connect_ex(("127.0.0.1", port)) == 0


def http_json(url: str, timeout: float = 5.0) -> tuple[int, object]:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:  # noqa: S310 - loopback only
            body = resp.read()
            return resp.status, json.loads(body) if body.strip().startswith((b"{", b"[")) else body.decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode(errors="replace")
    except (urllib.error.URLError, OSError, ValueError) as exc:
        return 0, str(exc)


def airflow_health(stack: Stack) -> dict[str, str]:
    code, body = http_json(f"{stack.airflow_url}/api/v2/monitor/health")
    if code != 200 or not isinstance(body, dict):
        return {}
    return {k: v.get("status", "?") for k, v in body.items() if isinstance(v, dict)}


def mlflow_healthy(stack: Stack) -> bool:
    code, _ = http_json(f"{stack.mlflow_url}/health")
    return code == 200


def s3_healthy(stack: Stack) -> bool:
    code, _ = http_json(f"http://127.0.0.1:{stack.s3_port}/")
    return code == 200


def make_folders(stack: Stack) -> None:
    """The state folder's layout (idempotent)."""
    for sub in ("airflow", "mlflow/artifacts", "run", "logs", "lineage"):
        (stack.state / sub).mkdir(parents=True, exist_ok=True)


def init(stack: Stack, airflow_db: str | None = None) -> None:
    """Create folders, credentials and the migrated metadata DB (idempotent).

    Args:
        airflow_db: migrate this metadata DB (and create its pools) instead of the stack's;
            the test session's in-process ``dag.test()`` DB, kept apart from the live scheduler.
    """
    make_folders(stack)
    stack.credentials()
    if stack.db == "postgres" and airflow_db is None:
        create_databases(stack)
    env = stack.full_env()
    if airflow_db is not None:
        env["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"] = airflow_db
    db = env["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"]
    marker = stack.airflow_home / (
        ".migrated" if airflow_db is None else f".migrated-{hashlib.sha256(db.encode()).hexdigest()[:12]}"
    )
    if not marker.exists() or marker.read_text() != db:
        _run([_airflow_bin(), "db", "migrate"], env, "airflow db migrate")
        if db.startswith("sqlite:///"):
            import sqlite3

            with sqlite3.connect(db[len("sqlite:///") :]) as conn:
                conn.execute("PRAGMA journal_mode=WAL")
        marker.write_text(db)
    for pool, slots, what in (
        ("gpu_training", "1", "GPU training slots"),
        ("model_registry", "1", "serialises alias moves"),
    ):
        _run([_airflow_bin(), "pools", "set", pool, slots, what], env, "airflow pools set")


def destroy(stack: Stack) -> None:
    """Stop the stack, then drop its Postgres databases and delete its Redis keys."""
    down(stack)
    if stack.db == "postgres":
        from psycopg2 import sql

        with contextlib.closing(_pg_admin(stack)) as conn, conn.cursor() as cur:
            for name in stack.pg_databases.values():
                cur.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))
        (stack.airflow_home / ".migrated").unlink(missing_ok=True)
        print(f"dropped databases {', '.join(stack.pg_databases.values())}")
    if stack.executor == "celery":
        removed = delete_redis_keys(stack)
        print(f"deleted {removed} Redis key(s) under {stack.redis_key_prefix!r}")


def _run(cmd: list[str], env: dict[str, str], what: str) -> None:
    proc = subprocess.run(cmd, env=env, cwd=REPO, capture_output=True, text=True)
    if proc.returncode != 0:
        sys.stderr.write(proc.stdout[-4000:] + proc.stderr[-4000:])
        raise SystemExit(f"{what} failed with exit code {proc.returncode}")


def _start(stack: Stack, name: str, cmd: list[str], env: dict[str, str]) -> int:
    log = open(stack.state / "logs" / f"{name}.log", "ab")  # noqa: SIM115 - handed to the child
    cwd = REPO
    if name.startswith("spark-"):  # the Spark JVMs see neither the repository nor its environment
        # (only the object store's endpoint and keys: their Python workers read and write it)
        env, cwd = {**spark_service.env(stack.state), **stack.object_store_env()}, stack.state / "spark"
        for sub in ("scratch", "work", name):
            (cwd / sub).mkdir(parents=True, exist_ok=True)
    proc = subprocess.Popen(
        cmd, env=env, cwd=cwd, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True
    )
    stack.pid_file(name).write_text(str(proc.pid))
    return proc.pid


def _ports(stack: Stack) -> dict[str, tuple[int, str]]:
    """The loopback port each component listens on, and the variable that moves it."""
    return {
        "mlflow": (stack.mlflow_port, "RECSYS__STACK__MLFLOW_PORT"),
        "api-server": (stack.airflow_port, "RECSYS__STACK__AIRFLOW_PORT"),
        spark_service.CONNECT: (stack.connect_port, "RECSYS__STACK__SPARK_CONNECT_PORT"),
        spark_service.MASTER: (stack.spark_master_port, "RECSYS__STACK__SPARK_MASTER_PORT"),
        S3: (stack.s3_port, "RECSYS__STACK__S3_PORT"),
    }


def _healthy(stack: Stack, only: tuple[str, ...]) -> bool:
    if S3 in only and not s3_healthy(stack):
        return False
    if "mlflow" in only and not mlflow_healthy(stack):
        return False
    if spark_service.CONNECT in only and not (
        port_open(stack.connect_port)
        and spark_service.health(stack.spark_ui_port, stack.spark_cluster, stack.spark_workers)["healthy"]
    ):
        return False
    if not any(n in COMPONENTS[1:] or n == CELERY_WORKER for n in only):
        return True
    health = airflow_health(stack)
    return all(health.get(key) == "healthy" for key in ("metadatabase", "scheduler", "triggerer", "dag_processor"))


def up(stack: Stack, timeout: float = 240.0, only: tuple[str, ...] | None = None) -> None:
    """Start the components in ``only`` (default: all of this shape) not running yet; wait until healthy."""
    only = tuple(n for n in stack.components if n in (stack.components if only is None else only))
    if not set(only) & {*COMPONENTS[1:], CELERY_WORKER}:
        make_folders(stack)  # Spark and/or MLflow alone (tests, benchmarks): no Airflow DB to migrate
        if stack.db == "postgres" and "mlflow" in only:
            create_databases(stack)
    else:
        init(stack)
    env = stack.full_env()
    running = stack.running()
    commands = stack.commands()
    for name in only:
        if name in running:
            continue
        port, variable = _ports(stack).get(name, (None, ""))
        if port and port_open(port):
            raise SystemExit(f"port {port} on 127.0.0.1 is taken by another process; set {variable}")
        _start(stack, name, commands[name], env)
        if name == spark_service.MASTER:  # workers and the server register with it
            _wait_port(stack, name, stack.spark_master_port, timeout)
        if name == S3:  # the buckets exist before anything writes
            _wait_port(stack, name, stack.s3_port, timeout)
            _wait(lambda: s3_healthy(stack), f"{name} on port {stack.s3_port}", timeout)
            create_buckets(stack)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        dead = [n for n in only if n not in stack.running()]
        if dead:
            down(stack)
            logs = "\n".join(f"  {stack.state / 'logs' / (n + '.log')}" for n in dead)
            raise SystemExit(f"component(s) exited during start-up: {', '.join(dead)}; see\n{logs}")
        if _healthy(stack, only):
            if set(only) - {"mlflow", S3, *spark_service.components(stack.spark_cluster)}:
                status(stack)
            return
        time.sleep(1.0)
    status(stack)
    raise SystemExit(f"stack not healthy after {timeout:.0f}s; logs under {stack.state / 'logs'}")


def _wait(check, what: str, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise SystemExit(f"{what}: not healthy after {timeout:.0f}s")
        time.sleep(0.3)


def _wait_port(stack: Stack, name: str, port: int, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not port_open(port):
        if name not in stack.running() or time.monotonic() > deadline:
            raise SystemExit(f"{name} did not open port {port}; see {stack.state / 'logs' / (name + '.log')}")
        time.sleep(0.3)


def down(stack: Stack, grace: float = 20.0) -> None:
    """Stop every process group started by ``up``; SIGKILL what outlives the grace period."""
    groups = {}
    for name in ALL_COMPONENTS:
        pid = _read_pid(stack.pid_file(name))
        if pid is None:
            continue
        if _group_alive(pid):
            groups[name] = pid
            with contextlib.suppress(ProcessLookupError):
                os.killpg(pid, signal.SIGTERM)
    deadline = time.monotonic() + grace
    while groups and time.monotonic() < deadline:
        groups = {n: g for n, g in groups.items() if _group_alive(g)}
        time.sleep(0.3)
    for pgid in groups.values():
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pgid, signal.SIGKILL)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and any(_group_alive(g) for g in groups.values()):
        time.sleep(0.2)
    for name in ALL_COMPONENTS:
        stack.pid_file(name).unlink(missing_ok=True)
    left = [n for n, g in groups.items() if _group_alive(g)]
    if left:
        raise SystemExit(f"processes still alive after SIGKILL: {left}")
    print("stack stopped" + (f" ({len(groups)} group(s) needed SIGKILL)" if groups else ""))


def status(stack: Stack) -> int:
    running = stack.running()
    creds = stack.credentials() if stack.passwords_file.parent.exists() else {}
    print(f"state folder : {stack.state}")
    print(
        f"shape        : {EXECUTORS[stack.executor]} on {stack.db}"
        + (f" (Celery queue {stack.celery_queue}, broker {stack.redis_url})" if stack.executor == "celery" else "")
    )
    for name in stack.components:
        pid = running.get(name)
        print(f"  {name:14s} {'running pid ' + str(pid) if pid else 'stopped'}")
    health = airflow_health(stack)
    print(f"Airflow UI/API: {stack.airflow_url}  health: {health or 'unreachable'}")
    print(f"MLflow UI     : {stack.mlflow_url}  {'healthy' if mlflow_healthy(stack) else 'unreachable'}")
    if stack.object_store == "s3":
        print(
            f"S3 endpoint   : http://127.0.0.1:{stack.s3_port}  {'healthy' if s3_healthy(stack) else 'unreachable'}"
            " (moto, objects in memory: gone when it stops)"
            + (f"; clients are given {stack.s3_endpoint}" if stack.s3_endpoint else "")
        )
    spark = spark_service.health(stack.spark_ui_port, stack.spark_cluster, stack.spark_workers)
    print(
        f"Spark Connect : {stack.spark_remote}  {'healthy' if spark['healthy'] else 'unreachable'}"
        + (
            f" (app {spark['app_id']}, executors {spark['executors'] or 'in the driver'})"
            if spark.get("app_id")
            else ""
        )
        + f"; UI http://127.0.0.1:{stack.spark_ui_port}"
    )
    if running.get(spark_service.CONNECT):
        print(f"  {'':14s} {spark_service.files_line(running[spark_service.CONNECT])}")
    if stack.spark_cluster == "standalone":
        print(
            f"Spark master  : spark://127.0.0.1:{stack.spark_master_port}  UI http://127.0.0.1:{stack.spark_master_port + 1000}"
        )
    if creds:
        print("Airflow users : " + ", ".join(f"{u} / {p} ({USERS[u]})" for u, p in creds.items() if u in USERS))
    return 0 if all(name in running for name in stack.components) else 1


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("command", choices=("up", "down", "status", "env", "init", "destroy"))
    args = ap.parse_args(argv)
    try:
        stack = Stack.from_env()
    except ValueError as exc:
        ap.error(str(exc))
    if args.command == "env":
        stack.state.joinpath("airflow").mkdir(parents=True, exist_ok=True)
        for key, value in stack.env().items():
            print(f"export {key}={shlex.quote(value)}")
        return 0
    if args.command == "init":
        init(stack)
        return 0
    if args.command == "up":
        up(stack)
        return 0
    if args.command == "down":
        down(stack)
        return 0
    if args.command == "destroy":
        destroy(stack)
        return 0
    return status(stack)


if __name__ == "__main__":
    sys.exit(main())
