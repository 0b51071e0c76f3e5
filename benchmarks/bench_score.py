"""Batch scoring throughput: the scoring core against the machine's matrix-multiply rate, and ``jobs.score`` end to end.

Model: synthetic arrays in the ``jobs/model.py`` layout — ``training.factors`` factors (64),
10,000 items, Gaussian factors and biases, ~10 seen items per user (the training-window CSR
that scoring masks), Zipf-like popularity. K = ``scoring.k`` (20), batches of
``scoring.batch_users`` (4,096) users, torch on the CPU with its default thread count.

Core (in process, the same model arrays and users for every line; best of ``REPEATS`` runs,
interleaved so that a noisy neighbour hits all of them alike):
  * reference: ``torch.mm`` of each (batch × factors) user block with the (factors × items)
    item matrix — the matrix product alone, the floor of any exact top-K by matrix product;
  * ``jobs.core.model.top_k`` over the model arrays (product + bias, seen items masked,
    ``torch.topk``);
  * ``jobs.score.core.score_users`` (what each Spark worker runs: ``top_k`` with K+1, the tie
    rule, the post-window exclusions, long-format output).
  Rate = users × items scored per second; ``ratio`` = core / matmul (goal ≥ 0.5).

End to end: ``python -m jobs.score --day D --model-version 1`` as a subprocess: a Spark Connect
client of one warm server started for the benchmark (``local[N]`` as configured), on a generated curated day whose active users are all the model's users (1-3
events each, 3 in 5 positive) plus a post-window day (every third user), the model
registered in an MLflow SQLite store in a temporary folder (no server). Reported: wall seconds of the command and the
job's own ``seconds`` (after the JVM is up), as users × items per second, with the in-process
``score_users`` rate of the core measurement (same items and factors) as ``reference``. Sizes
run smallest first (full: 25k, 100k, 300k, then 1M users; ``--quick``: 20k users × 2,000
items); the first two always run, a later size whose predicted wall time exceeds
``E2E_BUDGET_S`` is not: its row is marked "not run" with an empty value, and its note gives
the extrapolation, labelled as such (a line through the last two sizes run: fixed start-up plus
a per-user cost).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from contextlib import ExitStack
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import numpy as np

REPO = Path(__file__).resolve().parent.parent
ITEMS = 10_000
SEEN_PER_USER = 10
REPEATS = 3
CORE_USERS = {"full": 100_000, "quick": 20_000}
E2E_USERS = {"full": [25_000, 100_000, 300_000, 1_000_000], "quick": [20_000]}
QUICK_ITEMS = 2_000
E2E_BUDGET_S = 360.0
DAY = date(2026, 3, 2)


def synthetic_arrays(users: int, items: int, factors: int, seed: int = 0) -> dict[str, np.ndarray]:
    """Model arrays in the ``jobs.core.model.save_artifact`` layout (user ids 1..users, item ids 1..items)."""
    from jobs.core.model import CSR

    rng = np.random.default_rng(seed)
    seen_u = np.repeat(np.arange(users, dtype=np.int64), SEEN_PER_USER)
    seen_i = np.minimum(rng.zipf(1.3, size=len(seen_u)) - 1, items - 1).astype(np.int64)
    seen = CSR.from_pairs(seen_u, seen_i, users, items)
    return {
        "user_factors": (rng.standard_normal((users, factors), dtype=np.float32) * 0.1),
        "item_factors": (rng.standard_normal((items, factors), dtype=np.float32) * 0.1),
        "item_bias": rng.standard_normal(items, dtype=np.float32),
        "user_ids": np.arange(1, users + 1, dtype=np.int64),
        "item_ids": np.arange(1, items + 1, dtype=np.int64),
        "popularity": np.bincount(seen_i, minlength=items).astype(np.int64),
        "seen_indptr": seen.indptr,
        "seen_indices": seen.indices,
        "default_k": np.array(20),
    }


def core_rates(arrays: dict[str, np.ndarray], k: int, batch: int) -> dict[str, float]:
    """Best-of-REPEATS seconds of matmul, top_k and score_users over every user."""
    import torch

    from jobs.core.model import CSR, Recommender, top_k
    from jobs.score.core import ScoringModel, score_users

    model = ScoringModel(Recommender(arrays))
    users = arrays["user_ids"]
    n = len(users)
    p, q = model.user_factors, model.item_factors
    seen = CSR(arrays["seen_indptr"], arrays["seen_indices"], len(arrays["item_ids"]))
    best = {"matmul": float("inf"), "top_k": float("inf"), "score_users": float("inf")}
    with torch.no_grad():
        for _ in range(REPEATS):
            started = time.perf_counter()
            for lo in range(0, n, batch):
                torch.mm(p[lo : lo + batch], q.T)
            best["matmul"] = min(best["matmul"], time.perf_counter() - started)
            started = time.perf_counter()
            top_k(p, q, model.item_bias, np.arange(n), k, exclude=seen, batch_users=batch)
            best["top_k"] = min(best["top_k"], time.perf_counter() - started)
            started = time.perf_counter()
            scored = score_users(model, users, None, k, batch_users=batch)
            best["score_users"] = min(best["score_users"], time.perf_counter() - started)
    assert len(scored) == n * k
    return best


# ---- end to end ------------------------------------------------------------------------------


def write_curated_day(root: Path, day: str, user_ids: np.ndarray, items: int, seed: int) -> int:
    """A validated curated partition (ingest layout) where every given user has 1-3 events."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from jobs.core import storage

    rng = np.random.default_rng(seed)
    counts = rng.integers(1, 4, len(user_ids))
    users = np.repeat(user_ids, counts)
    n = len(users)
    types = rng.choice(np.array(["impression", "impression", "click", "play", "rating"]), n)
    start = datetime.fromisoformat(day).replace(tzinfo=UTC)
    table = pa.table(
        {
            "event_id": pa.array(np.char.add(f"{day}-", np.arange(n).astype(str)), pa.string()),
            "user_id": pa.array(users, pa.int64()),
            "item_id": pa.array(rng.integers(1, items + 1, n), pa.int64()),
            "event_type": pa.array(types, pa.string()),
            "ts": pa.array(
                np.datetime64(start.replace(tzinfo=None), "us") + rng.integers(0, 86_400_000_000, n).astype("m8[us]"),
                pa.timestamp("us", tz="UTC"),
            ),
            "watch_seconds": pa.array(np.full(n, 60.0), pa.float64(), mask=types != "play"),
            "rating": pa.array(np.full(n, 4, dtype=np.int32), pa.int32(), mask=types != "rating"),
            "device": pa.array(np.full(n, "tv"), pa.string()),
            "country": pa.array(np.full(n, "DE"), pa.string()),
        }
    )
    part = f"{root}/curated/events/dt={day}"
    with storage.staged_partition(part) as staging:
        pq.write_table(table, staging / "part-00000.parquet", compression="snappy")
        storage.publish(staging, part, {"day": day, "rows": n, "files": ["part-00000.parquet"]})
    storage.write_json_atomic(Path(part) / "_VALIDATION", {"success": True, "rows": n})
    return n


