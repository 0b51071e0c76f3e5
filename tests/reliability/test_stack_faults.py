"""The real local stack: the scheduler host crashes mid-backfill, then operators duplicate work.

Fault 1 — **scheduler crash**. A two-day ``recsys_ingest`` backfill runs through the real
scheduler (LocalExecutor). At a seeded moment (an ingest job running, a curated partition being
staged, or a validation running) the scheduler's whole process tree is crashed at once:
the restart loop (``bash``), the scheduler, the LocalExecutor workers, the task processes and
the Spark/GX jobs they started in their own sessions — everything that dies with the host or
pod. Nothing of the old attempt survives to finish behind Airflow's back. The scheduler is then
restarted with ``scripts/stack.py`` (``up(stack, only=("scheduler",))``). The new scheduler
declares the dead one failed after ``scheduler_health_check_threshold`` (30 s) and resets its
running tasks (``orphaned_tasks_check_interval``, 15 s in this tier; 300 s by default — see
``tests/reliability/conftest.py``); they run again. The wait for the runs is bounded: past it
the test fails listing every unfinished task instance and its state.

Faults 2-4 — **duplicates**: the same logical date triggered again (refused: 409, no new run);
then, in one round, day 1's successful run cleared and re-run while a backfill with
``reprocess_behavior: completed`` re-runs day 2's completed run. The data stays byte-identical.

Checked against a clean in-process run on a copy of the same landing days: checksums of every
curated and quarantine file, row counts and event ids (rows lost / duplicated = 0), validation
verdicts, no staging/trash leftovers, one ``recsys_curated_events`` asset event per successful
run (each re-run emits its own event: consumers key on ``dt``), and a reader thread that never
saw a partial partition.
"""

from __future__ import annotations

import shutil
import time
from dataclasses import dataclass
from datetime import date
from pathlib import Path

import pytest

from tests.reliability.harness import (
    CaseResult,
    FaultInjector,
    PartitionPoller,
    alive,
    asset_events,
    cmdline,
    crash_tree,
    descendants,
    leftovers,
    row_diff,
    state_fingerprint,
    wait_until,
    zone_fingerprint,
)

pytestmark = pytest.mark.reliability

DAG = "recsys_ingest"
DAYS = ("2026-07-01", "2026-07-02")
RUN_IDS = {f"backfill__{d}T00:00:00+00:00" for d in DAYS}
ASSET = "recsys_curated_events"
TRIGGERS = ("ingest job running", "curated partition staged", "validation running")
RUN_TIMEOUT = 480
ZONES = ("curated", "quarantine")  # what this DAG writes (scoring, if another test runs it, is not ours)


def _jobs_under(root: int, module: str) -> list[int]:
    return [p for p in descendants(root) if f"jobs.{module}" in " ".join(cmdline(p))]


def _staging(curated: Path) -> bool:
    return any(p.name.startswith(tuple(f".staging-dt={d}" for d in DAYS)) for p in curated.iterdir())


def _wait_runs(api, run_ids: set[str], timeout: float = RUN_TIMEOUT) -> dict[str, str]:
    """Bounded wait for runs to finish; on timeout a failure naming every unfinished task."""
    deadline = time.monotonic() + timeout
    states: dict[str, str] = {}
    while time.monotonic() < deadline:
        runs = {r["dag_run_id"]: r["state"] for r in api.runs(DAG, limit=200) if r["dag_run_id"] in run_ids}
        states = runs
        if set(runs) == run_ids and all(s in ("success", "failed") for s in runs.values()):
            return runs
        time.sleep(3)
    stuck = {}
    for run_id in sorted(run_ids):
        tis = api.call("GET", f"/dags/{DAG}/dagRuns/{run_id}/taskInstances")["task_instances"]
        stuck[run_id] = {t["task_id"]: f"{t['state']} (try {t['try_number']})" for t in tis}
    raise AssertionError(f"runs of {DAG} not finished after {timeout:.0f}s: {states}; task instances: {stuck}")


def _tries(api, run_id: str) -> dict[str, int]:
    tis = api.call("GET", f"/dags/{DAG}/dagRuns/{run_id}/taskInstances")["task_instances"]
    return {t["task_id"]: t["try_number"] for t in tis}


