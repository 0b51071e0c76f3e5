"""Fault-injection harness of the reliability tier: inject real faults, then compare end states.

Every reliability test does the same three things: build a small generated world, run a stage
while injecting a fault with a real mechanism (SIGKILL, a dead tracking server, a read-only or
full folder), and compare the end state with a clean reference run on the same world. The
pieces here are shared by all of them (ingest, scoring, training, registry, stack, disk and
the chaos run of the whole loop):

* ``FaultInjector`` — seeded choices and a bounded budget (count and time): a failing seed is
  replayed exactly, and a chaos loop can never inject forever.
* process tools — a process tree from ``/proc`` and ``crash_tree`` (SIGSTOP every process of the
  tree, then SIGKILL them all: what a host or pod crash does, nothing can react or respawn).
* ``PublishPhases`` — which phase of a partition's publish (staging, a file written, published)
  an attempt has reached, from the zone alone: a kill can aim at a phase, not at a time.
* ``PartitionPoller`` — a reader thread that checks, while writers run, that every visible
  ``dt=`` partition holds its ``_SUCCESS`` manifest and exactly the files and rows it lists.
* fingerprints — checksums of every published partition (curated, quarantine, recommendations,
  …), row diffs by ``event_id`` (rows lost / duplicated), the MLflow registry's versions,
  aliases and tags with the invariants a promotion must keep, and asset events per ``dt``.
* ``FlakyProxy`` — an HTTP forwarder in front of MLflow that "dies" after exactly N requests
  (before or after forwarding the last one), so every interleaving of a registry operation with
  an outage can be replayed; ``MlflowServer`` — a private tracking server a test may kill,
  freeze (SIGSTOP) and restart.
* ``read_only`` / ``full_disk`` — a folder that refuses writes (``chmod``, or ``chattr +i`` as
  root, where permission bits do not apply) and a folder on a tiny tmpfs (ENOSPC).
* ``Report`` — counts per case (faults injected, runs recovered, rows lost, rows duplicated) in
  ``test-artifacts/reliability/report.json`` and a table at the end of the session.
"""

from __future__ import annotations

import contextlib
import hashlib
import http.client
import json
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pyarrow.parquet as pq
import pytest

REPO = Path(__file__).resolve().parents[2]
SUCCESS = "_SUCCESS"
VALIDATION = "_VALIDATION"
PUBLISHED_ZONES = ("curated", "quarantine", "recommendations")


# ---- bounded, seeded fault injection ------------------------------------------------------


class FaultBudgetExceeded(RuntimeError):
    """A test tried to inject more faults (or for longer) than its budget allows."""


@dataclass
class Fault:
    kind: str
    target: str
    at: float
    detail: dict[str, Any] = field(default_factory=dict)


class FaultInjector:
    """Seeded choices and a record of the faults injected, within a count and time budget.

    Args:
        seed: fixes every choice (which phase to hit, how long to wait), so a failure replays.
        max_faults: no more than this many faults are injected.
        max_seconds: no fault is injected after this many seconds (a chaos run must end).
    """

    def __init__(self, seed: int, max_faults: int, max_seconds: float | None = None) -> None:
        self.seed = seed
        self.rng = random.Random(seed)
        self.max_faults = max_faults
        self.max_seconds = max_seconds
        self.started = time.monotonic()
        self.faults: list[Fault] = []

    def budget_left(self) -> bool:
        in_time = self.max_seconds is None or time.monotonic() - self.started < self.max_seconds
        return len(self.faults) < self.max_faults and in_time

    def pick(self, options: Iterable[Any]) -> Any:
        return self.rng.choice(list(options))

    def uniform(self, low: float, high: float) -> float:
        return self.rng.uniform(low, high)

    def record(self, kind: str, target: str, **detail: Any) -> Fault:
        if not self.budget_left():
            raise FaultBudgetExceeded(f"fault budget exhausted ({self.max_faults} faults, {self.max_seconds}s)")
        fault = Fault(kind, target, round(time.monotonic() - self.started, 3), detail)
        self.faults.append(fault)
        return fault


# ---- the phases of a publish, as seen on disk ------------------------------------------


def _inode(path: Path) -> int | None:
    try:
        return path.stat().st_ino
    except FileNotFoundError:
        return None


def _stagings(zone: Path, day: str) -> set[str]:
    try:
        return {p.name for p in zone.iterdir() if p.name.startswith(f".staging-dt={day}")}
    except FileNotFoundError:
        return set()


