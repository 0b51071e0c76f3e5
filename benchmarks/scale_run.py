"""Pieces of the scale benchmark (``benchmarks.bench_scale``): the size schedule, one measured
stage run, and the rows and document built from the measurements.

A stage runs as ``python -m jobs.<stage> ...`` in its own process group, a client of the
benchmark's Spark Connect server. Measured per run: wall seconds (``perf_counter``), CPU seconds
of the job (``RUSAGE_CHILDREN`` delta: the job and every process it waited for) and of the Spark
server (its process tree's user + system time, reaped workers included), the peak RSS of the
job's process tree and of the server's (sampled every ``SAMPLE_S``; the job's own ``VmHWM`` from
its result JSON when larger), and the bytes the stage left behind (growth of the size's working
folder: data zones, MLflow store and artifacts). The pure parts are tested in
``tests/unit/test_bench_scale.py``.
"""

from __future__ import annotations

import math
import os
import resource
import signal
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from benchmarks.scale_fit import DRIVERS, RESOURCES, STAGES, Coefficients, Law, driver_of, row_size, self_check

REPO = Path(__file__).resolve().parent.parent
MIB = 2.0**20
SAMPLE_S = 0.2
SMALLEST_EVENTS = 10_000  # the schedule's anchor: 500 items at 10k events a day ...
ITEMS_MIN, ITEMS_MAX = 500, 20_000  # ... growing geometrically to 20k items at 10M
USERS_MIN, USERS_MAX = 1_000, 1_000_000
EVENTS_PER_USER = 10  # users = events a day / 10, within [USERS_MIN, USERS_MAX]
SIZES = {"quick": (10_000, 100_000, 1_000_000), "full": (100_000, 1_000_000, 10_000_000)}
SIZES_ENV = "RECSYS_SCALE_SIZES"  # comma-separated events a day, overriding the schedule


@dataclass(frozen=True)
class WorldSize:
    """One world of the schedule: events a day, users and items."""

    events_per_day: int
    users: int
    items: int

    @property
    def label(self) -> str:
        return size_label(self.events_per_day)


def size_label(events: int) -> str:
    """``10k``, ``1M``, ``2.5M``: a short name of an events-a-day figure."""
    if events >= 1_000_000:
        return f"{events / 1e6:g}M"
    if events >= 1_000:
        return f"{events / 1e3:g}k"
    return str(events)


