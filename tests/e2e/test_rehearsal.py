"""The cluster rehearsal (``make rehearsal``, ``scripts/rehearsal.py``) on the e2e demo's world.

The demo's loop runs on the ``cluster`` profile on a loopback cluster shape — Airflow on
PostgreSQL with the CeleryExecutor and Redis, a standalone Spark cluster (Master + 2 Workers)
behind Spark Connect, every data zone and MLflow's artifacts on an S3 server, MLflow's backend
store on PostgreSQL — and must end exactly as the local demo (``clean_demo``: SQLite,
LocalExecutor, Spark local, local folders) on the same seed: curated, quarantine and
recommendations content, registry versions, aliases and tags, the timeline, the runs and the
asset events. Training uses the local launcher: there is no Kubernetes here (the pod is
rendered and schema-checked in ``tests/unit/test_training_pod.py``).

The cluster profile requires a person's approval before each promotion (``gate.require_approval``):
the demo is that person and approves over REST (``scripts/demo.py``, ``Loop.wait_training``), so
each promoted version carries ``review.*`` tags the local demo's versions lack (compared apart).
After the loop, a forced retraining on the champion's own snapshot (identical inputs, so the gate
blesses it as surely as it blessed the champion) is **rejected** over REST with a reason: the
champion stays, promotion is skipped, and the new version records who rejected it and why.

While the stack still runs, the checks only this shape can make: every task went through the
Celery queue of this stack, Spark tasks ran on both workers, MLflow keeps its rows in Postgres
and its artifacts in the bucket, no local data zone was written, every object in the bucket is
accounted for. Then ``destroy`` leaves no database, Redis key or process behind.

This test replaces the separate Postgres/Celery stack tests: it runs the same shape on the
whole loop instead of one ingest day.
"""

from __future__ import annotations

import contextlib
import json
import tempfile
from pathlib import Path
from typing import Any

import psycopg2
import pytest
import redis

from jobs.registry.card import CARD_JSON
from scripts import rehearsal, spark_service
from scripts.demo import APPROVAL_REASON
from scripts.recsys_api import AirflowApi
from scripts.stack import Stack, _group_alive
from tests.demo_loop import DAGS, object_store_env

pytestmark = pytest.mark.e2e


def _query(database: str, sql: str) -> list[tuple]:
    conn = psycopg2.connect(host="127.0.0.1", port=5432, user="postgres", dbname=database)
    with contextlib.closing(conn), conn.cursor() as cur:
        cur.execute(sql)
        return cur.fetchall()


REJECTION = "rehearsal: rejected to check that the champion stays"


def _reject_a_retraining(api: AirflowApi, stack: Stack) -> dict[str, Any]:
    """Force a retraining on the champion's snapshot day, wait for its approval request, reject it."""
    from mlflow import MlflowClient

    cl = MlflowClient(stack.mlflow_url)
    name = "recsys-mf"
    champion = cl.get_model_version_by_alias(name, "champion")
    conf = {
        "day": champion.tags["snapshot_day"],
        "force_retrain": True,
        "require_approval": True,
        "reason": "rehearsal: rejection check",
    }
    run_id = api.trigger("recsys_train", conf)["dag_run_id"]
    requests = []

    def reject(ti: dict[str, Any]) -> None:
        requests.append(ti["hitl"])
        api.respond("recsys_train", run_id, ti["task_id"], "Reject", {"reason": REJECTION}, ti["map_index"])

    final = api.wait_run("recsys_train", run_id, timeout=1800, on_awaiting=reject)
    assert requests, api.task_instances("recsys_train", run_id)  # the approval was requested
    states = {t["task_id"]: t["state"] for t in api.task_instances("recsys_train", run_id)}
    versions = [v for v in cl.search_model_versions(f"name='{name}'") if v.tags.get("airflow_run_id") == run_id]
    card = {}
    if versions:
        with tempfile.TemporaryDirectory() as tmp:
            card = json.loads(Path(cl.download_artifacts(versions[0].run_id, CARD_JSON, tmp)).read_text())
    return {
        "card_review": card.get("review"),
        "champion_before": champion.version,
        "champion_after": cl.get_model_version_by_alias(name, "champion").version,
        "request": requests[0],
        "run": final["state"],
        "states": states,
        "rejected": dict(versions[0].tags) if versions else {},
    }


def _observe(stack: Stack) -> dict[str, Any]:
    """What the running cluster shape shows after the loop (see the module docstring)."""
    api = AirflowApi(stack.airflow_url, "admin", stack.credentials()["admin"])
    queues: dict[str, int] = {}
    for dag_id in DAGS:
        for run in api.runs(dag_id):
            for ti in api.task_instances(dag_id, run["dag_run_id"]):
                if ti["state"] == "success":
                    queues[ti["queue"]] = queues.get(ti["queue"], 0) + 1
    client = redis.Redis.from_url(stack.redis_url)
    try:
        keys = [k.decode() for k in client.scan_iter(match=stack.redis_key_prefix + "*")]
    finally:
        client.close()
    root = stack.data_root({**stack.port_env(), **rehearsal.config_env()})
    with object_store_env(stack):
        accounted = rehearsal.account(root, stack.mlflow_artifacts)
    return {
        "root": root,
        "queues": queues,
        "worker_log": (stack.state / "logs" / "celery-worker.log").read_text(errors="replace"),
        "redis_keys": keys,
        "executors": {
            tag: spark_service.executor_tasks(stack.spark_ui_port, tag=tag) for tag in ("recsys-ingest", "recsys-score")
        },
        "mlflow_versions": _query(stack.pg_databases["mlflow"], "SELECT count(*) FROM model_versions")[0][0],
        "account": accounted,
        "local_files": rehearsal.local_zone_files(stack),
        "sqlite_files": [p.name for p in stack.state.rglob("*.db")],
        "rejection": _reject_a_retraining(api, stack),
        "groups": stack.running(),
    }


