"""Spark as a service for the local stack: one Spark Connect server, optionally in front of a
standalone cluster (a Master and two Workers, separate JVMs), all from the pinned pyspark wheel.

Each is one supervised component of ``scripts/stack.py`` (own process group, PID file, log
file under the state folder) bound to 127.0.0.1:

* ``spark-connect`` — ``spark-submit --class SparkConnectServer`` in the foreground (so the PID
  is the JVM), master ``spark.master`` (``local[N]``) or the standalone master; its gRPC port is
  ``stack.spark_connect_port`` (15002), its UI/REST API ``stack.spark_ui_port`` (14040);
* with ``stack.spark_cluster: standalone``: ``spark-master`` (RPC ``stack.spark_master_port``,
  17077; web UI +1000) and ``spark-worker-1`` / ``spark-worker-2`` (1 core, 1 GiB each; a
  ``workers`` argument of 1 starts only the first: ``benchmarks/bench_scaleout.py``).

The server's Python workers run this virtualenv's interpreter but do **not** see the
repository: jobs ship their code as session artifacts (``jobs.core.spark``), exactly as they
would to a server on another host. ``server_conf`` in the configuration holds the server's
settings (the FAIR scheduler, no Python daemon; see ``include/config/pipeline.yaml``).
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import sys
import urllib.request
from pathlib import Path
from typing import Any

CONNECT = "spark-connect"
MASTER = "spark-master"
# Attempts per task, as spark.task.maxFailures on a cluster (4); local[N] alone gives 1, so one
# Python worker that does not connect back within Spark's fixed 10 s (a loaded machine) failed the
# whole job. local[N,F] retries the task like a cluster does.
TASK_ATTEMPTS = 4
LOCAL_MASTER = re.compile(r"local\[(\d+|\*)\]")
WORKERS = ("spark-worker-1", "spark-worker-2")
CONNECT_CLASS = "org.apache.spark.sql.connect.service.SparkConnectServer"
WORKER_CORES, WORKER_MEMORY = 1, "1g"


def spark_home() -> Path:
    import pyspark

    return Path(pyspark.__file__).resolve().parent


def workers_of(workers: int) -> tuple[str, ...]:
    """The names of the first ``workers`` standalone workers (1 to ``len(WORKERS)``)."""
    if not 1 <= workers <= len(WORKERS):
        raise ValueError(f"a standalone cluster has 1 to {len(WORKERS)} workers here, not {workers}")
    return WORKERS[:workers]


def components(cluster: str, workers: int = len(WORKERS)) -> tuple[str, ...]:
    """The Spark components of a stack, in start order."""
    return (MASTER, *workers_of(workers), CONNECT) if cluster == "standalone" else (CONNECT,)


def env(state: Path) -> dict[str, str]:
    """The environment of the Spark JVMs: this interpreter for Python workers, no repository on
    the path, logs and scratch under the state folder, everything on loopback."""
    python = sys.executable
    keep = {k: v for k, v in os.environ.items() if not k.startswith(("PYTHON", "PYSPARK", "SPARK", "RECSYS"))}
    return {
        **keep,
        "SPARK_HOME": str(spark_home()),
        "PYSPARK_PYTHON": python,
        "PYSPARK_DRIVER_PYTHON": python,
        "SPARK_LOCAL_IP": "127.0.0.1",
        "SPARK_LOCAL_DIRS": str(state / "spark" / "scratch"),
        "SPARK_LOG_DIR": str(state / "logs"),
        "SPARK_WORKER_DIR": str(state / "spark" / "work"),
        "PATH": f"{Path(python).parent}{os.pathsep}{os.environ.get('PATH', '')}",
    }


def commands(
    cluster: str,
    master: str,
    ports: dict[str, int],
    server_memory: str,
    server_conf: dict[str, str],
    state: Path,
    workers: int = len(WORKERS),
) -> dict[str, list[str]]:
    """argv of each Spark component (see the module docstring); ``workers``: how many standalone
    workers (their cores are the application's ``spark.cores.max``)."""
    home = spark_home()
    spark_class = str(home / "bin" / "spark-class")
    out: dict[str, list[str]] = {}
    if cluster == "standalone":
        master_url = f"spark://127.0.0.1:{ports['master']}"
        out[MASTER] = [
            spark_class,
            "org.apache.spark.deploy.master.Master",
            *("--host", "127.0.0.1", "--port", str(ports["master"]), "--webui-port", str(ports["master"] + 1000)),
        ]
        for i, name in enumerate(workers_of(workers), start=1):
            out[name] = [
                spark_class,
                "org.apache.spark.deploy.worker.Worker",
                master_url,
                *("--host", "127.0.0.1", "--cores", str(WORKER_CORES), "--memory", WORKER_MEMORY),
                *("--webui-port", str(ports["master"] + 1000 + i)),
                *("--work-dir", str(state / "spark" / name)),
            ]
        master = master_url
    elif match := LOCAL_MASTER.fullmatch(master):
        master = f"local[{match[1]},{TASK_ATTEMPTS}]"  # local mode takes its task attempts from the master string
    conf = {
        "spark.connect.grpc.binding.address": "127.0.0.1",
        "spark.connect.grpc.binding.port": str(ports["connect"]),
        "spark.driver.host": "127.0.0.1",
        "spark.driver.bindAddress": "127.0.0.1",
        "spark.ui.port": str(ports["ui"]),
        "spark.pyspark.python": sys.executable,
        "spark.driver.memory": server_memory,
        **server_conf,
    }
    if cluster == "standalone":
        conf |= {"spark.executor.memory": WORKER_MEMORY, "spark.executor.cores": str(WORKER_CORES)}
        conf["spark.cores.max"] = str(WORKER_CORES * workers)
    out[CONNECT] = [
        str(home / "bin" / "spark-submit"),
        *("--master", master, "--class", CONNECT_CLASS, "--name", "recsys-connect"),
        *[x for key, value in sorted(conf.items()) for x in ("--conf", f"{key}={value}")],
    ]
    return out


def rest(ui_port: int, path: str, timeout: float = 3.0) -> Any:
    """GET the Connect server's Spark REST API (``/api/v1`` + ``path``)."""
    url = f"http://127.0.0.1:{ui_port}/api/v1{path}"
    with urllib.request.urlopen(url, timeout=timeout) as resp:
        return json.loads(resp.read())


def health(ui_port: int, cluster: str, workers: int = len(WORKERS)) -> dict[str, Any]:
    """What the server's REST API says: its application, master and live executors (healthy
    once every standalone worker's executor is live)."""
    try:
        app = rest(ui_port, "/applications")[0]
        executors = [e for e in rest(ui_port, f"/applications/{app['id']}/executors") if e["id"] != "driver"]
    except (OSError, ValueError, IndexError, KeyError):
        return {"healthy": False}
    needed = workers if cluster == "standalone" else 0
    return {
        "healthy": len(executors) >= needed,
        "app_id": app["id"],
        "executors": sorted(f"{e['hostPort']}#{e['id']}" for e in executors),
    }


def running_jobs(ui_port: int) -> list[int]:
    """Ids of the Spark jobs running on the server now (its REST API)."""
    app = rest(ui_port, "/applications")[0]["id"]
    return [j["jobId"] for j in rest(ui_port, f"/applications/{app}/jobs?status=running")]


def executor_tasks(ui_port: int, tag: str | None = None) -> dict[str, int]:
    """Tasks per executor id of the application (of the jobs tagged ``tag`` when given)."""
    app = rest(ui_port, "/applications")[0]["id"]
    if tag is None:
        return {e["id"]: e["totalTasks"] for e in rest(ui_port, f"/applications/{app}/executors")}
    counts: dict[str, int] = {}
    for job in rest(ui_port, f"/applications/{app}/jobs"):
        if not any(t.endswith(tag) for t in job.get("jobTags", [])):
            continue
        for stage in job["stageIds"]:
            try:
                tasks = rest(ui_port, f"/applications/{app}/stages/{stage}/0/taskList?length=10000")
            except OSError:  # a skipped stage has no attempt 0
                continue
            for task in tasks:
                counts[task["executorId"]] = counts.get(task["executorId"], 0) + 1
    return counts


FILES_WARN_SHARE = 0.5  # warn (make status) when the server holds this share of its open-files limit


def open_files(pid: int) -> dict[str, Any] | None:
    """Open file descriptors of a process (the Connect JVM): total, sockets, and its soft limit.

    Why it matters: Spark 4.3's ``PythonWorkerFactory`` opens a server socket per Python worker it
    launches and never closes it, so a long-running server's descriptors grow with the jobs it ran
    (docs/local-stack.md, "Spark as a service"); ``make status`` shows the count and says when to restart.
    None when the process is gone or not ours to inspect.
    """
    try:
        fds = os.listdir(f"/proc/{pid}/fd")
        sockets = 0
        for fd in fds:
            with contextlib.suppress(OSError):
                sockets += os.readlink(f"/proc/{pid}/fd/{fd}").startswith("socket:")
        limit = None
        for line in Path(f"/proc/{pid}/limits").read_text().splitlines():
            if line.startswith("Max open files"):
                limit = int(line.split()[3])
    except (OSError, ValueError, IndexError):
        return None
    return {"open": len(fds), "sockets": sockets, "limit": limit}


def files_line(pid: int) -> str:
    """One ``make status`` line about the server's descriptors, with a restart hint near the limit."""
    files = open_files(pid)
    if files is None:
        return "open files unknown"
    line = f"open files {files['open']} ({files['sockets']} sockets) of {files['limit'] or '?'}"
    if files["limit"] and files["open"] >= FILES_WARN_SHARE * files["limit"]:
        line += "  WARNING: near the limit; restart it between runs (make down && make up)"
    return line
