"""The local stack: Airflow 3 (api-server, scheduler, dag-processor, triggerer) and MLflow.

``python scripts/stack.py up|down|status|env|init``; the Makefile wraps these as ``make up``,
``make down`` and ``make status``.

Long because it is the one supervisor of every local shape (SQLite or Postgres, Local or Celery
executor, Spark local or a standalone cluster): their environment, processes, health checks and
databases in one module, so that a shape is changed in one place.

Everything binds to 127.0.0.1. State lives in ``$RECSYS_STATE_DIR`` (default ``.local/`` in the
repository, ignored by git): ``airflow/`` is ``AIRFLOW_HOME`` (SQLite DB, logs, generated
passwords), ``mlflow/`` the tracking store and artifacts, ``run/`` one PID file per component
and ``logs/`` their output. Each component is started in its own process group, so ``down``
stops exactly what ``up`` started (SIGTERM to the group, SIGKILL after a grace period) and
never looks processes up by name.

Ports: ``RECSYS_AIRFLOW_PORT`` (default 28080) and ``RECSYS_MLFLOW_PORT`` (default 25000).

Production shape (``RECSYS_DB=postgres``, ``RECSYS_EXECUTOR=celery``): Airflow's metadata DB and
MLflow's backend store move to PostgreSQL (``RECSYS_PG_URL``, default
``postgresql+psycopg2://postgres@127.0.0.1:5432``; databases ``<instance>_airflow`` and
``<instance>_mlflow`` are created by ``init``), and the CeleryExecutor sends tasks through Redis
(``RECSYS_REDIS_URL``, default ``redis://127.0.0.1:6379``) to a ``celery-worker`` component.
``<instance>`` is ``recsys`` for the default state folder and ``recsys_<hash of the folder>``
otherwise, so stacks with different state folders (test sessions) never share a database, a
Redis key or a Celery queue. ``python scripts/stack.py destroy`` stops the stack and drops
those databases and Redis keys. ``RECSYS_EXTRA_DAG_FOLDERS`` (``os.pathsep``-separated) adds
DAG bundles next to ``dags/`` (the test suite's own DAGs).

Object storage (``RECSYS_OBJECT_STORE=s3``, port ``RECSYS_S3_PORT``, default 19000): an
S3-compatible server (moto) runs as the first component; every other component and every task
gets its endpoint and keys as ``AWS_*`` variables (never in config), and ``up`` creates the
buckets that the storage root and ``RECSYS_MLFLOW_ARTIFACTS`` name. Its objects live in memory:
a restarted server starts empty. The cluster rehearsal (``make rehearsal``) runs this shape.

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
import secrets
import shlex
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

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


@dataclass(frozen=True)
class Stack:
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

    def __post_init__(self) -> None:
        if self.spark_cluster not in SPARK_CLUSTERS:
            raise ValueError(
                f"RECSYS_SPARK_CLUSTER={self.spark_cluster!r}: expected one of {', '.join(SPARK_CLUSTERS)}"
            )
        if self.db not in DBS:
            raise ValueError(f"RECSYS_DB={self.db!r}: expected one of {', '.join(DBS)}")
        if self.executor not in EXECUTORS:
            raise ValueError(f"RECSYS_EXECUTOR={self.executor!r}: expected one of {', '.join(EXECUTORS)}")
        if self.object_store not in OBJECT_STORES:
            raise ValueError(f"RECSYS_OBJECT_STORE={self.object_store!r}: expected '' or 's3'")
        if self.executor == "celery" and self.db != "postgres":
            raise ValueError("RECSYS_EXECUTOR=celery needs RECSYS_DB=postgres (workers share the metadata DB)")

    @classmethod
    def from_env(cls) -> Stack:
        state = Path(os.environ.get("RECSYS_STATE_DIR") or REPO / ".local").resolve()
        return cls(
            state,
            int(os.environ.get("RECSYS_AIRFLOW_PORT", "28080")),
            int(os.environ.get("RECSYS_MLFLOW_PORT", "25000")),
            os.environ.get("RECSYS_DB", "sqlite").lower(),
            os.environ.get("RECSYS_EXECUTOR", "local").lower(),
            int(os.environ.get("RECSYS_SPARK_CONNECT_PORT", "15002")),
            int(os.environ.get("RECSYS_SPARK_UI_PORT", "14040")),
            os.environ.get("RECSYS_SPARK_CLUSTER", "local").lower(),
            int(os.environ.get("RECSYS_SPARK_MASTER_PORT", "17077")),
            os.environ.get("RECSYS_MLFLOW_ARTIFACTS", ""),
            os.environ.get("RECSYS_OBJECT_STORE", "").lower(),
            int(os.environ.get("RECSYS_S3_PORT", "19000")),
        )

    @property
    def components(self) -> tuple[str, ...]:
        """The components ``up`` starts for this shape, in start order (the S3 server first, then
        Spark; a Celery worker only with Celery)."""
        airflow = (*COMPONENTS, CELERY_WORKER) if self.executor == "celery" else COMPONENTS
        store = (S3,) if self.object_store == "s3" else ()
        return (*store, *spark_service.components(self.spark_cluster), *airflow)

    @classmethod
    def on_free_ports(cls, state: Path, **kwargs: str) -> Stack:
        """A stack in ``state`` whose every port is a free loopback port (tests, the demo's twins)."""
        return cls(
            Path(state).resolve(),
            free_port(),
            free_port(),
            connect_port=free_port(),
            spark_ui_port=free_port(),
            spark_master_port=free_port(),
            s3_port=free_port(),
            **kwargs,
        )

    def port_env(self) -> dict[str, str]:
        """The variables that make ``Stack.from_env()`` in another process this stack."""
        return {
            "RECSYS_STATE_DIR": str(self.state),
            "RECSYS_AIRFLOW_PORT": str(self.airflow_port),
            "RECSYS_MLFLOW_PORT": str(self.mlflow_port),
            "RECSYS_SPARK_CONNECT_PORT": str(self.connect_port),
            "RECSYS_SPARK_UI_PORT": str(self.spark_ui_port),
            "RECSYS_SPARK_MASTER_PORT": str(self.spark_master_port),
            "RECSYS_SPARK_CLUSTER": self.spark_cluster,
            "RECSYS_DB": self.db,
            "RECSYS_EXECUTOR": self.executor,
            "RECSYS_MLFLOW_ARTIFACTS": self.mlflow_artifacts,
            "RECSYS_OBJECT_STORE": self.object_store,
            "RECSYS_S3_PORT": str(self.s3_port),
        }

    def object_store_env(self) -> dict[str, str]:
        """The S3 endpoint and keys every component and task reads from its environment (empty
        without the stack's own S3 server: then the user's ``AWS_*`` apply)."""
        return s3_service.env(self.s3_port) if self.object_store == "s3" else {}

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
        return f"{os.environ.get('RECSYS_PG_URL', DEFAULT_PG_URL).rstrip('/')}/{database}"

    @property
    def airflow_db_url(self) -> str:
        if "RECSYS_AIRFLOW_DB" in os.environ:
            return os.environ["RECSYS_AIRFLOW_DB"]
        if self.db == "postgres":
            return self.pg_url(self.pg_databases["airflow"])
        return f"sqlite:///{self.airflow_home / 'airflow.db'}"

    @property
    def mlflow_db_url(self) -> str:
        if "RECSYS_MLFLOW_DB" in os.environ:
            return os.environ["RECSYS_MLFLOW_DB"]
        if self.db == "postgres":
            return self.pg_url(self.pg_databases["mlflow"])
        return f"sqlite:///{self.state / 'mlflow' / 'mlflow.db'}"

    @property
    def redis_url(self) -> str:
        """Broker and result backend: a Redis DB number picked from the instance name."""
        number = os.environ.get("RECSYS_REDIS_DB") or str(
            int(hashlib.sha256(self.instance.encode()).hexdigest(), 16) % 16
        )
        return f"{os.environ.get('RECSYS_REDIS_URL', DEFAULT_REDIS_URL).rstrip('/')}/{number}"

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
        if "RECSYS_STATE_DIR" in os.environ and "RECSYS__STORAGE__ROOT" not in os.environ:
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
        """DAG bundles of ``RECSYS_EXTRA_DAG_FOLDERS`` next to ``dags/`` (empty without any)."""
        extra = [f for f in os.environ.get("RECSYS_EXTRA_DAG_FOLDERS", "").split(os.pathsep) if f]
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
            self.spark_cluster, spark.master, ports, spark.server_memory, dict(spark.server_conf), self.state
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


def free_port() -> int:
    """A TCP port free on 127.0.0.1 right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


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


def create_buckets(stack: Stack) -> list[str]:
    """Create the buckets the stack's storage root and MLflow artifacts name (idempotent; the
    stack's own S3 server keeps objects in memory, so a restarted one starts empty)."""
    from jobs.core.config import load_config

    env = stack.full_env()
    uris = [load_config(environ=env).storage.root_path(), stack.mlflow_artifacts]
    buckets = sorted({u.split("://", 1)[1].split("/", 1)[0] for u in uris if u.startswith("s3://")})
    with patched_environ(stack.object_store_env()):
        for bucket in buckets:
            s3_service.create_bucket(bucket)
    return buckets


@contextlib.contextmanager
def patched_environ(values: dict[str, str]):
    """``os.environ`` with ``values`` set while the block runs, restored afterwards (how this
    process reaches a stack's own S3 server)."""
    saved = {k: os.environ.get(k) for k in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


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


def _pg_admin(stack: Stack):
    """An autocommit connection to the server's ``postgres`` maintenance database."""
    import psycopg2
    from sqlalchemy.engine import make_url

    url = make_url(stack.pg_url("postgres"))
    conn = psycopg2.connect(
        host=url.host, port=url.port or 5432, user=url.username, password=url.password, dbname="postgres"
    )
    conn.autocommit = True
    return conn


def create_databases(stack: Stack) -> None:
    """Create this stack's Airflow and MLflow databases when missing (idempotent)."""
    from psycopg2 import sql

    try:
        conn = _pg_admin(stack)
    except Exception as exc:  # psycopg2.OperationalError: the message names host and port
        raise SystemExit(f"cannot reach PostgreSQL for RECSYS_DB=postgres ({stack.pg_url('postgres')}): {exc}") from exc
    with contextlib.closing(conn), conn.cursor() as cur:
        for name in stack.pg_databases.values():
            cur.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,))
            if cur.fetchone() is None:
                cur.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))


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


