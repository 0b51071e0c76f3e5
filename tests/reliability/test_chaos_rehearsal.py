"""The cluster rehearsal under chaos: the whole loop on the cluster shape while task processes are killed.

The demo's loop (``tests/demo_loop.py``: ingest → validate → train → gate → approve → promote →
score → monitor → drift → retrain → promote, 8 days, drift on day 7) runs on the ``cluster``
profile (``make rehearsal``, ``scripts/rehearsal.py``) on a loopback cluster shape — Airflow on
PostgreSQL with the CeleryExecutor and Redis, a standalone Spark cluster (Master + 2 Workers)
behind Spark Connect, every data zone and MLflow's artifacts on an S3 server, MLflow's backend
store on PostgreSQL — while a seeded, bounded injector SIGKILLs task processes:

* it waits a seeded gap, then for a job process (``python -m jobs.*``) started by one of the
  Celery worker's task processes, lets it run a seeded 0.3–6 s, then crashes either the job's
  process tree (what a killed pod does: its Spark Connect client, a killed writer whose
  server-side work may go on) or the whole task process tree above it (the Airflow task runner
  too: what a killed worker does);
* a job of a module not hit yet is preferred (for up to 90 s), so the faults spread over the
  loop's stages; never the same task twice (each task has 2 retries), at most ``MAX_FAULTS``
  faults and none after ``MAX_SECONDS``.

and while ``tests/reliability/outages.py`` takes the S3 endpoint down three times for one
process tree each (every client reaches the S3 server through its proxy, ``stack.s3_endpoint``):
a scoring job from its first read, a snapshot job once its first part is in its attempt prefix
(the rest of its publish, the commit included, meets the outage), and the MLflow server while a
training job uploads its model (the server proxies artifacts: it is the S3 client). Each outage
lasts until its target's try has failed.

Airflow retries each killed or cut try (``retry_delay`` shortened to 2 s through
``RECSYS__AIRFLOW__RETRY_DELAY_S``), and the end state must equal the local demo's (``clean_demo``:
SQLite, LocalExecutor, Spark local, local folders, no fault) on the same seed: curated and
quarantine content, the recommendations (rows and model version per day), registry versions,
aliases and tags, the timeline, the runs and the asset events — nothing lost, nothing
duplicated, whatever the shape and whatever was killed or cut off. Recoveries are counted from
Airflow's tries: each fault's try (the ``AIRFLOW_CTX_*`` of the process it hit) failed, and a
later try of that task instance succeeded. Training uses the local launcher: there
is no Kubernetes here (the pod is rendered and schema-checked in ``tests/unit/test_training_pod.py``).
One run proves both claims (the cluster shape ends as the local one; a fault-hit run ends as a
clean one): before, a clean rehearsal and a local chaos run each ran the whole loop.

The cluster profile requires a person's approval before each promotion (``gate.require_approval``):
the demo is that person and approves over REST (``scripts/demo.py``, ``Loop.wait_training``), so
each promoted version carries ``review.*`` tags the local demo's versions lack (compared apart).
(The rejection over REST, a shorter check, follows the local demo: ``tests/e2e/test_demo_loop.py``.)

While the stack still runs, the checks only this shape can make: every task went through the
Celery queue of this stack, Spark tasks ran on both workers, MLflow keeps its rows in Postgres
and its artifacts in the bucket, no local data zone was written, and every object in the bucket
is accounted for — a failed writer's uncommitted attempt is never read (the end state equals the
clean one) and ``storage.vacuum_root`` removes it, after which nothing is left unaccounted (the
snapshot-publish outage always leaves one: the check cannot pass on an empty set). Then
``destroy`` leaves no database, Redis key or process behind. The injector's record (what was
killed, when, how) is in the reliability report.
"""

from __future__ import annotations

import contextlib
import json
import threading
import time
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any

import boto3
import psycopg2
import pytest
import redis

from scripts import rehearsal, s3_service, spark_service
from scripts.demo import APPROVAL_REASON
from scripts.recsys_api import AirflowApi
from scripts.stack import CELERY_WORKER, Stack, _group_alive
from tests.demo_loop import DAGS, free_port, object_store_env
from tests.reliability.harness import CaseResult, FaultInjector, cmdline, crash_tree, descendants, row_diff
from tests.reliability.outages import FAILED_TRY, PHASES, OutageProxy, Outages, attempt_of, task_of

