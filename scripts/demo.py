"""`make demo`: generate a week of events, start the local stack, run the pipeline, summarise.

Idempotent: the generator replaces each landing day atomically with identical content, and the
backfill reprocesses completed runs, which replaces each curated day with identical files.
The stack is left running so the UIs can be explored; `make down` stops it.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from datetime import timedelta
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(REPO), str(REPO / "plugins")]

from scripts.recsys_api import AirflowApi  # noqa: E402
from scripts.stack import Stack, up  # noqa: E402


def main() -> int:
    stack = Stack.from_env()
    os.environ.update(stack.env())
    from jobs import storage
    from jobs.config import get_config
    from jobs.validate import is_validated

    cfg = get_config()
    world = cfg.world
    first, last = world.start_date, world.start_date + timedelta(days=world.days - 1)
    started = time.monotonic()
    print(f"1/3 generating {world.days} days of events ({first} … {last}) into {cfg.storage.zone('landing')}")
    subprocess.run([sys.executable, "-m", "jobs.generate"], cwd=REPO, env=os.environ, check=True)
    print("2/3 starting the local stack (Airflow + MLflow on 127.0.0.1)")
    up(stack)
    api = AirflowApi(stack.airflow_url, "admin", stack.credentials()["admin"])
    api.wait_for_dag("recsys_ingest")
    print(f"3/3 backfilling recsys_ingest {first} … {last} through the scheduler")
    # Create the backfill first and unpause after: fewer concurrent writers on SQLite.
    backfill = api.backfill("recsys_ingest", f"{first}T00:00:00Z", f"{last}T00:00:00Z", "completed")
    api.unpause("recsys_ingest")
    api.wait_backfill(backfill["id"], timeout=3600)
    api.wait_backfills_idle("recsys_ingest", timeout=3600)
    runs = {r["logical_date"][:10]: r["state"] for r in api.runs("recsys_ingest") if r["run_type"] == "backfill"}

    print("\n day        | run      | curated rows | quarantined | duplicates | validated")
    print("------------+----------+--------------+-------------+------------+----------")
    for i in range(world.days):
        day = (first + timedelta(days=i)).isoformat()
        part = cfg.storage.partition("curated", day)
        m = storage.read_manifest(part) or {}
        print(
            f" {day} | {runs.get(day, '-'):8s} | {m.get('rows', '-'):>12} | {m.get('quarantined', '-'):>11} |"
            f" {m.get('duplicates_removed', '-'):>10} | {'yes' if is_validated(part) else 'NO'}"
        )
    creds = stack.credentials()
    print(f"\nfinished in {time.monotonic() - started:.0f}s")
    print(f"Airflow UI : {stack.airflow_url}  (admin / {creds['admin']}; viewer / {creds['viewer']})")
    print(f"MLflow UI  : {stack.mlflow_url}")
    print(f"data zones : {cfg.storage.root_path()}")
    print("stop with  : make down")
    failed = [d for d, s in runs.items() if s != "success"]
    if failed:
        print(f"runs not successful: {failed}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
