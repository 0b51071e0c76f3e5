"""Per-task cost of a Spark job: a thin client of the warm Spark Connect server vs its own JVM.

What an Airflow task pays for one small Spark job, measured as the wall time of the whole command
(Python start-up, imports, session, the work, the publish, the result file), in the same run:

* **value**: ``python -m jobs.<stage> ...`` — a Spark Connect client of one warm server (the
  stack's ``spark-connect`` component, started once for the benchmark, ``local[N]`` from the
  configuration), as every profile runs it now;
* **reference**: ``python -m benchmarks.classic_job jobs.<stage> ...`` — the same job code and
  arguments with a classic ``local[N]`` session started in the job's own process (a JVM per task:
  the pre-Connect design).

Both sides do the same work on the same inputs and publish the same partition (each run
republishes it; the job is idempotent), interleaved, ``REPEATS`` times each; the median is
reported. ``ratio`` = Connect / classic (lower is better; the goal is ≤ 3 s per Spark task).

Jobs: ``jobs.ingest`` of a 20,000-event landing day (the demo's world), ``jobs.snapshot`` of a
3-day window of such days, ``jobs.score`` of a day of 5,000 users × 1,000 items with a model
registered in a SQLite MLflow store (no server). The server's own start-up is reported once:
it is paid per stack, not per task.
"""

from __future__ import annotations

import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import date, timedelta
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
DAY = date(2026, 5, 4)
WINDOW = 3
SCORE_USERS, SCORE_ITEMS = 5_000, 1_000
REPEATS = {"full": 3, "quick": 1}


def _run(argv: list[str], env: dict[str, str], result_file: Path) -> tuple[float, dict[str, Any]]:
    """Wall seconds of one command and its result JSON; a failure names the command and its stderr."""
    result_file.unlink(missing_ok=True)
    started = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, "-m", *argv, "--result-file", str(result_file)],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )
    wall = time.perf_counter() - started
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)} failed ({proc.returncode}): {proc.stderr[-2000:]}")
    return wall, json.loads(result_file.read_text())


def _prepare(root: Path, tmp: Path, env: dict[str, str]) -> dict[str, list[str]]:
    """Inputs: landing days, validated curated days, a registered model; the argv of each job."""
    from benchmarks.bench_score import register_model, synthetic_arrays, write_curated_day
    from jobs.sim import WorldParams, write_day

    params = WorldParams()  # the demo's world: 2,000 users, 500 items, 20,000 events a day
    write_day(params, DAY, str(root / "landing" / "events"), str(root / "ground_truth"))
    arrays = synthetic_arrays(SCORE_USERS, SCORE_ITEMS, 64)
    for offset in range(1, WINDOW + 2):
        write_curated_day(root, (DAY - timedelta(days=offset)).isoformat(), arrays["user_ids"], SCORE_ITEMS, offset)
    version = register_model(
        arrays,
        env,
        tmp / "artifacts",
        f"{(DAY - timedelta(days=WINDOW + 2)).isoformat()}..{(DAY - timedelta(days=WINDOW + 2)).isoformat()}",
    )
    held_out = (DAY - timedelta(days=1)).isoformat()
    return {
        "ingest": ["jobs.ingest", "--day", DAY.isoformat()],
        "snapshot": ["jobs.snapshot", "--day", held_out, "--window-days", str(WINDOW)],
        "score": ["jobs.score", "--day", held_out, "--model-version", str(version)],
    }


def run(quick: bool = False) -> list[dict[str, Any]]:
    """Long because it is the benchmark's script: set-up, both measured sides and the rows."""
    from benchmarks.spark_server import connect_server

    repeats = REPEATS["quick" if quick else "full"]
    tmp = Path(tempfile.mkdtemp(prefix="bench-connect-"))
    root = tmp / "data"
    env = {
        "RECSYS__STORAGE__ROOT": str(root),
        "RECSYS__MLFLOW__TRACKING_URI": f"sqlite:///{tmp / 'mlflow.db'}",
        "RECSYS__MLFLOW__MODEL_NAME": "bench-connect",
        "RECSYS__MLFLOW__EXPERIMENT": "bench-connect",
    }
    rows: list[dict[str, Any]] = []
    try:
        with connect_server("bench-connect-spark-") as server:
            jobs = _prepare(root, tmp, env)
            full_env = {
                **os.environ,
                **env,
                "PYTHONPATH": os.pathsep.join([str(REPO), str(REPO / "plugins")]),
                "MLFLOW_TRACKING_URI": env["RECSYS__MLFLOW__TRACKING_URI"],
            }
            rows.append(
                {
                    "metric": "spark connect server start-up (once per stack)",
                    "value": server["start_s"],
                    "unit": "s",
                    "note": f"the stack's spark-connect component until healthy; master {os.environ.get('RECSYS__SPARK__MASTER') or 'local[2]'}",
                }
            )
            for stage, argv in jobs.items():
                connect_walls, classic_walls, results = [], [], {}
                for i in range(repeats):
                    wall, results["connect"] = _run(argv, full_env, tmp / f"{stage}-connect-{i}.json")
                    connect_walls.append(wall)
                    wall, results["classic"] = _run(
                        ["benchmarks.classic_job", *argv], full_env, tmp / f"{stage}-classic-{i}.json"
                    )
                    classic_walls.append(wall)
                value, reference = statistics.median(connect_walls), statistics.median(classic_walls)
                rows.append(
                    {
                        "metric": f"{stage} task wall: Connect client vs own JVM",
                        "value": value,
                        "unit": "s",
                        "reference": reference,
                        "ratio": value / reference,
                        "note": f"python -m {' '.join(argv)}; median of {repeats} (Connect {', '.join(f'{w:.1f}' for w in connect_walls)} s; "
                        f"classic {', '.join(f'{w:.1f}' for w in classic_walls)} s); job cost (Connect): "
                        f"{results['connect'].get('cost', {})}; goal <= 3 s",
                    }
                )
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return rows


if __name__ == "__main__":
    for row in run(quick="--quick" in sys.argv):
        print(row)
