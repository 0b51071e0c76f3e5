"""``scripts/demo.py`` on a small world, on its own stack, and its end state as one comparable dict.

Two tests run the whole loop: the e2e demo test (a clean run, whose timeline it checks) and the
reliability chaos run (the same world on the cluster rehearsal's shape while task processes are
killed), which compares its end state with the clean run's. The clean run is made once per session (``clean_demo`` in
``tests/conftest.py``) and serves both.

``end_state`` is everything a fault must leave as a clean run leaves it:

* curated and quarantine partitions: file checksums (by file name) and manifests without their
  file lists (on an object store the files sit under the committing attempt's prefix);
* recommendations per day: a checksum of the rows without ``model_run_id`` (an MLflow run id
  is random per run), the rows and the model version in the manifest;
* the registry: versions, aliases and tags, with timestamps, run ids and the state folder's
  path taken out (``harness.normalised``);
* the timeline the demo prints (rows, model version per day, hit-rate, alerts, PSI, decision,
  training events);
* Airflow: per DAG, the states of backfill, scheduled and dated manual runs (a served day's
  arrival) by logical date, the number of undated triggered runs (manual, or by
  ``TriggerDagRunOperator``: the monitor's retraining) and the states every run ended in; asset events per ``dt``. The
  number of asset-triggered runs is left out: the scheduler batches the events of a backfill
  into one or several runs depending on timing.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import date, timedelta
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO), str(REPO / "plugins")]

from scripts.stack import Stack  # noqa: E402

# 300 users × 120 items, 5 training days + 3 served days, the catalogue launch on day 7.
START = "2026-03-02"
TRAIN_DAYS, SERVED_DAYS, DRIFT_DAY = 5, 3, 7
DEMO_ARGS = (
    f"--start={START}",
    f"--train-days={TRAIN_DAYS}",
    f"--served-days={SERVED_DAYS}",
    f"--drift-day={DRIFT_DAY}",
    "--drift=catalog_launch",
    "--users=300",
    "--items=120",
    "--events-per-day=3000",
)
# The demo's own gate settings live in scripts/demo.py (DEMO_GATE_ENV: within 0.05 NDCG@10 of the
# best baseline and of the champion); the gate's rules themselves are tested in
# tests/unit/test_decisions.py and tests/dags/test_train_dag_run.py.
ASSETS = ("recsys_curated_events", "recsys_recommendations", "recsys_champion_model")
DAGS = ("recsys_ingest", "recsys_train", "recsys_score", "recsys_monitor")
_MANUAL_RUN = re.compile(r"manual__[0-9T:+.\-]+(?:_[A-Za-z0-9]+)?")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@dataclass
class DemoRun:
    """One run of ``scripts/demo.py``: its stack, output, timeline and end state."""

    stack: Stack
    returncode: int
    stdout: str
    stderr: str
    seconds: float
    timeline: dict[str, Any] | None = None
    end_state: dict[str, Any] | None = None
    after: dict[str, Any] | None = None  # what ``run_demo(after=...)`` returned

    def failure(self) -> str:
        return f"demo exited {self.returncode}\n{self.stdout[-4000:]}\n{self.stderr[-8000:]}"


def demo_env(stack: Stack, extra: dict[str, str] | None = None) -> dict[str, str]:
    """The user's environment with the session's stack settings removed and this stack's added."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AIRFLOW__", "RECSYS__"))}
    for key in ("AIRFLOW_HOME", "MLFLOW_TRACKING_URI"):
        env.pop(key, None)
    env.update(
        {
            **stack.port_env(),
            **(extra or {}),
        }
    )
    return env


