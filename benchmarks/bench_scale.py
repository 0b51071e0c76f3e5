"""Scale: every stage job over worlds spanning ≥ 100× in size, and a cost law per stage.

Sizes (``benchmarks.scale_run.schedule``; ``$RECSYS_SCALE_SIZES`` overrides, e.g.
``10000,30000,100000,300000``): full 100k, 1M, 10M events a day; ``--quick`` 10k, 100k, 1M.
Users = events/10 (1k..1M), items grow geometrically from 500 (10k events) to 20k (10M). Each
size is a fresh world (``python -m jobs.sim --sampler fast``) of ``WINDOW_DAYS`` + 1 days in its
own storage root and SQLite MLflow store, run through the pipeline as the DAGs run it, every
job a ``python -m jobs.<stage>`` client of one Spark Connect server started for the benchmark
(the stack's ``spark-connect`` component, ``local[N]`` and memory as configured):

1. ``jobs.ingest --day d`` and ``jobs.validate --day d`` for each of the 8 days (the row is the
   median day);
2. ``jobs.snapshot --day D --window-days 7`` (D = the last day);
3. ``jobs.train --snapshot S --epochs 1 --device cpu`` (MF, the configured factors);
4. ``jobs.evaluate gate --snapshot S --run-id R --model-uri M``;
5. (not measured) ``jobs.registry register`` and ``promote``: the version is served whatever
   the gate said, and ``jobs.score`` of D-1, so that the monitor has yesterday's recommendations;
6. ``jobs.score --day D --model-version V``, then ``jobs.monitor --day D``.

Per stage and size (``benchmarks.scale_run.run_stage``): wall, CPU-seconds of the job and of
the Spark server, peak RSS of the job's process tree and of the server's, bytes written. The
measurements go to ``benchmarks/results/scale.json`` (the capacity model's input, format in
``benchmarks.scale_fit``); the laws ``cost ≈ fixed + b·x^k`` fitted by ``benchmarks.scale_fit``
are printed with the self-check. A stage that fails stops the run: its row names the stage, the
size and the resource, with that resource's curve over the smaller sizes, and the benchmark
fails with every measured row kept.
"""

from __future__ import annotations

import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from datetime import date, timedelta
from pathlib import Path
from typing import Any

from benchmarks.scale_run import (
    MIB,
    REPO,
    SIZES_ENV,
    Measure,
    WorldSize,
    curve,
    failure_row,
    fit_table,
    harness_rows,
    median_measure,
    run_stage,
    scale_document,
    scale_row,
    schedule,
)

WINDOW_DAYS = 7
EPOCHS = 1
START = date(2026, 1, 1)
STAGE_TIMEOUT_S = {"quick": 1200.0, "full": 3600.0}
TIMEOUT_ENV = "RECSYS_SCALE_STAGE_TIMEOUT_S"


class ScaleFailed(RuntimeError):
    """A stage could not complete a size: the benchmark fails; ``partial_rows`` keeps every
    measured row (the harness, ``benchmarks/__main__.py``, records them)."""

    def __init__(self, failures: list[dict[str, Any]], rows: list[dict[str, Any]]) -> None:
        what = "; ".join(f"{f['stage']} at {f['size']}: {f['resource']}" for f in failures) or "nothing measured"
        super().__init__(f"scale: {what}")
        self.partial_rows = rows


class _StageFailed(Exception):
    def __init__(self, measure: Measure) -> None:
        super().__init__(measure.error)
        self.measure = measure


def _machine() -> dict[str, Any]:
    import psutil

    from jobs.core.config import get_config

    cfg = get_config()
    return {
        "cpus": os.cpu_count(),
        "memory_gib": round(psutil.virtual_memory().total / 2**30, 1),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "spark_master": cfg.spark.master,
        "spark_server_memory": cfg.spark.server_memory,
        "load_average_at_start": [round(x, 2) for x in os.getloadavg()],
    }


def _mlflow_template(tmp: Path, env: dict[str, str]) -> Path:
    """An MLflow SQLite store already migrated (copied per size, so no stage pays the migration)."""
    db = tmp / "mlflow-template.db"
    code = "import sys, mlflow; mlflow.MlflowClient(sys.argv[1]).search_experiments()"
    subprocess.run([sys.executable, "-c", code, f"sqlite:///{db}"], cwd=tmp, env=env, check=True, capture_output=True)
    return db


def _size_env(base: dict[str, str], work: Path, name: str) -> dict[str, str]:
    uri = f"sqlite:///{work / 'mlflow.db'}"
    return {
        **base,
        "RECSYS__STORAGE__ROOT": str(work / "data"),
        "RECSYS__MLFLOW__TRACKING_URI": uri,
        "MLFLOW_TRACKING_URI": uri,
        "RECSYS__MLFLOW__MODEL_NAME": name,
        "RECSYS__MLFLOW__EXPERIMENT": name,
    }


