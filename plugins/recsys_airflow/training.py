"""The training task: one argv, two launchers.

``local`` (default profile): ``JobOperator`` runs ``python -m jobs.train <args>`` as a
subprocess of the worker, streaming its log. ``kubernetes`` (cluster profile): a
``KubernetesPodOperator`` runs the same argv in the training image on a GPU node. The task id,
the XCom (the trainer's result JSON, ``/airflow/xcom/return.json`` in the pod) and the extra
link to the MLflow run are the same in both, so the DAG's graph does not change with the
profile.

Pod shape (cluster): GPU limit ``nvidia.com/gpu``, CPU/memory requests and limits, node
selector and GPU toleration, Pod Security "restricted" (non-root, no privilege escalation, all
capabilities dropped, seccomp RuntimeDefault, also on the XCom sidecar), an ``emptyDir``
scratch volume and a memory-backed ``/dev/shm``, MLflow/S3 credentials only through the
Kubernetes Secret named in the config (``envFrom``), deferrable, startup timeout, and the
``gpu_training`` pool capping concurrent GPU jobs. More than one GPU runs the trainer under
``torchrun --nproc-per-node=<gpus>`` (DDP).
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import timedelta
from typing import Any

from jobs.core.config import PipelineConfig
from recsys_airflow.launcher import JobOperator
from recsys_airflow.links import MlflowRunLink

XCOM_RETURN = "/airflow/xcom/return.json"
RUN_AS_USER = 10001  # the training image's USER (Dockerfile.train)


class TrainJobOperator(JobOperator):
    """``JobOperator`` for the trainer, with the MLflow run link."""

    operator_extra_links = (MlflowRunLink(),)


def cpu_only(cfg: PipelineConfig) -> PipelineConfig:
    """A copy of the config whose training pod asks for no GPU (no node selector, no toleration,
    the default pool): for families that need none (EASE, popularity)."""
    update = {"gpus": 0, "node_selector": {}, "tolerations": [], "pool": "default_pool"}
    return cfg.model_copy(update={"training": cfg.training.model_copy(update=update)})


def pod_command(cfg: PipelineConfig, args: Sequence[str], module: str = "jobs.train") -> list[str]:
    """The container argv: ``python -m <module>`` or ``torchrun`` for several GPUs."""
    if cfg.training.gpus > 1:
        return ["torchrun", "--standalone", f"--nproc-per-node={cfg.training.gpus}", "-m", module, *args]
    return ["python", "-m", module, *args]


def train_task(cfg: PipelineConfig, task_id: str, args: Sequence[str], module: str = "jobs.train", **kwargs: Any):
    """The training operator for the active profile (same task id, module and argv in both)."""
    common = {
        "task_id": task_id,
        "pool": cfg.training.pool,
        "pool_slots": cfg.training.pool_slots,
        "execution_timeout": kwargs.pop("execution_timeout", timedelta(hours=6)),
        **kwargs,
    }
    if cfg.training.launcher == "local":
        return TrainJobOperator(module=module, job_args=list(args), **common)
    return kubernetes_train_task(cfg, args, module=module, **common)


def kubernetes_train_task(cfg: PipelineConfig, args: Sequence[str], module: str = "jobs.train", **kwargs: Any):
    """Long because it is the pod spec (resources, security context, volumes, environment) in one place, schema-checked by tests/unit/test_training_pod.py."""
    from airflow.providers.cncf.kubernetes.operators.pod import KubernetesPodOperator
    from kubernetes.client import models as k8s

    class TrainPodOperator(KubernetesPodOperator):
        operator_extra_links = (MlflowRunLink(),)

    t = cfg.training
    resources = k8s.V1ResourceRequirements(
        requests={"cpu": t.requests.cpu, "memory": t.requests.memory},
        limits={
            "cpu": t.limits.cpu,
            "memory": t.limits.memory,
            **({"nvidia.com/gpu": str(t.gpus)} if t.gpus else {}),
        },
    )
    restricted = k8s.V1SecurityContext(
        run_as_non_root=True,
        run_as_user=RUN_AS_USER,
        allow_privilege_escalation=False,
        capabilities=k8s.V1Capabilities(drop=["ALL"]),
        seccomp_profile=k8s.V1SeccompProfile(type="RuntimeDefault"),
    )
    volumes = [
        k8s.V1Volume(name="scratch", empty_dir=k8s.V1EmptyDirVolumeSource(size_limit=t.scratch_size)),
        k8s.V1Volume(name="dshm", empty_dir=k8s.V1EmptyDirVolumeSource(medium="Memory", size_limit="8Gi")),
    ]
    mounts = [
        k8s.V1VolumeMount(name="scratch", mount_path="/scratch"),
        k8s.V1VolumeMount(name="dshm", mount_path="/dev/shm"),
    ]
    command = pod_command(cfg, [*args, "--result-file", XCOM_RETURN], module)
    return TrainPodOperator(
        namespace=t.namespace,
        image=t.image,
        name="recsys-train",
        # Only the container's args (replacing the image's CMD): ``cmds`` stays unset so the
        # image's ENTRYPOINT, tini, remains PID 1 (it forwards SIGTERM and reaps zombies).
        arguments=command,
        labels={"app.kubernetes.io/name": "recsys-trainer", "app.kubernetes.io/part-of": "recsys"},
        container_resources=resources,
        node_selector=dict(t.node_selector),
        tolerations=[
            k8s.V1Toleration(key=x.key, operator=x.operator, value=x.value, effect=x.effect) for x in t.tolerations
        ],
        security_context=k8s.V1PodSecurityContext(
            run_as_non_root=True,
            run_as_user=RUN_AS_USER,
            run_as_group=RUN_AS_USER,
            fs_group=RUN_AS_USER,
            seccomp_profile=k8s.V1SeccompProfile(type="RuntimeDefault"),
        ),
        container_security_context=restricted,
        xcom_sidecar_container_security_context=restricted,
        volumes=volumes,
        volume_mounts=mounts,
        env_vars=[
            k8s.V1EnvVar(name="RECSYS_PROFILE", value=cfg.profile),
            k8s.V1EnvVar(name="MLFLOW_TRACKING_URI", value=cfg.mlflow.tracking_uri),
            k8s.V1EnvVar(name="TMPDIR", value="/scratch"),
        ],
        env_from=[k8s.V1EnvFromSource(secret_ref=k8s.V1SecretEnvSource(name=t.mlflow_secret))],
        service_account_name=t.service_account,
        automount_service_account_token=False,
        do_xcom_push=True,
        multiple_outputs=True,  # as JobOperator: ``train.output["run_id"]`` in both launchers
        deferrable=True,
        startup_timeout_seconds=t.startup_timeout_s,
        get_logs=True,
        on_finish_action="delete_succeeded_pod",
        **kwargs,
    )