def run_demo(
    workdir: Path,
    extra_env: dict[str, str] | None = None,
    during: Callable[[Stack, threading.Event], None] | None = None,
    timeout: float = 2400,
    after: Callable[[Stack], dict[str, Any]] | None = None,
    shape: dict[str, Any] | None = None,
    args: tuple[str, ...] = DEMO_ARGS,
) -> DemoRun:
    """Run the demo in ``workdir/state``; ``during(stack, done)`` runs in a thread meanwhile.

    The end state is read while the demo's stack still runs (registry, REST); then ``after``
    (when the demo succeeded) works on the same stack, its result in ``DemoRun.after``; the
    stack is stopped afterwards whatever happened (a Postgres stack is destroyed: its databases
    and Redis keys dropped). ``shape``: ``Stack`` fields (the cluster rehearsal's); ``args``: the
    demo's arguments (default: the small synthetic world).
    """
    stack = Stack.on_free_ports(workdir / "state", **(shape or {}))
    env = demo_env(stack, extra_env)
    timeline_file = workdir / "timeline.json"
    out, err = workdir / "demo.out", workdir / "demo.err"
    done = threading.Event()
    helper = None
    started = time.monotonic()
    try:
        with out.open("w") as fo, err.open("w") as fe:
            proc = subprocess.Popen(
                [sys.executable, "scripts/demo.py", *args, f"--timeline-file={timeline_file}"],
                cwd=REPO,
                env=env,
                stdout=fo,
                stderr=fe,
                text=True,
            )
            if during is not None:
                helper = threading.Thread(target=during, args=(stack, done), daemon=True)
                helper.start()
            try:
                code = proc.wait(timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                code = proc.wait()
        done.set()
        if helper is not None:
            helper.join(120)
        run = DemoRun(stack, code, out.read_text(), err.read_text(), round(time.monotonic() - started, 1))
        if code == 0:
            run.timeline = json.loads(timeline_file.read_text())
            run.end_state = end_state(stack, run.timeline, stack.data_root(env))
            if after is not None:
                run.after = after(stack)
        return run
    finally:
        done.set()
        stop = "destroy" if stack.db == "postgres" else "down"
        subprocess.run([sys.executable, "scripts/stack.py", stop], cwd=REPO, env=env, capture_output=True, timeout=180)


def object_store_env(stack: Stack):
    """This process reaches the stack's own S3 server (if any) while the block runs."""
    from scripts.stack_stores import patched_environ

    return patched_environ(stack.object_store_env())


def zone_content(zone: str) -> dict[str, dict[str, Any]]:
    """Per published day of a zone (local or object store): sha256 of each file its manifest
    lists (by file name), the manifest without its file list, the validation verdict."""
    from jobs.core import storage

    out: dict[str, dict[str, Any]] = {}
    for day in storage.published_days(zone):
        part = f"{zone}/dt={day}"
        manifest = storage.read_manifest(part) or {}
        files = {
            name.rsplit("/", 1)[-1]: hashlib.sha256(storage.read_bytes(f"{part}/{name}") or b"").hexdigest()
            for name in manifest.get("files", [])
        }
        marker = storage.read_text(f"{part}/_VALIDATION")
        out[day] = {
            "files": dict(sorted(files.items())),
            "manifest": {k: v for k, v in manifest.items() if k != "files"},
            "validated": None if marker is None else bool(json.loads(marker).get("success")),
        }
    return out


def _recommendations(zone: str) -> dict[str, dict[str, Any]]:
    """Per day: a checksum of the ranked rows (without the MLflow run id) and the manifest's facts."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from jobs.core import storage

    out = {}
    for day in storage.published_days(zone):
        part = f"{zone}/dt={day}"
        manifest = storage.read_manifest(part) or {}
        fs, path = storage.filesystem(part)
        table = pa.concat_tables(pq.read_table(f"{path}/{name}", filesystem=fs) for name in manifest["files"])
        table = table.drop_columns(["model_run_id"]).sort_by([("user_id", "ascending"), ("rank", "ascending")])
        digest = hashlib.sha256()
        for batch in table.to_batches(65536):
            for column in batch.columns:
                digest.update(column.to_numpy(zero_copy_only=False).tobytes())
        out[day] = {
            "rows": table.num_rows,
            "model_version": manifest.get("model_version"),
            "sha256": digest.hexdigest(),
        }
    return out


LAST_DAY = (date.fromisoformat(START) + timedelta(days=TRAIN_DAYS + SERVED_DAYS - 1)).isoformat()


def _world_day(day: str) -> str:
    """A run's logical day, or ``<latest interval>`` for a day after the world's: the scheduled run
    of the schedule's latest interval, which an unpaused DAG starts (catch-up off) and whose date
    is the day the run happened (two runs either side of midnight UTC differ only in it)."""
    return day if day <= LAST_DAY else "<latest interval>"


def _strip(value: Any, state: str, root: str) -> Any:
    """The storage root, the state folder's path and manual run ids (trigger time) out of every
    string."""
    text = json.dumps(value, sort_keys=True).replace(root, "<root>").replace(state, "<state>")
    return json.loads(_MANUAL_RUN.sub("manual__<time>", text))


def end_state(stack: Stack, timeline: dict[str, Any], root: str) -> dict[str, Any]:
    """What the demo's stack ends with (see the module docstring); ``root``: its storage root."""
    with object_store_env(stack):
        return _end_state(stack, timeline, root)


def _end_state(stack: Stack, timeline: dict[str, Any], root: str) -> dict[str, Any]:
    from mlflow import MlflowClient

    from jobs.core.config import load_config
    from scripts.recsys_api import AirflowApi
    from tests.reliability.harness import asset_events, normalised, registry_state

    env = {**os.environ, **stack.env(), "RECSYS__STORAGE__ROOT": root}
    cfg = load_config(environ=env)
    api = AirflowApi(stack.airflow_url, "admin", stack.credentials()["admin"])
    runs: dict[str, dict[str, Any]] = {}
    for dag_id in DAGS:
        # by run_after: a triggered run has no logical date
        listed = api.call("GET", f"/dags/{dag_id}/dagRuns", params={"limit": 1000, "order_by": "-run_after"})[
            "dag_runs"
        ]
        runs[dag_id] = {
            "dated": sorted(
                f"{r['run_type']} {_world_day(r['logical_date'][:10])} {r['state']}"
                for r in listed
                if r["run_type"] in ("backfill", "scheduled") or (r["run_type"] == "manual" and r["logical_date"])
            ),
            "triggered": sum(
                r["run_type"] in ("manual", "operator_triggered") and not r["logical_date"] for r in listed
            ),
            "states": sorted({r["state"] for r in listed}),
        }
    registry = normalised(registry_state(MlflowClient(stack.mlflow_url), cfg.mlflow.model_name))
    state = {
        "curated": zone_content(cfg.storage.zone("curated")),
        "quarantine": zone_content(cfg.storage.zone("quarantine")),
        "recommendations": _recommendations(cfg.storage.zone("recommendations")),
        "registry": registry,
        # what happened, not how long it took (task seconds and version costs are measurements)
        "timeline": {k: v for k, v in timeline.items() if k not in ("task_time", "version_costs")},
        "runs": runs,
        "asset_events": {name: dict(sorted(asset_events(api, name).items())) for name in ASSETS},
    }
    return _strip(state, str(stack.state), root)


REPROCESSED = ("2026-03-06", "2026-03-07", "2026-03-08")  # the last training day and two served days


def reprocess_history(stack: Stack) -> dict[str, Any]:
    """After the demo: an operator's reprocess backfill of ``REPROCESSED`` through the real
    scheduler, as after fixing an ingestion bug; what it changed (see ``tests/e2e/test_demo_loop.py``)."""
    from jobs.core.config import load_config
    from scripts.demo import _settled, _wait
    from scripts.recsys_api import AirflowApi
    from tests.reliability.harness import zone_fingerprint, zone_path

    env = {**os.environ, **stack.env(), "RECSYS__STORAGE__ROOT": str(stack.state / "data")}
    cfg = load_config(environ=env)
    api = AirflowApi(stack.airflow_url, "admin", stack.credentials()["admin"])
    followed = ("recsys_score", "recsys_monitor", "recsys_train")

    def snapshot() -> dict[str, Any]:
        return {
            "curated": zone_fingerprint(zone_path(cfg, "curated")),
            "recommendations": _recommendations(cfg.storage.zone("recommendations")),
            "runs": {d: {r["dag_run_id"] for r in api.runs(d)} for d in followed},
        }

    before = snapshot()
    first, last = REPROCESSED[0], REPROCESSED[-1]
    backfill = api.backfill("recsys_ingest", f"{first}T00:00:00Z", f"{last}T00:00:00Z", "completed")
    api.wait_backfill(backfill["id"], timeout=900)
    ingest = {
        r["logical_date"][:10]: (r["run_type"], r["state"])
        for r in api.runs("recsys_ingest")
        if first <= (r["logical_date"] or "")[:10] <= last
    }
    failed = {day: state for day, state in ingest.items() if state[1] != "success"}
    if failed or sorted(ingest) != list(REPROCESSED):
        raise RuntimeError(
            f"reprocess backfill {backfill['id']} completed, but not every day's ingest run succeeded: "
            f"{ingest}; {_scheduler_side(stack, api)}"
        )

    # The curated events make score runs (one per day: a partitioned consumer); wait for them and
    # for anything they could start.
    def new_score_days() -> set[str]:
        new = [r for r in api.runs("recsys_score") if r["dag_run_id"] not in before["runs"]["recsys_score"]]
        return {r.get("partition_key") for r in new}

    try:
        _wait("score runs of the reprocessed days", lambda: new_score_days() >= set(REPROCESSED), 300)
    except TimeoutError as exc:
        raise TimeoutError(
            f"{exc}: new score runs for {sorted(new_score_days())}; {_scheduler_side(stack, api)}"
        ) from None
    _wait("downstream runs settled", lambda: _settled(api, followed), 600)
    after = snapshot()
    new_score = sorted(after["runs"]["recsys_score"] - before["runs"]["recsys_score"])
    plans = {
        run_id: next((t["state"] for t in api.task_instances("recsys_score", run_id) if t["task_id"] == "plan"), None)
        for run_id in new_score
    }
    held = {
        run_id: api.log_text("recsys_score", run_id, "plan", 1) for run_id, state in plans.items() if state == "skipped"
    }
    return {
        "ingest": ingest,
        "curated_same": {d: before["curated"].get(d) == after["curated"].get(d) for d in REPROCESSED},
        "recommendations_before": {d: before["recommendations"].get(d) for d in REPROCESSED},
        "recommendations_after": {d: after["recommendations"].get(d) for d in REPROCESSED},
        "score_plans": plans,
        "held_logs": held,
        "new_runs": {d: sorted(after["runs"][d] - before["runs"][d]) for d in ("recsys_monitor", "recsys_train")},
        # what a failure would have reported: also read on success, so that report is known to work
        "scheduler_side": _scheduler_side(stack, api),
    }


def _scheduler_side(stack: Stack, api: Any) -> str:
    """What an operator would look at when an asset event made no run: the consumer DAG's flags,
    its pending partitions, the curated-asset events, and the scheduler's and dag-processor's
    warnings (a DAG marked stale under load, a failed run creation)."""
    dag = api.call("GET", "/dags/recsys_score")
    flags = {k: dag.get(k) for k in ("is_paused", "is_stale", "has_import_errors")}
    try:
        pending = api.pending_partitions("recsys_score")
    except Exception as exc:  # a diagnosis, not a second failure
        pending = [f"{type(exc).__name__}: {exc}"]
    events = api.call("GET", "/assets/events", params={"asset_id": api.asset_id(ASSETS[0]), "limit": 100})
    days = [e.get("partition_key") or (e.get("extra") or {}).get("day") for e in events.get("asset_events", [])]
    lines = []
    for name in ("scheduler", "dag-processor"):
        log = stack.state / "logs" / f"{name}.log"
        text = log.read_text(errors="replace").splitlines() if log.exists() else []
        lines += [f"{name}: {line[:300]}" for line in text if any(w in line for w in ("stale", "[error", "Traceback"))]
    return (
        f"recsys_score {flags}, pending partitions {pending}, {len(days)} curated events (days {sorted(map(str, days))[-6:]}); "
        f"scheduler/dag-processor warnings (last 15 of {len(lines)}):\n" + "\n".join(lines[-15:])
    )


REJECTION = "demo: rejected to check that the champion stays"


def reject_a_retraining(stack: Stack) -> dict[str, Any]:
    """After the demo: a retraining of the champion's family forced on the champion's own snapshot day
    (identical inputs, so the gate blesses it as surely as it blessed the champion) with ``require_approval``; its approval
    request is answered **Reject** over REST with a reason. What the run, the aliases, the version's
    tags and its model card show afterwards (see ``tests/e2e/test_demo_loop.py``)."""
    import tempfile

    from mlflow import MlflowClient

    from jobs.registry.card import CARD_JSON
    from scripts.recsys_api import AirflowApi

    api = AirflowApi(stack.airflow_url, "admin", stack.credentials()["admin"])

    cl = MlflowClient(stack.mlflow_url)
    name = "recsys-mf"
    champion = cl.get_model_version_by_alias(name, "champion")
    conf = {
        "day": champion.tags["snapshot_day"],
        "force_retrain": True,
        "require_approval": True,
        "reason": "demo: rejection check",
        "families": [champion.tags["family"]],  # the champion's own family: what is reviewed is its retraining
    }
    run_id = api.trigger("recsys_train", conf)["dag_run_id"]
    requests = []

    def reject(ti: dict[str, Any]) -> None:
        requests.append(ti["hitl"])
        api.respond("recsys_train", run_id, ti["task_id"], "Reject", {"reason": REJECTION}, ti["map_index"])

    final = api.wait_run("recsys_train", run_id, timeout=1800, on_awaiting=reject)
    states = {t["task_id"]: t["state"] for t in api.task_instances("recsys_train", run_id)}
    # one version per model family: the reviewed one is the tournament's winner (alias challenger)
    challenger = cl.get_model_version_by_alias(name, "challenger").version
    versions = [
        v
        for v in cl.search_model_versions(f"name='{name}'")
        if v.tags.get("airflow_run_id") == run_id and v.version == challenger
    ]
    card = {}
    if versions:
        with tempfile.TemporaryDirectory() as tmp:
            card = json.loads(Path(cl.download_artifacts(versions[0].run_id, CARD_JSON, tmp)).read_text())
    return {
        "card_review": card.get("review"),
        "champion_before": champion.version,
        "champion_after": cl.get_model_version_by_alias(name, "champion").version,
        "request": requests[0] if requests else None,  # None: no approval was requested
        "run": final["state"],
        "states": states,
        "rejected": dict(versions[0].tags) if versions else {},
    }


def after_the_demo(stack: Stack) -> dict[str, Any]:
    """``clean_demo``'s steps after the loop, in order: the reprocess backfill, then the rejection
    (whose failure is recorded for the demo test to report, not raised into the session fixture
    that the chaos run shares)."""
    out = reprocess_history(stack)
    try:
        out["rejection"] = reject_a_retraining(stack)
    except Exception as exc:
        out["rejection"] = {"error": f"{type(exc).__name__}: {exc}"}
    return out
