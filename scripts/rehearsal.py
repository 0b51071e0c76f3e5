"""`make rehearsal`: the demo's loop on the ``cluster`` profile, on a cluster shape on 127.0.0.1.

What runs (every process on loopback, supervised by ``scripts/stack.py``):

* Airflow on PostgreSQL with the CeleryExecutor and Redis (a Celery worker runs every task);
* a standalone Spark cluster (a Master and two Workers, separate JVMs) behind Spark Connect;
* an S3-compatible server (moto) holding every data zone under ``s3://recsys-data/prod`` and
  MLflow's artifacts under ``s3://recsys-data/mlflow``;
* MLflow with its backend store on PostgreSQL and ``--artifacts-destination`` on S3.

The pipeline runs with ``RECSYS_PROFILE=cluster``; only what cannot exist here is overridden,
each override printed: the endpoints (the cluster's service names become loopback ports) and
the training launcher (``local``: there is no Kubernetes here; the GPU pod stays rendered and
schema-checked by ``tests/unit/test_training_pod.py``). The training parameters are the local
profile's, so the rehearsal's models, recommendations and registry can be compared with the
local demo's on the same seed (the cluster profile's GPU batch size and epochs are for H200s),
and so is the gate's replay (the cluster profile's 2 replay days move the held-out day, hence
the training window, 2 days back: other models than the local demo's).
The profile's human approval of each promotion stays on: the demo is the operator and approves
each request over REST (``Loop.wait_training``).

After the loop it checks what only this shape can show: no file was written under the local
data zones, and every object in the bucket is accounted for (a committed partition's manifest
or a file it lists, a validation marker or the report it names, a ledger record, a checkpoint, the simulator's ground
truth, an MLflow artifact); an uncommitted attempt or an unknown object is reported and fails
the run. ``tests/reliability/test_chaos_rehearsal.py`` runs this on the e2e demo's world, with
task processes killed at random, and compares the end state with the local demo's.

The shape (Postgres, Celery, standalone Spark, S3, its ports and state folder ``.local/rehearsal``)
is the ``cluster`` profile's ``stack`` section. The stack is left running for the UIs
(``RECSYS_PROFILE=cluster make status``); ``make rehearsal-down`` stops it and drops its
databases and Redis keys.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(REPO), str(REPO / "plugins")]

BUCKET = "recsys-data"


def _shape() -> dict[str, str]:
    """``Stack`` fields of the cluster shape: the ``cluster`` profile's ``stack`` section
    (``include/config/pipeline.yaml``) without its ports and state folder."""
    from jobs.core.config import load_config

    s = load_config(profile="cluster", environ={}).stack
    return {
        "db": s.db,
        "executor": s.executor,
        "spark_cluster": s.spark_cluster,
        "object_store": s.object_store,
        "mlflow_artifacts": s.mlflow_artifacts,
    }


SHAPE = _shape()
MLFLOW_ARTIFACTS = SHAPE["mlflow_artifacts"]


def config_env() -> dict[str, str]:
    """The ``cluster`` profile, with the overrides that this machine forces (see the module
    docstring): the local launcher, and the local profile's training parameters."""
    from jobs.core.config import load_config

    local = load_config(profile="local", environ={})
    return {
        "RECSYS_PROFILE": "cluster",
        "RECSYS__TRAINING__LAUNCHER": "local",
        "RECSYS__TRAINING__EPOCHS": str(local.training.epochs),
        "RECSYS__TRAINING__BATCH_SIZE": str(local.training.batch_size),
        "RECSYS__GATE__REPLAY_DAYS": str(local.gate.replay_days),
    }


def _category(
    rel: str, manifests: dict[str, dict[str, Any] | None], verdict_reports: frozenset[str] = frozenset()
) -> str:
    """What an object under the storage root is (``rel``: its key relative to the root;
    ``verdict_reports``: the validation report folders that a ``_VALIDATION`` verdict names,
    relative to the root: the verdict is their commit)."""
    from jobs.core import storage

    parts = rel.split("/")
    if rel.rsplit("/", 1)[0] in verdict_reports and parts[-1] in ("report.html", "report.json"):
        return "validation report"
    zone = parts[0]
    if zone in ("ledger", "checkpoints"):
        return zone
    if zone == "ground_truth":
        return "ground truth (simulator)"
    dt = next((i for i, p in enumerate(parts) if p.startswith("dt=")), None)
    if dt is None:
        return "unknown"
    partition, inside = "/".join(parts[: dt + 1]), "/".join(parts[dt + 1 :])
    manifest = manifests.get(partition)
    if manifest is None:
        return "uncommitted" if inside.startswith(storage.ATTEMPT) else "unknown"
    if inside in (storage.SUCCESS, "_VALIDATION"):
        return "manifest"
    if inside in manifest.get("files", []):
        return "committed file"
    return "uncommitted" if inside.startswith(storage.ATTEMPT) else "unknown"