def delete_redis_keys(stack: Stack) -> int:
    """Delete every key of this stack in its Redis DB (those under ``redis_key_prefix``)."""
    import redis

    client = redis.Redis.from_url(stack.redis_url)
    try:
        keys = list(client.scan_iter(match=stack.redis_key_prefix + "*", count=500))
        return client.delete(*keys) if keys else 0
    finally:
        client.close()


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
        "mlflow": (stack.mlflow_port, "RECSYS_MLFLOW_PORT"),
        "api-server": (stack.airflow_port, "RECSYS_AIRFLOW_PORT"),
        spark_service.CONNECT: (stack.connect_port, "RECSYS_SPARK_CONNECT_PORT"),
        spark_service.MASTER: (stack.spark_master_port, "RECSYS_SPARK_MASTER_PORT"),
        S3: (stack.s3_port, "RECSYS_S3_PORT"),
    }


def _healthy(stack: Stack, only: tuple[str, ...]) -> bool:
    if S3 in only and not s3_healthy(stack):
        return False
    if "mlflow" in only and not mlflow_healthy(stack):
        return False
    if spark_service.CONNECT in only and not (
        port_open(stack.connect_port) and spark_service.health(stack.spark_ui_port, stack.spark_cluster)["healthy"]
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
        )
    spark = spark_service.health(stack.spark_ui_port, stack.spark_cluster)
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