pytestmark = pytest.mark.reliability

SEED = 2026
MAX_FAULTS = 4  # kills (the three S3 outages are faults too; each kill re-runs a task: suite time)
MAX_SECONDS = 1500
GAP = (5.0, 40.0)  # seconds between faults
RUN_FOR = (0.3, 6.0)  # how long a chosen job runs before it is killed
PREFER_NEW_S = 90.0  # how long a job of a module not hit yet is waited for


def _ppid(pid: int) -> int | None:
    try:
        return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[-1].split()[1])
    except (FileNotFoundError, IndexError, ValueError):
        return None


def _jobs(executor: int) -> dict[int, tuple[str, ...]]:
    """Job processes (``python -m jobs.X …``) below the executor's process → their command line.

    Not the review record of an approval (``jobs.registry review``): it runs after a person
    answered, and a retry of a human-in-the-loop task asks the person again — a new request,
    not a recovery this run can compare with the clean one."""
    out = {}
    for pid in descendants(executor):
        argv = cmdline(pid)
        if len(argv) >= 3 and argv[1] == "-m" and argv[2].startswith("jobs."):
            if argv[2] == "jobs.registry" and "review" in argv[3:4]:
                continue
            out[pid] = tuple(argv[1:])
    return out


def _task_key(argv: tuple[str, ...]) -> tuple[str, ...]:
    """A job's command line without its per-try result file: the same for every try of one task."""
    if "--result-file" in argv:
        i = argv.index("--result-file")
        argv = argv[:i] + argv[i + 2 :]
    return argv


class Chaos:
    """The injector thread's body: kill job or task process trees of one stack, within a budget.

    Spread over the loop: a job whose module was not hit yet is preferred for up to
    ``PREFER_NEW_S`` seconds, then any running job will do. A task is hit at most once, so its
    two retries always suffice.
    """

    def __init__(self, seed: int) -> None:
        self.inj = FaultInjector(seed, max_faults=MAX_FAULTS, max_seconds=MAX_SECONDS)
        self.killed: set[tuple[str, ...]] = set()  # task keys hit (by a kill or an S3 outage)
        self.reserved: Callable[[], set[str]] = set  # job modules an S3 outage still waits for
        self.errors: list[str] = []

    def __call__(self, stack, done: threading.Event) -> None:
        try:
            self._run(stack, done)
        except Exception as exc:  # reported by the test, not lost in a thread
            self.errors.append(f"{type(exc).__name__}: {exc}")

    def _choose(self, executor: int, done: threading.Event) -> tuple[int, tuple[str, ...]] | None:
        hit = {f.target for f in self.inj.faults}
        since = time.monotonic()
        while not done.is_set() and self.inj.budget_left():
            reserved = self.reserved()
            fresh = {
                p: c for p, c in _jobs(executor).items() if _task_key(c) not in self.killed and c[1] not in reserved
            }
            new = {p: c for p, c in fresh.items() if c[1] not in hit}
            pool = new or (fresh if time.monotonic() - since > PREFER_NEW_S else {})
            if pool:
                pid = self.inj.pick(sorted(pool))
                return pid, pool[pid]
            done.wait(0.5)  # a job runs seconds: a slower scan misses none, costs less
        return None

    def _run(self, stack, done: threading.Event) -> None:
        # Task processes are children of the executor's: the Celery worker on this shape.
        pid_file = stack.pid_file(CELERY_WORKER if stack.executor == "celery" else "scheduler")
        while not pid_file.exists():
            if done.wait(1):
                return
        executor = int(pid_file.read_text())
        while self.inj.budget_left() and not done.wait(self.inj.uniform(*GAP)):
            chosen = self._choose(executor, done)
            if chosen is None:
                return
            target, argv = chosen
            task = task_of(target)
            time.sleep(self.inj.uniform(*RUN_FOR))
            kind = self.inj.pick(["job process tree", "task process tree"])
            root = target if kind == "job process tree" else _ppid(target)
            if root is None or cmdline(target)[1:] != list(argv) or _task_key(argv) in self.killed:
                continue  # finished meanwhile, or an outage took it: pick another one
            crash_tree(root)
            self.killed.add(_task_key(argv))
            self.inj.record("sigkill", argv[1], tree=kind, task=task, argv=" ".join(_task_key(argv)[1:])[:160])