def register_model(arrays: dict[str, np.ndarray], env: dict[str, str], artifacts: Path, window: str) -> str:
    """Log the arrays as the trainer's pyfunc into a SQLite MLflow store and register version 1."""
    import mlflow

    from jobs.core.config import get_config
    from jobs.core.snapshots import TrainData
    from jobs.registry.register import register
    from jobs.train.tracking import Tracker

    old = {key: os.environ.get(key) for key in env}
    os.environ.update(env)
    try:
        cfg = get_config()
        mlflow.set_tracking_uri(cfg.mlflow.tracking_uri)
        if mlflow.get_experiment_by_name(cfg.mlflow.experiment) is None:
            mlflow.create_experiment(cfg.mlflow.experiment, artifact_location=artifacts.as_uri())
        ptr = arrays["seen_indptr"]
        data = TrainData(
            users=np.repeat(np.arange(len(ptr) - 1), np.diff(ptr)),
            items=arrays["seen_indices"],
            weights=np.ones(len(arrays["seen_indices"]), np.float32),
            test_users=np.zeros(0, np.int64),
            test_items=np.zeros(0, np.int64),
            user_ids=arrays["user_ids"],
            item_ids=arrays["item_ids"],
            popularity=arrays["popularity"],
            manifest={"day": window.split("..")[1]},
            uri="memory://bench_score",
        )
        tracker = Tracker(cfg.mlflow.tracking_uri, cfg.mlflow.experiment)
        run_id = tracker.start(None, "bench-score")
        info = tracker.log_model({k: arrays[k] for k in ("user_factors", "item_factors", "item_bias")}, data, 20)
        mlflow.end_run()
        start, end = window.split("..")
        return register(cfg, run_id, {"window_start": start, "window_end": end}, info.model_uri)["version"]
    finally:
        for key, value in old.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def end_to_end(users: int, items: int, factors: int, tmp: Path) -> dict[str, Any]:
    """One ``python -m jobs.score`` run on a fresh world of ``users`` active users."""
    arrays = synthetic_arrays(users, items, factors, seed=users)
    root = tmp / f"data-{users}"
    name = f"bench-score-{users}"
    env = {
        "RECSYS__STORAGE__ROOT": str(root),
        "RECSYS__MLFLOW__TRACKING_URI": f"sqlite:///{tmp / 'mlflow.db'}",
        "RECSYS__MLFLOW__MODEL_NAME": name,
        "RECSYS__MLFLOW__EXPERIMENT": name,
    }
    started = time.perf_counter()
    post = (DAY - timedelta(days=1)).isoformat()
    events = write_curated_day(root, DAY.isoformat(), arrays["user_ids"], items, seed=1)
    write_curated_day(root, post, arrays["user_ids"][::3], items, seed=2)
    version = register_model(arrays, env, tmp / "artifacts", f"2026-02-22..{(DAY - timedelta(days=2)).isoformat()}")
    prepared = time.perf_counter() - started
    result_file = tmp / f"result-{users}.json"
    full_env = {
        **os.environ,
        **env,
        "PYTHONPATH": os.pathsep.join([str(REPO), str(REPO / "plugins")]),
        "MLFLOW_TRACKING_URI": env["RECSYS__MLFLOW__TRACKING_URI"],
    }
    started = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, "-m", "jobs.score", "--day", DAY.isoformat(), "--model-version", version,
         "--result-file", str(result_file)],
        cwd=REPO, env=full_env, capture_output=True, text=True, timeout=3600,
    )  # fmt: skip
    wall = time.perf_counter() - started
    if proc.returncode != 0:
        raise RuntimeError(f"jobs.score failed ({proc.returncode}): {proc.stderr[-3000:]}")
    result = json.loads(result_file.read_text())
    assert result["users"] == users, result
    return {
        "wall": wall,
        "job_seconds": float(result["seconds"]),
        "rows": result["rows"],
        "events": events,
        "prepared": prepared,
        "files": len(result["files"]),
        "partitions": result["partitions"],
        "model_loads": result["model_loads"],
        "stages": result["stages"],
    }


