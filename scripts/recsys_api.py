"""A small client for the Airflow 3 REST API, for operators and other systems.

``python scripts/recsys_api.py [--url URL --user U --password P] COMMAND ...``

Commands: ``token``, ``unpause DAG``, ``trigger DAG [--conf JSON] [--wait]``,
``wait DAG RUN_ID``, ``backfill DAG FROM TO [--reprocess completed] [--wait]``,
``asset-event ASSET_NAME --extra JSON``. Defaults come from the local stack (URL and the
generated admin password); pass ``--url``/``--user``/``--password`` (or ``AIRFLOW_API_URL``,
``AIRFLOW_USER``, ``AIRFLOW_PASSWORD``) for another deployment.

Why a script in ``scripts/``: it is an operator tool, not a DAG building block (``plugins/``) nor
a workload (``jobs/``); it needs only ``requests``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Callable
from typing import Any

import requests

TERMINAL = ("success", "failed")


class ApiError(RuntimeError):
    """An API call answered with an error status; the message holds the server's detail."""


def _database_error(resp: requests.Response) -> bool:
    """Airflow's answer to a SQLAlchemy error it has no better status for (500, "Database error")."""
    return resp.status_code == 500 and '"Database error"' in resp.text


class AirflowApi:
    """Token-authenticated calls to ``/api/v2``; 503 (busy SQLite) is retried with backoff."""

    def __init__(self, base_url: str, username: str, password: str, timeout: float = 60) -> None:
        self.base = base_url.rstrip("/")
        self.timeout = timeout
        self.http = requests.Session()
        resp = self.http.post(
            f"{self.base}/auth/token", json={"username": username, "password": password}, timeout=timeout
        )
        if resp.status_code not in (200, 201):
            raise ApiError(f"POST /auth/token → {resp.status_code}: {resp.text[:300]}")
        self.token = resp.json()["access_token"]
        self.http.headers["Authorization"] = f"Bearer {self.token}"

    def request(self, method: str, path: str, retry_503: int = 10, **kwargs: Any) -> requests.Response:
        """One call; 503 is retried with backoff, and so is a read (GET) answered 500 "Database
        error" (on SQLite a transaction that read before another process wrote fails at once,
        without waiting for the lock: nothing was written, asking again is safe)."""
        for attempt in range(retry_503 + 1):
            resp = self.http.request(method, f"{self.base}/api/v2{path}", timeout=self.timeout, **kwargs)
            busy = resp.status_code == 503 or (method == "GET" and _database_error(resp))
            if not busy or attempt == retry_503:
                return resp
            time.sleep(min(2**attempt, 10))
        return resp

    def call(self, method: str, path: str, **kwargs: Any) -> Any:
        resp = self.request(method, path, **kwargs)
        if resp.status_code >= 400:
            raise ApiError(f"{method} {path} → {resp.status_code}: {resp.text[:500]}")
        return resp.json() if resp.content else None

    def pending_partitions(self, dag_id: str) -> list[str]:
        """Partition keys of ``dag_id`` (a ``PartitionedAssetTimetable`` DAG) whose asset events
        arrived but whose run the scheduler has not made yet.

        Airflow 3.3.2 shows them only through the UI's own endpoint (``/ui/partitioned_dag_runs``,
        same token); the public ``assets/queuedEvents`` lists non-partitioned queues only."""
        resp = self.http.get(
            f"{self.base}/ui/partitioned_dag_runs",
            params={"dag_id": dag_id, "has_created_dag_run_id": "false"},
            timeout=self.timeout,
        )
        if resp.status_code >= 400:
            raise ApiError(f"GET /ui/partitioned_dag_runs?dag_id={dag_id} → {resp.status_code}: {resp.text[:300]}")
        return sorted(r["partition_key"] for r in resp.json()["partitioned_dag_runs"])

    def wait_for_dag(self, dag_id: str, timeout: float = 180) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            resp = self.request("GET", f"/dags/{dag_id}")
            if resp.status_code == 200:
                return resp.json()
            time.sleep(2)
        raise ApiError(f"DAG {dag_id} did not appear within {timeout:.0f}s (check import errors)")

    def unpause(self, dag_id: str) -> dict[str, Any]:
        return self.call("PATCH", f"/dags/{dag_id}", json={"is_paused": False})

    def trigger(
        self, dag_id: str, conf: dict[str, Any] | None = None, logical_date: str | None = None
    ) -> dict[str, Any]:
        return self.call("POST", f"/dags/{dag_id}/dagRuns", json={"logical_date": logical_date, "conf": conf or {}})

    def wait_run(
        self,
        dag_id: str,
        run_id: str,
        timeout: float = 1800,
        poll: float = 3,
        on_awaiting: Callable[[dict[str, Any]], None] | None = None,
    ) -> dict[str, Any]:
        """Poll a run until it ends. ``on_awaiting`` is called once per task instance (and try)
        that waits for a person, with its request (``awaiting_input``), to answer it."""
        deadline = time.monotonic() + timeout
        answered: set[tuple[str, int, int]] = set()
        while time.monotonic() < deadline:
            run = self.call("GET", f"/dags/{dag_id}/dagRuns/{run_id}")
            if run["state"] in TERMINAL:
                return run
            if on_awaiting is not None:
                for ti in self.awaiting_input(dag_id, run_id):
                    key = (ti["task_id"], ti["map_index"], ti["try_number"])
                    if key not in answered:
                        answered.add(key)
                        on_awaiting(ti)
            time.sleep(poll)
        raise ApiError(f"run {dag_id}/{run_id} not finished within {timeout:.0f}s")

    def awaiting_input(self, dag_id: str, run_id: str) -> list[dict[str, Any]]:
        """Task instances of a run waiting for a person (human-in-the-loop), with their requests."""
        out = []
        for ti in self.task_instances(dag_id, run_id):
            if ti["state"] == "awaiting_input":
                path = f"/dags/{dag_id}/dagRuns/{run_id}/taskInstances/{ti['task_id']}/{ti['map_index']}/hitlDetails"
                out.append({**ti, "hitl": self.call("GET", path)})
        return out

    def respond(
        self, dag_id: str, run_id: str, task_id: str, option: str, params_input: dict[str, Any], map_index: int = -1
    ) -> dict[str, Any]:
        """Answer a human-in-the-loop request (e.g. ``Approve`` / ``Reject`` with a reason)."""
        return self.call(
            "PATCH",
            f"/dags/{dag_id}/dagRuns/{run_id}/taskInstances/{task_id}/{map_index}/hitlDetails",
            json={"chosen_options": [option], "params_input": params_input},
        )

    def runs(self, dag_id: str, limit: int = 100) -> list[dict[str, Any]]:
        return self.call("GET", f"/dags/{dag_id}/dagRuns", params={"limit": limit, "order_by": "-logical_date"})[
            "dag_runs"
        ]

    def task_instances(self, dag_id: str, run_id: str) -> list[dict[str, Any]]:
        return self.call("GET", f"/dags/{dag_id}/dagRuns/{run_id}/taskInstances", params={"limit": 100})[
            "task_instances"
        ]

    def task_time(self, dag_ids: tuple[str, ...]) -> list[dict[str, Any]]:
        """Task wall seconds per (DAG, task) over every run, from the metadata DB (the last try of
        each task instance that ran: a skipped one, e.g. a family the run did not choose, is not a
        task that took 0 s; sensors count their poking time), largest first."""
        totals: dict[tuple[str, str], dict[str, Any]] = {}
        for dag_id in dag_ids:
            offset = 0
            while True:
                page = self.call(
                    "GET", f"/dags/{dag_id}/dagRuns/~/taskInstances", params={"limit": 100, "offset": offset}
                )
                for ti in page["task_instances"]:
                    if ti.get("duration") is None or ti.get("state") in ("skipped", "upstream_failed", "removed"):
                        continue
                    row = totals.setdefault(
                        (dag_id, ti["task_id"]),
                        {"dag_id": dag_id, "task_id": ti["task_id"], "tasks": 0, "seconds": 0.0},
                    )
                    row["tasks"] += 1
                    row["seconds"] += float(ti["duration"])
                offset += len(page["task_instances"])
                if not page["task_instances"] or offset >= page["total_entries"]:
                    break
        return sorted(totals.values(), key=lambda r: -r["seconds"])

    def tries(self, dag_id: str, run_id: str, task_id: str, map_index: int = -1) -> list[dict[str, Any]]:
        """Every try of one task instance (state, start and end of each), first try first."""
        path = f"/dags/{dag_id}/dagRuns/{run_id}/taskInstances/{task_id}"
        listed = self.call("GET", path + (f"/{map_index}" if map_index >= 0 else "") + "/tries")
        return sorted(listed["task_instances"], key=lambda t: t["try_number"])

    def log_text(self, dag_id: str, run_id: str, task_id: str, try_number: int) -> str:
        """One try's task log as plain text (the ``event`` of each structured line)."""
        content = self.call(
            "GET",
            f"/dags/{dag_id}/dagRuns/{run_id}/taskInstances/{task_id}/logs/{try_number}",
            params={"full_content": True},
            headers={"Accept": "application/json"},
        )["content"]
        return "\n".join(e.get("event", "") if isinstance(e, dict) else str(e) for e in content)

    def backfill(
        self,
        dag_id: str,
        from_date: str,
        to_date: str,
        reprocess: str = "completed",
        max_active_runs: int = 3,
        conf: dict[str, Any] | None = None,
    ) -> dict[str, Any]:
        body = {
            "dag_id": dag_id,
            "from_date": from_date,
            "to_date": to_date,
            "reprocess_behavior": reprocess,
            "max_active_runs": max_active_runs,
            "run_backwards": False,
            "dag_run_conf": conf or {},
        }
        since = time.time() - 1.0  # the api-server shares this host's clock
        resp = self.request("POST", "/backfills", json=body)
        for _ in range(5):
            if resp.status_code < 400:
                return resp.json()
            if resp.status_code == 409 or _database_error(resp):
                # A failed attempt may have committed the backfill before failing on its audit-log
                # row (SQLite: 500 "Database error", or a 503 that ``request`` retried into this
                # 409): a backfill of the same days created since this call began is ours.
                ours = self.backfill_since(dag_id, from_date, to_date, since)
                if ours is not None:
                    return ours
            if not _database_error(resp):
                break
            time.sleep(2)
            resp = self.request("POST", "/backfills", json=body)
        if resp.status_code == 409 and "already a running backfill" in resp.text:
            # One backfill per DAG at a time: wait for the running one, then ask again.
            self.wait_backfills_idle(dag_id)
            resp = self.request("POST", "/backfills", json=body)
        if resp.status_code >= 400:
            raise ApiError(f"POST /backfills → {resp.status_code}: {resp.text[:500]}")
        return resp.json()

    def backfill_since(self, dag_id: str, from_date: str, to_date: str, since: float) -> dict[str, Any] | None:
        """The backfill of ``dag_id`` over the same days created at or after ``since`` (epoch
        seconds), running or finished; None if there is none."""
        from datetime import datetime

        listed = self.call("GET", "/backfills", params={"dag_id": dag_id, "limit": 100})["backfills"]
        for b in sorted(listed, key=lambda b: b["created_at"], reverse=True):
            same_days = b["from_date"][:10] == from_date[:10] and b["to_date"][:10] == to_date[:10]
            if same_days and datetime.fromisoformat(b["created_at"]).timestamp() >= since:
                return b
        return None

    def running_backfills(self, dag_id: str) -> list[dict[str, Any]]:
        listed = self.call("GET", "/backfills", params={"dag_id": dag_id, "limit": 100})["backfills"]
        return [b for b in listed if not b.get("completed_at")]

    def wait_backfills_idle(self, dag_id: str, timeout: float = 3600, poll: float = 3) -> None:
        """Wait until no backfill of ``dag_id`` is running."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not self.running_backfills(dag_id):
                return
            time.sleep(poll)
        raise ApiError(f"backfills of {dag_id} still running after {timeout:.0f}s")

    def wait_backfill(self, backfill_id: int, timeout: float = 3600, poll: float = 3) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            bf = self.call("GET", f"/backfills/{backfill_id}")
            if bf.get("completed_at"):
                return bf
            time.sleep(poll)
        raise ApiError(f"backfill {backfill_id} not completed within {timeout:.0f}s")

    def asset_id(self, name: str) -> int:
        assets = self.call("GET", "/assets", params={"name_pattern": name, "limit": 100})["assets"]
        for asset in assets:
            if asset["name"] == name:
                return int(asset["id"])
        raise ApiError(f"no asset named {name!r}")

    def post_asset_event(self, name: str, extra: dict[str, Any]) -> dict[str, Any]:
        return self.call("POST", "/assets/events", json={"asset_id": self.asset_id(name), "extra": extra})


def render_task_time(rows: list[dict[str, Any]]) -> str:
    """``task_time`` as a table: where the pipeline's time went, by stage."""
    total = sum(r["seconds"] for r in rows) or 1.0
    lines = [f"task time per stage (Airflow metadata DB, {total:.0f} s over {sum(r['tasks'] for r in rows)} tasks):"]
    for r in rows:
        lines.append(
            f"  {r['dag_id'] + '.' + r['task_id']:42s} {r['tasks']:4d} tasks {r['seconds']:8.1f} s"
            f"  (mean {r['seconds'] / r['tasks']:5.1f} s, {r['seconds'] / total:5.1%})"
        )
    return "\n".join(lines)