@pytest.mark.timeout(3000)
def test_rehearsal_on_the_cluster_shape_ends_as_the_local_demo(clean_demo, tmp_path):
    from tests.demo_loop import run_demo

    assert clean_demo.returncode == 0, clean_demo.failure()
    run = run_demo(tmp_path, rehearsal.config_env(), shape=rehearsal.SHAPE, timeout=2400, after=_observe)
    assert run.returncode == 0, run.failure()
    seen, stack = run.after, run.stack
    assert seen["root"] == f"s3://{rehearsal.BUCKET}/prod"
    assert "spark-master" in run.stdout and "celery-worker" in run.stdout and "s3" in run.stdout

    clean, got = clean_demo.end_state, run.end_state
    # Approvals: every promoted version was approved over REST by the demo's operator; the
    # local demo (no approval required) has no review tags, so they are compared apart.
    reviews = {}
    for number, version in got["registry"]["versions"].items():
        tags = version["tags"]
        reviews[number] = {k: tags.pop(k) for k in [k for k in tags if k.startswith("review.")]}
    promoted = {n for n, v in got["registry"]["versions"].items() if v["tags"].get("decision") == "promoted"}
    assert promoted and {n for n, r in reviews.items() if r} == promoted, reviews
    for number in promoted:
        assert reviews[number]["review.decision"] == "approved" and reviews[number]["review.by"] == "admin"
        assert reviews[number]["review.reason"] == APPROVAL_REASON
    (tmp_path / "end_state.local.json").write_text(json.dumps(clean, indent=1, sort_keys=True))
    (tmp_path / "end_state.rehearsal.json").write_text(json.dumps(got, indent=1, sort_keys=True))
    keys = ("curated", "quarantine", "recommendations", "registry", "timeline", "runs", "asset_events")
    differs = [key for key in keys if got[key] != clean[key]]
    assert differs == [], f"differs from the local demo: {differs}; see {tmp_path}/end_state.*.json"

    # Celery: every task of the loop went through this stack's queue (Redis keys under its prefix).
    assert set(seen["queues"]) == {stack.celery_queue} and sum(seen["queues"].values()) > 50, seen["queues"]
    assert "dag_id='recsys_score'" in seen["worker_log"] and "dag_id='recsys_train'" in seen["worker_log"]
    assert f"{stack.redis_key_prefix}_kombu.binding.{stack.celery_queue}" in seen["redis_keys"]
    # Spark: ingestion and scoring tasks ran on both standalone workers.
    for tag, per_executor in seen["executors"].items():
        assert len([e for e, n in per_executor.items() if n > 0 and e != "driver"]) == 2, (tag, per_executor)
    # MLflow: versions are rows in Postgres, artifacts are objects in the bucket; no SQLite anywhere.
    assert seen["mlflow_versions"] == len(got["registry"]["versions"]) >= 2
    categories = seen["account"]["by_category"]
    assert categories.get("MLflow artifact", 0) > 0 and categories.get("committed file", 0) > 0, categories
    assert seen["sqlite_files"] == []
    # Nothing written to local data zones; every object in the bucket is accounted for.
    assert seen["local_files"] == []
    assert seen["account"]["unaccounted"] == [], seen["account"]
    print(
        f"rehearsal {run.seconds:.0f} s vs local demo {clean_demo.seconds:.0f} s;"
        f" bucket {seen['account']['objects']} objects: {categories}"
    )

    # Rejection over REST: promotion skipped, champion unchanged, the version says who and why.
    rejection = seen["rejection"]
    assert rejection["run"] == "success" and rejection["states"]["promote"] == "skipped", rejection["states"]
    assert rejection["states"]["approve"] == "success" and rejection["champion_after"] == rejection["champion_before"]
    assert "Promote recsys-mf version" in rejection["request"]["subject"]
    assert "| champion |" in rejection["request"]["body"] and "model_card.html" in rejection["request"]["body"]
    tags = rejection["rejected"]
    assert tags["review.decision"] == "rejected" and tags["review.by"] == "admin", tags
    assert tags["review.reason"] == REJECTION and tags["decision"] != "promoted"
    assert rejection["card_review"]["decision"] == "rejected" and rejection["card_review"]["reason"] == REJECTION

    # destroy (run_demo's last step): no process, database or Redis key of this stack is left.
    assert not [name for name, pgid in seen["groups"].items() if _group_alive(pgid)]
    assert not set(stack.pg_databases.values()) & {r[0] for r in _query("postgres", "SELECT datname FROM pg_database")}
    client = redis.Redis.from_url(stack.redis_url)
    try:
        assert list(client.scan_iter(match=stack.redis_key_prefix + "*")) == []
    finally:
        client.close()
    assert Path(stack.state).exists()  # the state folder (logs) stays for a look afterwards