# The tasks' MLflow client retries an HTTP 5xx twice, a second apart (its default: 7 times with
# backoff, ~4 min): an artifact upload that the S3 outage behind the MLflow server fails reaches
# Airflow's retry, the recovery this run counts, instead of waiting the outage out.
CHAOS_ENV = {
    "RECSYS__AIRFLOW__RETRY_DELAY_S": "2",
    "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "2",
    "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1",
}


def _together(*bodies: Callable[[Any, threading.Event], None]) -> Callable[[Any, threading.Event], None]:
    """One ``during`` that runs several injector bodies, each in its own thread."""

    def run(stack: Any, done: threading.Event) -> None:
        threads = [threading.Thread(target=b, args=(stack, done), daemon=True) for b in bodies]
        for t in threads:
            t.start()
        for t in threads:
            t.join()

    return run


def _lister(s3_port: int) -> Callable[[str], list[str]]:
    """``keys("bucket/prefix")``: the keys under it (bucket included), from the server itself (not
    through the proxy); an error is an empty listing (the injector polls again)."""
    client = boto3.client(
        "s3",
        endpoint_url=f"http://127.0.0.1:{s3_port}",
        aws_access_key_id=s3_service.ACCESS_KEY,
        aws_secret_access_key=s3_service.SECRET_KEY,
        region_name=s3_service.REGION,
    )

    def keys(path: str) -> list[str]:
        bucket, _, prefix = path.partition("/")
        try:
            pages = client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix)
            return [f"{bucket}/{o['Key']}" for page in pages for o in page.get("Contents", [])]
        except Exception:
            return []

    return keys


def _when(stamp: str | None) -> float:
    return datetime.fromisoformat(stamp.replace("Z", "+00:00")).timestamp() if stamp else float("inf")


def _recoveries(retried: list[dict[str, Any]], faults: list[Any], hit: list[Any]) -> tuple[list[str], list[str]]:
    """(the faulted tries that failed and were followed by a successful try of their task instance,
    the failed tries no fault explains), from Airflow's tries (``_observe``'s ``retried``). A try
    that failed while the MLflow server's S3 was cut is explained by that outage (any task's
    artifact access failed then)."""
    tries = {(r["dag_id"], r["run_id"], r["task_id"]): r for r in retried}
    aimed = [f.detail.get("task") for f in faults] + [o.task for o in hit]
    recovered = []
    for task in aimed:
        assert task, f"a fault without its task instance: {aimed}"
        entry = tries.get((task["dag_id"], task["run_id"], task["task_id"]))
        if entry is None or entry["state"] != "success":
            continue
        states = {str(t["try_number"]): t["state"] for t in entry["tries"]}
        if states.get(task["try_number"]) in FAILED_TRY:
            recovered.append(f"{task['dag_id']}/{task['run_id']}/{task['task_id']} try {task['try_number']}")
    windows = [(o.started_at, o.ended_at) for o in hit if o.target == "MLflow server"]
    unexplained = [
        f"{r['dag_id']}/{r['run_id']}/{r['task_id']} try {t['try_number']}"
        for r in retried
        for t in r["tries"]
        if t["state"] in FAILED_TRY
        and f"{r['dag_id']}/{r['run_id']}/{r['task_id']} try {t['try_number']}" not in recovered
        and not any(_when(t["start_date"]) <= end and start <= _when(t["end_date"]) for start, end in windows)
    ]
    return recovered, unexplained


def _query(database: str, sql: str) -> list[tuple]:
    conn = psycopg2.connect(host="127.0.0.1", port=5432, user="postgres", dbname=database)
    with contextlib.closing(conn), conn.cursor() as cur:
        cur.execute(sql)
        return cur.fetchall()


