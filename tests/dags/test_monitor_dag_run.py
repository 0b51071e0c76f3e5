"""The monitoring DAG end to end with ``dag.test()``: real Spark snapshot, real trainer, real MLflow.

The world: curated days published as ``jobs/ingest.py`` does (typed Parquet, ``_SUCCESS``
manifest, ``_VALIDATION`` marker; written with pyarrow here — ingestion has its own tests),
a training snapshot built by the real Spark job (which now writes ``reference_stats.json``),
the real trainer (which logs it as ``reference/reference_stats.json``), registration and
promotion, and recommendations partitions written in the scoring contract's exact format from
the champion's own npz (top-K unseen items, the scoring job's exclusions).

Checked, in one world, run after run:
  1. a stable day → report JSON + HTML (plots embedded) exist, decision "no retrain",
     ``trigger_retrain`` skipped, no ``recsys_train`` run created;
  2. a drifted day right after training → the detector says retrain, the cooldown (a training
     run finished minutes ago) stops it: skipped, reason names the cooldown; the drift alert
     reaches the ``recsys_webhook`` connection (a real HTTP server started here);
  3. the same day with ``drift.cooldown_hours=0`` → ``trigger_retrain`` runs and a real
     ``recsys_train`` DagRun exists with conf ``{reason, report_html, force_retrain}`` and no
     logical date (``dag.test`` syncs the sibling DAGs of the bundle, so the Task SDK's trigger
     reaches the metadata DB);
  4. ``force_retrain`` on the stable day while that run is still queued → not triggered
     ("queued or running"): force overrides the detector, not a running training.
A separate test: a day without curated data fails the ``monitor`` task without retry and the
failure notifier posts to the webhook. Whether the *scheduler* then runs the triggered
``recsys_train`` is the end-to-end test's business (a real scheduler, not ``dag.test``).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from datetime import date, timedelta
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pytest

from jobs import sim as gen
from jobs.core import storage
from jobs.core.partitions import recommendations_table, write_recommendations
from tests.curated import curate
from tests.dag_runs import repo_dag, task_states, xcom
from tests.webhook import Webhook

pytestmark = pytest.mark.integration

START = date(2026, 1, 1)
WINDOW = 4
CHANGE = START + timedelta(days=7)
WORLD = gen.WorldParams(
    users=500,
    items=160,
    factors=6,
    seed=31,
    events_per_day=7000,
    scenarios=(gen.Scenario("device_mix", CHANGE), gen.Scenario("catalog_launch", CHANGE, 0.3)),
)
TRAIN_ARGS = ["--epochs", "8", "--batch-size", "256", "--factors", "24", "--lr", "0.01", "--weight-decay", "0.01"]
K = 20
REPO = Path(__file__).resolve().parents[2]


def run_module(module: str, *args: str, timeout: float = 600) -> subprocess.CompletedProcess:
    """``python -m module args`` in a fresh interpreter, as a task runs a job (conftest's environment)."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), str(REPO / "plugins")])}
    return subprocess.run(
        [sys.executable, "-m", module, *args], cwd=REPO, env=env, capture_output=True, text=True, timeout=timeout
    )


def _positives(table: pa.Table) -> set[tuple[int, int]]:
    mask = pc.is_in(table.column("event_type"), value_set=pa.array(["click", "play", "rating"]))
    t = table.filter(mask)
    return set(zip(t.column("user_id").to_pylist(), t.column("item_id").to_pylist(), strict=True))


def serve(cfg, rec, tables: dict, day: date, version: str, run_id: str, window_end: date) -> None:
    """Recommendations dt=day in the scoring contract's format, with the scoring job's exclusions."""
    source = sorted(d for d in tables if window_end < d <= day)
    excluded: dict[int, set[int]] = {}
    for d in source:
        for u, i in _positives(tables[d]):
            excluded.setdefault(u, set()).add(i)
    users = np.unique(tables[day].column("user_id").to_numpy())
    rows = {"user_id": [], "rank": [], "item_id": [], "score": []}
    for out in rec.recommend(users, K + 40):
        kept = [
            (i, s)
            for i, s in zip(out["item_ids"], out["scores"], strict=True)
            if i not in excluded.get(out["user_id"], ())
        ]
        for rank, (item, score) in enumerate(kept[:K], start=1):
            rows["user_id"].append(out["user_id"])
            rows["rank"].append(rank)
            rows["item_id"].append(item)
            rows["score"].append(score)
    part = cfg.storage.partition("recommendations", day)
    table = recommendations_table(rows["user_id"], rows["rank"], rows["item_id"], rows["score"], version, run_id)
    write_recommendations(
        part,
        table,
        day=day.isoformat(),
        model_name=cfg.mlflow.model_name,
        k=K,
        source_days=[d.isoformat() for d in source],
        seconds=0.1,
        users=len(users),
    )


@pytest.fixture
def webhook(monkeypatch):
    hook = Webhook()
    monkeypatch.setenv("AIRFLOW_CONN_RECSYS_WEBHOOK", hook.connection())
    yield hook
    hook.close()


def _train_runs() -> list[dict]:
    from airflow.models.dagrun import DagRun
    from airflow.utils.session import create_session
    from sqlalchemy import select

    with create_session() as s:
        return [
            {
                "run_id": r.run_id,
                "state": str(r.state),
                "conf": r.conf,
                "logical_date": r.logical_date,
                "type": str(r.run_type),
            }
            for r in s.scalars(select(DagRun).where(DagRun.dag_id == "recsys_train"))
        ]


def _delete_train_runs(run_ids: list[str]) -> None:
    from airflow.models.dagrun import DagRun
    from airflow.utils.session import create_session
    from sqlalchemy import delete

    with create_session() as s:
        s.execute(delete(DagRun).where(DagRun.dag_id == "recsys_train", DagRun.run_id.in_(run_ids)))


def test_monitor_reports_decides_with_cooldown_and_triggers_training(
    airflow_db, mlflow_env, cfg, spark, tmp_path, webhook, monkeypatch
):
    from jobs.core.model import Recommender
    from jobs.core.tracking import client
    from jobs.registry.aliases import promote
    from jobs.registry.register import register
    from jobs.snapshot.job import build_snapshot

    tables = {START + timedelta(days=i): curate(cfg, WORLD, START + timedelta(days=i)) for i in range(8)}
    holdout = START + timedelta(days=WINDOW)
    snapshot = build_snapshot(cfg, spark, holdout, WINDOW)
    reference_file = storage.local_path(snapshot["uri"]) / "reference_stats.json"
    assert snapshot["reference_stats"] == "reference_stats.json" and reference_file.is_file()
    assert json.loads(reference_file.read_text())["days"] == [(START + timedelta(days=i)).isoformat() for i in range(4)]

    proc = run_module(
        "jobs.train", "--snapshot", snapshot["uri"], *TRAIN_ARGS, "--result-file", str(tmp_path / "t.json")
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    trained = json.loads((tmp_path / "t.json").read_text())
    cl = client(cfg)
    logged = Path(cl.download_artifacts(trained["run_id"], "reference/reference_stats.json", str(tmp_path)))
    assert logged.read_text() == reference_file.read_text()  # the trainer logged the snapshot's reference
    version = register(
        cfg, trained["run_id"], {"window_start": "2026-01-01", "window_end": "2026-01-04"}, trained["model_uri"]
    )["version"]
    promote(cfg, version, None, "first model", "pytest")
    import mlflow

    npz = next(
        Path(
            mlflow.artifacts.download_artifacts(
                f"models:/{cfg.mlflow.model_name}/{version}", dst_path=str(tmp_path / "m")
            )
        ).rglob("recsys.npz")
    )
    rec = Recommender.load(str(npz))
    window_end = holdout - timedelta(days=1)
    for day in sorted(d for d in tables if d >= holdout):
        serve(cfg, rec, tables, day, version, trained["run_id"], window_end)

    stable = (CHANGE - timedelta(days=1)).isoformat()
    created: list[str] = []
    before = {r["run_id"] for r in _train_runs()}
    try:
        # 1. a stable day: report, no retrain, trigger skipped
        run = repo_dag("recsys_monitor").test(run_conf={"day": stable})
        states = task_states(run)
        assert str(run.state) == "success", states
        assert states == {"plan": "success", "monitor": "success", "decide": "success", "trigger_retrain": "skipped"}
        report = xcom(run, "monitor")
        assert report["day"] == stable and report["retrain"] is False and report["drift_alert"] is False, report
        page = Path(report["report_html"]).read_text()
        assert page.count('<img src="data:image/png;base64,') >= 3
        saved = json.loads(Path(report["report_json"]).read_text())
        assert saved["decision"]["retrain"] is False and saved["reference"]["available"]
        assert saved["performance"]["available"] and saved["performance"]["users"] >= 50
        assert xcom(run, "decide", "decision")["retrain"] is False
        from recsys_airflow.links import DriftReportLink

        # Airflow 3 renders extra links in the task process and stores them as XCom for the UI.
        link = xcom(run, "monitor", DriftReportLink().xcom_key)
        assert link == (
            f"{cfg.mlflow.public_url}/#/experiments/{report['experiment_id']}/runs/{report['run_id']}"
            "/artifactPath/drift/report.html"
        )
        assert {r["run_id"] for r in _train_runs()} == before
        assert webhook.received == []

        # 2. drift, but a training run finished minutes ago: cooldown
        run = repo_dag("recsys_monitor").test(run_conf={"day": CHANGE.isoformat()})
        states = task_states(run)
        assert str(run.state) == "success", states
        assert states["trigger_retrain"] == "skipped"
        report = xcom(run, "monitor")
        assert report["retrain"] is True and "data drift on" in report["reason"], report
        decision = xcom(run, "decide", "decision")
        assert decision["retrain"] is False and decision["reason"].startswith("cooldown: training run"), decision
        assert trained["run_id"] in decision["reason"]
        assert {r["run_id"] for r in _train_runs()} == before
        assert [m["body"]["event"] for m in webhook.received] == ["drift"]
        assert webhook.received[0]["path"] == "/hook"
        assert CHANGE.isoformat() in webhook.received[0]["body"]["text"]
        assert "device" in webhook.received[0]["body"]["alerts"]

        # 3. no cooldown: the training DAG is triggered with the reason and the report
        monkeypatch.setenv("RECSYS__DRIFT__COOLDOWN_HOURS", "0")
        run = repo_dag("recsys_monitor").test(run_conf={"day": CHANGE.isoformat()})
        states = task_states(run)
        assert str(run.state) == "success", states
        assert states["trigger_retrain"] == "success"
        new = [r for r in _train_runs() if r["run_id"] not in before]
        created += [r["run_id"] for r in new]
        assert len(new) == 1, new
        conf = new[0]["conf"]
        assert conf["force_retrain"] is False
        assert conf["reason"].startswith("data drift on") and "device" in conf["reason"]
        assert conf["report_html"] == report["report_html"] and Path(conf["report_html"]).is_file()
        assert new[0]["logical_date"] is None and new[0]["type"] == "operator_triggered"

        # 4. force_retrain on a stable day while that training run is queued: refused
        run = repo_dag("recsys_monitor").test(run_conf={"day": stable, "force_retrain": True})
        assert str(run.state) == "success", task_states(run)
        assert task_states(run)["trigger_retrain"] == "skipped"
        decision = xcom(run, "decide", "decision")
        assert decision["force_retrain"] is True and "queued or running" in decision["reason"], decision
        assert len([r for r in _train_runs() if r["run_id"] not in before]) == 1
    finally:
        _delete_train_runs(created)

    # The MLflow monitoring runs of both days carry the reports.
    exp = cl.get_experiment_by_name(f"{cfg.mlflow.experiment}-monitoring")
    runs = cl.search_runs([exp.experiment_id])
    assert sorted(r.data.tags["recsys.day"] for r in runs) == sorted([stable, CHANGE.isoformat()])


def test_failed_monitor_task_is_announced_on_the_webhook(airflow_db, cfg, webhook):
    run = repo_dag("recsys_monitor").test(run_conf={"day": "2026-03-01"})
    states = task_states(run)
    assert str(run.state) == "failed"
    assert states["monitor"] == "failed" and states["trigger_retrain"] in ("upstream_failed", "skipped")
    failures = [m["body"] for m in webhook.received if m["body"]["event"] == "failure"]
    assert len(failures) == 1, webhook.received
    assert failures[0]["task_id"] == "monitor" and failures[0]["dag_id"] == "recsys_monitor"
    assert "curated day dt=2026-03-01 is not published" in failures[0]["error"]


def test_monitor_dag_shape_params_link_and_callbacks(airflow_db):
    dag = repo_dag("recsys_monitor")
    edges = {t.task_id: sorted(t.downstream_task_ids) for t in dag.tasks}
    assert edges == {"plan": ["monitor"], "monitor": ["decide"], "decide": ["trigger_retrain"], "trigger_retrain": []}
    assert type(dag.timetable).__name__ == "PartitionedAssetTimetable"  # one run per served day
    assert dag.timetable.asset_condition.name == "recsys_recommendations"
    assert dag.max_active_runs == 1
    assert dag.params["force_retrain"] is False and dag.params["day"] is None
    monitor = dag.get_task("monitor")
    assert [link.name for link in monitor.operator_extra_links] == ["Drift report"]
    trigger = dag.get_task("trigger_retrain")
    assert trigger.trigger_dag_id == "recsys_train" and trigger.logical_date is None
    assert trigger.wait_for_completion is False
    for task in dag.tasks:
        assert any(type(cb).__name__ == "RecsysNotifier" for cb in task.on_failure_callback), task.task_id
    from recsys_plugin import RecsysPlugin

    assert "Drift report" in [link.name for link in RecsysPlugin.operator_extra_links]


def test_the_monitored_day_is_the_param_else_the_partition_key():
    """The ``day`` param wins; without it ``plan`` monitors the run's partition key, the day the
    recommendations event was keyed by (through the scheduler in the demo and chaos runs)."""
    from types import SimpleNamespace

    from airflow.sdk.exceptions import AirflowFailException

    plan = repo_dag("recsys_monitor").get_task("plan")
    keyed = SimpleNamespace(partition_key="2026-02-03")
    event = SimpleNamespace(extra={"day": "2026-02-03"}, source_run_id="asset_triggered__x")
    assert plan.python_callable(params={"day": "2026-02-01"}, dag_run=keyed) == "2026-02-01"
    assert plan.python_callable(params={}, dag_run=keyed, triggering_asset_events={"recs": [event]}) == "2026-02-03"
    with pytest.raises(AirflowFailException, match="set the `day` parameter"):
        plan.python_callable(params={}, dag_run=SimpleNamespace(partition_key=None), triggering_asset_events={})
    with pytest.raises(AirflowFailException, match="param day: '2026-02-01,2026-02-02' is not a day"):
        plan.python_callable(params={"day": "2026-02-01,2026-02-02"}, dag_run=keyed)  # one day per run


@pytest.mark.parametrize(
    ("conn", "url"),
    [
        (
            {"conn_type": "http", "host": "127.0.0.1", "port": 8081, "extra": {"endpoint": "/hook"}},
            "http://127.0.0.1:8081/hook",
        ),
        (
            {
                "conn_type": "http",
                "host": "hooks.slack.com",
                "schema": "https",
                "extra": {"endpoint": "services/T/B/X"},
            },
            "https://hooks.slack.com/services/T/B/X",
        ),
        ({"conn_type": "http", "host": "https://chat.example.com/hooks/abc"}, "https://chat.example.com/hooks/abc"),
    ],
)
def test_webhook_url_follows_the_http_connection_rules(conn, url):
    from airflow.sdk import Connection

    from recsys_airflow.notify import webhook_url

    c = Connection(
        conn_id="recsys_webhook",
        conn_type=conn["conn_type"],
        host=conn["host"],
        port=conn.get("port"),
        schema=conn.get("schema"),
        extra=json.dumps(conn.get("extra", {})),
    )
    assert webhook_url(c) == url


def test_announce_without_connection_only_logs(monkeypatch, caplog):
    from recsys_airflow.notify import announce

    monkeypatch.delenv("AIRFLOW_CONN_RECSYS_WEBHOOK", raising=False)
    with caplog.at_level("INFO", logger="recsys.notify"):
        assert announce("drift", "drift on 2026-01-08") is False
    assert "RECSYS DRIFT: drift on 2026-01-08" in caplog.text
    assert "announced in the log only" in caplog.text