class PublishPhases:
    """Which phase of the publish protocol (``jobs.core.storage``) a fresh attempt has reached.

    Judged from the zones only, as a kill-at-phase test needs it: for each zone name ``z`` in
    ``zones``, ``"z staging"`` (a new staging folder of ``day``), ``"z file written"`` (a file in
    it) and ``"z published"`` (``dt=day`` is a new folder: the rename swap happened). Create one
    right before launching the attempt: what exists then does not count.
    """

    def __init__(self, zones: dict[str, Path], day: str) -> None:
        self.zones, self.day = zones, day
        self.old_stagings = {z: _stagings(p, day) for z, p in zones.items()}
        self.old_inodes = {z: _inode(p / f"dt={day}") for z, p in zones.items()}

    def _new_staging(self, zone: str, with_file: bool = False) -> bool:
        path = self.zones[zone]
        for name in _stagings(path, self.day) - self.old_stagings[zone]:
            if not with_file:
                return True
            try:
                if any((path / name).iterdir()):
                    return True
            except FileNotFoundError:
                continue
        return False

    def _republished(self, zone: str) -> bool:
        now = _inode(self.zones[zone] / f"dt={self.day}")
        return now is not None and now != self.old_inodes[zone]

    def reached(self, phase: str) -> bool:
        zone, _, step = phase.partition(" ")
        if step == "staging":
            return self._new_staging(zone)
        if step == "file written":
            return self._new_staging(zone, with_file=True)
        if step == "published":
            return self._republished(zone)
        raise ValueError(f"unknown phase {phase!r}")


# ---- processes ----------------------------------------------------------------------------


def _proc_table() -> dict[int, tuple[int, int, str]]:
    """pid → (ppid, pgid, state) for every process, from /proc."""
    table = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[-1].split()
        except OSError:
            continue
        table[int(stat.parent.name)] = (int(fields[1]), int(fields[2]), fields[0])
    return table


def descendants(pid: int) -> list[int]:
    """Every live descendant of ``pid`` (any process group or session), parents first."""
    children: dict[int, list[int]] = {}
    for child, (ppid, _, state) in _proc_table().items():
        if state != "Z":
            children.setdefault(ppid, []).append(child)
    out, todo = [], [pid]
    while todo:
        for child in sorted(children.get(todo.pop(0), [])):
            out.append(child)
            todo.append(child)
    return out


def cmdline(pid: int) -> list[str]:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace").split("\0")
    except OSError:
        return []


def alive(pid: int) -> bool:
    state = _proc_table().get(pid)
    return state is not None and state[2] != "Z"


def crash_tree(root: int, timeout: float = 30.0) -> list[int]:
    """Crash a process and every descendant at once, as a host or pod crash would.

    SIGSTOP first (repeated until the tree stops growing), so that no process can react, exit
    cleanly or restart another; then SIGKILL every process. Children in other sessions (a job
    started with ``start_new_session``) are included: they would die with the host too.
    Zombies count as dead; they are left to their parents to reap (a ``Popen`` that reaps its
    own child later still sees the real exit status).

    Returns:
        the pids that were killed.
    """
    frozen: set[int] = set()
    for _ in range(20):
        tree = {root, *descendants(root)} if alive(root) else set(descendants(root))
        new = tree - frozen
        if not new:
            break
        for pid in new:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGSTOP)
        frozen |= new
    for pid in frozen:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not any(alive(p) for p in frozen):
            return sorted(frozen)
        time.sleep(0.1)
    raise AssertionError(f"processes survived SIGKILL: {[p for p in frozen if alive(p)]}")


def signal_tree(root: int, sig: int) -> list[int]:
    """Send ``sig`` to ``root`` and its descendants (SIGSTOP/SIGCONT to freeze and thaw)."""
    pids = [root, *descendants(root)]
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, sig)
    return pids


def wait_until(predicate: Callable[[], Any], timeout: float, interval: float = 0.01, what: str = "condition") -> Any:
    """Poll ``predicate`` until it returns a truthy value; AssertionError naming ``what`` on timeout."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def job_env(**extra: str) -> dict[str, str]:
    """Environment of a job subprocess: this session's, the repository importable."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), str(REPO / "plugins")])}
    env.setdefault("PYSPARK_PYTHON", sys.executable)
    env["NO_PROXY"] = env["no_proxy"] = "127.0.0.1,localhost"
    env.update(extra)
    return env


# ---- a job task killed in a phase of its publish, then retried -----------------------------


def launch_job(task_id: str, module: str, job_args: list[str]) -> tuple:
    """Run a Spark job through the real task launcher (``JobOperator.execute``) in a thread.

    Returns ``(operator, thread, outcome)``; ``outcome`` gets ``result`` or ``error`` when done.
    """
    from recsys_airflow.launcher import JobOperator

    op = JobOperator(task_id=task_id, module=module, spark=True, job_args=job_args)
    outcome: dict[str, Any] = {}

    def run() -> None:
        try:
            outcome["result"] = op.execute(context={})
        except BaseException as exc:
            outcome["error"] = exc

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    wait_until(lambda: op._proc is not None, 60, what=f"{task_id} to start")
    return op, thread, outcome