def _observe(stack: Stack, reference: Path) -> dict[str, Any]:
    """What the running cluster shape shows after the loop (see the module docstring);
    ``reference``: the local demo's curated zone, for the row diff."""
    from jobs.core import storage

    api = AirflowApi(stack.airflow_url, "admin", stack.credentials()["admin"])
    queues: dict[str, int] = {}
    retried = []  # every try of each task instance that took more than one
    for dag_id in DAGS:
        for run in api.runs(dag_id):
            for ti in api.task_instances(dag_id, run["dag_run_id"]):
                if ti["state"] == "success":
                    queues[ti["queue"]] = queues.get(ti["queue"], 0) + 1
                if ti["try_number"] > 1:
                    tries = api.tries(dag_id, run["dag_run_id"], ti["task_id"], ti["map_index"])
                    retried.append(
                        {
                            "dag_id": dag_id,
                            "run_id": run["dag_run_id"],
                            "task_id": ti["task_id"],
                            "state": ti["state"],
                            "tries": [
                                {k: t[k] for k in ("try_number", "state", "start_date", "end_date")} for t in tries
                            ],
                        }
                    )
    client = redis.Redis.from_url(stack.redis_url)
    try:
        keys = [k.decode() for k in client.scan_iter(match=stack.redis_key_prefix + "*")]
    finally:
        client.close()
    root = stack.data_root({**stack.port_env(), **rehearsal.config_env()})
    with object_store_env(stack):
        before_vacuum = rehearsal.account(root, stack.mlflow_artifacts)
        vacuumed = storage.vacuum_root(root, grace_s=0)
        accounted = rehearsal.account(root, stack.mlflow_artifacts)
        days = storage.published_days(f"{root}/curated/events")
        rows = row_diff(reference, f"{root}/curated/events", days)
    return {
        "root": root,
        "queues": queues,
        "retried": retried,
        "worker_log": (stack.state / "logs" / "celery-worker.log").read_text(errors="replace"),
        "redis_keys": keys,
        "executors": {
            tag: spark_service.executor_tasks(stack.spark_ui_port, tag=tag) for tag in ("recsys-ingest", "recsys-score")
        },
        "mlflow_versions": _query(stack.pg_databases["mlflow"], "SELECT count(*) FROM model_versions")[0][0],
        "account_before_vacuum": before_vacuum,
        "vacuumed": vacuumed,
        "account": accounted,
        "rows": rows,
        "local_files": rehearsal.local_zone_files(stack),
        "sqlite_files": [p.name for p in stack.state.rglob("*.db")],
        "groups": stack.running(),
    }


