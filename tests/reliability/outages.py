"""S3 endpoint outages for the whole-loop chaos run: a proxy in front of the stack's S3 server
that takes the endpoint down for chosen processes, and the plan that decides when.

Every component and task of the rehearsal reaches the S3 server through ``OutageProxy``
(``stack.s3_endpoint``). An outage is the endpoint going down *for one process tree*: its open
connections are reset and every new one is reset on arrival, until the outage ends — what a pod
sees when its path to the object store fails. Only the target is cut, so the demo's own reads (the
operator watching) and the other tasks keep the store, and every failed try the run shows is one
the plan caused. A connection's owner is found the way ``ss -p`` finds it: the client's socket
(``/proc/net/tcp``: local port = the connection's peer port) → its inode → the process holding it.

``Outages`` (a thread beside the kill injector) takes three outages, each once, at the phase the
issue names, and holds each until the target process has exited (its try failed):

* **a scoring read**: a ``jobs.score`` job from the moment it is seen (its first reads: the
  validation verdict, the curated manifests);
* **a snapshot publish**: a ``jobs.snapshot`` job once its attempt prefix holds a file (the rest
  of its publish meets the outage: the parts the job's process still writes — a small window is
  split there — and the commit; parts that Spark's workers write go on, the commit cannot);
* **an MLflow artifact upload**: the MLflow server (the artifact proxy: it is the S3 client) while
  a ``jobs.train`` job is uploading, from the first new object under the artifact root.

Each outage records the Airflow task instance it hit (``AIRFLOW_CTX_*`` of the job's environment)
and how many connections it cut, so the test counts recoveries from the tries Airflow kept.
"""

from __future__ import annotations

import contextlib
import os
import socket
import struct
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from jobs.core.storage import ATTEMPT
from tests.reliability.harness import cmdline, descendants

# each outage and the job module whose try it meets
PHASES = {"score read": "jobs.score", "snapshot publish": "jobs.snapshot", "MLflow artifact upload": "jobs.train"}
MAX_OUTAGE_S = 180.0  # an outage ends when its target exited, or after this long
POLL_S = 0.1
FAILED_TRY = ("failed", "up_for_retry")  # a try that failed (the task itself may go on)


def _port(address: str) -> int:
    return int(address.rsplit(":", 1)[1], 16)


def socket_inode(local_port: int, remote_port: int) -> int | None:
    """Inode of the loopback TCP socket whose local port is ``local_port`` and remote port
    ``remote_port`` (the client's end of a proxied connection), or None when it is gone."""
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with contextlib.suppress(OSError), open(table) as rows:
            next(rows)
            for row in rows:
                cols = row.split()
                if _port(cols[1]) == local_port and _port(cols[2]) == remote_port and cols[9] != "0":
                    return int(cols[9])
    return None


def holds_socket(pids: Iterable[int], inode: int) -> bool:
    """Whether one of ``pids`` has the socket ``inode`` open."""
    target = f"socket:[{inode}]"
    for pid in pids:
        with contextlib.suppress(OSError):
            for fd in os.listdir(f"/proc/{pid}/fd"):
                with contextlib.suppress(OSError):
                    if os.readlink(f"/proc/{pid}/fd/{fd}") == target:
                        return True
    return False


def _reset(sock: socket.socket) -> None:
    """Close with a TCP reset (SO_LINGER 0): the peer sees 'connection reset', not a clean EOF."""
    with contextlib.suppress(OSError):
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    with contextlib.suppress(OSError):
        sock.close()


@dataclass
class _Conn:
    client: socket.socket
    upstream: socket.socket
    peer_port: int


