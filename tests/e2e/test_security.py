"""Security of the local stack: authentication, roles, secret masking in task logs, loopback binds.

The masking test runs ``recsys_test_secret_log`` (``tests/e2e/dags_extra/``), a DAG that prints a
Variable, a Connection password and a token from the Connection's extra, plainly, inside a dict and
through a rendered Bash template. The folder joins the stack's DAG bundles through
``stack.extra_dag_folders``, which ``tests/e2e/conftest.py`` sets during collection, before the
session's stack starts (``scripts/stack.py`` reads it when it builds the environment).
"""

from __future__ import annotations

import json
import os
import uuid
from pathlib import Path

import pytest
import requests

from scripts.demo import diagnose
from scripts.recsys_api import AirflowApi

pytestmark = pytest.mark.e2e

SECRET_DAG = "recsys_test_secret_log"


@pytest.fixture(scope="module")
def users(live_stack) -> dict[str, AirflowApi]:
    creds = live_stack.credentials()
    return {name: AirflowApi(live_stack.airflow_url, name, creds[name]) for name in ("admin", "operator", "viewer")}


def test_no_anonymous_access(live_stack):
    base = live_stack.airflow_url
    for method, path in (("GET", "/api/v2/dags"), ("GET", "/api/v2/variables"), ("POST", "/api/v2/backfills")):
        resp = requests.request(method, base + path, json={} if method == "POST" else None, timeout=30)
        assert resp.status_code == 401, (method, path, resp.status_code)
    forged = requests.get(base + "/api/v2/dags", headers={"Authorization": "Bearer not-a-jwt"}, timeout=30)
    assert forged.status_code in (401, 403)
    wrong = requests.post(base + "/auth/token", json={"username": "admin", "password": "wrong"}, timeout=30)
    assert wrong.status_code == 401
    assert "access_token" not in wrong.text


def test_viewer_reads_but_cannot_trigger_unpause_or_backfill(users):
    admin, viewer = users["admin"], users["viewer"]
    admin.wait_for_dag("recsys_train")
    paused_before = admin.call("GET", "/dags/recsys_ingest")["is_paused"]
    runs_before = admin.call("GET", "/dags/recsys_train/dagRuns", params={"limit": 1})["total_entries"]

    assert viewer.request("GET", "/dags/recsys_train").status_code == 200
    trigger = viewer.request("POST", "/dags/recsys_train/dagRuns", json={"logical_date": None, "conf": {}})
    assert trigger.status_code == 403, trigger.text
    flip = viewer.request("PATCH", "/dags/recsys_ingest", json={"is_paused": not paused_before})
    assert flip.status_code == 403, flip.text
    backfill = viewer.request(
        "POST",
        "/backfills",
        json={"dag_id": "recsys_ingest", "from_date": "2026-03-01T00:00:00Z", "to_date": "2026-03-01T00:00:00Z"},
    )
    assert backfill.status_code == 403, backfill.text
    assert viewer.request("GET", "/variables").status_code == 403
    assert viewer.request("GET", "/connections").status_code == 403

    assert admin.call("GET", "/dags/recsys_ingest")["is_paused"] == paused_before
    assert admin.call("GET", "/dags/recsys_train/dagRuns", params={"limit": 1})["total_entries"] == runs_before


def test_operator_can_trigger(users):
    operator = users["operator"]
    operator.wait_for_dag(SECRET_DAG)
    run_id = f"operator_{uuid.uuid4().hex[:8]}"
    resp = operator.request(
        "POST", f"/dags/{SECRET_DAG}/dagRuns", json={"dag_run_id": run_id, "logical_date": None, "conf": {}}
    )
    assert resp.status_code == 200, resp.text
    run = users["admin"].call("GET", f"/dags/{SECRET_DAG}/dagRuns/{run_id}")
    assert run["triggering_user_name"] == "operator"
    assert run["run_type"] == "manual"
    # The demo's stall report names the waiting run.
    assert f"{SECRET_DAG} {run_id} [queued]" in diagnose(users["admin"], (SECRET_DAG,))
    # The DAG is paused, so the run only waits; remove it before another test unpauses the DAG.
    assert users["admin"].request("DELETE", f"/dags/{SECRET_DAG}/dagRuns/{run_id}").status_code == 204