@pytest.mark.timeout(4000)
def test_rehearsal_under_chaos_ends_as_the_local_demo(clean_demo, tmp_path, report):
    from tests.demo_loop import run_demo

    assert clean_demo.returncode == 0, clean_demo.failure()
    reference = clean_demo.stack.state / "data" / "curated" / "events"  # the local demo's curated zone
    s3_port = free_port()
    proxy = OutageProxy(s3_port)  # every client of the stack's S3 server goes through it
    chaos = Chaos(SEED)
    outages = Outages(proxy, _jobs, _task_key, chaos.killed, _lister(s3_port), root=f"{rehearsal.BUCKET}/prod")
    chaos.reserved = outages.reserved
    try:
        run = run_demo(
            tmp_path,
            {**rehearsal.config_env(), **CHAOS_ENV},
            during=_together(chaos, outages),
            shape={**rehearsal.SHAPE, "s3_port": s3_port, "s3_endpoint": proxy.url},
            timeout=3000,
            after=lambda stack: _observe(stack, reference),
        )
    finally:
        proxy.close()
    faults = chaos.inj.faults
    print("faults:", json.dumps([{"at_s": f.at, "job": f.target, **f.detail} for f in faults], indent=1))
    print("outages:", json.dumps([o.record() for o in outages.outages], indent=1))
    assert chaos.errors == [] and outages.errors == []
    assert run.returncode == 0, run.failure()
    assert len(faults) >= 3, f"only {len(faults)} faults injected: {[f.detail for f in faults]}"
    assert len({f.target for f in faults}) >= 3, faults  # the faults hit several stages
    # Each S3 outage met the try it was aimed at: the try failed (Airflow's word, read back by the
    # injector) — an outage whose target finished first was taken again on the next such job.
    hit = [o for o in outages.outages if o.failed_try]
    assert sorted(o.phase for o in hit) == sorted(PHASES), [o.record() for o in outages.outages]
    assert all(o.connections_cut > 0 for o in hit), [o.record() for o in hit]
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
    # No run failed; the only one not finished is recsys_ingest's scheduled run of today, whose
    # sensor waits for a landing day the generated world does not have (the local run has it too).
    assert all("failed" not in s["states"] for s in got["runs"].values()), got["runs"]
    assert got["runs"]["recsys_train"]["triggered"] == 1  # the drift-triggered retraining, once
    rows = seen["rows"]
    assert rows["rows_expected"] == 3000 * len(got["curated"]), rows
    assert rows["rows_lost"] == 0 and rows["rows_duplicated"] == 0, rows

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
    # Nothing written to local data zones. What killed writers left in the bucket is uncommitted
    # attempts only (never an unknown object), and the vacuum removes exactly those; after it,
    # every object in the bucket is accounted for.
    assert seen["local_files"] == []
    left = seen["account_before_vacuum"]
    assert "unknown" not in left["by_category"], left
    attempts = {attempt_of(key) for key in left["unaccounted"]}
    vacuumed = {
        f"{partition}/{name}".split("://", 1)[1] for partition, names in seen["vacuumed"].items() for name in names
    }
    assert vacuumed == attempts, (vacuumed, attempts)
    assert seen["account"]["unaccounted"] == [], seen["account"]
    # The orphan check exercised: the writer the snapshot-publish outage failed left its attempt
    # (a part written, its publish refused), and the vacuum removed exactly what was left.
    left_by_outage = {a for o in hit if o.phase == "snapshot publish" for a in o.detail["attempts"]}
    assert left_by_outage and left_by_outage <= attempts, (left_by_outage, attempts)

    # Recoveries counted from Airflow's tries, not inferred from the faults: every fault's try
    # failed and a later try of the same task instance succeeded.
    recovered, unexplained = _recoveries(seen["retried"], faults, hit)
    assert len(recovered) == len(faults) + len(hit), (recovered, seen["retried"])
    print(
        f"rehearsal under chaos {run.seconds:.0f} s vs local demo {clean_demo.seconds:.0f} s;"
        f" bucket {seen['account']['objects']} objects: {categories}; vacuumed {sorted(vacuumed)}"
    )
    report.record(
        CaseResult(
            "chaos: whole loop on the cluster shape, random task kills",
            "test_rehearsal_under_chaos_ends_as_the_local_demo",
            faults_injected=len(faults) + len(hit),
            runs_recovered=len(recovered),
            rows_expected=rows["rows_expected"],
            rows_lost=rows["rows_lost"],
            rows_duplicated=rows["rows_duplicated"],
            seconds=run.seconds,
            details={
                "seed": SEED,
                "faults": [{"at_s": f.at, "job": f.target, **f.detail} for f in faults],
                "s3_outages": [o.record() for o in outages.outages],
                "recovered_tries": recovered,
                # failed tries no fault of this run explains (e.g. a Spark worker slow to start under load)
                "unexplained_failed_tries": unexplained,
                "clean_run_s": clean_demo.seconds,
                "registry_versions": len(got["registry"]["versions"]),
                "attempts_vacuumed": sorted(vacuumed),
                # the orphan check proves something only when a killed writer left an attempt
                "orphan_check": f"{len(attempts)} attempt(s) left by failed writers"
                f" ({len(left_by_outage)} by the snapshot-publish outage), all vacuumed",
            },
        )
    )

    # destroy (run_demo's last step): no process, database or Redis key of this stack is left.
    assert not [name for name, pgid in seen["groups"].items() if _group_alive(pgid)]
    assert not set(stack.pg_databases.values()) & {r[0] for r in _query("postgres", "SELECT datname FROM pg_database")}
    client = redis.Redis.from_url(stack.redis_url)
    try:
        assert list(client.scan_iter(match=stack.redis_key_prefix + "*")) == []
    finally:
        client.close()
    assert Path(stack.state).exists()  # the state folder (logs) stays for a look afterwards
