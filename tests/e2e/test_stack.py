"""`make up` / `make status` / `make down` on a private state folder and private ports."""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest

pytestmark = pytest.mark.e2e

REPO = Path(__file__).resolve().parents[2]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0] != "Z"
    except OSError:
        return False


def _children(pid: int) -> set[int]:
    """Every descendant of pid (from /proc), so the test can check none survives."""
    kids: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().split(")")[-1].split()
        except OSError:
            continue
        kids.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    out, todo = set(), [pid]
    while todo:
        for child in kids.get(todo.pop(), []):
            out.add(child)
            todo.append(child)
    return out


def test_up_status_down_leaves_nothing_running(tmp_path):
    env = {
        **os.environ,
        "RECSYS__STACK__STATE_DIR": str(tmp_path / "state"),
        "RECSYS__STACK__AIRFLOW_PORT": str(_free_port()),
        "RECSYS__STACK__MLFLOW_PORT": str(_free_port()),
        "RECSYS__STACK__SPARK_CONNECT_PORT": str(_free_port()),
        "RECSYS__STACK__SPARK_UI_PORT": str(_free_port()),
    }
    env.pop("AIRFLOW_HOME", None)
    stack_py = [sys.executable, str(REPO / "scripts" / "stack.py")]
    up = subprocess.run([*stack_py, "up"], env=env, capture_output=True, text=True, timeout=400)
    assert up.returncode == 0, up.stdout[-3000:] + up.stderr[-3000:]
    try:
        assert "'scheduler': 'healthy'" in up.stdout
        assert "Airflow users : admin / " in up.stdout
        airflow_port, mlflow_port = int(env["RECSYS__STACK__AIRFLOW_PORT"]), int(env["RECSYS__STACK__MLFLOW_PORT"])
        with urllib.request.urlopen(f"http://127.0.0.1:{airflow_port}/api/v2/monitor/health", timeout=10) as resp:
            health = json.load(resp)
        assert health["metadatabase"]["status"] == "healthy"
        assert health["scheduler"]["status"] == "healthy"
        with urllib.request.urlopen(f"http://127.0.0.1:{mlflow_port}/health", timeout=10) as resp:
            assert resp.status == 200
        run_dir = tmp_path / "state" / "run"
        pids = {p.stem: int(p.read_text()) for p in run_dir.glob("*.pid")}
        assert set(pids) == {"spark-connect", "mlflow", "api-server", "scheduler", "dag-processor", "triggerer"}
        assert f"Spark Connect : sc://127.0.0.1:{env['RECSYS__STACK__SPARK_CONNECT_PORT']}  healthy" in up.stdout
        tree = set(pids.values()).union(*(_children(p) for p in pids.values()))
        assert len(tree) > len(pids)  # gunicorn/uvicorn workers, executor workers
        status = subprocess.run([*stack_py, "status"], env=env, capture_output=True, text=True, timeout=60)
        assert status.returncode == 0
        assert "running pid" in status.stdout
        files = re.search(r"open files (\d+) \((\d+) sockets\) of (\d+)", status.stdout)
        assert files and 0 < int(files[2]) < int(files[1]) < int(files[3]), status.stdout
        # Loopback only: nothing listens on a wildcard address for our ports (the JVM's sockets
        # are IPv6 sockets bound to the v4-mapped loopback address).
        loopback = ("0100007F", "0000000000000000FFFF00000100007F", "00000000000000000000000001000000")
        spark_ports = (int(env["RECSYS__STACK__SPARK_CONNECT_PORT"]), int(env["RECSYS__STACK__SPARK_UI_PORT"]))
        for port in (airflow_port, mlflow_port, *spark_ports):
            hexport = f":{port:04X}"
            local = [
                ln.split()[1].rsplit(":", 1)[0]
                for table in ("/proc/net/tcp", "/proc/net/tcp6")
                for ln in Path(table).read_text().splitlines()[1:]
                if ln.split()[1].endswith(hexport) and ln.split()[3] == "0A"
            ]
            assert local and all(addr in loopback for addr in local), (port, local)
    finally:
        down = subprocess.run([*stack_py, "down"], env=env, capture_output=True, text=True, timeout=120)
    assert down.returncode == 0, down.stderr
    assert not [p for p in tree if _pid_alive(p)]
    for port in (airflow_port, mlflow_port, *spark_ports):
        with socket.socket() as sock:
            assert sock.connect_ex(("127.0.0.1", port)) != 0, f"port {port} still open"
    again = subprocess.run([*stack_py, "status"], env=env, capture_output=True, text=True, timeout=60)
    assert again.returncode == 1
    assert "stopped" in again.stdout