def run(quick: bool = False) -> list[dict[str, Any]]:
    """Long because it is the benchmark's script: both measured sides and the result rows, top to bottom."""
    import torch

    from jobs.core.config import get_config

    cfg = get_config()
    mode = "quick" if quick else "full"
    items = QUICK_ITEMS if quick else ITEMS
    factors, k, batch = cfg.training.factors, cfg.scoring.k, cfg.scoring.batch_users
    n = CORE_USERS[mode]
    arrays = synthetic_arrays(n, items, factors)
    best = core_rates(arrays, k, batch)
    cells = n * items
    shape = f"{n:,} users x {items:,} items x {factors} factors, K={k}, batch {batch}"
    threads = f"torch {torch.get_num_threads()} threads, {os.cpu_count()} CPUs, best of {REPEATS}"
    gflops = 2 * n * items * factors / best["matmul"] / 1e9
    rows: list[dict[str, Any]] = [
        {
            "metric": "scoring core: jobs.core.model.top_k vs torch.mm of the same shapes",
            "value": cells / best["top_k"],
            "unit": "users x items/s",
            "reference": cells / best["matmul"],
            "note": f"{shape}; ~{SEEN_PER_USER} seen items/user masked; matmul {gflops:.1f} GFLOP/s; {threads}",
        },
        {
            "metric": "scoring core: jobs.score.core.score_users vs torch.mm of the same shapes",
            "value": cells / best["score_users"],
            "unit": "users x items/s",
            "reference": cells / best["matmul"],
            "note": "top_k with K+1, deterministic ties, long-format output (what each Spark worker runs)",
        },
    ]

    from benchmarks.spark_server import connect_server

    stack = ExitStack()
    tmp = Path(tempfile.mkdtemp(prefix="recsys-bench-score-"))
    try:
        server = stack.enter_context(connect_server("bench-score-spark-"))
        done: list[tuple[int, float]] = []  # (users, wall seconds) of the sizes run
        for users in E2E_USERS[mode]:
            if len(done) >= 2:  # the first two sizes always run: the prediction needs a line
                estimate, how = predict(done, users)
                if estimate > E2E_BUDGET_S:
                    rows.append(not_run_row(users, estimate, how))
                    continue
            out = end_to_end(users, items, factors, tmp)
            e2e_cells = users * items
            rows.append(
                {
                    "metric": f"jobs.score end to end, {users:,} users x {items:,} items (job time) vs in-process score_users",
                    "value": e2e_cells / out["job_seconds"],
                    "unit": "users x items/s",
                    "reference": cells / best["score_users"],
                    "note": f"job {out['job_seconds']:.0f}s (after connecting), command {out['wall']:.0f}s wall; "
                    f"{out['rows']:,} rows in {out['files']} files from {out['events']:,} events; "
                    f"{out['partitions']} partitions, model loaded {out['model_loads']}x; stages {out['stages']}; "
                    f"Spark Connect server ({cfg.spark.master}, up in {server['start_s']:.0f}s, once)",
                }
            )
            rows.append(
                {
                    "metric": f"jobs.score end to end, {users:,} users, command wall time",
                    "value": out["wall"],
                    "unit": "s",
                    "note": "python -m jobs.score incl. Python start-up, connect, MLflow download, Spark read/join, scoring, Parquet write, publish",
                }
            )
            done.append((users, out["wall"]))
            shutil.rmtree(tmp / f"data-{users}", ignore_errors=True)
    finally:
        stack.close()
        shutil.rmtree(tmp, ignore_errors=True)
    return rows


