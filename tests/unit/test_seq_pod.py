"""The sequential family's training pod (cluster profile), rendered offline and schema-checked like jobs.train's."""

from __future__ import annotations

import pendulum
import pytest

pytestmark = pytest.mark.unit

K8S_VERSION = "1.33"
SNAPSHOT = "s3://recsys-data/prod/training/snapshots/dt=2026-01-07_w=7"


def _render(monkeypatch, **env):
    monkeypatch.setenv("RECSYS_PROFILE", "cluster")
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    from airflow.sdk import DAG
    from kubernetes.client import ApiClient

    from jobs.core.config import get_config
    from recsys_airflow.training import train_task

    with DAG("render_seq", schedule=None, start_date=pendulum.datetime(2026, 1, 1, tz="UTC")):
        op = train_task(get_config(), "train_seq", ["--snapshot", SNAPSHOT, "--epochs", "30"], module="jobs.seq")
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