def kill_in_phases(
    inj: FaultInjector,
    phases: Iterable[str],
    zones: dict[str, Path],
    day: str,
    launch: Callable[[str], tuple],
    target: str,
) -> list[dict[str, Any]]:
    """Each phase (in the injector's seeded order): launch an attempt, SIGKILL its tree at that phase.

    Each killed attempt must fail as a *retryable* task failure naming SIGKILL, and leave no
    ``dt=day`` folder of ``zones`` visible without its manifest. Returns what was killed where.
    """
    from airflow.sdk.exceptions import AirflowException, AirflowFailException

    phases = list(phases)
    kills = []
    for attempt, phase in enumerate(inj.rng.sample(phases, len(phases)), start=1):
        jitter = inj.uniform(0.0, 0.03)
        seen = PublishPhases(zones, day)
        op, thread, outcome = launch(f"{target}-attempt-{attempt}")
        wait_until(
            lambda: seen.reached(phase) or op._proc.poll() is not None,  # noqa: B023 - evaluated now
            300,
            interval=0.002,
            what=f"phase {phase!r}",
        )
        assert op._proc.poll() is None, f"attempt {attempt}: the job finished before phase {phase!r} was hit"
        time.sleep(jitter)
        crash_tree(op._proc.pid)
        inj.record("sigkill", target, phase=phase, jitter_s=round(jitter, 4))
        thread.join(60)
        error = outcome.get("error")
        assert isinstance(error, AirflowException) and not isinstance(error, AirflowFailException), outcome
        assert "killed by SIGKILL" in str(error)
        kills.append({"attempt": attempt, "phase": phase, "jitter_s": round(jitter, 4)})
        for zone in zones.values():
            part = zone / f"dt={day}"
            assert not part.exists() or (part / SUCCESS).is_file(), f"{part} visible without its manifest"
    return kills


# ---- readers: partitions, checksums, rows -------------------------------------------------


def zone_path(cfg: Any, zone: str) -> Path:
    from jobs.core import storage

    return storage.local_path(cfg.storage.zone(zone))


def partition_whole(part: Path) -> str | None:
    """None when the visible partition ``part`` is whole, else what is wrong with it.

    The directory is opened once and read through ``/proc/self/fd``, so a concurrent swap (the
    old partition renamed to ``.trash-*`` and deleted) cannot mix two versions in one check; if
    the directory stops being the one at ``part`` while being read, the check says so
    (``"swapped"``) instead of reporting a partial partition.
    """
    try:
        fd = os.open(part, os.O_RDONLY | os.O_DIRECTORY)
    except FileNotFoundError:
        return "swapped"
    try:
        inode = os.fstat(fd).st_ino
        base = f"/proc/self/fd/{fd}"
        try:
            manifest = json.loads(Path(base, SUCCESS).read_text())
            files = sorted(name for name in os.listdir(base) if name.endswith(".parquet"))
            rows = sum(pq.ParquetFile(f"{base}/{name}").metadata.num_rows for name in manifest.get("files", []))
        except (FileNotFoundError, OSError, ValueError) as exc:
            try:
                still_there = os.stat(part).st_ino == inode
            except FileNotFoundError:
                still_there = False
            if not still_there:
                return "swapped"
            return f"{part.name}: unreadable while visible ({type(exc).__name__}: {exc})"
        if files != sorted(manifest.get("files", [])):
            return f"{part.name}: files {files} != manifest {manifest.get('files')}"
        if rows != manifest.get("rows"):
            return f"{part.name}: {rows} parquet rows != manifest rows {manifest.get('rows')}"
        return None
    finally:
        os.close(fd)


