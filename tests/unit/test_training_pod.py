"""The cluster profile's training pod, rendered offline and validated against the K8s schema.

There is no Kubernetes cluster here: the operator renders the pod with
``build_pod_request_obj(dry_run=True)`` and the manifest is checked against the Kubernetes
OpenAPI schema shipped by ``kubernetes-validate`` plus assertions on the fields that matter.
"""

from __future__ import annotations

import json
from pathlib import Path

import pendulum
import pytest

REPO = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.unit

K8S_VERSION = "1.33"


def _render(monkeypatch, **env):
    monkeypatch.setenv("RECSYS_PROFILE", "cluster")
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    from airflow.sdk import DAG
    from kubernetes.client import ApiClient

    from jobs.core.config import get_config
    from recsys_airflow.training import train_task

    cfg = get_config()
    with DAG("render", schedule=None, start_date=pendulum.datetime(2026, 1, 1, tz="UTC")):
        op = train_task(cfg, "train", ["--snapshot", "s3://recsys-data/prod/training/snapshots/dt=2026-01-07_w=7"])
    manifest = ApiClient().sanitize_for_serialization(op.build_pod_request_obj(dry_run=True))
    return cfg, op, manifest


def test_pod_validates_against_the_kubernetes_schema(monkeypatch):
    import kubernetes_validate

    _, _, manifest = _render(monkeypatch)
    manifest.setdefault("apiVersion", "v1")
    manifest.setdefault("kind", "Pod")
    kubernetes_validate.validate(manifest, K8S_VERSION, strict=True)


def test_pod_requests_a_gpu_with_restricted_security(monkeypatch):
    cfg, op, manifest = _render(monkeypatch)
    spec = manifest["spec"]
    base = next(c for c in spec["containers"] if c["name"] == "base")
    assert base["image"] == cfg.training.image
    # Only args: the image's ENTRYPOINT (tini, PID 1) stays; the args replace its CMD.
    entrypoint = [ln for ln in (REPO / "Dockerfile.train").read_text().splitlines() if ln.startswith("ENTRYPOINT")]
    assert entrypoint == ['ENTRYPOINT ["/usr/bin/tini", "--"]']
    assert "command" not in base or not base["command"]
    assert base["args"][:3] == ["python", "-m", "jobs.train"]
    assert base["args"][-2:] == ["--result-file", "/airflow/xcom/return.json"]
    assert base["resources"]["limits"]["nvidia.com/gpu"] == "1"
    assert base["resources"]["requests"] == {"cpu": "4", "memory": "32Gi"}
    assert spec["nodeSelector"] == {"nvidia.com/gpu.product": "NVIDIA-H200"}
    assert {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"} in spec["tolerations"]
    for container in spec["containers"]:  # the trainer and the XCom sidecar
        sc = container["securityContext"]
        assert sc["runAsNonRoot"] is True
        assert sc["allowPrivilegeEscalation"] is False
        assert sc["capabilities"]["drop"] == ["ALL"]
        assert sc["seccompProfile"]["type"] == "RuntimeDefault"
    assert spec["securityContext"]["runAsNonRoot"] is True
    assert spec["securityContext"]["seccompProfile"]["type"] == "RuntimeDefault"
    volumes = {v["name"]: v for v in spec["volumes"]}
    assert "emptyDir" in volumes["scratch"]
    assert volumes["dshm"]["emptyDir"]["medium"] == "Memory"
    assert base["envFrom"] == [{"secretRef": {"name": cfg.training.mlflow_secret}}]
    assert op.do_xcom_push is True
    assert op.deferrable is True
    assert op.startup_timeout_seconds == cfg.training.startup_timeout_s
    assert op.pool == "gpu_training"
    assert [link.name for link in op.operator_extra_links] == ["MLflow run"]


def test_no_secret_literal_in_the_rendered_pod(monkeypatch):
    _, _, manifest = _render(
        monkeypatch,
        AWS_SECRET_ACCESS_KEY="wJalrXUtnFEMI-K7MDENG-do-not-leak",
        MLFLOW_TRACKING_PASSWORD="hunter2-secret",
    )
    text = json.dumps(manifest)
    assert "wJalrXUtnFEMI" not in text
    assert "hunter2" not in text
    for container in manifest["spec"]["containers"]:
        for env in container.get("env", []):
            assert not any(word in env["name"].upper() for word in ("SECRET", "PASSWORD", "TOKEN", "KEY")), env


def test_several_gpus_run_torchrun(monkeypatch):
    _, _, manifest = _render(monkeypatch, RECSYS__TRAINING__GPUS="4")
    base = next(c for c in manifest["spec"]["containers"] if c["name"] == "base")
    assert "command" not in base or not base["command"]
    assert base["args"][:5] == ["torchrun", "--standalone", "--nproc-per-node=4", "-m", "jobs.train"]
    assert base["resources"]["limits"]["nvidia.com/gpu"] == "4"


def test_local_profile_uses_the_subprocess_launcher_with_the_same_task_id(monkeypatch):
    monkeypatch.setenv("RECSYS_PROFILE", "local")
    from airflow.sdk import DAG

    from jobs.core.config import get_config
    from recsys_airflow.training import TrainJobOperator, train_task

    with DAG("render_local", schedule=None, start_date=pendulum.datetime(2026, 1, 1, tz="UTC")):
        op = train_task(get_config(), "train", ["--snapshot", "/tmp/snap"])
    assert isinstance(op, TrainJobOperator)
    assert op.task_id == "train"
    assert op.module == "jobs.train"
    assert op.job_args == ["--snapshot", "/tmp/snap"]
    assert op.pool == "gpu_training"
