"""The sequential family's training pod (cluster profile): the ``train_seq`` task of ``recsys_train``
parsed with ``training.families`` naming it, rendered offline and schema-checked like jobs.train's."""

from __future__ import annotations

import pytest

pytestmark = pytest.mark.unit

K8S_VERSION = "1.33"
SNAPSHOT = "s3://recsys-data/prod/training/snapshots/dt=2026-01-07_w=7"


def _render(monkeypatch, **env):
    monkeypatch.setenv("RECSYS_PROFILE", "cluster")
    monkeypatch.setenv("RECSYS__TRAINING__FAMILIES", '["mf", "ease", "seq"]')
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    from kubernetes.client import ApiClient

    from tests.dag_runs import repo_bag

    dag = repo_bag().dags["recsys_train"]
    assert [t for t in dag.task_ids if t.startswith("train_")] == ["train_mf", "train_ease", "train_seq"]
    op = dag.get_task("train_seq")

    class SnapshotXCom:  # what the snapshot task pushed: its result's keys (multiple_outputs)
        def xcom_pull(self, task_ids=None, key=None, **kwargs):
            return {"uri": SNAPSHOT}[key]

    op.arguments = op.render_template(
        op.arguments, {"ti": SnapshotXCom(), "run_id": "r1", "dag": dag, "params": {**dag.params, "epochs": 30}}
    )
    return ApiClient().sanitize_for_serialization(op.build_pod_request_obj(dry_run=True))


def test_seq_pod_runs_jobs_seq_on_a_gpu_and_validates(monkeypatch):
    import kubernetes_validate

    manifest = _render(monkeypatch)
    base = next(c for c in manifest["spec"]["containers"] if c["name"] == "base")
    assert base["args"][:3] == ["python", "-m", "jobs.seq"]
    assert base["args"][3:7] == ["--snapshot", SNAPSHOT, "--epochs", "30"]
    assert base["args"][-2:] == ["--result-file", "/airflow/xcom/return.json"]
    assert base["resources"]["limits"]["nvidia.com/gpu"] == "1"
    manifest.setdefault("apiVersion", "v1")
    manifest.setdefault("kind", "Pod")
    kubernetes_validate.validate(manifest, K8S_VERSION, strict=True)


def test_seq_pod_with_several_gpus_runs_torchrun(monkeypatch):
    manifest = _render(monkeypatch, RECSYS__TRAINING__GPUS="2")
    base = next(c for c in manifest["spec"]["containers"] if c["name"] == "base")
    assert base["args"][:5] == ["torchrun", "--standalone", "--nproc-per-node=2", "-m", "jobs.seq"]
    assert base["resources"]["limits"]["nvidia.com/gpu"] == "2"