class PartitionPoller(threading.Thread):
    """Reads the zones continuously while writers run, as a downstream reader would.

    A reader lists ``dt=*`` folders that hold ``_SUCCESS`` (``jobs.core.storage.published_days``);
    for each such folder this poller checks it is whole (``partition_whole``). A folder is
    checked again whenever its inode or modification time changes (a new version swapped in,
    an entry added or removed), so the poller costs little CPU beside the writers it watches.
    ``violations`` must stay empty; ``checks`` counts the partition versions checked, ``swaps``
    the checks that raced a publish (the old version renamed away mid-read: not a partial view),
    ``polls`` the passes over the zones.
    """

    def __init__(self, zones: Iterable[Path], interval: float = 0.01) -> None:
        super().__init__(daemon=True)
        self.zones = [Path(z) for z in zones]
        self.interval = interval
        self.checks = 0
        self.swaps = 0
        self.polls = 0
        self.violations: list[str] = []
        self._seen: dict[Path, tuple[int, int]] = {}
        self._stop_event = threading.Event()

    def _check(self, zone: Path, part: Path) -> None:
        try:
            st = part.stat()
        except FileNotFoundError:
            return
        key = (st.st_ino, st.st_mtime_ns)
        if self._seen.get(part) == key:
            return
        if not (part / SUCCESS).exists():
            if part.exists() and not (part / SUCCESS).exists():
                self.violations.append(f"{zone.name}/{part.name}: visible without {SUCCESS}")
            return
        problem = partition_whole(part)
        if problem == "swapped":
            self.swaps += 1
        elif problem:
            self.violations.append(f"{zone.name}/{problem}")
        else:
            self.checks += 1
            self._seen[part] = key

    def run(self) -> None:
        while not self._stop_event.is_set():
            for zone in self.zones:
                try:
                    candidates = [p for p in zone.iterdir() if p.name.startswith("dt=")]
                except FileNotFoundError:
                    continue
                for part in candidates:
                    self._check(zone, part)
            self.polls += 1
            time.sleep(self.interval)

    def stop(self) -> PartitionPoller:
        self._stop_event.set()
        self.join(10)
        return self

    def __enter__(self) -> PartitionPoller:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def partition_checksums(part: Path) -> dict[str, str]:
    """sha256 of every file of a partition except the ``_VALIDATION`` marker (it names its report)."""
    return {p.name: sha256(p) for p in sorted(part.iterdir()) if p.is_file() and p.name != VALIDATION}


def zone_fingerprint(zone: Path, days: Iterable[str] | None = None) -> dict[str, dict[str, Any]]:
    """Per published day of a zone: file checksums, manifest rows, validation verdict."""
    wanted = set(days) if days is not None else None
    out: dict[str, dict[str, Any]] = {}
    if not zone.is_dir():
        return out
    for part in sorted(zone.glob("dt=*")):
        day = part.name[3:]
        if (wanted is not None and day not in wanted) or not (part / SUCCESS).is_file():
            continue
        manifest = json.loads((part / SUCCESS).read_text())
        validated = None
        if (part / VALIDATION).is_file():
            validated = bool(json.loads((part / VALIDATION).read_text()).get("success"))
        out[day] = {"files": partition_checksums(part), "rows": manifest.get("rows"), "validated": validated}
    return out


def leftovers(zone: Path) -> list[str]:
    """Hidden staging/trash folders and temporary files a crashed writer could leave behind."""
    if not zone.is_dir():
        return []
    return sorted(p.name for p in zone.iterdir() if p.name.startswith((".staging-", ".trash-")) or p.suffix == ".tmp")


def event_ids(part: Path | str) -> list[str]:
    """The ``event_id`` column of a published partition (a local folder or an object-store URI),
    in the order of the files its manifest lists; [] when the day is not published."""
    from jobs.core import storage

    manifest = storage.read_manifest(str(part))
    ids: list[str] = []
    for name in (manifest or {}).get("files", []):
        fs, path = storage.filesystem(storage.join(str(part), name))
        ids += pq.read_table(path, columns=["event_id"], filesystem=fs).column("event_id").to_pylist()
    return ids


def row_diff(reference_zone: Path | str, zone: Path | str, days: Iterable[str]) -> dict[str, int]:
    """Rows lost and duplicated in ``zone`` against the reference, by ``event_id``, over ``days``
    (either zone a local folder or an object-store URI).

    duplicated = copies of an id beyond the first plus ids the reference does not have.
    """
    expected = lost = duplicated = actual = 0
    for day in days:
        ref = event_ids(f"{str(reference_zone).rstrip('/')}/dt={day}")
        got = event_ids(f"{str(zone).rstrip('/')}/dt={day}")
        ref_set, counts = set(ref), Counter(got)
        expected += len(ref)
        actual += len(got)
        lost += len(ref_set - set(counts))
        duplicated += sum(c - 1 for c in counts.values()) + sum(c for i, c in counts.items() if i not in ref_set)
    return {"rows_expected": expected, "rows_actual": actual, "rows_lost": lost, "rows_duplicated": duplicated}


# ---- the MLflow registry ------------------------------------------------------------------

TIMESTAMP_TAGS = ("registered_at", "promoted_at", "git_commit")


def registry_state(cl: Any, name: str) -> dict[str, Any]:
    """Versions (run id, tags), aliases and model-level tags of a registered model."""
    model = cl.get_registered_model(name)
    versions = {
        str(mv.version): {"run_id": mv.run_id, "tags": dict(mv.tags)}
        for mv in cl.search_model_versions(f"name='{name}'")
    }
    return {"versions": versions, "aliases": dict(model.aliases), "model_tags": dict(model.tags)}


def journal_state(state: dict[str, Any]) -> str | None:
    """State of the last alias move (``jobs.registry`` journal): pending, done, undone or None."""
    raw = state["model_tags"].get("alias_move")
    return json.loads(raw)["state"] if raw else None