class OutageProxy:
    """A TCP forwarder to the S3 server on loopback; ``cut(root)`` takes the endpoint down for
    ``root``'s process tree (its connections reset, new ones reset on arrival) until ``restore``."""

    def __init__(self, upstream_port: int) -> None:
        self.upstream = upstream_port
        self._server = socket.create_server(("127.0.0.1", 0))
        self.port = self._server.getsockname()[1]
        self._lock = threading.Lock()
        self._conns: list[_Conn] = []
        self._root: int | None = None
        self.cut_connections = 0
        threading.Thread(target=self._accept, daemon=True, name="s3-outage-proxy").start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def _targeted(self, peer_port: int) -> bool:
        root = self._root
        if root is None:
            return False
        inode = socket_inode(peer_port, self.port)
        return inode is not None and holds_socket([root, *descendants(root)], inode)

    def cut(self, root: int) -> int:
        """Take the endpoint down for ``root`` and its descendants; returns the open connections reset."""
        with self._lock:
            self._root = root
            live = list(self._conns)
        cut = [c for c in live if self._targeted(c.peer_port)]
        for conn in cut:
            self._drop(conn)
        with self._lock:
            self.cut_connections += len(cut)
        return len(cut)

    def restore(self) -> None:
        with self._lock:
            self._root = None

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self._server.close()
        with self._lock:
            live, self._conns = list(self._conns), []
        for conn in live:
            self._drop(conn)

    def _drop(self, conn: _Conn) -> None:
        _reset(conn.client)
        _reset(conn.upstream)
        with self._lock, contextlib.suppress(ValueError):
            self._conns.remove(conn)

    def _accept(self) -> None:
        while True:
            try:
                client, (_, peer_port) = self._server.accept()
            except OSError:
                return
            if self._targeted(peer_port):
                with self._lock:
                    self.cut_connections += 1
                _reset(client)
                continue
            try:
                upstream = socket.create_connection(("127.0.0.1", self.upstream), timeout=10)
                upstream.settimeout(None)
            except OSError:  # the server itself is down: its clients see that
                _reset(client)
                continue
            conn = _Conn(client, upstream, peer_port)
            with self._lock:
                self._conns.append(conn)
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pipe, args=(conn, a, b), daemon=True).start()

    def _pipe(self, conn: _Conn, src: socket.socket, dst: socket.socket) -> None:
        try:
            pipe(src, dst)
        finally:
            with self._lock, contextlib.suppress(ValueError):
                self._conns.remove(conn)


def pipe(src: socket.socket, dst: socket.socket) -> None:
    """Forward ``src``'s bytes to ``dst`` until either end closes; then shut both down."""
    try:
        while data := src.recv(65536):
            dst.sendall(data)
    except OSError:
        pass
    finally:
        for s in (src, dst):
            with contextlib.suppress(OSError):
                s.shutdown(socket.SHUT_RDWR)


def attempt_of(key: str) -> str | None:
    """The writer's attempt prefix (``…/dt=D/.attempt-<token>``) an object key lies under, if any."""
    head, sep, tail = key.partition("/" + ATTEMPT)
    return head + sep + tail.split("/", 1)[0] if sep else None


def task_of(pid: int) -> dict[str, str] | None:
    """The Airflow task instance a job process runs for (``AIRFLOW_CTX_*`` of its environment)."""
    try:
        raw = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
    except OSError:
        return None
    env = dict(item.decode(errors="replace").split("=", 1) for item in raw if b"=" in item)
    keys = {"dag_id": "AIRFLOW_CTX_DAG_ID", "task_id": "AIRFLOW_CTX_TASK_ID", "run_id": "AIRFLOW_CTX_DAG_RUN_ID"}
    if not all(v in env for v in keys.values()):
        return None
    out = {k: env[v] for k, v in keys.items()}
    out["try_number"] = env.get("AIRFLOW_CTX_TRY_NUMBER", "")
    return out


@dataclass
class Outage:
    phase: str
    target: str  # the process cut: a job's module, or the MLflow server
    task: dict[str, str] | None  # the task instance whose try the outage met
    started_s: float
    started_at: float  # wall clock (epoch seconds), to compare with Airflow's try times
    ended_s: float = 0.0
    ended_at: float = 0.0
    connections_cut: int = 0
    try_state: str | None = None  # what Airflow says of the try the outage met
    detail: dict[str, Any] = field(default_factory=dict)

    @property
    def failed_try(self) -> bool:
        return self.try_state in FAILED_TRY

    def record(self) -> dict[str, Any]:
        return {
            "phase": self.phase,
            "target": self.target,
            "task": self.task,
            "at_s": round(self.started_s, 1),
            "lasted_s": round(self.ended_s - self.started_s, 1),
            "connections_cut": self.connections_cut,
            "try_state": self.try_state,
            **self.detail,
        }


