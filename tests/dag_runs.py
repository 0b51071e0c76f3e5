"""Helpers of the ``dag.test()`` tests (``tests/dags/``): the repository's DAGs and what a run did."""

from __future__ import annotations

from pathlib import Path
from typing import Any

REPO_DAGS = Path(__file__).resolve().parents[1] / "dags"


def repo_bag() -> Any:
    """A DagBag of ``dags/``, asserting that every DAG file imports cleanly."""
    from airflow.dag_processing.dagbag import DagBag

    bag = DagBag(dag_folder=str(REPO_DAGS))
    assert bag.import_errors == {}
    return bag


def repo_dag(dag_id: str) -> Any:
    """``dag_id`` from ``repo_bag()``, ready for ``dag.test()``: without its Deadline alert.

    ``dag.test()`` (Airflow 3.3.2) creates its run from the in-memory DAG, whose ``deadline``
    holds the ``DeadlineAlert`` objects where the scheduler's serialized DAG holds their ids, and
    fails looking them up (``'dict' object has no attribute 'hex'``). The alert itself is tested
    through the real scheduler and triggerer (``tests/e2e/test_deadlines.py``) and its shape on
    ``repo_bag()`` (``tests/unit/test_late_data_alert.py``).
    """
    dag = repo_bag().dags[dag_id]
    dag.deadline = None
    return dag


def dag_test(dag_id: str, **kwargs: Any) -> Any:
    """``dag.test(**kwargs)`` on a freshly parsed ``dag_id``: the run that a scheduler would make.

    ``dag.test()`` executes the DAG object's own operators in this process and renders their
    template fields in place, so a second run of the same object would reuse the first run's
    rendered argv (``--force-retrain=false`` whatever the new conf says). In production every
    task instance parses the DAG afresh; so does every run here.
    """
    return repo_dag(dag_id).test(**kwargs)


def task_states(run: Any) -> dict[str, str]:
    """task id → state of a run's task instances (the last map index wins for mapped tasks)."""
    return {ti.task_id: str(ti.state) for ti in run.get_task_instances()}


def xcom(run: Any, task_id: str, key: str = "return_value") -> Any:
    """The XCom ``key`` that ``task_id`` pushed in ``run``."""
    ti = next(t for t in run.get_task_instances() if t.task_id == task_id)
    return ti.xcom_pull(task_ids=task_id, key=key)