def not_run_row(users: int, estimate: float, how: str, budget_s: float = E2E_BUDGET_S) -> dict[str, Any]:
    """The row of a size that was not run: no value (nothing was measured); the extrapolation,
    labelled as one, lives in the note only."""
    return {
        "metric": f"jobs.score end to end, {users:,} users, command wall time (not run)",
        "value": None,
        "unit": "s",
        "note": f"not run, nothing measured: extrapolated {estimate:.0f}s ({how}) exceeds this benchmark's "
        f"{budget_s:.0f}s budget on {os.cpu_count()} CPUs",
    }


def predict(done: list[tuple[int, float]], users: int) -> tuple[float, str]:
    """Wall time predicted for ``users``: a line through the last two sizes run (else proportional)."""
    (u1, w1), (u2, w2) = done[-2], done[-1]
    slope = (w2 - w1) / (u2 - u1)
    if slope > 0:
        return w2 + slope * (users - u2), (
            f"line through {u1:,} users ({w1:.0f}s) and {u2:,} users ({w2:.0f}s): "
            f"{w2 - slope * u2:.0f}s fixed + {slope * 1e6:.0f}s per million users"
        )
    return w2 * users / u2, f"proportional to {u2:,} users ({w2:.0f}s), start-up included (an upper bound)"


if __name__ == "__main__":
    for row in run(quick="--quick" in sys.argv):
        print(json.dumps(row))