def account(root: str, mlflow_artifacts: str) -> dict[str, Any]:
    """Every object in the storage root's bucket, by category; ``unaccounted`` lists the keys of
    uncommitted attempts and unknown objects (empty after a clean run)."""
    import pyarrow.fs as pafs

    from jobs.core import storage

    fs, root_path = storage.filesystem(root)
    bucket = root_path.split("/", 1)[0]
    mlflow_prefix = mlflow_artifacts.split("://", 1)[1].rstrip("/") + "/"
    infos = fs.get_file_info(pafs.FileSelector(bucket, recursive=True))
    keys = sorted(i.path for i in infos if i.type == pafs.FileType.File)
    manifests: dict[str, dict[str, Any] | None] = {}
    verdict_reports = set()
    for key in keys:
        if key.startswith(root_path + "/") and key.endswith("/" + storage.SUCCESS):
            partition = key[len(root_path) + 1 : -len(storage.SUCCESS) - 1]
            manifests[partition] = storage.read_manifest(f"s3://{key[: -len(storage.SUCCESS) - 1]}")
        if key.startswith(root_path + "/") and key.endswith("/_VALIDATION"):
            report = json.loads(storage.read_text(f"s3://{key}") or "{}").get("report", "")
            if report.startswith(root + "/"):
                verdict_reports.add(report[len(root) + 1 :].rsplit("/", 1)[0])
    counts: Counter[str] = Counter()
    unaccounted = []
    for key in keys:
        if key.startswith(mlflow_prefix):
            category = "MLflow artifact"
        elif key.startswith(root_path + "/"):
            category = _category(key[len(root_path) + 1 :], manifests, frozenset(verdict_reports))
        else:
            category = "unknown"
        counts[category] += 1
        if category in ("uncommitted", "unknown"):
            unaccounted.append(key)
    return {"objects": len(keys), "by_category": dict(sorted(counts.items())), "unaccounted": unaccounted}


def local_zone_files(stack: Any) -> list[str]:
    """Files under the local data zones a local run would use (the state folder's ``data``)."""
    data = stack.state / "data"
    return sorted(str(p.relative_to(data)) for p in data.rglob("*") if p.is_file()) if data.exists() else []


def check(stack: Any, root: str) -> list[str]:
    """The rehearsal's own checks on a finished loop (printed); the problems found."""
    from scripts.stack_stores import patched_environ

    problems = []
    with patched_environ(stack.object_store_env()):
        acc = account(root, stack.mlflow_artifacts)
    print(f"\nbucket {BUCKET}: {acc['objects']} objects")
    for category, n in acc["by_category"].items():
        print(f"  {category:26s} {n:6d}")
    if acc["unaccounted"]:
        problems.append(f"{len(acc['unaccounted'])} object(s) not accounted for: {acc['unaccounted'][:10]}")
    local = local_zone_files(stack)
    print(f"files under the local data zones ({stack.state / 'data'}): {len(local)}")
    if local:
        problems.append(f"files written under the local data zones: {local[:10]}")
    return problems


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="scripts/rehearsal.py", description=__doc__.split("\n\n")[0])
    ap.add_argument("demo_args", nargs="*", help="arguments for scripts/demo.py (after --)")
    args = ap.parse_args(argv)

    from scripts.stack import Stack

    # the cluster profile's stack section (its own ports and .local/rehearsal), with the user's
    # RECSYS__STACK__* overrides
    stack = Stack.from_env({**os.environ, "RECSYS_PROFILE": "cluster"})
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("AIRFLOW__")},  # RECSYS__ overrides stay the user's
        **stack.port_env(),
        **config_env(),
    }
    print("cluster rehearsal: profile 'cluster' on a loopback cluster shape")
    for key, value in sorted({**stack.port_env(), **config_env()}.items()):
        if value and value != "[]":
            print(f"  {key}={value}")
    print("  training runs on the local launcher: there is no Kubernetes here (the pod is rendered, not sent)")
    started = time.monotonic()
    demo = subprocess.run([sys.executable, "scripts/demo.py", *args.demo_args], cwd=REPO, env=env)
    if demo.returncode != 0:
        return demo.returncode
    problems = check(stack, stack.data_root(env))
    print(f"\nrehearsal wall time: {time.monotonic() - started:.0f} s")
    print("stack left running: RECSYS_PROFILE=cluster make status; make rehearsal-down stops it and drops its")
    print("  databases and Redis keys")
    for problem in problems:
        print(f"rehearsal check failed: {problem}", file=sys.stderr)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