def _defaults() -> tuple[str, str, str | None]:
    url = os.environ.get("AIRFLOW_API_URL")
    user = os.environ.get("AIRFLOW_USER", "admin")
    password = os.environ.get("AIRFLOW_PASSWORD")
    if url is None or password is None:
        sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
        from scripts.stack import Stack

        stack = Stack.from_env()
        url = url or stack.airflow_url
        if password is None and stack.passwords_file.exists():
            password = stack.credentials().get(user)
    return url, user, password


def main(argv: list[str] | None = None) -> int:
    url, user, password = _defaults()
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--url", default=url)
    ap.add_argument("--user", default=user)
    ap.add_argument("--password", default=password)
    sub = ap.add_subparsers(dest="command", required=True)
    sub.add_parser("token")
    p = sub.add_parser("unpause")
    p.add_argument("dag_id")
    p = sub.add_parser("trigger")
    p.add_argument("dag_id")
    p.add_argument("--conf", type=json.loads, default={})
    p.add_argument("--wait", action="store_true")
    p = sub.add_parser("wait")
    p.add_argument("dag_id")
    p.add_argument("run_id")
    p = sub.add_parser("review", help="approve or reject a run's waiting approval (recsys_train's approve task)")
    p.add_argument("dag_id")
    p.add_argument("run_id")
    p.add_argument("decision", choices=("approve", "reject"))
    p.add_argument("--reason", default="")
    p = sub.add_parser("backfill")
    p.add_argument("dag_id")
    p.add_argument("from_date")
    p.add_argument("to_date")
    p.add_argument("--reprocess", choices=("none", "failed", "completed"), default="completed")
    p.add_argument("--wait", action="store_true")
    p = sub.add_parser("asset-event")
    p.add_argument("asset")
    p.add_argument("--extra", type=json.loads, default={})
    args = ap.parse_args(argv)
    if not args.password:
        ap.error("no password: pass --password or set AIRFLOW_PASSWORD (the local stack's is generated by `make up`)")
    try:
        api = AirflowApi(args.url, args.user, args.password)
        if args.command == "token":
            out: Any = {"access_token": api.token}
        elif args.command == "unpause":
            out = api.unpause(args.dag_id)
        elif args.command == "trigger":
            out = api.trigger(args.dag_id, args.conf)
            if args.wait:
                out = api.wait_run(args.dag_id, out["dag_run_id"])
        elif args.command == "wait":
            out = api.wait_run(args.dag_id, args.run_id)
        elif args.command == "review":
            waiting = api.awaiting_input(args.dag_id, args.run_id)
            if not waiting:
                raise ApiError(f"run {args.dag_id}/{args.run_id} has no task waiting for a person")
            option = "Approve" if args.decision == "approve" else "Reject"
            out = api.respond(args.dag_id, args.run_id, waiting[0]["task_id"], option, {"reason": args.reason})
        elif args.command == "backfill":
            out = api.backfill(args.dag_id, args.from_date, args.to_date, args.reprocess)
            if args.wait:
                out = api.wait_backfill(out["id"])
        else:
            out = api.post_asset_event(args.asset, args.extra)
    except (ApiError, requests.RequestException) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(json.dumps(out, indent=2, default=str))
    if isinstance(out, dict) and out.get("state") == "failed":
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
