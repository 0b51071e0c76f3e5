"""The local stack's shape: which components, on which ports, with which environment.

``Stack`` is one stack's settings (state folder, ports, metadata DB, executor, Spark cluster,
object store): its addresses, the environment every component, the CLI and the tasks share, and
each component's command line. ``scripts/stack.py`` supervises the processes; the stores outside
the state folder (Postgres databases, Redis keys, S3 buckets) are ``scripts/stack_stores.py``.
"""

from __future__ import annotations

import hashlib
import json
import os
import secrets
import shlex
import socket
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from scripts import s3_service, spark_service

REPO = Path(__file__).resolve().parent.parent
COMPONENTS = ("mlflow", "api-server", "scheduler", "dag-processor", "triggerer")
CELERY_WORKER = "celery-worker"
S3 = "s3"
ALL_COMPONENTS = (
    S3,
    *COMPONENTS,
    CELERY_WORKER,
    spark_service.MASTER,
    *spark_service.WORKERS,
    spark_service.CONNECT,
)
OBJECT_STORES = ("", "s3")
SPARK_CLUSTERS = ("local", "standalone")
USERS = {"admin": "admin", "viewer": "viewer", "operator": "op"}
DBS = ("sqlite", "postgres")
EXECUTORS = {"local": "LocalExecutor", "celery": "CeleryExecutor"}
DEFAULT_PG_URL = "postgresql+psycopg2://postgres@127.0.0.1:5432"
DEFAULT_REDIS_URL = "redis://127.0.0.1:6379"
LOCAL_BUNDLE = "airflow.dag_processing.bundles.local.LocalDagBundle"
STACK_ENV = "RECSYS__STACK__"  # the environment overrides of the configuration's ``stack`` section
# The variables that chose the shape before it was the ``stack`` section: set, they are refused
# (silently ignoring RECSYS_DB=postgres would start SQLite), naming what replaced them.
RENAMED = {
    f"RECSYS_{key}": f"{STACK_ENV}{key}"
    for key in (
        *("STATE_DIR", "DB", "EXECUTOR", "SPARK_CLUSTER", "OBJECT_STORE", "MLFLOW_ARTIFACTS"),
        *("AIRFLOW_PORT", "MLFLOW_PORT", "SPARK_CONNECT_PORT", "SPARK_UI_PORT", "SPARK_MASTER_PORT", "S3_PORT"),
        *("PG_URL", "REDIS_URL", "REDIS_DB", "AIRFLOW_DB", "MLFLOW_DB", "EXTRA_DAG_FOLDERS"),
    )
}