def _reference(spark, cfg, tmp_path: Path) -> Path:
    """Clean in-process ingestion of the same landing days into a separate root."""
    import os

    from jobs.core.config import load_config
    from jobs.ingest.job import ingest_day

    ref = tmp_path / "reference"
    for day in DAYS:
        shutil.copytree(Path(cfg.storage.zone("landing")) / f"dt={day}", ref / "landing/events" / f"dt={day}")
    ref_cfg = load_config(environ={**os.environ, "RECSYS__STORAGE__ROOT": str(ref)})
    for day in DAYS:
        ingest_day(ref_cfg, spark, date.fromisoformat(day))
    return ref


@dataclass
class Landing:
    """The generated landing days in the stack's data root and their clean reference."""

    ref: Path
    expected: dict
    crash_done: bool = False


@pytest.fixture(scope="module")
def landing(live_stack, spark, tmp_path_factory) -> Landing:
    from jobs import sim as gen
    from jobs.core.config import get_config

    cfg = get_config()
    params = gen.WorldParams(users=300, items=120, factors=4, seed=31, events_per_day=3000)
    gen.generate(
        params, date.fromisoformat(DAYS[0]), len(DAYS), cfg.storage.zone("landing"), cfg.storage.zone("ground_truth")
    )
    ref = _reference(spark, cfg, tmp_path_factory.mktemp("stack-reference"))
    expected = {z: zone_fingerprint(ref / z, DAYS) for z in ("curated/events", "quarantine/events")}
    Path(cfg.storage.zone("curated")).mkdir(parents=True, exist_ok=True)
    return Landing(ref, expected)


def _zones_now(cfg) -> dict:
    got = {
        z: zone_fingerprint(Path(cfg.storage.root_path()) / z, DAYS) for z in ("curated/events", "quarantine/events")
    }
    assert all(v["validated"] for v in got["curated/events"].values()), got
    return {z: {d: {**v, "validated": None} for d, v in f.items()} for z, f in got.items()}


def test_scheduler_crash_mid_backfill(live_stack, admin_client, landing, report):
    from jobs.core.config import get_config
    from scripts.stack import up

    started = time.monotonic()
    api = admin_client
    cfg = get_config()
    ref = landing.ref
    curated, quarantine = Path(cfg.storage.zone("curated")), Path(cfg.storage.zone("quarantine"))
    api.wait_for_dag(DAG)
    inj = FaultInjector(seed=17, max_faults=1, max_seconds=900)
    trigger = inj.pick(TRIGGERS)
    scheduler = live_stack.running()["scheduler"]

    with PartitionPoller([curated, quarantine], interval=0.005) as poller:
        backfill = api.backfill(DAG, f"{DAYS[0]}T00:00:00Z", f"{DAYS[-1]}T00:00:00Z", "completed")
        api.unpause(DAG)
        hit = {
            "ingest job running": lambda: _jobs_under(scheduler, "ingest"),
            "curated partition staged": lambda: _staging(curated),
            "validation running": lambda: _jobs_under(scheduler, "validate"),
        }[trigger]
        wait_until(hit, 300, interval=0.005, what=f"the crash trigger {trigger!r}")
        jobs_killed = len(_jobs_under(scheduler, "ingest")) + len(_jobs_under(scheduler, "validate"))
        killed = crash_tree(scheduler)
        crashed_at = time.monotonic()
        inj.record("host crash", "scheduler + LocalExecutor workers + task processes", trigger=trigger)
        assert not any(alive(p) for p in killed)
        up(live_stack, only=("scheduler",))
        assert live_stack.running()["scheduler"] != scheduler
        states = _wait_runs(api, RUN_IDS)
        recovered_in = time.monotonic() - crashed_at
        api.wait_backfill(backfill["id"], timeout=120)
    assert set(states.values()) == {"success"}, states
    tries = {run_id: _tries(api, run_id) for run_id in RUN_IDS}
    assert any(t > 1 for per_run in tries.values() for t in per_run.values()), tries  # tasks re-ran
    assert _zones_now(cfg) == landing.expected
    assert poller.violations == [], poller.violations[:5]
    assert leftovers(curated) == [] and leftovers(quarantine) == []
    rows = row_diff(ref / "curated/events", curated, DAYS)
    assert rows["rows_lost"] == 0 and rows["rows_duplicated"] == 0, rows
    assert asset_events(api, ASSET, RUN_IDS) == dict.fromkeys(DAYS, 1)
    landing.crash_done = True
    report.record(
        CaseResult(
            "stack: scheduler host crash",
            "test_scheduler_crash_mid_backfill",
            faults_injected=1,
            runs_recovered=len(states),
            rows_expected=rows["rows_expected"],
            rows_lost=rows["rows_lost"],
            rows_duplicated=rows["rows_duplicated"],
            seconds=round(time.monotonic() - started, 1),
            details={
                "trigger": trigger,
                "processes_killed": len(killed),
                "job_processes_killed": jobs_killed,
                "crash_to_runs_done_s": round(recovered_in, 1),
                "try_numbers": tries,
                "reader_checks": poller.checks,
            },
        )
    )


