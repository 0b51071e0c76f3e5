"""DAG integrity: every DAG file imports cleanly, is documented and light at parse time."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.unit

REPO = Path(__file__).resolve().parents[2]
DAG_FILES = sorted((REPO / "dags").glob("*.py"))
HEAVY = ("torch", "pyspark", "pandas", "mlflow", "great_expectations")


@pytest.fixture(scope="module")
def dagbag():
    from airflow.dag_processing.dagbag import DagBag

    return DagBag(dag_folder=str(REPO / "dags"))


def test_no_import_errors(dagbag):
    assert dagbag.import_errors == {}
    assert len(dagbag.dags) >= 1


def test_every_dag_is_documented_owned_tagged_scheduled_retried_and_announced(dagbag):
    from recsys_airflow.notify import RecsysNotifier

    for dag_id, dag in dagbag.dags.items():
        assert dag.doc_md and len(dag.doc_md) > 200, dag_id
        assert "recsys" in dag.tags, dag_id
        if "manual" not in dag.tags:  # manual-only DAGs declare schedule=None on purpose
            assert type(dag.timetable).__name__ != "NullTimetable", f"{dag_id} has no schedule"
        for task in dag.tasks:
            assert task.owner and task.owner != "airflow", f"{dag_id}.{task.task_id} owner"
            if task.task_id != "wait_for_landing":
                assert task.retries >= 1, f"{dag_id}.{task.task_id} has no retries"
            # every task's final failure reaches the notifier (log line + recsys_webhook)
            callbacks = task.on_failure_callback or []
            assert any(isinstance(c, RecsysNotifier) for c in callbacks), f"{dag_id}.{task.task_id} is not announced"


@pytest.mark.parametrize("path", DAG_FILES, ids=lambda p: p.name)
def test_dag_file_imports_no_heavy_module(path):
    code = (
        "import runpy, sys, json; runpy.run_path(sys.argv[1]);"
        f"print(json.dumps(sorted(m for m in {HEAVY!r} if m in sys.modules)))"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code, str(path)], capture_output=True, text=True, cwd=REPO, timeout=120
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert json.loads(proc.stdout.strip().splitlines()[-1]) == []


def test_ingest_dag_shape(dagbag):
    dag = dagbag.dags["recsys_ingest"]
    edges = {t.task_id: sorted(t.downstream_task_ids) for t in dag.tasks}
    assert edges == {
        "wait_for_landing": ["ingest"],
        "ingest": ["publish_curated_event", "validate"],
        "validate": ["publish_curated_event"],
        "publish_curated_event": [],
    }
    assert dag.max_active_runs == 3
    assert dag.catchup is False
    publish = dag.get_task("publish_curated_event")
    assert [o.name for o in publish.outlets] == ["recsys_curated_events"]
    assert dag.params["validation_engine"] == "pandas"


def test_train_dag_shape(dagbag):
    dag = dagbag.dags["recsys_train"]
    edges = {t.task_id: sorted(t.downstream_task_ids) for t in dag.tasks}
    # The order of the pipeline plus every data dependency (an XComArg makes its producer upstream).
    # Per family (training.families mf, ease + training.optional_families seq) train → fresh →
    # evaluate, then one tournament; select_families follows the run's families.
    built = ("mf", "ease", "seq")
    assert edges == {
        "plan": sorted(["select_families", "snapshot", *(f"evaluate_{f}" for f in built)]),  # + replay days
        "snapshot": sorted(
            [
                "infra_validate",
                "register",
                "select_families",
                *(f"{t}_{f}" for t in ("evaluate", "train") for f in built),
            ]
        ),
        "select_families": sorted(f"train_{f}" for f in built),
        **{f"train_{f}": [f"evaluate_{f}", f"fresh_{f}", "tournament"] for f in built},
        **{f"fresh_{f}": [f"evaluate_{f}"] for f in built},
        **{f"evaluate_{f}": ["tournament"] for f in built},
        "tournament": ["blessed", "promote", "register"],
        "register": ["infra_validate", "promote"],
        "infra_validate": ["blessed"],
        "blessed": ["approve"],
        "approve": ["promote"],
        "promote": [],
    }
    assert dag.get_task("tournament").trigger_rule == "none_failed_min_one_success"
    assert (dag.get_task("train_mf").module, dag.get_task("train_ease").module) == ("jobs.train", "jobs.ease")
    assert dag.max_active_runs == 1
    assert {"force_retrain", "epochs", "window_days", "families"} <= set(dag.params)
    assert [o.name for o in dag.get_task("promote").outlets] == ["recsys_champion_model"]
    assert dag.get_task("promote").pool == "model_registry"
    assert [link.name for link in dag.get_task("train_mf").operator_extra_links] == ["MLflow run"]


def test_a_waiting_approval_is_announced_with_its_required_actions_link(dagbag, monkeypatch):
    """The approve task's notifier: the greppable log line and the webhook (a real local server)."""
    from types import SimpleNamespace

    from tests.webhook import Webhook

    hook = Webhook()
    try:
        monkeypatch.setenv("AIRFLOW_CONN_RECSYS_WEBHOOK", hook.connection())
        monkeypatch.setenv("AIRFLOW__API__BASE_URL", "http://127.0.0.1:28080")
        task = dagbag.dags["recsys_train"].get_task("approve")
        assert [type(n).__name__ for n in task.notifiers] == ["ApprovalRequested"]
        ti = SimpleNamespace(dag_id="recsys_train", run_id="manual__r1", task_id="approve", map_index=-1)
        for notifier in task.notifiers:
            notifier.notify({"task": task, "task_instance": ti})
        [message] = hook.received
        body = message["body"]
        assert body["event"] == "approval" and body["run_id"] == "manual__r1"
        assert body["text"].startswith("[recsys] approval requested: Promote recsys-mf version")
        assert (
            body["url"]
            == "http://127.0.0.1:28080/dags/recsys_train/runs/manual__r1/tasks/approve/required_actions?map_index=-1"
        )
    finally:
        hook.close()