def normalised(state: dict[str, Any]) -> dict[str, Any]:
    """A registry state without what differs between two clean runs (timestamps, commit, the
    measured cost of producing a version)."""
    out = json.loads(json.dumps(state))
    if "alias_move" in out["model_tags"]:
        move = json.loads(out["model_tags"]["alias_move"])
        out["model_tags"]["alias_move"] = {k: move.get(k) for k in ("op", "target", "from", "state")}
    for v in out["versions"].values():
        v.pop("run_id", None)
        for key in TIMESTAMP_TAGS:
            v["tags"].pop(key, None)
        for key in [k for k in v["tags"] if k.startswith("cost.")]:  # measured seconds, not state
            v["tags"].pop(key)
        if "model_card" in v["tags"]:  # an artifact of the version's run, whose id differs per run
            v["tags"]["model_card"] = v["tags"]["model_card"].split("/", 2)[-1]
        if "decision_reason" in v["tags"]:
            v["tags"]["decision_reason"] = v["tags"]["decision_reason"].split(" (by ")[0]
    return out


def registry_problems(state: dict[str, Any], allow_pending: bool = False) -> list[str]:
    """What makes a registry state half-done; empty when it is consistent.

    A consistent registry has: every alias on an existing version; every version carrying its
    registration tags; a champion tagged with the decision that made it champion (and, for a
    promotion, who/when/why); a previous champion different from the champion and, after a
    promotion, tagged ``replaced_by`` the champion; at most one version tagged
    ``decision=promoted`` without ``replaced_by`` (the serving one); and no unfinished alias move
    (a ``pending`` journal entry, the ``alias_move`` model tag of ``jobs.registry``).

    With ``allow_pending`` a state with a journal entry is in transition: every registry
    operation settles the entry before it reads anything, and the one reader outside the
    registry (scoring) reads only the ``champion`` alias. Then only the aliases and the
    registration tags are checked.
    """
    problems = []
    versions, aliases = state["versions"], state["aliases"]
    for alias, version in aliases.items():
        if version not in versions:
            problems.append(f"alias {alias} → missing version {version}")
    for version, info in versions.items():
        if "registered_at" not in info["tags"]:
            problems.append(f"version {version} lacks its registration tags")
    if journal_state(state) == "pending":
        if not allow_pending:
            problems.append(f"unfinished alias move: {state['model_tags']['alias_move']}")
        return problems
    champion, previous = aliases.get("champion"), aliases.get("previous_champion")
    if champion in versions:
        tags = versions[champion]["tags"]
        decision = tags.get("decision")
        if decision == "promoted":
            missing = [t for t in ("decision_reason", "promoted_at", "promoted_by") if t not in tags]
            if missing:
                problems.append(f"champion {champion} lacks promotion tags {missing}")
            if previous in versions and versions[previous]["tags"].get("replaced_by") != champion:
                replaced = versions[previous]["tags"].get("replaced_by")
                problems.append(f"previous champion {previous} replaced_by={replaced!r}, not {champion}")
        elif decision != "rollback_restored":
            problems.append(f"champion {champion} has decision {decision!r}, not promoted/rollback_restored")
        if previous == champion:
            problems.append(f"previous_champion = champion = {champion}")
    stray = [
        v
        for v, i in versions.items()
        if i["tags"].get("decision") == "promoted" and "replaced_by" not in i["tags"] and v != champion
    ]
    if stray:
        problems.append(f"versions tagged promoted but not serving: {stray}")
    return problems


# ---- Airflow ------------------------------------------------------------------------------


def asset_events(api: Any, asset_name: str, run_ids: Iterable[str] | None = None) -> Counter:
    """Asset events of ``asset_name`` per ``extra['day']`` (optionally only from ``run_ids``)."""
    wanted = set(run_ids) if run_ids is not None else None
    events = api.call("GET", "/assets/events", params={"asset_id": api.asset_id(asset_name), "limit": 1000})
    counts: Counter = Counter()
    for event in events["asset_events"]:
        if wanted is not None and event.get("source_run_id") not in wanted:
            continue
        counts[event["extra"].get("day")] += 1
    return counts


def state_fingerprint(
    cfg: Any,
    days: Iterable[str] | None = None,
    *,
    registry: tuple[Any, str] | None = None,
    api: Any = None,
    assets: Iterable[str] = (),
    zones: Iterable[str] = PUBLISHED_ZONES,
) -> dict[str, Any]:
    """Everything a fault must leave as a clean run leaves it, as one comparable dict.

    Args:
        cfg: the pipeline configuration whose zones are read.
        days: restrict the zones to these days (default: every published day).
        registry: ``(MlflowClient, model name)``: versions, aliases, tags (normalised).
        api: an Airflow REST client: asset events per dt for each name in ``assets``.
        zones: the published zones to read (default: curated, quarantine, recommendations).
    """
    days = list(days) if days is not None else None
    out: dict[str, Any] = {zone: zone_fingerprint(zone_path(cfg, zone), days) for zone in zones}
    if registry is not None:
        out["registry"] = normalised(registry_state(*registry))
    if api is not None:
        out["asset_events"] = {name: dict(asset_events(api, name)) for name in assets}
    return out