def _one_size(
    size: WorldSize,
    tmp: Path,
    base_env: dict[str, str],
    template: Path,
    server_pid: int,
    timeout_s: float,
    stages: dict[str, list[dict[str, Any]]],
    notes: dict[str, Any],
) -> dict[str, Any] | None:
    """Run the pipeline on one world; measured rows go to ``stages``; returns the failure, if any.

    Long because it is the pipeline's sequence, stage after stage, top to bottom.
    """
    label = size.label
    work, logs = tmp / label / "work", tmp / label / "logs"
    work.mkdir(parents=True)
    logs.mkdir(parents=True)
    shutil.copy(template, work / "mlflow.db")
    env = _size_env(base_env, work, f"bench-scale-{label}")
    days = [START + timedelta(days=i) for i in range(WINDOW_DAYS + 1)]
    held, previous = days[-1].isoformat(), days[-2].isoformat()
    info: dict[str, Any] = notes.setdefault(label, {})

    def step(stage: str, argv: list[str], tag: str = "") -> Measure:
        m = run_stage(
            stage,
            argv,
            env=env,
            cwd=work,
            server_pid=server_pid,
            measured=work,
            logs=logs,
            timeout_s=timeout_s,
            tag=tag,
        )
        print(
            f"[scale {label}] {stage}{' ' + tag if tag else ''}: {m.wall_s:.1f} s, {m.cpu_s:.1f} CPU-s "
            f"(job {m.job_cpu_s:.1f} + server {m.server_cpu_s:.1f}), RSS job {m.peak_rss_mib:,.0f} MiB, "
            f"server {m.server_peak_rss_mib:,.0f} MiB, wrote {m.bytes_written / MIB:,.1f} MiB"
            + (f" — FAILED ({m.resource}): {m.error}" if not m.ok else ""),
            flush=True,
        )
        if not m.ok:
            log = logs / f"{stage}{'-' + tag if tag else ''}.log"
            tail = log.read_text(errors="replace").splitlines()[-40:] if log.exists() else []
            print("\n".join(f"    | {line}" for line in tail), file=sys.stderr, flush=True)
            raise _StageFailed(m)
        return m

    def record(m: Measure) -> None:
        stages.setdefault(m.stage, []).append(scale_row(size, m))

    try:
        gen = step(
            "sim",
            ["jobs.sim", "--start", days[0].isoformat(), "--days", str(len(days)), "--users", str(size.users),
             "--items", str(size.items), "--events-per-day", str(size.events_per_day), "--sampler", "fast"],
        )  # fmt: skip
        info["generate_s"] = round(gen.wall_s, 1)
        ingests, validates = [], []
        for d in days:
            ingests.append(step("ingest", ["jobs.ingest", "--day", d.isoformat()], d.isoformat()))
            validates.append(step("validate", ["jobs.validate", "--day", d.isoformat()], d.isoformat()))
        record(median_measure(ingests))
        record(median_measure(validates))
        info["curated_rows_held_out_day"] = ingests[-1].result.get("rows")
        snap = step("snapshot", ["jobs.snapshot", "--day", held, "--window-days", str(WINDOW_DAYS)])
        record(snap)
        uri = snap.result["uri"]
        info |= {k: snap.result.get(k) for k in ("train_rows", "test_rows", "n_users", "n_items")}
        trained = step(
            "train", ["jobs.train", "--snapshot", uri, "--epochs", str(EPOCHS), "--device", "cpu", "--run-name", label]
        )
        record(trained)
        run_id, model_uri = trained.result["run_id"], trained.result["model_uri"]
        info["train_samples_per_s"] = trained.result.get("samples_per_s")
        gate = step(
            "evaluate", ["jobs.evaluate", "gate", "--snapshot", uri, "--run-id", run_id, "--model-uri", model_uri]
        )
        record(gate)
        info["gate"] = {"blessed": gate.result.get("blessed"), "reason": str(gate.result.get("reason", ""))[:200]}
        started = time.perf_counter()
        reg = step(
            "registry",
            ["jobs.registry", "register", "--run-id", run_id, "--model-uri", model_uri, "--snapshot", uri],
            "register",
        )
        version = str(reg.result["version"])
        reason = "scale benchmark: the trained version is served whatever the gate said"
        step("registry", ["jobs.registry", "promote", "--model-version", version, "--reason", reason], "promote")
        step("score", ["jobs.score", "--day", previous, "--model-version", version], previous)
        info["setup_after_gate_s"] = round(time.perf_counter() - started, 1)
        score = step("score", ["jobs.score", "--day", held, "--model-version", version], held)
        record(score)
        info["score_users"] = score.result.get("users")
        record(step("monitor", ["jobs.monitor", "--day", held]))
    except _StageFailed as exc:
        m = exc.measure
        return {
            "stage": m.stage,
            "size": label,
            "events_per_day": size.events_per_day,
            "resource": m.resource,
            "error": m.error,
            "returncode": m.returncode,
            "wall_s": round(m.wall_s, 1),
            "peak_rss_mib": round(m.peak_rss_mib, 1),
            "server_peak_rss_mib": round(m.server_peak_rss_mib, 1),
            "curve": curve(stages.get(m.stage, []), m.resource, m),
        }
    finally:
        shutil.rmtree(work, ignore_errors=True)  # the next (larger) world needs the disk
    return None