def test_duplicate_trigger_backfill_and_clear_change_nothing(admin_client, landing, report):
    from jobs.core.config import get_config

    started = time.monotonic()
    api = admin_client
    cfg = get_config()
    ref = landing.ref
    curated, quarantine = Path(cfg.storage.zone("curated")), Path(cfg.storage.zone("quarantine"))
    api.wait_for_dag(DAG)
    api.unpause(DAG)
    if not landing.crash_done:  # the crash case failed: start from a clean backfill instead
        first_backfill = api.backfill(DAG, f"{DAYS[0]}T00:00:00Z", f"{DAYS[-1]}T00:00:00Z", "completed")
        api.wait_backfill(first_backfill["id"], timeout=RUN_TIMEOUT)
    assert set(_wait_runs(api, RUN_IDS).values()) == {"success"}
    events_before = asset_events(api, ASSET, RUN_IDS)
    inj = FaultInjector(seed=18, max_faults=3)
    before = api.runs(DAG, limit=200)
    state = state_fingerprint(cfg, DAYS, api=api, assets=[ASSET], zones=ZONES)
    again = api.request("POST", f"/dags/{DAG}/dagRuns", json={"logical_date": f"{DAYS[0]}T00:00:00Z", "conf": {}})
    assert again.status_code == 409, again.text
    assert len(api.runs(DAG, limit=200)) == len(before)
    assert state_fingerprint(cfg, DAYS, api=api, assets=[ASSET], zones=ZONES) == state  # nothing at all changed
    inj.record("duplicate trigger", DAYS[0])
    first = sorted(RUN_IDS)[0]
    with PartitionPoller([curated, quarantine], interval=0.005) as poller:
        # One round, two duplicates at once: day 1's successful run is cleared and re-run while
        # day 2 is reprocessed by a new backfill of completed runs (they touch different days).
        cleared = api.request("POST", f"/dags/{DAG}/dagRuns/{first}/clear", json={"dry_run": False})
        assert cleared.status_code == 200, cleared.text
        inj.record("clear and re-run", first)
        backfill = api.backfill(DAG, f"{DAYS[1]}T00:00:00Z", f"{DAYS[1]}T00:00:00Z", "completed")
        inj.record("backfill re-run", "reprocess_behavior=completed", days=[DAYS[1]])
        api.wait_backfill(backfill["id"], timeout=RUN_TIMEOUT)
        states = _wait_runs(api, RUN_IDS)
        assert states == dict.fromkeys(RUN_IDS, "success"), states
        tries = {run_id: _tries(api, run_id) for run_id in RUN_IDS}
    after = state_fingerprint(cfg, DAYS, api=api, assets=[ASSET], zones=ZONES)
    assert {k: v for k, v in after.items() if k != "asset_events"} == {
        k: v for k, v in state.items() if k != "asset_events"
    }  # every file, row count and verdict as before the re-runs
    assert poller.violations == [], poller.violations[:5]
    assert leftovers(curated) == [] and leftovers(quarantine) == []
    rows = row_diff(ref / "curated/events", curated, DAYS)
    assert rows["rows_lost"] == 0 and rows["rows_duplicated"] == 0, rows
    assert _zones_now(cfg) == landing.expected
    events = asset_events(api, ASSET, RUN_IDS)
    assert events == {d: events_before[d] + 1 for d in DAYS}, events  # each re-run emits its event
    assert all(t["ingest"] >= 2 for t in tries.values()), tries  # both days really ran again
    report.record(
        CaseResult(
            "stack: duplicate trigger/backfill/clear",
            "test_duplicate_trigger_backfill_and_clear_change_nothing",
            faults_injected=len(inj.faults),
            # the runs that really ran again after the duplicates and ended in success
            runs_recovered=sum(tries[r]["ingest"] >= 2 and states[r] == "success" for r in RUN_IDS),
            rows_expected=rows["rows_expected"],
            rows_lost=rows["rows_lost"],
            rows_duplicated=rows["rows_duplicated"],
            seconds=round(time.monotonic() - started, 1),
            details={
                "duplicate_trigger": again.status_code,
                "asset_events_per_day": dict(asset_events(api, ASSET, RUN_IDS)),
            },
        )
    )
