"""Chaos run: the whole loop over a generated week while task processes are killed at random.

The demo loop of ``tests/demo_loop.py`` (ingest → validate → train → gate → promote → score →
monitor → drift → retrain → promote, 8 days, drift on day 7) runs through the real scheduler
twice on the same generated world: once clean (``clean_demo``, shared with the e2e demo test)
and once here while a seeded, bounded injector SIGKILLs task processes:

* it waits a seeded gap, then for a job process (``python -m jobs.*``) started by one of the
  scheduler's task processes, lets it run a seeded 0.3–6 s, then crashes either the job's
  process tree (what a killed pod does: Spark JVM and Python workers included) or the whole
  task process tree above it (the Airflow task runner too: what a killed worker does);
* a job of a module not hit yet is preferred (for up to 90 s), so the faults spread over the
  loop's stages; never the same task twice (each task has 2 retries), at most ``MAX_FAULTS``
  faults and none after ``MAX_SECONDS``.

Airflow retries each killed try (``retry_delay`` shortened to 2 s through
``RECSYS__AIRFLOW__RETRY_DELAY_S``), and the end state must equal the clean run's: curated and
quarantine byte-identical, the same recommendations (rows and model version per day), the same
registry (versions, aliases, tags), the same timeline (model per day, hit-rate, alerts, retrain
decisions, promotions), no run failed and the same asset events — nothing lost, nothing
duplicated. The injector's record (what was killed, when, how) is in the reliability report.
"""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path

import pytest

from tests.reliability.harness import CaseResult, FaultInjector, cmdline, crash_tree, descendants, row_diff

pytestmark = pytest.mark.reliability

SEED = 2026
MAX_FAULTS = 6
MAX_SECONDS = 1500
GAP = (5.0, 40.0)  # seconds between faults
RUN_FOR = (0.3, 6.0)  # how long a chosen job runs before it is killed
PREFER_NEW_S = 90.0  # how long a job of a module not hit yet is waited for


def _ppid(pid: int) -> int | None:
    try:
        return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[-1].split()[1])
    except (FileNotFoundError, IndexError, ValueError):
        return None


def _jobs(scheduler: int) -> dict[int, tuple[str, ...]]:
    """Job processes (``python -m jobs.X …``) below the scheduler → their command line."""
    out = {}
    for pid in descendants(scheduler):
        argv = cmdline(pid)
        if len(argv) >= 3 and argv[1] == "-m" and argv[2].startswith("jobs."):
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
        self.killed: set[tuple[str, ...]] = set()
        self.errors: list[str] = []

    def __call__(self, stack, done: threading.Event) -> None:
        try:
            self._run(stack, done)
        except Exception as exc:  # reported by the test, not lost in a thread
            self.errors.append(f"{type(exc).__name__}: {exc}")

    def _choose(self, scheduler: int, done: threading.Event) -> tuple[int, tuple[str, ...]] | None:
        hit = {f.target for f in self.inj.faults}
        since = time.monotonic()
        while not done.is_set() and self.inj.budget_left():
            fresh = {p: c for p, c in _jobs(scheduler).items() if _task_key(c) not in self.killed}
            new = {p: c for p, c in fresh.items() if c[1] not in hit}
            pool = new or (fresh if time.monotonic() - since > PREFER_NEW_S else {})
            if pool:
                pid = self.inj.pick(sorted(pool))
                return pid, pool[pid]
            done.wait(0.2)
        return None

    def _run(self, stack, done: threading.Event) -> None:
        pid_file = stack.pid_file("scheduler")
        while not pid_file.exists():
            if done.wait(1):
                return
        scheduler = int(pid_file.read_text())
        while self.inj.budget_left() and not done.wait(self.inj.uniform(*GAP)):
            chosen = self._choose(scheduler, done)
            if chosen is None:
                return
            target, argv = chosen
            time.sleep(self.inj.uniform(*RUN_FOR))
            kind = self.inj.pick(["job process tree", "task process tree"])
            root = target if kind == "job process tree" else _ppid(target)
            if root is None or cmdline(target)[1:] != list(argv):
                continue  # finished meanwhile: pick another one
            crash_tree(root)
            self.killed.add(_task_key(argv))
            self.inj.record("sigkill", argv[1], tree=kind, argv=" ".join(_task_key(argv)[1:])[:160])


@pytest.mark.timeout(6000)
def test_chaos_run_of_the_whole_loop_ends_as_the_clean_run(clean_demo, tmp_path, report):
    from tests.demo_loop import run_demo

    assert clean_demo.returncode == 0, clean_demo.failure()
    chaos = Chaos(SEED)
    run = run_demo(tmp_path, {"RECSYS__AIRFLOW__RETRY_DELAY_S": "2"}, during=chaos, timeout=3000)
    faults = chaos.inj.faults
    assert chaos.errors == []
    assert run.returncode == 0, run.failure()
    print("faults:", json.dumps([{"at_s": f.at, "job": f.target, **f.detail} for f in faults], indent=1))
    assert len(faults) >= 3, f"only {len(faults)} faults injected: {[f.detail for f in faults]}"
    assert len({f.target for f in faults}) >= 3, faults  # the faults hit several stages
    clean, got = clean_demo.end_state, run.end_state
    (tmp_path / "end_state.clean.json").write_text(json.dumps(clean, indent=1, sort_keys=True))
    (tmp_path / "end_state.chaos.json").write_text(json.dumps(got, indent=1, sort_keys=True))
    keys = ("curated", "quarantine", "recommendations", "registry", "timeline", "runs", "asset_events")
    differs = [key for key in keys if got[key] != clean[key]]
    assert differs == [], f"differs from the clean run: {differs}; see {tmp_path}/end_state.*.json"
    # No run failed; the only one not finished is recsys_ingest's scheduled run of today, whose
    # sensor waits for a landing day the generated world does not have (the clean run has it too).
    assert all("failed" not in s["states"] for s in got["runs"].values()), got["runs"]
    assert got["runs"]["recsys_train"]["triggered"] == 1  # the drift-triggered retraining, once
    curated = Path("data") / "curated" / "events"  # RECSYS__STORAGE__ROOT is <state>/data
    diff = row_diff(clean_demo.stack.state / curated, run.stack.state / curated, sorted(got["curated"]))
    assert diff["rows_lost"] == 0 and diff["rows_duplicated"] == 0, diff
    report.record(
        CaseResult(
            "chaos: whole loop, random task kills",
            "test_chaos_run_of_the_whole_loop_ends_as_the_clean_run",
            faults_injected=len(faults),
            runs_recovered=len(faults),
            rows_expected=diff["rows_expected"],
            rows_lost=diff["rows_lost"],
            rows_duplicated=diff["rows_duplicated"],
            seconds=run.seconds,
            details={
                "seed": SEED,
                "faults": [{"at_s": f.at, "job": f.target, **f.detail} for f in faults],
                "clean_run_s": clean_demo.seconds,
                "registry_versions": len(got["registry"]["versions"]),
            },
        )
    )