def test_secrets_are_masked_in_task_logs_and_rendered_fields(users):
    admin = users["admin"]
    suffix = uuid.uuid4().hex[:12]
    secrets = {
        "variable": f"sk-live-{suffix}-VariableValue",
        "password": f"pw-{suffix}-ConnPassword",
        "token": f"tok-{suffix}-ExtraToken",
    }
    variable, conn_id = f"recsys_test_api_key_{suffix}", f"recsys_test_service_{suffix}"
    created = admin.request("POST", "/variables", json={"key": variable, "value": secrets["variable"]})
    assert created.status_code == 201, created.text
    conn = {
        "connection_id": conn_id,
        "conn_type": "http",
        "host": "service.invalid",
        "login": "svc",
        "password": secrets["password"],
        "extra": json.dumps({"token": secrets["token"]}),
    }
    assert admin.request("POST", "/connections", json=conn).status_code == 201
    try:
        # The API itself never hands the values back.
        shown = admin.call("GET", f"/connections/{conn_id}")
        assert shown["password"] == "***" and secrets["token"] not in shown["extra"]
        assert admin.call("GET", f"/variables/{variable}")["value"] == "***"

        admin.wait_for_dag(SECRET_DAG)
        admin.unpause(SECRET_DAG)
        run = admin.trigger(SECRET_DAG, {"variable": variable, "conn_id": conn_id})
        final = admin.wait_run(SECRET_DAG, run["dag_run_id"], timeout=600)
        assert final["state"] == "success"

        printed = admin.log_text(SECRET_DAG, run["dag_run_id"], "print_secrets", 1)
        echoed = admin.log_text(SECRET_DAG, run["dag_run_id"], "echo_template", 1)
        # The lines are there (the task did print them) with the values replaced.
        assert f"variable {variable} = ***" in printed
        assert "connection password = ***" in printed
        assert "connection token = ***" in printed
        assert "{'login': 'svc', 'password': '***'}" in printed
        assert "api key from template: ***" in echoed
        for text in (printed, echoed):
            for value in secrets.values():
                assert value not in text
        rendered = admin.call("GET", f"/dags/{SECRET_DAG}/dagRuns/{run['dag_run_id']}/taskInstances/echo_template")
        assert rendered["rendered_fields"]["bash_command"] == 'echo "api key from template: ***"'
    finally:
        admin.request("PATCH", f"/dags/{SECRET_DAG}", json={"is_paused": True})
        admin.request("DELETE", f"/variables/{variable}")
        admin.request("DELETE", f"/connections/{conn_id}")


def _listening_inodes() -> dict[str, tuple[str, int]]:
    """Socket inode → (local address, port) of every listening TCP socket (v4 and v6)."""
    out = {}
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            if fields[3] != "0A":  # LISTEN
                continue
            addr, port = fields[1].split(":")
            out[fields[9]] = (addr, int(port, 16))
    return out


def _is_loopback(hex_addr: str) -> bool:
    if len(hex_addr) == 8:  # IPv4, little-endian: 127.x.x.x ends with 7F
        return hex_addr.endswith("7F")
    # IPv6 ::1, or an IPv4-mapped loopback (::ffff:127.x.x.x)
    return hex_addr == "00000000000000000000000001000000" or (
        hex_addr.startswith("0000000000000000FFFF0000") and hex_addr.endswith("7F")
    )


def _group_pids(pgid: int) -> list[int]:
    pids = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[-1].split()
        except OSError:
            continue
        if int(fields[2]) == pgid:
            pids.append(int(stat.parent.name))
    return pids


def test_every_stack_process_listens_on_loopback_only(live_stack):
    """Not just the two published ports: no component (log servers, workers) opens a wildcard port."""
    listening = _listening_inodes()
    found: dict[str, list[tuple[str, int]]] = {}
    for name, pgid in live_stack.running().items():
        for pid in _group_pids(pgid):
            try:
                fds = list(Path(f"/proc/{pid}/fd").iterdir())
            except OSError:
                continue
            for fd in fds:
                try:
                    target = os.readlink(fd)
                except OSError:
                    continue
                if target.startswith("socket:[") and target[8:-1] in listening:
                    found.setdefault(name, []).append(listening[target[8:-1]])
    ports = {port for sockets in found.values() for _, port in sockets}
    assert {live_stack.airflow_port, live_stack.mlflow_port} <= ports, found
    exposed = {name: s for name, sockets in found.items() for s in sockets if not _is_loopback(s[0])}
    assert not exposed, f"listening beyond loopback: {exposed}"
    # The Spark Connect JVM also listens on ephemeral loopback ports of its own (block manager,
    # driver RPC and a server socket per Python worker it launched); every other component opens
    # only the two published ports.
    spark_ports = {port for _, port in found.pop("spark-connect", [])}
    assert {live_stack.connect_port, live_stack.spark_ui_port} <= spark_ports, spark_ports
    ports = {port for sockets in found.values() for _, port in sockets}
    assert ports == {live_stack.airflow_port, live_stack.mlflow_port}, f"unexpected listening ports: {found}"
