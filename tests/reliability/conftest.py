"""Fixtures of the reliability tier: one tiny generated world, the report, faster orphan recovery.

The world (300 users, 120 items, 4,000 events a day, 3 days from 2026-06-01) is generated,
ingested, validated and snapshotted once per session with the real jobs (in-process, on the
session's shared SparkSession); a test that injects faults works on its own copy of it
(``world``), so the clean session world stays the reference every case compares with.

Airflow settings for the stack (read when the stack starts, so they are set here, at import):
the scheduler looks for tasks orphaned by a dead scheduler every 15 s instead of every 300 s
(``orphaned_tasks_check_interval``). A crashed scheduler is declared dead once its heartbeat is
older than ``scheduler_health_check_threshold`` (30 s, the default); the restarted scheduler
checks at start-up — too early when it restarts within seconds — and then every interval, so
with the default the killed tasks would wait about five minutes before they run again
(``SchedulerJobRunner.adopt_or_reset_orphaned_tasks``). Observed here: reset 16 s after restart.
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass
from datetime import date, timedelta
from pathlib import Path

import pytest

from tests.reliability.harness import REPORT, Report, skipped_case

os.environ.setdefault("AIRFLOW__SCHEDULER__ORPHANED_TASKS_CHECK_INTERVAL", "15")

START = date(2026, 6, 1)
DAYS = 3
WINDOW = 2


@dataclass(frozen=True)
class World:
    """A generated, ingested, validated world and its training snapshot."""

    root: Path
    days: tuple[str, ...]
    snapshot_uri: str

    @property
    def day(self) -> str:
        return self.days[-1]


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item, call):
    """A skipped reliability test is a case of the report, marked skipped with pytest's reason."""
    rep = yield
    if rep.skipped and rep.when in ("setup", "call") and not hasattr(rep, "wasxfail"):
        REPORT.record(skipped_case(item.name, getattr(item, "originalname", item.name), rep.longrepr))
    return rep


@pytest.fixture(scope="session")
def report() -> Report:
    """The session's reliability report (printed by ``tests/conftest.py`` at the end)."""
    return REPORT


def world_params():
    from jobs import sim as gen

    return gen.WorldParams(users=300, items=120, factors=4, seed=5, events_per_day=4000)


@pytest.fixture(scope="session")
def tiny_world(spark, tmp_path_factory) -> World:
    """Generate → ingest → validate every day → snapshot of the last day (the clean reference)."""
    from jobs import sim as gen
    from jobs.core.config import load_config
    from jobs.ingest.job import ingest_day
    from jobs.snapshot.job import build_snapshot
    from jobs.validate.job import validate_day

    root = tmp_path_factory.mktemp("world") / "data"
    env = {**os.environ, "RECSYS__STORAGE__ROOT": str(root)}
    cfg = load_config(environ=env)
    gen.generate(world_params(), START, DAYS, cfg.storage.zone("landing"), cfg.storage.zone("ground_truth"))
    days = tuple((START + timedelta(days=k)).isoformat() for k in range(DAYS))
    for day in days:
        ingest_day(cfg, spark, date.fromisoformat(day))
    for day in days:
        summary = validate_day(cfg, date.fromisoformat(day))
        assert summary["success"], summary.get("message")
    snap = build_snapshot(cfg, spark, date.fromisoformat(days[-1]), WINDOW)
    return World(root=root, days=days, snapshot_uri=snap["uri"])


@pytest.fixture
def world(tiny_world: World, tmp_path, monkeypatch) -> World:
    """A private copy of the session world; ``RECSYS__STORAGE__ROOT`` points at it."""
    root = tmp_path / "data"
    shutil.copytree(tiny_world.root, root, symlinks=True)
    monkeypatch.setenv("RECSYS__STORAGE__ROOT", str(root))
    snapshot = tiny_world.snapshot_uri.replace(str(tiny_world.root), str(root))
    return World(root=root, days=tiny_world.days, snapshot_uri=snapshot)


@pytest.fixture(scope="session")
def private_mlflow(tmp_path_factory):
    """A tracking server of this tier only: tests may kill, freeze and restart it."""
    from tests.reliability.harness import MlflowServer

    server = MlflowServer(tmp_path_factory.mktemp("private-mlflow")).start()
    yield server
    server.stop()


@pytest.fixture
def tracking(private_mlflow, tmp_path, monkeypatch):
    """Jobs and clients of this test talk to the private server, fail fast, under a unique model name.

    One immediate retry and a 5 s timeout: by default the MLflow client retries a dead server
    for minutes (7 retries, exponential backoff), which would hide every outage these tests
    inject; in production those retries ride out short blips, which is wanted. One retry (no
    backoff) is kept because zero made a healthy server fail a test: a pooled keep-alive
    connection the server closed as the client reused it gave ``Connection reset by peer`` on
    ``registered-models/create`` (CI, stop 11). A job against a frozen server still fails in ~13 s.
    """
    private_mlflow.thaw()  # a test that failed while the server was frozen or dead leaves it usable
    if not private_mlflow.healthy():
        private_mlflow.stop()
        private_mlflow.start()
    name = f"rel-{tmp_path.name}"[:60]
    for key, value in {
        "RECSYS__MLFLOW__TRACKING_URI": private_mlflow.url,
        "MLFLOW_TRACKING_URI": private_mlflow.url,
        "RECSYS__MLFLOW__MODEL_NAME": name,
        "RECSYS__MLFLOW__EXPERIMENT": name,
        "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "1",
        "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "0",
        "MLFLOW_HTTP_REQUEST_BACKOFF_JITTER": "0",
        "MLFLOW_HTTP_REQUEST_TIMEOUT": "5",
    }.items():
        monkeypatch.setenv(key, value)
    monkeypatch.setenv("RECSYS__STORAGE__ROOT", str(tmp_path / "data"))  # the same folder as ``world``'s
    return name