# ---- MLflow: a private server and a proxy that can die ------------------------------------


class MlflowServer:
    """A private MLflow tracking server (SQLite store, local artifacts) in its own session."""

    def __init__(self, folder: Path, port: int | None = None) -> None:
        self.folder = folder
        self.port = port or free_port()
        self.proc: subprocess.Popen[bytes] | None = None
        self.starts = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def healthy(self) -> bool:
        try:
            with urllib.request.urlopen(f"{self.url}/health", timeout=2) as resp:
                return resp.status == 200
        except OSError:
            return False

    def start(self, timeout: float = 180) -> MlflowServer:
        self.folder.mkdir(parents=True, exist_ok=True)
        log = open(self.folder / "server.log", "ab")  # noqa: SIM115 - handed to the child
        self.proc = subprocess.Popen(
            [
                str(Path(sys.executable).parent / "mlflow"),
                "server",
                "--host",
                "127.0.0.1",
                "--port",
                str(self.port),
                "--workers",
                "1",
                "--backend-store-uri",
                f"sqlite:///{self.folder / 'mlflow.db'}",
                "--artifacts-destination",
                str(self.folder / "artifacts"),
            ],
            env={**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"},
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
        log.close()
        self.starts += 1
        deadline = time.monotonic() + timeout
        while not self.healthy():
            if self.proc.poll() is not None:
                tail = (self.folder / "server.log").read_text(errors="replace")[-2000:]
                raise AssertionError(f"MLflow server exited with {self.proc.returncode}:\n{tail}")
            if time.monotonic() > deadline:
                raise AssertionError(f"MLflow server on port {self.port} not healthy after {timeout}s")
            time.sleep(0.3)
        return self

    def kill(self) -> list[int]:
        """SIGKILL the server and its workers (a crash: no graceful shutdown)."""
        assert self.proc is not None
        killed = crash_tree(self.proc.pid)
        self.proc.wait(10)
        return killed

    def freeze(self) -> None:
        """SIGSTOP the server tree: connections are accepted by the kernel, never answered."""
        assert self.proc is not None
        signal_tree(self.proc.pid, signal.SIGSTOP)

    def thaw(self) -> None:
        assert self.proc is not None
        signal_tree(self.proc.pid, signal.SIGCONT)

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        signal_tree(self.proc.pid, signal.SIGCONT)
        crash_tree(self.proc.pid)
        self.proc.wait(10)


HOP_BY_HOP = {"connection", "keep-alive", "transfer-encoding", "te", "trailer", "upgrade", "proxy-connection"}


class FlakyProxy:
    """An HTTP forwarder to ``upstream`` that can die after exactly N more requests.

    ``cut_after(n, after_forward)``: the next ``n`` requests are forwarded; the one after is
    either dropped before it reaches the server (``after_forward=False``) or forwarded and its
    response dropped (``True``: the server applied it, the client never hears). From then on
    every connection is closed without an answer — to the client the server is gone — until
    ``restore()``. ``log`` lists ``(method, path)`` of the forwarded requests.
    """

    def __init__(self, upstream: str) -> None:
        parts = urlsplit(upstream)
        self.upstream = (parts.hostname or "127.0.0.1", parts.port or 80)
        self.log: list[tuple[str, str]] = []
        self.dropped = 0
        self._budget: int | None = None
        self._after_forward = False
        self._down = False
        self._lock = threading.Lock()
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: Any) -> None:
                pass

            def _body(self) -> bytes:
                if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
                    chunks = []
                    while True:
                        size = int(self.rfile.readline().strip() or b"0", 16)
                        if size == 0:
                            self.rfile.readline()
                            return b"".join(chunks)
                        chunks.append(self.rfile.read(size))
                        self.rfile.readline()
                return self.rfile.read(int(self.headers.get("Content-Length") or 0))

            def _handle(self) -> None:
                body = self._body()
                forward, answer = proxy._admit()
                if not forward:
                    self.close_connection = True
                    return
                conn = http.client.HTTPConnection(*proxy.upstream, timeout=120)
                headers = {k: v for k, v in self.headers.items() if k.lower() not in HOP_BY_HOP}
                headers["Content-Length"] = str(len(body))
                conn.request(self.command, self.path, body=body, headers=headers)
                resp = conn.getresponse()
                payload = resp.read()
                conn.close()
                with proxy._lock:
                    proxy.log.append((self.command, self.path.split("?")[0]))
                if not answer:
                    self.close_connection = True
                    return
                self.send_response(resp.status)
                for key, value in resp.getheaders():
                    if key.lower() not in HOP_BY_HOP and key.lower() != "content-length":
                        self.send_header(key, value)
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = _handle

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self._thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def _admit(self) -> tuple[bool, bool]:
        """(forward the request?, return its response?)"""
        with self._lock:
            if self._down:
                self.dropped += 1
                return False, False
            if self._budget is None:
                return True, True
            if self._budget > 0:
                self._budget -= 1
                return True, True
            self._down = True
            self.dropped += 1
            return self._after_forward, False

    def cut_after(self, n: int, after_forward: bool = False) -> None:
        with self._lock:
            self._budget, self._after_forward, self._down = n, after_forward, False

    def restore(self) -> None:
        with self._lock:
            self._budget, self._down = None, False

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


# ---- folders that refuse writes -----------------------------------------------------------


def _probe_write(folder: Path) -> bool:
    probe = folder / f".probe-{os.getpid()}"
    try:
        probe.write_text("x")
    except OSError:
        return False
    probe.unlink()
    return True


@contextlib.contextmanager
def read_only(folder: Path) -> Iterator[str]:
    """Make ``folder`` refuse new entries, renames and deletions for the duration.

    Non-root: ``chmod a-w``. As root permission bits do not apply, so the folder gets the
    immutable attribute (``chattr +i``, ext2/3/4, xfs, btrfs) instead. Skips the test, naming
    why, when neither mechanism takes effect (e.g. root on a filesystem without attributes or
    in a container without CAP_LINUX_IMMUTABLE). Yields the mechanism used.
    """
    if os.geteuid() != 0:
        mode = folder.stat().st_mode
        folder.chmod(mode & ~0o222)
        how, undo = "chmod a-w", lambda: folder.chmod(mode)
    else:
        proc = subprocess.run(["chattr", "+i", str(folder)], capture_output=True, text=True)
        if proc.returncode != 0:
            pytest.skip(
                "running as root, where permission bits do not apply, and `chattr +i` failed "
                f"({proc.stderr.strip()}); a read-only bind mount would need CAP_SYS_ADMIN"
            )
        how, undo = "chattr +i", lambda: subprocess.run(["chattr", "-i", str(folder)], check=True)
    try:
        if _probe_write(folder):
            pytest.skip(f"{how} did not make {folder} read-only on this filesystem")
        yield how
    finally:
        undo()


def _mount_tmpfs(folder: Path, size_kb: int) -> str | None:
    if os.geteuid() != 0 or shutil.which("mount") is None:
        return "mounting a tmpfs needs root (CAP_SYS_ADMIN)"
    proc = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size_kb}k,mode=0755", "tmpfs", str(folder)],
        capture_output=True,
        text=True,
    )
    return None if proc.returncode == 0 else f"mount -t tmpfs failed: {proc.stderr.strip()}"