def world_size(events_per_day: int) -> WorldSize:
    """Users and items grow with the events: users = events/10 (1k..1M); items geometrically from
    500 at 10k events a day to 20k at 10M (×40 over ×1000), within [500, 20k]."""
    users = min(max(events_per_day // EVENTS_PER_USER, USERS_MIN), USERS_MAX)
    growth = math.log(ITEMS_MAX / ITEMS_MIN) / math.log(1_000)
    items = ITEMS_MIN * (max(events_per_day, 1) / SMALLEST_EVENTS) ** growth
    return WorldSize(events_per_day, users, round(min(max(items, ITEMS_MIN), ITEMS_MAX)))


def schedule(quick: bool, override: str | None = None) -> list[WorldSize]:
    """The sizes to run, smallest first: ``override`` (``"10000,100000"``) or the mode's schedule."""
    if override:
        events = sorted({int(float(x)) for x in override.split(",") if x.strip()})
        if not events or events[0] < 1:
            raise ValueError(f"{SIZES_ENV}={override!r}: expected positive events a day, comma-separated")
    else:
        events = list(SIZES["quick" if quick else "full"])
    return [world_size(n) for n in events]


# ------------------------------------------------------------------------------- accounting


def tree_bytes(path: str | Path) -> int:
    """Bytes of every regular file under ``path`` (0 when absent; files vanishing meanwhile skipped)."""
    total = 0
    for folder, _, files in os.walk(path):
        for name in files:
            try:
                total += os.lstat(os.path.join(folder, name)).st_size
            except OSError:
                continue
    return total


def bytes_written(before: int, after: int) -> int:
    """What a stage left behind: the growth of the folder (a stage that only replaced or removed: 0)."""
    return max(after - before, 0)


def children_cpu_s() -> float:
    """User + system seconds of this process's reaped children (and of what they reaped)."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def _tree(pid: int) -> list[Any]:
    import psutil

    try:
        root = psutil.Process(pid)
        return [root, *root.children(recursive=True)]
    except psutil.Error:
        return []


def tree_rss(pid: int) -> int:
    """Resident bytes of ``pid`` and its descendants now (0 when gone)."""
    import psutil

    total = 0
    for proc in _tree(pid):
        try:
            total += proc.memory_info().rss
        except psutil.Error:
            continue
    return total


def tree_cpu_s(pid: int) -> float:
    """CPU seconds so far of ``pid`` and its live descendants, with what each has reaped (the Spark
    server's Python workers, one process per task, are reaped by the JVM)."""
    import psutil

    total = 0.0
    for proc in _tree(pid):
        try:
            t = proc.cpu_times()
        except psutil.Error:
            continue
        total += t.user + t.system + t.children_user + t.children_system
    return total


@contextmanager
def sample_peaks(pids: Mapping[str, int], interval: float = SAMPLE_S) -> Iterator[dict[str, float]]:
    """Peak RSS (MiB) of each named process tree over the block, sampled every ``interval`` s."""
    peaks = dict.fromkeys(pids, 0.0)
    stop = threading.Event()

    def sample() -> None:
        for name, pid in pids.items():
            peaks[name] = max(peaks[name], tree_rss(pid) / MIB)

    def loop() -> None:
        while not stop.wait(interval):
            sample()

    sample()
    thread = threading.Thread(target=loop, name="scale-rss", daemon=True)
    thread.start()
    out: dict[str, float] = {}
    try:
        yield out
    finally:
        stop.set()
        thread.join(timeout=5)
        out.update(peaks)


# ------------------------------------------------------------------------------- one stage run


@dataclass
class Measure:
    """One stage run: its costs, and for a failed run the error and the resource it ran out of."""

    stage: str
    wall_s: float
    job_cpu_s: float
    server_cpu_s: float
    peak_rss_mib: float
    server_peak_rss_mib: float
    bytes_written: int
    result_bytes: int = 0
    returncode: int = 0
    error: str = ""
    resource: str = ""
    runs: int = 1  # how many runs this figure summarises (median)
    result: dict[str, Any] = field(default_factory=dict, repr=False)

    @property
    def cpu_s(self) -> float:
        """The stage's CPU: its own process tree and the Spark server's work for it."""
        return self.job_cpu_s + self.server_cpu_s

    @property
    def ok(self) -> bool:
        return self.returncode == 0 and not self.error


def failure_resource(returncode: int | None, timed_out: bool, text: str, server_alive: bool = True) -> str:
    """Which resource a failed run most likely ran out of, from its exit and its output."""
    low = text.lower()
    if timed_out:
        return "wall time"
    if not server_alive:
        return "memory (the Spark Connect server died)"
    if returncode in (-signal.SIGKILL, 128 + signal.SIGKILL):
        return "memory (job killed by SIGKILL: the OOM killer)"
    if "java heap space" in low or "outofmemoryerror" in low or "gc overhead limit" in low:
        return "memory (Spark server JVM heap)"
    if "memoryerror" in low or "cannot allocate memory" in low or "unable to allocate" in low:
        return "memory (job process)"
    if "no space left on device" in low:
        return "disk"
    return "error (not a resource)"


def median_measure(runs: Sequence[Measure]) -> Measure:
    """A typical run of several (e.g. the ingest of each window day): the median of each figure."""
    if not runs:
        raise ValueError("no runs to summarise")

    def med(name: str) -> float:
        return float(statistics.median(getattr(m, name) for m in runs))

    return replace(
        runs[-1],
        wall_s=med("wall_s"),
        job_cpu_s=med("job_cpu_s"),
        server_cpu_s=med("server_cpu_s"),
        peak_rss_mib=med("peak_rss_mib"),
        server_peak_rss_mib=med("server_peak_rss_mib"),
        bytes_written=int(med("bytes_written")),
        result_bytes=int(med("result_bytes")),
        runs=len(runs),
    )


def run_stage(
    stage: str,
    argv: Sequence[str],
    *,
    env: Mapping[str, str],
    cwd: Path,
    server_pid: int,
    measured: Path,
    logs: Path,
    timeout_s: float,
    tag: str = "",
) -> Measure:
    """Run ``python -m argv... --result-file F`` in ``cwd`` and measure it (see the module docstring).

    Args:
        stage: the stage's name (for the log and result file names).
        argv: the module and its arguments.
        server_pid: the Spark Connect server's process (its tree is measured too).
        measured: the folder whose growth is the stage's bytes written.
        logs: where the job's output and result file go (outside ``measured``).
        timeout_s: the job's process group is killed after this many seconds.
    """
    import json

    import psutil

    name = f"{stage}{'-' + tag if tag else ''}"
    result_file, log_file = logs / f"{name}.json", logs / f"{name}.log"
    result_file.unlink(missing_ok=True)
    before = tree_bytes(measured)
    cpu0, server0 = children_cpu_s(), tree_cpu_s(server_pid)
    timed_out = False
    started = time.perf_counter()
    with open(log_file, "wb") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", *argv, "--result-file", str(result_file)],
            cwd=cwd, env=dict(env), stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            start_new_session=True,
        )  # fmt: skip
        with sample_peaks({"job": proc.pid, "server": server_pid}) as peaks:
            try:
                returncode = proc.wait(timeout=timeout_s)
            except subprocess.TimeoutExpired:
                timed_out = True
                os.killpg(proc.pid, signal.SIGKILL)
                returncode = proc.wait()
    wall = time.perf_counter() - started
    try:
        result = json.loads(result_file.read_text())
    except (OSError, ValueError):
        result = {}
    own_peak = float((result.get("cost") or {}).get("peak_rss_mib") or 0.0)
    m = Measure(
        stage,
        wall_s=wall,
        job_cpu_s=children_cpu_s() - cpu0,
        server_cpu_s=max(tree_cpu_s(server_pid) - server0, 0.0),
        peak_rss_mib=max(peaks["job"], own_peak),
        server_peak_rss_mib=peaks["server"],
        bytes_written=bytes_written(before, tree_bytes(measured)),
        result_bytes=result_file.stat().st_size if result_file.exists() else 0,
        returncode=returncode,
        result=result,
    )
    if returncode != 0 or timed_out:
        text = log_file.read_text(errors="replace")[-20_000:]
        m.resource = failure_resource(returncode, timed_out, text, psutil.pid_exists(server_pid))
        last = [ln for ln in text.splitlines() if ln.strip()][-1:] or [""]
        m.error = str(result.get("message") or last[0])[:400] + (
            f" (killed after {timeout_s:.0f} s)" if timed_out else ""
        )
    return m


# ------------------------------------------------------------------------------- document and rows


def scale_row(size: WorldSize, m: Measure) -> dict[str, Any]:
    """One measured row of ``scale.json`` (the format of ``benchmarks.scale_fit``), with the CPU's
    two parts and the number of runs summarised as extra keys the fit ignores."""
    return {
        "events_per_day": size.events_per_day,
        "users": size.users,
        "items": size.items,
        "wall_s": round(m.wall_s, 3),
        "cpu_s": round(m.cpu_s, 3),
        "peak_rss_mib": round(m.peak_rss_mib, 1),
        "server_peak_rss_mib": round(m.server_peak_rss_mib, 1),
        "bytes_written": int(m.bytes_written),
        "result_bytes": int(m.result_bytes),
        "job_cpu_s": round(m.job_cpu_s, 3),
        "server_cpu_s": round(m.server_cpu_s, 3),
        "runs": m.runs,
    }


def scale_document(
    machine: Mapping[str, Any],
    sizes: Sequence[WorldSize],
    stages: Mapping[str, list[dict[str, Any]]],
    *,
    window_days: int,
    factors: int,
    failures: Sequence[Mapping[str, Any]] = (),
    extra: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """``scale.json``: the sizes that measured at least one stage, and every stage's rows."""
    measured = {r["events_per_day"] for rows in stages.values() for r in rows}
    return {
        "machine": dict(machine),
        "window_days": window_days,
        "factors": factors,
        "sizes": [
            {"events_per_day": s.events_per_day, "users": s.users, "items": s.items}
            for s in sizes
            if s.events_per_day in measured
        ],
        "stages": {stage: list(stages[stage]) for stage in STAGES if stages.get(stage)},
        "failures": [dict(f) for f in failures],
        **dict(extra or {}),
    }


def _mib(b: float) -> str:
    return f"{b / MIB:,.1f} MiB"


def _law(law: Law, unit: str = "") -> str:
    return f"{law.fixed:.3g}{unit} + {law.b:.3g}·x^{law.k:.2f}"


def harness_rows(coeffs: Coefficients, stages: Mapping[str, Sequence[Mapping[str, Any]]]) -> list[dict[str, Any]]:
    """The benchmark's rows: per stage and size the wall time, then per stage the per-unit cost at
    the largest size against the smallest (both measured here) and the fitted exponent.

    Args:
        coeffs: the fitted document (``benchmarks.scale_fit.parse_coefficients``).
        stages: the document's rows as written (with the extra keys the fit drops: CPU parts, runs).
    """
    rows: list[dict[str, Any]] = []
    for stage in coeffs.rows:
        driver = driver_of(stage, "wall_s")
        by_x = sorted(
            ((DRIVERS[driver](row_size(r, coeffs.window_days, coeffs.factors)), r) for r in stages[stage]),
            key=lambda p: p[0],
        )
        for x, r in by_x:
            rows.append(
                {
                    "metric": f"scale {stage} {size_label(int(r['events_per_day']))}: wall",
                    "value": r["wall_s"],
                    "unit": "s",
                    "note": f"{int(r['users']):,} users x {int(r['items']):,} items; {driver} = {x:,.0f}; "
                    f"{r['cpu_s']:.1f} CPU-s (job {r.get('job_cpu_s', 0):.1f} + Spark server "
                    f"{r.get('server_cpu_s', 0):.1f}); peak RSS job {r.get('peak_rss_mib', 0):,.0f} MiB, Spark server "
                    f"{r.get('server_peak_rss_mib', 0):,.0f} MiB; wrote {_mib(r.get('bytes_written', 0))}"
                    + (f"; median of {int(r['runs'])} runs (one per day)" if r.get("runs", 1) > 1 else ""),
                }
            )
        (x0, small), (x1, large) = by_x[0], by_x[-1]
        if x1 > x0:
            rows.append(
                {
                    "metric": f"scale {stage}: wall per unit of {driver}, largest vs smallest size",
                    "value": large["wall_s"] / x1,
                    "unit": f"s per {driver}",
                    "reference": small["wall_s"] / x0,
                    "note": f"value at {size_label(int(large['events_per_day']))} ({x1:,.0f}), reference at "
                    f"{size_label(int(small['events_per_day']))} ({x0:,.0f}), same run; ratio < 1: the fixed "
                    "cost is being amortised; ratio ~ (x1/x0)^(k-1) once the size-dependent part dominates",
                }
            )
        laws = coeffs.laws.get(stage, {})
        wall = laws.get("wall_s")
        if wall is not None:
            others = ", ".join(f"{res} k={laws[res].k:.2f}" for res in RESOURCES if res in laws and res != "wall_s")
            rows.append(
                {
                    "metric": f"scale {stage}: growth exponent k (wall)",
                    "value": wall.k,
                    "unit": "exponent",
                    "note": f"wall_s ≈ {_law(wall, ' s')} over x = {driver}, fitted on {len(wall.points)} sizes "
                    f"(benchmarks.scale_fit.fit_law){'; ' + wall.note if wall.note else ''}; {others}",
                }
            )
    return rows


def fit_table(coeffs: Coefficients) -> str:
    """The fitted laws (``benchmarks.scale_fit``), one line per (stage, resource), with the self-check
    (refit without the largest size, predict it) where three sizes exist."""
    checks = {(c.stage, c.resource): c for c in self_check(coeffs)}
    lines = [
        f"{'stage':9s} {'resource':20s} {'driver':26s} {'fixed':>10s} {'b':>10s} {'k':>5s} {'n':>2s}  self-check",
    ]
    for stage, laws in coeffs.laws.items():
        for res, law in laws.items():
            c = checks.get((stage, res))
            check = (
                f"{c.error:+.0%} at {size_label(int(c.events_per_day))}{'' if c.judged else ' (not judged)'}"
                if c
                else ""
            )
            lines.append(
                f"{stage:9s} {res:20s} {law.driver:26s} {law.fixed:10.3g} {law.b:10.3g} {law.k:5.2f} "
                f"{len(law.points):2d}  {check}"
            )
    return "\n".join(lines)


def failure_row(failure: Mapping[str, Any], curve: str) -> dict[str, Any]:
    """The row of a stage that could not complete a size: no value; stage, size, resource, curve."""
    return {
        "metric": f"scale {failure['stage']} {failure['size']} FAILED",
        "note": f"FAILED: {failure['stage']} at {failure['size']} events a day ran out of {failure['resource']}: "
        f"{failure['error']}; {curve}",
    }


def curve(rows: Sequence[Mapping[str, Any]], resource_name: str, attempt: Measure | None = None) -> str:
    """The measured series of one resource of a stage over the sizes that completed, and the failed
    attempt's figure: what shows the resource running out."""
    key = "peak_rss_mib" if resource_name.startswith("memory") else "wall_s"
    if "Spark" in resource_name:
        key = "server_peak_rss_mib"
    unit = " MiB" if "rss" in key else " s"
    points = [f"{size_label(int(r['events_per_day']))} {r.get(key, 0):,.0f}{unit}" for r in rows]
    if attempt is not None:
        points.append(f"failed attempt {getattr(attempt, key):,.0f}{unit} after {attempt.wall_s:,.0f} s")
    return f"{key} curve: " + (", ".join(points) if points else "no smaller size measured")