@dataclass(frozen=True)
class Stack:
    """One stack's settings: the ``stack`` section of the configuration (``jobs.core.config.StackConfig``,
    overridden as ``RECSYS__STACK__<KEY>``; the ``cluster`` profile's is the loopback rehearsal),
    with the state folder resolved."""

    state: Path
    airflow_port: int
    mlflow_port: int
    db: str = "sqlite"
    executor: str = "local"
    connect_port: int = 15002
    spark_ui_port: int = 14040
    spark_cluster: str = "local"
    spark_master_port: int = 17077
    mlflow_artifacts: str = ""  # MLflow's --artifacts-destination; default: the state folder
    object_store: str = ""  # "s3": run an S3-compatible server (moto) on s3_port as a component
    s3_port: int = 19000
    pg_server: str = DEFAULT_PG_URL  # stack.pg_url
    redis_server: str = DEFAULT_REDIS_URL  # stack.redis_url
    redis_db: int | None = None
    airflow_db: str = ""  # a full SQLAlchemy URL overriding db/pg_url
    mlflow_db: str = ""
    extra_dag_folders: tuple[str, ...] = ()
    s3_endpoint: str = ""  # the endpoint clients are given; empty: http://127.0.0.1:<s3_port>
    # Standalone workers started (1 or 2): not a configuration key; benchmarks/bench_scaleout.py
    # compares 1 with 2 (``Stack.on_free_ports(state, spark_workers=1)``).
    spark_workers: int = len(spark_service.WORKERS)

    def __post_init__(self) -> None:
        if self.spark_cluster not in SPARK_CLUSTERS:
            raise ValueError(
                f"RECSYS__STACK__SPARK_CLUSTER={self.spark_cluster!r}: expected one of {', '.join(SPARK_CLUSTERS)}"
            )
        spark_service.workers_of(self.spark_workers)  # 1 or 2: a ValueError that names the range
        if self.db not in DBS:
            raise ValueError(f"RECSYS__STACK__DB={self.db!r}: expected one of {', '.join(DBS)}")
        if self.executor not in EXECUTORS:
            raise ValueError(f"RECSYS__STACK__EXECUTOR={self.executor!r}: expected one of {', '.join(EXECUTORS)}")
        if self.object_store not in OBJECT_STORES:
            raise ValueError(f"RECSYS__STACK__OBJECT_STORE={self.object_store!r}: expected '' or 's3'")
        if self.executor == "celery" and self.db != "postgres":
            raise ValueError(
                "RECSYS__STACK__EXECUTOR=celery needs RECSYS__STACK__DB=postgres (workers share the metadata DB)"
            )

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Stack:
        """The stack the configuration names under ``environ`` (default: this process's): its
        profile's ``stack`` section with the ``RECSYS__STACK__*`` overrides. A value of the wrong
        type or out of range is a ``ValueError`` naming the key."""
        from jobs.core.config import ConfigError, load_config

        env = dict(os.environ if environ is None else environ)
        renamed = [f"{old} (now {new})" for old, new in RENAMED.items() if old in env]
        if renamed:
            raise ValueError("the stack's shape is the configuration's stack section: " + ", ".join(renamed))
        try:
            s = load_config(environ=env).stack
        except ConfigError as exc:
            raise ValueError(str(exc)) from exc
        state = Path(s.state_dir) if s.state_dir else REPO / ".local"
        return cls(
            (state if state.is_absolute() else REPO / state).resolve(),
            s.airflow_port,
            s.mlflow_port,
            s.db,
            s.executor,
            s.spark_connect_port,
            s.spark_ui_port,
            s.spark_cluster,
            s.spark_master_port,
            s.mlflow_artifacts,
            s.object_store,
            s.s3_port,
            s.pg_url,
            s.redis_url,
            s.redis_db,
            s.airflow_db,
            s.mlflow_db,
            tuple(s.extra_dag_folders),
            s.s3_endpoint,
        )

    @property
    def components(self) -> tuple[str, ...]:
        """The components ``up`` starts for this shape, in start order (the S3 server first, then
        Spark; a Celery worker only with Celery)."""
        airflow = (*COMPONENTS, CELERY_WORKER) if self.executor == "celery" else COMPONENTS
        store = (S3,) if self.object_store == "s3" else ()
        return (*store, *spark_service.components(self.spark_cluster, self.spark_workers), *airflow)

    @classmethod
    def on_free_ports(cls, state: Path, **kwargs: Any) -> Stack:
        """A stack in ``state`` whose every port is a free loopback port (tests, the demo's twins);
        ``kwargs``: other fields, or a port chosen by the caller (e.g. ``s3_port`` behind a proxy)."""
        ports = {
            "connect_port": free_port(),
            "spark_ui_port": free_port(),
            "spark_master_port": free_port(),
            "s3_port": free_port(),
        }
        return cls(Path(state).resolve(), free_port(), free_port(), **{**ports, **kwargs})

    def port_env(self) -> dict[str, str]:
        """The ``RECSYS__STACK__*`` variables that make ``Stack.from_env()`` in another process this
        stack, whatever that process's profile says."""
        values = {
            "state_dir": str(self.state),
            "airflow_port": self.airflow_port,
            "mlflow_port": self.mlflow_port,
            "spark_connect_port": self.connect_port,
            "spark_ui_port": self.spark_ui_port,
            "spark_master_port": self.spark_master_port,
            "spark_cluster": self.spark_cluster,
            "db": self.db,
            "executor": self.executor,
            "mlflow_artifacts": self.mlflow_artifacts,
            "object_store": self.object_store,
            "s3_port": self.s3_port,
            "pg_url": self.pg_server,
            "redis_url": self.redis_server,
            "airflow_db": self.airflow_db,
            "mlflow_db": self.mlflow_db,
            "extra_dag_folders": json.dumps(list(self.extra_dag_folders)),
            "s3_endpoint": self.s3_endpoint,
        }
        if self.redis_db is not None:
            values["redis_db"] = self.redis_db
        return {f"{STACK_ENV}{key.upper()}": str(value) for key, value in values.items()}

    def object_store_env(self) -> dict[str, str]:
        """The S3 endpoint and keys every component and task reads from its environment (empty
        without the stack's own S3 server: then the user's ``AWS_*`` apply)."""
        if self.object_store != "s3":
            return {}
        env = s3_service.env(self.s3_port)
        if self.s3_endpoint:  # something between the clients and the server (a proxy)
            env["AWS_ENDPOINT_URL"] = self.s3_endpoint
        return env

    @property
    def spark_remote(self) -> str:
        return f"sc://127.0.0.1:{self.connect_port}"

    @property
    def instance(self) -> str:
        """Name of this stack's Postgres databases, Redis keys and Celery queue."""
        if self.state == (REPO / ".local").resolve():
            return "recsys"
        return "recsys_" + hashlib.sha256(str(self.state).encode()).hexdigest()[:10]

    @property
    def pg_databases(self) -> dict[str, str]:
        """Postgres database per store (only used with ``db == 'postgres'``)."""
        return {"airflow": f"{self.instance}_airflow", "mlflow": f"{self.instance}_mlflow"}

    def pg_url(self, database: str) -> str:
        return f"{self.pg_server.rstrip('/')}/{database}"

    @property
    def airflow_db_url(self) -> str:
        if self.airflow_db:
            return self.airflow_db
        if self.db == "postgres":
            return self.pg_url(self.pg_databases["airflow"])
        return f"sqlite:///{self.airflow_home / 'airflow.db'}"

    @property
    def mlflow_db_url(self) -> str:
        if self.mlflow_db:
            return self.mlflow_db
        if self.db == "postgres":
            return self.pg_url(self.pg_databases["mlflow"])
        return f"sqlite:///{self.state / 'mlflow' / 'mlflow.db'}"

    @property
    def redis_url(self) -> str:
        """Broker and result backend: a Redis DB number picked from the instance name."""
        number = (
            self.redis_db
            if self.redis_db is not None
            else (int(hashlib.sha256(self.instance.encode()).hexdigest(), 16) % 16)
        )
        return f"{self.redis_server.rstrip('/')}/{number}"

    @property
    def celery_queue(self) -> str:
        return self.instance

    @property
    def redis_key_prefix(self) -> str:
        """Every broker and result key of this stack starts with it (kombu ``global_keyprefix``)."""
        return f"{self.instance}:"

    @property
    def airflow_home(self) -> Path:
        return self.state / "airflow"

    @property
    def airflow_url(self) -> str:
        return f"http://127.0.0.1:{self.airflow_port}"

    @property
    def mlflow_url(self) -> str:
        return f"http://127.0.0.1:{self.mlflow_port}"

    @property
    def lineage_file(self) -> Path:
        """OpenLineage events of every task (JSON lines)."""
        return self.state / "lineage" / "openlineage.jsonl"

    @property
    def passwords_file(self) -> Path:
        return self.airflow_home / "passwords.json"

    def _secret(self, name: str, factory) -> str:
        path = self.airflow_home / name
        if not path.exists():
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(factory())
            path.chmod(0o600)
        return path.read_text().strip()

    def env(self) -> dict[str, str]:
        """Environment shared by every Airflow component, the CLI and the tasks (Airflow's own
        settings here; lineage, Celery, extra DAG bundles and the object store in the helpers below)."""
        venv_bin = str(Path(sys.executable).parent)
        home = self.airflow_home
        from cryptography.fernet import Fernet  # Airflow's own dependency

        env = {
            "AIRFLOW_HOME": str(home),
            "AIRFLOW__CORE__DAGS_FOLDER": str(REPO / "dags"),
            "AIRFLOW__CORE__PLUGINS_FOLDER": str(REPO / "plugins"),
            "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
            "AIRFLOW__CORE__EXECUTOR": EXECUTORS[self.executor],
            "AIRFLOW__CORE__PARALLELISM": "4",
            "AIRFLOW__CORE__MAX_ACTIVE_TASKS_PER_DAG": "4",
            "AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION": "True",
            "AIRFLOW__CORE__FERNET_KEY": self._secret("fernet_key", lambda: Fernet.generate_key().decode()),
            "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS": ",".join(f"{u}:{r}" for u, r in USERS.items()),
            "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE": str(self.passwords_file),
            "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"{self.airflow_url}/execution/",
            "AIRFLOW__CORE__HIDE_SENSITIVE_VAR_CONN_FIELDS": "True",
            "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": self.airflow_db_url,
            "AIRFLOW__API__HOST": "127.0.0.1",
            "AIRFLOW__API__PORT": str(self.airflow_port),
            "AIRFLOW__API__BASE_URL": self.airflow_url,
            "AIRFLOW__API__WORKERS": "1",
            "AIRFLOW__API__EXPOSE_CONFIG": "False",
            "AIRFLOW__API_AUTH__JWT_SECRET": self._secret("jwt_secret", lambda: secrets.token_urlsafe(32)),
            "AIRFLOW__DAG_PROCESSOR__REFRESH_INTERVAL": "10",  # a new DAG file is found within 10 s
            # An unchanged DAG file is parsed again only after this many seconds; a changed one at
            # once (file_parsing_sort_mode modified_time re-queues a file whose mtime is newer than
            # its last parse). At 10 s the dag-processor re-parsed every file all the time: the
            # CPU of an idle stack (docs/local-stack.md, "What an idle stack costs").
            "AIRFLOW__DAG_PROCESSOR__MIN_FILE_PROCESS_INTERVAL": os.environ.get(
                "AIRFLOW__DAG_PROCESSOR__MIN_FILE_PROCESS_INTERVAL", "180"
            ),
            "AIRFLOW__SCHEDULER__SCHEDULER_HEARTBEAT_SEC": "2",
            "AIRFLOW__SCHEDULER__TASK_QUEUED_TIMEOUT": "600",
            # Tasks of a crashed scheduler are reset at this interval (300 s by default): on one
            # machine the scheduler and its LocalExecutor workers die together, so a restarted
            # stack would leave them waiting ~5.5 min (tests/reliability/conftest.py).
            "AIRFLOW__SCHEDULER__ORPHANED_TASKS_CHECK_INTERVAL": os.environ.get(
                "AIRFLOW__SCHEDULER__ORPHANED_TASKS_CHECK_INTERVAL", "30"
            ),
            "AIRFLOW__LOGGING__LOGGING_LEVEL": "INFO",
            "AIRFLOW__WEBSERVER__WARN_DEPLOYMENT_EXPOSURE": "False",
            "PYTHONPATH": os.pathsep.join([str(REPO), str(REPO / "plugins")]),
            "PATH": f"{venv_bin}{os.pathsep}{os.environ.get('PATH', '')}",
            "RECSYS__MLFLOW__TRACKING_URI": self.mlflow_url,
            "RECSYS__SPARK__REMOTE": self.spark_remote,
            "RECSYS__AIRFLOW__API_URL": self.airflow_url,
            "MLFLOW_TRACKING_URI": self.mlflow_url,
            # MLflow 3 server's background job runner (GenAI jobs: ~8 huey processes) is unused here.
            "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false",
            "NO_PROXY": "127.0.0.1,localhost",
            "no_proxy": "127.0.0.1,localhost",
        }
        if env["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"].startswith("sqlite"):
            env["AIRFLOW__DATABASE__SQL_ALCHEMY_CONNECT_ARGS"] = "recsys_airflow.sqlite.CONNECT_ARGS"
        env.update(self.lineage_env())
        env.update(self.celery_env())
        env.update(self.bundles_env())
        env.update(self.object_store_env())
        if f"{STACK_ENV}STATE_DIR" in os.environ and "RECSYS__STORAGE__ROOT" not in os.environ:
            env["RECSYS__STORAGE__ROOT"] = self.data_root(os.environ)
        return env

    def lineage_env(self) -> dict[str, str]:
        """OpenLineage: every task's START/COMPLETE/FAIL event, one JSON line each, in a local file
        (no lineage server on one machine); a cluster points the transport at Marquez or similar."""
        return {
            "AIRFLOW__OPENLINEAGE__DISABLED": "false",  # on for the stack even where a caller turned it off
            "AIRFLOW__OPENLINEAGE__NAMESPACE": "recsys-local",
            # Emit task events from a bounded thread, not the default forked child: the child
            # inherits the task runner's supervisor socket, and a garbled exchange on it can
            # leave the task `running` for ever (the provider's own words; a suite run stalled
            # with a served day never monitored). The thread waits at most
            # [openlineage] execution_timeout (10 s).
            "AIRFLOW__OPENLINEAGE__EXECUTE_IN_THREAD": "true",
            "AIRFLOW__OPENLINEAGE__TRANSPORT": json.dumps(
                {"type": "file", "log_file_path": str(self.lineage_file), "append": True}
            ),
        }

    def celery_env(self) -> dict[str, str]:
        """The CeleryExecutor's broker, result backend and queue (empty with the LocalExecutor)."""
        if self.executor != "celery":
            return {}
        return {
            "AIRFLOW__CELERY__BROKER_URL": self.redis_url,
            "AIRFLOW__CELERY__RESULT_BACKEND": self.redis_url,
            "AIRFLOW__CELERY__WORKER_CONCURRENCY": "2",
            "AIRFLOW__CELERY_BROKER_TRANSPORT_OPTIONS__GLOBAL_KEYPREFIX": self.redis_key_prefix,
            "AIRFLOW__CELERY_BROKER_TRANSPORT_OPTIONS__VISIBILITY_TIMEOUT": "86400",
            "AIRFLOW__CELERY_RESULT_BACKEND_TRANSPORT_OPTIONS__GLOBAL_KEYPREFIX": self.redis_key_prefix,
            "AIRFLOW__OPERATORS__DEFAULT_QUEUE": self.celery_queue,
        }

    def bundles_env(self) -> dict[str, str]:
        """DAG bundles of ``stack.extra_dag_folders`` next to ``dags/`` (empty without any)."""
        extra = [f for f in self.extra_dag_folders if f]
        if not extra:
            return {}
        bundles = [{"name": "dags-folder", "classpath": LOCAL_BUNDLE, "kwargs": {}}]
        bundles += [
            {"name": f"extra-{i}-{Path(f).name}", "classpath": LOCAL_BUNDLE, "kwargs": {"path": str(Path(f).resolve())}}
            for i, f in enumerate(extra)
        ]
        return {"AIRFLOW__DAG_PROCESSOR__DAG_BUNDLE_CONFIG_LIST": json.dumps(bundles)}

    def data_root(self, environ: Mapping[str, str]) -> str:
        """The storage root of this stack's tasks under ``environ``: an explicit
        ``RECSYS__STORAGE__ROOT`` or an object-store profile root as it is, else the state
        folder's own data zones (``<state>/data``)."""
        from jobs.core.config import load_config

        storage = load_config(environ=dict(environ)).storage
        if storage.is_local and "RECSYS__STORAGE__ROOT" not in environ:
            return str(self.state / "data")
        return storage.root_path()

    def full_env(self) -> dict[str, str]:
        return {**os.environ, **self.env()}

    def credentials(self) -> dict[str, str]:
        """Usernames → passwords of the SimpleAuthManager users (generated once, kept)."""
        path = self.passwords_file
        current = json.loads(path.read_text()) if path.exists() else {}
        missing = [u for u in USERS if u not in current]
        if missing:
            current.update({u: secrets.token_urlsafe(12) for u in missing})
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(json.dumps(current, indent=2))
            path.chmod(0o600)
        return current

    def spark_commands(self) -> dict[str, list[str]]:
        from jobs.core.config import load_config

        spark = load_config(environ=self.full_env()).spark
        ports = {"connect": self.connect_port, "ui": self.spark_ui_port, "master": self.spark_master_port}
        return spark_service.commands(
            self.spark_cluster,
            spark.master,
            ports,
            spark.server_memory,
            dict(spark.server_conf),
            self.state,
            self.spark_workers,
        )

    def commands(self) -> dict[str, list[str]]:
        airflow = [_airflow_bin()]
        mlflow_dir = self.state / "mlflow"
        return {
            S3: [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(self.s3_port)],
            **self.spark_commands(),
            "mlflow": [
                str(Path(sys.executable).parent / "mlflow"),
                "server",
                "--host",
                "127.0.0.1",
                "--port",
                str(self.mlflow_port),
                "--workers",
                "1",
                "--backend-store-uri",
                self.mlflow_db_url,
                "--artifacts-destination",
                # An object store (s3://…) in the cluster shape: the server proxies artifacts, so
                # only it needs the store's endpoint and keys (from its environment).
                self.mlflow_artifacts or str(mlflow_dir / "artifacts"),
            ],
            "api-server": [*airflow, "api-server", "--host", "127.0.0.1", "--port", str(self.airflow_port)],
            # Restarted if it exits: on SQLite a write race (StaleDataError) can end the
            # scheduler loop; in a cluster the Deployment restarts the pod the same way.
            "scheduler": [
                "bash",
                "-c",
                f'while true; do {shlex.quote(airflow[0])} scheduler --skip-serve-logs; echo "scheduler exited ($?), restarting"; sleep 3; done',
            ],
            "dag-processor": [*airflow, "dag-processor"],
            "triggerer": [*airflow, "triggerer", "--skip-serve-logs"],
            CELERY_WORKER: [
                *airflow,
                "celery",
                "worker",
                "--queues",
                self.celery_queue,
                "--concurrency",
                "2",
                "--celery-hostname",
                f"{self.instance}@%h",
                "--skip-serve-logs",
            ],
        }

    def pid_file(self, name: str) -> Path:
        return self.state / "run" / f"{name}.pid"

    def running(self) -> dict[str, int]:
        out = {}
        for name in ALL_COMPONENTS:
            pid = _read_pid(self.pid_file(name))
            if pid and _alive(pid):
                out[name] = pid
        return out


def free_port() -> int:
    """A TCP port free on 127.0.0.1 right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _airflow_bin() -> str:
    return str(Path(sys.executable).parent / "airflow")


def _read_pid(path: Path) -> int | None:
    try:
        return int(path.read_text().strip())
    except (FileNotFoundError, ValueError):
        return None


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:  # a zombie we spawned is not alive
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().split(")")[-1].split()[0] != "Z"
    except OSError:
        return True
