"""Cluster deployment artefacts, validated offline (there is no cluster here).

* ``include/helm/values.yaml`` against the Airflow chart's ``values.schema.json`` (the vendored
  excerpt, see its ``$comment``) plus the decisions a reviewer cares about: executor, baked DAGs,
  external Postgres, remote logging, pools, and no secret literal anywhere.
* every object in ``include/k8s/*.yaml`` against the Kubernetes OpenAPI schema shipped by
  ``kubernetes-validate``, plus the security-relevant fields: Pod Security labels, minimal RBAC
  bound to the chart's service accounts, the GPU quota, placeholder-only Secret templates whose
  names and keys match what the training pod and the chart read.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pendulum
import pytest
import yaml

pytestmark = pytest.mark.unit

REPO = Path(__file__).resolve().parents[2]
HELM = REPO / "include" / "helm"
K8S = REPO / "include" / "k8s"
K8S_VERSION = "1.33"
PLACEHOLDER = re.compile(r"^<from secret manager: [^<>]+>$")
RESTRICTED = ("enforce", "audit", "warn")


def _values() -> dict[str, Any]:
    return yaml.safe_load((HELM / "values.yaml").read_text())


def _schema() -> dict[str, Any]:
    return json.loads((HELM / "values.schema.json").read_text())


def _docs() -> list[dict[str, Any]]:
    out = []
    for path in sorted(K8S.glob("*.yaml")):
        for doc in yaml.safe_load_all(path.read_text()):
            if doc:
                doc["__file__"] = path.name
                out.append(doc)
    return out


def _objects(kind: str) -> dict[str, dict[str, Any]]:
    """Objects of one kind keyed by ``namespace/name``."""
    return {
        f"{d['metadata'].get('namespace', '')}/{d['metadata'].get('name', '')}": d for d in _docs() if d["kind"] == kind
    }


def _cluster_cfg(monkeypatch):
    monkeypatch.setenv("RECSYS_PROFILE", "cluster")
    from jobs.core.config import get_config

    return get_config()


def _walk(node: Any, path: str = ""):
    if isinstance(node, dict):
        for key, value in node.items():
            yield from _walk(value, f"{path}.{key}" if path else str(key))
    elif isinstance(node, list):
        for i, value in enumerate(node):
            yield from _walk(value, f"{path}[{i}]")
    else:
        yield path, node


# ---- Helm values ---------------------------------------------------------------------------


def test_helm_values_validate_against_the_chart_schema():
    import jsonschema

    schema, values = _schema(), _values()
    jsonschema.Draft7Validator.check_schema(schema)
    errors = sorted(jsonschema.Draft7Validator(schema).iter_errors(values), key=lambda e: list(e.path))
    assert [f"{'.'.join(map(str, e.path))}: {e.message}" for e in errors] == []
    unknown = set(values) - set(schema["x-upstream-top-level-properties"])
    assert unknown == set(), f"not a key of the Airflow chart: {unknown}"
    assert "002e5532d7d55a375bbf71bd4e72d7e008635073/chart/values.schema.json" in schema["$comment"]


@pytest.mark.parametrize(
    ("path", "bad"),
    [
        (("executor",), "Kubernetes"),  # not an executor class name
        (("workers", "replica"), 2),  # typo of replicas
        (("images", "airflow", "pullPolicy"), "Sometimes"),
        (("secret",), [{"secretName": "x"}]),  # envName is required
        (("workers", "resources", "limits", "nvidia.com/gpu"), [1]),  # not a quantity
    ],
)
def test_the_schema_rejects_wrong_values(path, bad):
    """The check bites: one wrong value in an otherwise valid file is reported at its path."""
    import jsonschema

    values = _values()
    node = values
    for key in path[:-1]:
        node = node.setdefault(key, {})
    node[path[-1]] = bad
    errors = list(jsonschema.Draft7Validator(_schema()).iter_errors(values))
    assert errors, f"{'.'.join(path)}={bad!r} was accepted"


def test_helm_values_run_the_project_image_with_baked_dags_on_external_postgres():
    values = _values()
    assert values["executor"] == "KubernetesExecutor"
    assert values["redis"]["enabled"] is False
    dockerfile = (REPO / "Dockerfile").read_text()
    base_tag = re.search(r"^FROM apache/airflow:(\S+)-python", dockerfile, re.M).group(1)
    assert f"apache-airflow=={base_tag}\n" in (REPO / "requirements.txt").read_text()
    assert values["images"]["airflow"]["tag"] == values["airflowVersion"] == base_tag
    assert values["dags"]["gitSync"]["enabled"] is False
    assert values["dags"]["persistence"]["enabled"] is False
    baked = re.search(r"AIRFLOW__CORE__DAGS_FOLDER=(\S+)", dockerfile).group(1)
    assert values["config"]["core"]["dags_folder"] == baked
    assert values["postgresql"]["enabled"] is False
    assert values["data"]["metadataSecretName"]
    assert {"name": "RECSYS_PROFILE", "value": "cluster"} in values["env"]
    assert values["apiServer"]["replicas"] >= 1 and values["apiServer"]["defaultUser"]["enabled"] is False
    for component in ("apiServer", "scheduler", "dagProcessor", "triggerer", "workers"):
        resources = values[component]["resources"]
        assert resources["requests"] and resources["limits"], component


def test_helm_values_hold_no_secret_literal_and_every_secret_reference_has_a_template():
    values = _values()
    for key in ("fernetKey", "jwtSecret", "apiSecretKey", "webserverSecretKey"):
        assert values.get(key) is None, key
    assert "metadataConnection" not in values["data"]
    for path, value in _walk(values):
        leaf = path.rsplit(".", 1)[-1].lower()
        assert not (leaf in ("password", "pass", "token") and value), path
        if isinstance(value, str):
            assert not re.search(r"://[^/\s:@]+:[^@\s]+@", value), f"credentials in a URL at {path}"

    templates = {
        d["metadata"]["name"]: set(d["stringData"])
        for d in _objects("Secret").values()
        if d["metadata"]["namespace"] == "airflow"
    }
    chart_keys = {  # the keys the Airflow chart reads from each named Secret
        values["data"]["metadataSecretName"]: "connection",
        values["fernetKeySecretName"]: "fernet-key",
        values["apiSecretKeySecretName"]: "api-secret-key",
        values["jwtSecretName"]: "jwt-secret",
    }
    refs = [(s["secretName"], s["secretKey"]) for s in values["secret"]]
    refs += [
        (e["valueFrom"]["secretKeyRef"]["name"], e["valueFrom"]["secretKeyRef"]["key"])
        for e in values["workers"]["env"]
        if "valueFrom" in e
    ]
    for name, key in [*chart_keys.items(), *refs]:
        assert key in templates.get(name, set()), f"values.yaml reads {name}/{key}: no template in airflow-secrets.yaml"


def test_remote_task_logs_go_to_s3_through_a_connection_from_a_secret():
    values = _values()
    logging_cfg = values["config"]["logging"]
    assert logging_cfg["remote_logging"] is True
    assert logging_cfg["remote_base_log_folder"].startswith("s3://")
    conn_env = f"AIRFLOW_CONN_{logging_cfg['remote_log_conn_id'].upper()}"
    assert [s["envName"] for s in values["secret"]] == [conn_env]
    assert values["logs"]["persistence"]["enabled"] is False


def test_pools_created_at_install_cover_every_pool_the_dags_use_and_match_the_gpu_quota(monkeypatch):
    from airflow.dag_processing.dagbag import DagBag

    cfg = _cluster_cfg(monkeypatch)
    script = " ".join(_values()["migrateDatabaseJob"]["args"])
    assert script.count("airflow db migrate") == 1
    created = {name: int(slots) for name, slots in re.findall(r"airflow pools set (\S+) (\d+)", script)}
    bag = DagBag(dag_folder=str(REPO / "dags"))
    assert bag.import_errors == {}
    used = {t.pool for dag in bag.dags.values() for t in dag.tasks} - {"default_pool"}
    assert used <= set(created), f"pools used by DAGs but not created: {used - set(created)}"
    assert cfg.training.pool == "gpu_training" and created["model_registry"] == 1
    quota = _objects("ResourceQuota")["recsys/recsys-compute"]["spec"]["hard"]["requests.nvidia.com/gpu"]
    assert created["gpu_training"] // cfg.training.pool_slots * cfg.training.gpus == int(quota)


# ---- Kubernetes objects ----------------------------------------------------------------------


def test_every_manifest_validates_against_the_kubernetes_schema():
    import kubernetes_validate

    docs = _docs()
    kinds = sorted({d["kind"] for d in docs})
    assert kinds == [
        "Deployment",
        "LimitRange",
        "Namespace",
        "NetworkPolicy",
        "Pod",
        "ResourceQuota",
        "Role",
        "RoleBinding",
        "Secret",
        "Service",
        "ServiceAccount",
    ]
    for doc in docs:
        manifest = {k: v for k, v in doc.items() if k != "__file__"}
        try:
            kubernetes_validate.validate(manifest, K8S_VERSION, strict=True)
        except kubernetes_validate.ValidationError as exc:
            pytest.fail(f"{doc['__file__']}: {doc['kind']} {doc['metadata'].get('name')}: {exc}")


def test_schema_validation_catches_a_misspelled_field():
    import kubernetes_validate

    role = next(d for d in _objects("Role").values())
    bad = {k: v for k, v in role.items() if k != "__file__"}
    bad["rules"] = [{**bad["rules"][0], "verb": ["get"]}]
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(bad, K8S_VERSION, strict=True)


def test_recsys_namespace_enforces_pod_security_restricted(monkeypatch):
    cfg = _cluster_cfg(monkeypatch)
    labels = _objects("Namespace")[f"/{cfg.training.namespace}"]["metadata"]["labels"]
    for mode in RESTRICTED:
        assert labels[f"pod-security.kubernetes.io/{mode}"] == "restricted", mode
    airflow = _objects("Namespace")["/airflow"]["metadata"]["labels"]
    assert airflow["pod-security.kubernetes.io/warn"] == "restricted"
    assert airflow["pod-security.kubernetes.io/enforce"] in ("baseline", "restricted")
    namespaced = {d["metadata"].get("namespace") for d in _docs() if d["kind"] not in ("Namespace", "Pod")}
    assert namespaced == {"recsys", "airflow"}


def test_rbac_is_minimal_and_bound_to_the_service_accounts_of_the_helm_release(monkeypatch):
    cfg = _cluster_cfg(monkeypatch)
    values = _values()
    roles = {k.split("/")[1]: d["rules"] for k, d in _objects("Role").items()}
    granted = {
        name: {(res, verb) for rule in rules for res in rule["resources"] for verb in rule["verbs"]}
        for name, rules in roles.items()
    }
    launcher = {("pods", v) for v in ("create", "get", "list", "watch", "delete", "patch")}
    launcher |= {("pods/log", "get"), ("pods/exec", "create"), ("pods/exec", "get"), ("events", "list")}
    assert granted["recsys-pod-launcher"] == launcher
    assert granted["recsys-pod-watcher"] == {
        ("pods", "get"),
        ("pods", "delete"),
        ("pods/log", "get"),
        ("events", "list"),
    }
    spark = {
        (r, v) for r in ("pods", "configmaps") for v in ("create", "get", "list", "watch", "delete", "deletecollection")
    }
    assert granted["recsys-spark-driver"] == spark
    for name, rules in roles.items():
        for rule in rules:
            assert rule["apiGroups"] == [""], name
            assert "*" not in rule["verbs"] + rule["resources"], name
            assert not {"secrets", "serviceaccounts", "roles", "rolebindings"} & set(rule["resources"]), name
    assert not {d["kind"] for d in _docs()} & {"ClusterRole", "ClusterRoleBinding"}

    bindings = {d["roleRef"]["name"]: d for d in _objects("RoleBinding").values()}
    assert set(bindings) == set(roles)
    subjects = {role: [(s["kind"], s["namespace"], s["name"]) for s in b["subjects"]] for role, b in bindings.items()}
    worker = ("ServiceAccount", "airflow", values["workers"]["serviceAccount"]["name"])
    triggerer = ("ServiceAccount", "airflow", values["triggerer"]["serviceAccount"]["name"])
    connect = ("ServiceAccount", "recsys", "recsys-spark-connect")
    assert subjects == {
        "recsys-pod-launcher": [worker],
        "recsys-spark-driver": [connect],  # the Connect server is the driver; workers are clients
        "recsys-pod-watcher": [triggerer],
    }
    for binding in bindings.values():
        assert binding["metadata"]["namespace"] == cfg.training.namespace

    trainer = _objects("ServiceAccount")[f"{cfg.training.namespace}/{cfg.training.service_account}"]
    assert trainer["automountServiceAccountToken"] is False


def _training_pod(monkeypatch) -> dict[str, Any]:
    cfg = _cluster_cfg(monkeypatch)
    from airflow.sdk import DAG
    from kubernetes.client import ApiClient

    from recsys_airflow.training import train_task

    with DAG("render_quota", schedule=None, start_date=pendulum.datetime(2026, 1, 1, tz="UTC")):
        op = train_task(cfg, "train", ["--snapshot", "s3://recsys-data/prod/training/snapshots/dt=2026-01-07_w=7"])
    return ApiClient().sanitize_for_serialization(op.build_pod_request_obj(dry_run=True))


def test_gpu_quota_and_limit_range_admit_the_training_pod_the_operator_renders(monkeypatch):
    from kubernetes.utils import parse_quantity

    pod = _training_pod(monkeypatch)
    assert pod["metadata"]["namespace"] == "recsys"
    quota = _objects("ResourceQuota")["recsys/recsys-compute"]["spec"]["hard"]
    bounds = _objects("LimitRange")["recsys/recsys-container-bounds"]["spec"]["limits"][0]
    assert bounds["type"] == "Container"
    gpus = 0
    for container in pod["spec"]["containers"]:
        resources = container.get("resources") or {}
        limits = resources.get("limits") or {}
        gpus += int(limits.get("nvidia.com/gpu", 0))
        for resource, value in limits.items():
            assert parse_quantity(value) <= parse_quantity(bounds["max"][resource]), (container["name"], resource)
    assert 1 <= gpus <= int(quota["requests.nvidia.com/gpu"])
    base = next(c for c in pod["spec"]["containers"] if c["name"] == "base")
    memory_volumes = sum(
        parse_quantity(v["emptyDir"]["sizeLimit"])
        for v in pod["spec"]["volumes"]
        if v["emptyDir"].get("medium") == "Memory"
    )
    assert memory_volumes < parse_quantity(base["resources"]["limits"]["memory"])  # /dev/shm counts against it
    assert pod["spec"]["serviceAccountName"] in {k.split("/")[1] for k in _objects("ServiceAccount")}


def test_spark_executor_template_passes_pod_security_restricted():
    template = next(d for d in _docs() if d["kind"] == "Pod")
    spec = template["spec"]
    assert spec["securityContext"]["runAsNonRoot"] is True
    assert spec["securityContext"]["seccompProfile"]["type"] == "RuntimeDefault"
    assert spec["automountServiceAccountToken"] is False
    for container in spec["containers"]:
        sc = container["securityContext"]
        assert sc["allowPrivilegeEscalation"] is False
        assert sc["capabilities"]["drop"] == ["ALL"]
        assert "add" not in sc["capabilities"]
    assert not any(k in spec for k in ("hostNetwork", "hostPID", "hostIPC", "volumes"))


def test_secret_templates_hold_placeholders_with_the_names_and_keys_the_code_reads(monkeypatch):
    cfg = _cluster_cfg(monkeypatch)
    secrets = _objects("Secret")
    for key, secret in secrets.items():
        assert "data" not in secret, f"{key}: base64 data would hide literal values"
        assert secret["stringData"], key
        for field, value in secret["stringData"].items():
            assert PLACEHOLDER.match(value), f"{key}.{field} is not a placeholder: {value!r}"
    for name in ("secrets.yaml", "airflow-secrets.yaml"):
        text = (K8S / name).read_text().lower()
        assert "template" in text and "secret manager" in text, name
    # The training pod takes the whole Secret named by training.mlflow_secret (envFrom).
    pod_secret = secrets[f"{cfg.training.namespace}/{cfg.training.mlflow_secret}"]
    assert set(pod_secret["stringData"]) == {"MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD"}
    assert set(secrets["recsys/recsys-s3"]["stringData"]) == {"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"}
    pod = _training_pod(monkeypatch)
    base = next(c for c in pod["spec"]["containers"] if c["name"] == "base")
    assert base["envFrom"] == [{"secretRef": {"name": cfg.training.mlflow_secret}}]


def test_network_policies_deny_ingress_except_to_spark_executors():
    policies = _objects("NetworkPolicy")
    deny = policies["recsys/recsys-default-deny-ingress"]["spec"]
    assert deny == {"podSelector": {}, "policyTypes": ["Ingress"]}
    spark = policies["recsys/recsys-spark-executors"]["spec"]
    assert spark["podSelector"] == {"matchLabels": {"spark-role": "executor"}}
    peers = spark["ingress"][0]["from"]
    assert peers == [
        {"podSelector": {"matchLabels": {"spark-role": "connect-driver"}}},
        {"podSelector": {"matchLabels": {"spark-role": "executor"}}},
    ]
    connect = policies["recsys/recsys-spark-connect"]["spec"]
    airflow = {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "airflow"}}}
    assert connect["ingress"][0] == {"from": [airflow], "ports": [{"port": 15002}]}
    assert all("ipBlock" not in peer for rule in connect["ingress"] for peer in rule["from"])