class Outages:
    """The injector thread's body: the three outages of ``PHASES``, each once (see the module
    docstring). ``jobs(executor)`` lists the job processes of the stack's task processes;
    ``avoid`` holds the task keys the kill injector hit (a task gets one fault at most) and
    receives the ones an outage hit; ``keys("bucket/prefix")`` lists the keys under it (bucket
    included), straight from the server."""

    def __init__(
        self,
        proxy: OutageProxy,
        jobs: Callable[[int], dict[int, tuple[str, ...]]],
        task_key: Callable[[tuple[str, ...]], tuple[str, ...]],
        avoid: set[tuple[str, ...]],
        keys: Callable[[str], list[str]],
        root: str,
    ) -> None:
        self.proxy, self.jobs, self.task_key, self.avoid, self.keys = proxy, jobs, task_key, avoid, keys
        self.root = root  # the storage root as bucket/prefix
        self.outages: list[Outage] = []
        self.errors: list[str] = []
        self.api: Any = None  # the stack's REST API, once it is up
        self.pending = list(PHASES)
        self._t0 = time.monotonic()

    def __call__(self, stack: Any, done: threading.Event) -> None:
        try:
            self._run(stack, done)
        except Exception as exc:  # reported by the test, not lost in a thread
            self.errors.append(f"{type(exc).__name__}: {exc}")

    def _run(self, stack: Any, done: threading.Event) -> None:
        from scripts.stack import CELERY_WORKER

        pid_file = stack.pid_file(CELERY_WORKER if stack.executor == "celery" else "scheduler")
        while not pid_file.exists():
            if done.wait(1):
                return
        executor = int(pid_file.read_text())
        from scripts.recsys_api import AirflowApi

        while self.api is None:  # the API server may still be starting
            try:
                self.api = AirflowApi(stack.airflow_url, "admin", stack.credentials()["admin"])
            except Exception:
                if done.wait(2):
                    return
        mlflow_prefix = stack.mlflow_artifacts.split("://", 1)[1].rstrip("/") + "/"
        first_seen: dict[int, Any] = {}  # job pid → what the bucket held when it was first seen
        while self.pending and not done.wait(POLL_S):
            for pid, argv in self.jobs(executor).items():
                if self.task_key(argv) in self.avoid:
                    continue
                module = argv[1]
                if module == "jobs.score" and "score read" in self.pending:
                    self._outage("score read", pid, pid, argv, done)
                elif module == "jobs.snapshot" and "snapshot publish" in self.pending:
                    attempts = {attempt_of(k) for k in self.keys(f"{self.root}/training/snapshots/")} - {None}
                    new = attempts - first_seen.setdefault(pid, attempts)
                    if not new:
                        continue
                    self._outage("snapshot publish", pid, pid, argv, done, attempts=sorted(new))
                elif module == "jobs.train" and "MLflow artifact upload" in self.pending:
                    count = len(self.keys(mlflow_prefix))
                    if first_seen.setdefault(pid, count) >= count:
                        continue
                    server = int(stack.pid_file("mlflow").read_text())
                    self._outage("MLflow artifact upload", server, pid, argv, done, artifacts_before=count)
                else:
                    continue
                # a phase whose target's try did not fail (it finished first) is tried on the next job
                self.pending = [p for p in PHASES if p not in {o.phase for o in self.outages if o.failed_try}]
                break

    def reserved(self) -> set[str]:
        """The job modules an outage still waits for (the kill injector leaves them alone meanwhile)."""
        return {PHASES[p] for p in self.pending}

    def _outage(
        self, phase: str, cut: int, job: int, argv: tuple[str, ...], done: threading.Event, **detail: Any
    ) -> None:
        """Cut ``cut``'s tree while ``job`` (the task's job process) runs, at most ``MAX_OUTAGE_S``."""
        task = task_of(job)
        self.avoid.add(self.task_key(argv))
        outage = Outage(
            phase,
            "MLflow server" if cut != job else argv[1],
            task,
            time.monotonic() - self._t0,
            time.time(),
            detail={"argv": " ".join(self.task_key(argv)[1:])[:160], **detail},
        )
        before = self.proxy.cut_connections
        self.proxy.cut(cut)
        deadline = time.monotonic() + MAX_OUTAGE_S
        try:
            while cmdline(job)[1:] == list(argv) and time.monotonic() < deadline and not done.wait(POLL_S):
                pass
        finally:
            self.proxy.restore()
        outage.ended_s, outage.ended_at = time.monotonic() - self._t0, time.time()
        outage.connections_cut = self.proxy.cut_connections - before
        outage.try_state = self.try_state(task, done) if task else None
        self.outages.append(outage)

    def try_state(self, task: dict[str, str], done: threading.Event, timeout: float = 60.0) -> str | None:
        """The final state of ``task``'s try (its task process reports it a moment after the job exits)."""
        deadline = time.monotonic() + timeout
        state = None
        while time.monotonic() < deadline:
            with contextlib.suppress(Exception):  # the API busy: ask again
                tries = self.api.tries(task["dag_id"], task["run_id"], task["task_id"])
                state = next((t["state"] for t in tries if str(t["try_number"]) == task["try_number"]), None)
                if state in (*FAILED_TRY, "success"):
                    return state
            if done.wait(1):
                break
        return state
