"""OpenLineage dataset naming of the job tasks (``recsys_airflow.launcher.lineage_dataset``)."""

from __future__ import annotations

import pytest

from recsys_airflow.launcher import JobOperator, lineage_dataset

pytestmark = pytest.mark.unit


def test_local_paths_s3_keys_and_registry_uris_follow_the_openlineage_naming(tmp_path, monkeypatch):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://127.0.0.1:5000")
    monkeypatch.chdir(tmp_path)
    local = lineage_dataset("data/curated/events/dt=2026-01-01")
    assert (local.namespace, local.name) == ("file", str(tmp_path / "data/curated/events/dt=2026-01-01"))
    assert lineage_dataset(f"file://{tmp_path}/x").name == str(tmp_path / "x")
    s3 = lineage_dataset("s3a://recsys-prod/curated/events/dt=2026-01-01")
    assert (s3.namespace, s3.name) == ("s3://recsys-prod", "curated/events/dt=2026-01-01")
    model = lineage_dataset("models:/recsys/3")
    assert (model.namespace, model.name) == ("http://127.0.0.1:5000", "models:/recsys/3")


def test_job_task_reports_declared_inputs_and_the_outputs_its_result_names(tmp_path):
    op = JobOperator(task_id="ingest", module="jobs.ingest", lineage_inputs=[str(tmp_path / "landing/dt=D"), ""])
    op._result = {"curated_uri": str(tmp_path / "curated/dt=D"), "rows": 10, "model_uri": None}
    lineage = op.get_openlineage_facets_on_complete(None)
    assert [d.name for d in lineage.inputs] == [str(tmp_path / "landing/dt=D")]
    assert [d.name for d in lineage.outputs] == [str(tmp_path / "curated/dt=D")]