@contextlib.contextmanager
def full_disk(folder: Path, free_kb: int = 8) -> Iterator[Path]:
    """Put ``folder`` (its current content kept) on a tmpfs with only ``free_kb`` KiB free.

    Writes into it then fail with ENOSPC, as on a full disk. Skips the test, naming why, where
    a tmpfs cannot be mounted (not root, or no CAP_SYS_ADMIN in a container).
    """
    folder.mkdir(parents=True, exist_ok=True)
    saved = folder.with_name(folder.name + ".before-tmpfs")
    used_kb = sum(-(-p.stat().st_size // 4096) * 4 for p in folder.rglob("*") if p.is_file())
    used_kb += 4 * sum(1 for p in folder.rglob("*") if p.is_dir())
    shutil.move(str(folder), str(saved))
    folder.mkdir()
    why = _mount_tmpfs(folder, used_kb + free_kb + 8)
    if why:
        folder.rmdir()
        shutil.move(str(saved), str(folder))
        pytest.skip(f"cannot simulate a full disk here: {why}")
    try:
        for item in saved.iterdir():
            if item.is_dir():
                shutil.copytree(item, folder / item.name)
            else:
                shutil.copy2(item, folder / item.name)
        yield folder
    finally:
        kept = folder.with_name(folder.name + ".on-tmpfs")
        shutil.copytree(folder, kept)
        subprocess.run(["umount", str(folder)], check=False)
        if os.path.ismount(folder):
            subprocess.run(["umount", "-l", str(folder)], check=False)
        folder.rmdir()
        kept.rename(folder)
        shutil.rmtree(saved, ignore_errors=True)


# ---- the report ---------------------------------------------------------------------------

REPORT_PATH = Path(
    os.environ.get("RECSYS_RELIABILITY_REPORT") or REPO / "test-artifacts" / "reliability" / "report.json"
)
COLUMNS = ("faults_injected", "runs_recovered", "rows_expected", "rows_lost", "rows_duplicated")


class Tally:
    """The faults a case injected and the runs (or tries) that succeeded after one, counted where
    they happen: ``recover(value)`` wraps the call that succeeded, so a recovery that did not
    happen is never reported."""

    def __init__(self) -> None:
        self.faults = 0
        self.recovered = 0

    def fault(self, n: int = 1) -> None:
        self.faults += n

    def recover(self, value: Any = None) -> Any:
        self.recovered += 1
        return value


@dataclass
class CaseResult:
    case: str
    test: str
    faults_injected: int
    runs_recovered: int
    rows_expected: int = 0
    rows_lost: int = 0
    rows_duplicated: int = 0
    seconds: float = 0.0
    details: dict[str, Any] = field(default_factory=dict)
    skipped: str = ""  # why the case did not run on this host (its test was skipped); counts nothing


def skipped_case(name: str, test: str, longrepr: Any) -> CaseResult:
    """The report's entry for a reliability test that was skipped: its name and pytest's reason, so a
    fault this host cannot inject (no tmpfs, no immutable attribute) is visible, not silently absent."""
    reason = longrepr[2] if isinstance(longrepr, tuple) and len(longrepr) == 3 else str(longrepr)
    return CaseResult(
        case=name, test=test, faults_injected=0, runs_recovered=0, skipped=reason.removeprefix("Skipped: ")
    )


class Report:
    """Counts per fault case, rewritten to ``REPORT_PATH`` (and the state dir) after each case.

    File format (``schema`` 1)::

        {"schema": 1, "generated_at": "...Z", "cases": [{"case", "test", "faults_injected",
         "runs_recovered", "rows_expected", "rows_lost", "rows_duplicated", "seconds",
         "details": {...}}, ...], "totals": {"faults_injected", "runs_recovered",
         "rows_expected", "rows_lost", "rows_duplicated", "cases"}}
    """

    def __init__(self, path: Path = REPORT_PATH) -> None:
        self.path = path
        self.cases: list[CaseResult] = []

    def record(self, result: CaseResult) -> None:
        self.cases.append(result)
        self.write()

    def payload(self) -> dict[str, Any]:
        totals = {c: sum(getattr(r, c) for r in self.cases) for c in COLUMNS}
        totals["cases"] = len(self.cases)
        return {
            "schema": 1,
            "generated_at": datetime.now(UTC).isoformat(timespec="seconds"),
            "cases": [asdict(r) for r in self.cases],
            "totals": totals,
        }

    def write(self) -> None:
        text = json.dumps(self.payload(), indent=2, sort_keys=True, default=str)
        targets = [self.path]
        if os.environ.get("RECSYS__STACK__STATE_DIR"):
            targets.append(Path(os.environ["RECSYS__STACK__STATE_DIR"]) / "reliability" / "report.json")
        for target in targets:
            target.parent.mkdir(parents=True, exist_ok=True)
            tmp = target.with_name(f".{target.name}.{os.getpid()}.tmp")  # two xdist workers may write at once
            tmp.write_text(text)
            tmp.replace(target)

    def dump(self) -> str:
        """The cases as JSON text (what an xdist worker sends its controller)."""
        return json.dumps([asdict(r) for r in self.cases], default=str)

    def load(self, text: str) -> None:
        """Add the cases of ``dump`` (a worker's) and rewrite the report with every case so far."""
        self.cases.extend(CaseResult(**case) for case in json.loads(text))
        self.write()

    def table(self) -> str:
        head = f"{'case':34s} {'faults':>6s} {'recovered':>9s} {'rows':>7s} {'lost':>5s} {'dup':>5s} {'sec':>6s}"
        lines = [head, "-" * len(head)]
        for r in self.cases:
            if r.skipped:
                lines.append(f"{r.case[:34]:34s} skipped: {r.skipped}")
                continue
            lines.append(
                f"{r.case[:34]:34s} {r.faults_injected:6d} {r.runs_recovered:9d} {r.rows_expected:7d} "
                f"{r.rows_lost:5d} {r.rows_duplicated:5d} {r.seconds:6.1f}"
            )
        t = self.payload()["totals"]
        lines.append("-" * len(head))
        lines.append(
            f"{'total':34s} {t['faults_injected']:6d} {t['runs_recovered']:9d} {t['rows_expected']:7d} "
            f"{t['rows_lost']:5d} {t['rows_duplicated']:5d}"
        )
        return "\n".join(lines)


REPORT = Report()  # the session's report (an xdist controller merges its workers' into its own)