def run(quick: bool = False) -> list[dict[str, Any]]:
    """Long because it is the benchmark's script: the server, each size, the document and the rows."""
    from benchmarks.capacity import DEFAULT_COEFFICIENTS
    from benchmarks.scale_fit import CoefficientsError, parse_coefficients
    from benchmarks.spark_server import connect_server
    from jobs.core.config import get_config

    mode = "quick" if quick else "full"
    sizes = schedule(quick, os.environ.get(SIZES_ENV))
    timeout_s = float(os.environ.get(TIMEOUT_ENV) or STAGE_TIMEOUT_S[mode])
    factors = get_config().training.factors
    tmp = Path(tempfile.mkdtemp(prefix="bench-scale-"))
    stages: dict[str, list[dict[str, Any]]] = {}
    failures: list[dict[str, Any]] = []
    notes: dict[str, Any] = {}
    machine = _machine()
    started = time.perf_counter()
    try:
        with connect_server("bench-scale-spark-") as server:
            server_pid = int(server["stack"].pid_file("spark-connect").read_text().strip())
            base_env = {
                **os.environ,
                "PYTHONPATH": os.pathsep.join([str(REPO), str(REPO / "plugins")]),
                "GX_ANALYTICS_ENABLED": "false",
                # the snapshot's Spark build at every size (a small window is otherwise split in
                # the job's process): the curve measures the path that scales
                "RECSYS__TRAINING__SNAPSHOT_COLLECT_MAX_PAIRS": "0",
            }
            template = _mlflow_template(tmp, base_env)
            machine["spark_server_start_s"] = round(server["start_s"], 1)
            for size in sizes:
                failure = _one_size(size, tmp, base_env, template, server_pid, timeout_s, stages, notes)
                if failure is not None:
                    failures.append(failure)
                    break
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    total_s = time.perf_counter() - started
    doc = scale_document(
        machine,
        sizes,
        stages,
        window_days=WINDOW_DAYS,
        factors=factors,
        failures=failures,
        extra={
            "epochs": EPOCHS,
            "mode": mode,
            "produced_by": "python -m benchmarks --only scale" + (" --quick" if quick else ""),
            "seconds": round(total_s, 1),
            "notes": notes,
        },
    )
    rows: list[dict[str, Any]] = [failure_row(f, f["curve"]) for f in failures]
    if stages:
        DEFAULT_COEFFICIENTS.parent.mkdir(parents=True, exist_ok=True)
        DEFAULT_COEFFICIENTS.write_text(json.dumps(doc, indent=2, default=str) + "\n")
        try:
            coeffs = parse_coefficients(doc, str(DEFAULT_COEFFICIENTS))
        except CoefficientsError as exc:
            raise ScaleFailed(failures, rows) from exc
        print(f"\nscale: cost laws (benchmarks.scale_fit), written to {DEFAULT_COEFFICIENTS}")
        print(fit_table(coeffs), flush=True)
        shapes = ", ".join(
            f"{s['events_per_day']:,}/day ({s['users']:,} users, {s['items']:,} items)" for s in doc["sizes"]
        )
        span = doc["sizes"][-1]["events_per_day"] / doc["sizes"][0]["events_per_day"]
        rows = [
            {
                "metric": "scale: span of the sizes measured (largest / smallest events a day)",
                "value": span,
                "unit": "x",
                "note": f"sizes {shapes}; "
                f"{WINDOW_DAYS}-day window, train {EPOCHS} epoch on CPU; {machine['cpus']} CPUs, "
                f"{machine['memory_gib']} GiB; Spark {machine['spark_master']}, server memory "
                f"{machine['spark_server_memory']}; {total_s / 60:.0f} min in all; goal: span >= 100",
            },
            *harness_rows(coeffs, doc["stages"]),
            *rows,
        ]
    if failures or not stages:
        raise ScaleFailed(failures, rows)
    return rows


if __name__ == "__main__":
    for row in run(quick="--quick" in sys.argv):
        print(json.dumps(row, default=str))
