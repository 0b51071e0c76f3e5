"""The rollback DAG with ``dag.test()``: champion ← previous_champion, audited on both versions.

``dag.test()`` runs the DAG's own task (the real ``JobOperator`` and ``jobs.registry``) in this
process, without a scheduler; the UI lists the DAG (``tests/browser/test_airflow_ui.py``).
"""

from __future__ import annotations

import pytest

from jobs.core.config import get_config
from jobs.core.tracking import client
from jobs.registry.aliases import show
from tests.dag_runs import dag_test, repo_dag, task_states
from tests.integration.test_score import log_and_register, make_arrays

pytestmark = pytest.mark.integration


def test_rollback_restores_the_previous_champion_and_audits_both_versions(airflow_db, mlflow_env, cfg):
    first = log_and_register(cfg, make_arrays(seed=41), promote_it=True)
    second = log_and_register(cfg, make_arrays(seed=42), promote_it=True)
    assert show(get_config()) == {
        "champion": second["version"],
        "challenger": second["version"],
        "previous_champion": first["version"],
    }
    dag = repo_dag("recsys_model_rollback")
    run = dag_test("recsys_model_rollback", run_conf={"reason": "v2 serves stale items"})
    assert str(run.state) == "success", task_states(run)
    aliases = show(get_config())
    assert (aliases["champion"], aliases["previous_champion"]) == (first["version"], second["version"])
    cl = client(get_config())
    restored = cl.get_model_version(cfg.mlflow.model_name, first["version"]).tags
    replaced = cl.get_model_version(cfg.mlflow.model_name, second["version"]).tags
    assert restored["decision"] == "rollback_restored" and replaced["decision"] == "rolled_back"
    for tags in (restored, replaced):
        assert tags["decision_reason"].startswith("v2 serves stale items (by recsys_model_rollback/")
        assert run.run_id in tags["decision_reason"]
    ti = next(t for t in run.get_task_instances() if t.task_id == "rollback")
    assert [o.name for o in dag.get_task("rollback").outlets] == ["recsys_champion_model"]
    assert str(ti.state) == "success"
    # A second rollback (another run, another reason) swaps back: one step each time, audited.
    again = dag_test("recsys_model_rollback", run_conf={"reason": "v1 was worse after all"})
    assert str(again.state) == "success", task_states(again)
    assert show(get_config())["champion"] == second["version"]
    # The form refuses a run without a reason (minLength 5): nothing moves.
    with pytest.raises(Exception, match="reason"):
        dag_test("recsys_model_rollback", run_conf={"reason": "no"})
    assert show(get_config())["champion"] == second["version"]
