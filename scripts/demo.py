"""`make demo`: the whole loop on a generated world, through the real scheduler, with a timeline.

1. Generate ``train_days + served_days`` days of events; the world's tastes shift on day
   ``drift_day`` (``jobs.sim --drift``), which is what the monitor must notice.
2. Start the local stack (Airflow api-server, scheduler, dag-processor, triggerer; MLflow).
3. Backfill ``recsys_ingest`` over the first ``train_days`` days (REST ``POST /backfills``).
   ``recsys_score`` and ``recsys_monitor`` are unpaused already: their asset-triggered runs skip
   while there is no champion.
4. Unpause ``recsys_train``: the scheduler starts its weekly run (catch-up off: the latest
   interval), which trains on the window before the latest validated day, gates and promotes
   the first champion.
5. Each served day in order: the day "arrives" — a run of ``recsys_ingest`` for it, triggered
   as the schedule would (a manual run with that logical date: a backfill would be history,
   which is never served) → the curated-events Asset triggers
   ``recsys_score`` (champion pinned) → the recommendations Asset triggers ``recsys_monitor``
   (drift report; hit-rate of the previous day's recommendations) → when it decides to retrain
   it triggers ``recsys_train`` with the reason, and the demo waits for that run (gate,
   promotion) before the next day, so the next day is scored by whichever model won. Where a
   promotion waits for a person (``gate.require_approval``, the cluster profile), the demo reads
   the request and approves it over REST, as the operator.
6. Print the timeline: day → rows, champion version that scored it, hit-rate, drift verdict,
   retrain and promotion events.

The demo starts from a clean slate: it stops the stack of its state folder (``stack.state_dir``,
default ``.local``) and deletes that folder's databases and data zones first (``--keep-state``
skips this; a Postgres stack's databases and Redis keys are dropped too). The retrain cooldown (``drift.cooldown_hours``, 24 h) is about wall-clock time; the demo
replays weeks in minutes, so it runs its stack with ``RECSYS__DRIFT__COOLDOWN_HOURS=0`` (a
running training still blocks a second one). A stack already running with other settings is
restarted. Idempotent: the generator and every task replace their partitions with identical
content. The stack is left running so the UIs can be explored; ``make down`` stops it.
``tests/e2e/test_demo_loop.py`` runs this script on a small world and checks the timeline.

Long because it is the demo end to end — world, stack, each step and the timeline it prints —
in the order a reader follows it.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import date, timedelta
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(REPO), str(REPO / "plugins")]

from scripts.recsys_api import AirflowApi, ApiError, render_task_time  # noqa: E402
from scripts.stack import Stack, destroy, down, up  # noqa: E402

DEMO_ENV = {"RECSYS__DRIFT__COOLDOWN_HOURS": "0"}
# A sparse ratings log as the world (``--world movielens-100k``): its settings for this source.
# ML-100K's last weeks have 6 to 2,217 ratings a day and quiet days: the training window holds
# the whole backfilled history (a week of ratings is too little to learn from).
# The demo's worlds are too small for a model to beat popularity with a 95% interval (measured
# on 300 users x 120 items, first model: NDCG@10 lift +0.006, CI -0.021 .. +0.031; on 2000 x 500:
# +0.007, CI -0.002 .. +0.017), so the demo's gate accepts a challenger within 0.05 NDCG@10 of
# the best baseline (gate.baseline_margin; the shipped 0 demands a lift) and of the champion
# (gate.replay_tolerance, shipped 0.02: one day after a drift has ~110 evaluated users, too few to
# show a retrained model within 0.02). Printed with the timeline.
DEMO_GATE_ENV = {"RECSYS__GATE__BASELINE_MARGIN": "0.05", "RECSYS__GATE__REPLAY_TOLERANCE": "0.05"}
# ML-100K's last five weeks have 6 to 2,217 ratings a day, quiet days, and few returning users
# with a new item: the evidence is pooled over the held-out day and 10 replay days (58-65 user-days
# in this slice, counted from the file), the minimum is lowered to 50 (shipped: 100), the training
# window holds all the history there is, and the volume rule learns for two weeks.
REAL_LOG_ENV = {
    "RECSYS__TRAINING__WINDOW_DAYS": "28",
    "RECSYS__GATE__REPLAY_DAYS": "10",
    "RECSYS__GATE__MIN_USERS": "50",
    "RECSYS__INGEST__EMPTY_DAY": "pass",  # quiet days are data
    "RECSYS__INGEST__VOLUME_MIN_DAYS": "14",
}
ML100K_LAST_DAY = date(1998, 4, 22)
APPROVAL_REASON = "demo operator: gate numbers and model card checked"


@dataclass(frozen=True)
class DemoWorld:
    """The generated world of a demo run (defaults: ``world`` in the pipeline config)."""

    start: date
    train_days: int = 8
    served_days: int = 5
    drift_day: int = 10  # 1-based day on which the drift starts
    drift: str = "catalog_launch"
    drift_strength: float | None = None
    users: int = 2000
    items: int = 500
    events_per_day: int = 20000
    factors: int = 8
    seed: int = 7
    extra_generate_args: tuple[str, ...] = field(default_factory=tuple)
    weekly_training: bool = False  # the demo's served days are fewer than a week: drift retrains only

    @property
    def days(self) -> int:
        return self.train_days + self.served_days

    def day(self, n: int) -> str:
        """ISO date of the 1-based day ``n``."""
        return (self.start + timedelta(days=n - 1)).isoformat()

    def generate_argv(self) -> list[str]:
        drift = f"{self.drift}@{self.day(self.drift_day)}"
        if self.drift_strength is not None:
            drift += f":{self.drift_strength}"
        return [
            sys.executable,
            "-m",
            "jobs.sim",
            "--start",
            self.start.isoformat(),
            "--days",
            str(self.days),
            "--users",
            str(self.users),
            "--items",
            str(self.items),
            "--events-per-day",
            str(self.events_per_day),
            "--factors",
            str(self.factors),
            "--seed",
            str(self.seed),
            "--drift",
            drift,
            *self.extra_generate_args,
        ]

    def describe(self) -> str:
        return (
            f"generating {self.days} days ({self.day(1)} … {self.day(self.days)}), {self.users} users × "
            f"{self.items} items, {self.events_per_day:,} events/day; {self.drift} from {self.day(self.drift_day)}"
        )


@dataclass(frozen=True)
class RealLogWorld:
    """A slice of a public interaction log replayed as the demo's world (``--world movielens-100k``).

    The importer (``jobs.importer``) writes the slice's days into the landing zone with their
    real timestamps; nothing is planted, so every drift alert is a real change of the log (or a
    false alarm). ``train_days`` of history are backfilled, the last ``served_days`` arrive one
    by one. A sparse ratings log has quiet days and a long tail of users: the demo runs it with
    the source's settings (``REAL_LOG_ENV``).
    """

    start: date
    train_days: int = 28
    served_days: int = 7
    source: str = "ml-100k"
    drift_day: int | None = None  # nothing planted
    weekly_training: bool = True  # the schedule's Monday run, replayed after each served Sunday

    @property
    def days(self) -> int:
        return self.train_days + self.served_days

    def day(self, n: int) -> str:
        """ISO date of the 1-based day ``n``."""
        return (self.start + timedelta(days=n - 1)).isoformat()

    def generate_argv(self) -> list[str]:
        return [
            sys.executable,
            "-m",
            "jobs.importer",
            "movielens",
            "--source",
            self.source,
            "--first-day",
            self.day(1),
            "--last-day",
            self.day(self.days),
        ]

    def describe(self) -> str:
        return f"importing {self.source} days {self.day(1)} … {self.day(self.days)} (real ratings, nothing planted)"


def _wait(what: str, check: Callable[[], Any], timeout: float, poll: float = 3.0) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(poll)
    raise TimeoutError(f"{what}: not done after {timeout:.0f}s")


def _active(api: AirflowApi, dag_id: str) -> list[dict[str, Any]]:
    return [r for r in api.runs(dag_id) if r["state"] in ("queued", "running")]


def _settled(api: AirflowApi, dag_ids: tuple[str, ...]) -> bool:
    """No run queued or running, and no asset event still waiting to become a run.

    An asset event is queued for its consumer DAG when the producing task succeeds (for the
    partitioned consumers, a pending partition of the event's day); the scheduler turns it into
    a run a moment later. Without this check, the last ingested day of the backfill could be
    scored only after the first training had promoted a champion.
    """
    return not any(
        _active(api, d)
        or api.pending_partitions(d)
        or api.call("GET", f"/dags/{d}/assets/queuedEvents")["total_entries"]
        for d in dag_ids
    )


def diagnose(api: AirflowApi, dag_ids: tuple[str, ...], log_lines: int = 12) -> str:
    """What an operator would look at when the demo stalls: every run not in success, its task
    instances' states, and the tail of the log of each task still running or failed."""
    out: list[str] = []
    for dag_id in dag_ids:
        try:
            runs = [r for r in api.runs(dag_id) if r["state"] != "success"]
        except ApiError as exc:
            out.append(f"{dag_id}: {exc}")
            continue
        for run in runs:
            out.append(f"{dag_id} {run['dag_run_id']} [{run['state']}]")
            try:
                tis = api.task_instances(dag_id, run["dag_run_id"])
            except ApiError as exc:
                out.append(f"  {exc}")
                continue
            for ti in tis:
                out.append(f"  {ti['task_id']}: {ti['state']} (try {ti['try_number']}, pid {ti.get('pid')})")
                if ti["state"] in ("running", "failed", "up_for_retry") and ti["try_number"]:
                    try:
                        tail = api.log_text(dag_id, run["dag_run_id"], ti["task_id"], ti["try_number"])
                    except ApiError as exc:
                        tail = str(exc)
                    out.extend(f"    | {line}" for line in tail.splitlines()[-log_lines:])
    return "\n".join(out) or "every run of " + ", ".join(dag_ids) + " succeeded"


DAG_IDS = ("recsys_ingest", "recsys_score", "recsys_monitor", "recsys_train")


class Loop:
    """Drives one demo world through the running stack and records what happened."""

    def __init__(
        self, stack: Stack, world: DemoWorld | RealLogWorld, log: Callable[[str], None] = print, timeout: float = 1800
    ):
        from jobs.core.config import get_config

        self.stack = stack
        self.world = world
        self.log = log
        self.timeout = timeout
        self.cfg = get_config()
        self.api = AirflowApi(stack.airflow_url, "admin", stack.credentials()["admin"])
        self.events: dict[str, list[str]] = {}
        self.train_runs_seen: set[str] = set()

    # -- steps ------------------------------------------------------------------------------

    def generate(self) -> None:
        self.log(self.world.describe())
        subprocess.run(
            self.world.generate_argv(), cwd=REPO, env=self.stack.full_env(), check=True, stdout=subprocess.DEVNULL
        )

    def ingest(self, first: str, last: str) -> None:
        bf = self.api.backfill("recsys_ingest", f"{first}T00:00:00Z", f"{last}T00:00:00Z", "completed")
        self.api.unpause("recsys_ingest")
        self.api.wait_backfill(bf["id"], timeout=self.timeout)
        self.api.wait_backfills_idle("recsys_ingest", timeout=self.timeout)
        states = {
            r["logical_date"][:10]: r["state"]
            for r in self.api.runs("recsys_ingest")
            if r["run_type"] == "backfill" and first <= r["logical_date"][:10] <= last
        }
        bad = {d: s for d, s in states.items() if s != "success"}
        if bad:
            raise RuntimeError(f"recsys_ingest runs not successful: {bad}")

    def arrive(self, day: str) -> None:
        """Ingest ``day`` as its live run (not a backfill): what the schedule does when a day closes."""
        run = self.api.trigger("recsys_ingest", {}, logical_date=f"{day}T00:00:00Z")
        self.api.unpause("recsys_ingest")
        final = self.api.wait_run("recsys_ingest", run["dag_run_id"], timeout=self.timeout)
        if final["state"] != "success":
            raise RuntimeError(f"recsys_ingest run {run['dag_run_id']} for {day}: {final['state']}")

    def initial_training(self) -> None:
        before = {r["dag_run_id"] for r in self.api.runs("recsys_train")}
        self.log("unpausing recsys_train: the scheduler starts its weekly run (latest interval)")
        self.api.unpause("recsys_train")

        def new_run() -> dict[str, Any] | None:
            return next((r for r in self.api.runs("recsys_train") if r["dag_run_id"] not in before), None)

        try:
            run = _wait("the scheduled recsys_train run", new_run, 120)
        except TimeoutError:  # already unpaused earlier (--keep-state): ask for one over REST
            run = self.api.trigger("recsys_train", {"reason": "demo: initial training"})
        final = self.wait_training(run["dag_run_id"])
        self.train_runs_seen.add(run["dag_run_id"])
        self._note_training(final, self.world.day(self.world.train_days))

    def serve_day(self, day: str) -> None:
        """Ingest one day and follow it through scoring, monitoring and any retraining."""
        followed = ("recsys_score", "recsys_monitor")
        before = {d: {r["dag_run_id"] for r in self.api.runs(d)} for d in followed}

        def no_new_failure() -> None:  # a failed run will not write what we wait for: say so now
            for dag_id in followed:
                for run in self.api.runs(dag_id):
                    if run["state"] == "failed" and run["dag_run_id"] not in before[dag_id]:
                        raise RuntimeError(f"{dag_id} run {run['dag_run_id']} failed while serving {day}")

        self.arrive(day)
        from jobs.core import catalog, storage, tracking

        report = catalog.report_json(self.cfg, "drift", day)
        recs = lambda: catalog.manifest(self.cfg, "recommendations", day)  # noqa: E731
        champion = tracking.alias_version(tracking.client(self.cfg), self.cfg.mlflow.model_name, tracking.CHAMPION)
        if champion is None:  # nothing to serve with: the score run holds the day and says why
            _wait(f"score run dt={day}", lambda: no_new_failure() or _settled(self.api, followed), self.timeout)
            self.events.setdefault(day, []).append("not scored: no champion")
        else:
            _wait(f"recommendations dt={day}", lambda: no_new_failure() or recs(), self.timeout)
            _wait(f"drift report dt={day}", lambda: no_new_failure() or storage.read_text(report), self.timeout)
            _wait("monitor runs", lambda: _settled(self.api, followed), self.timeout)
        if self.world.weekly_training and date.fromisoformat(day).weekday() == 6:
            # The weekly schedule (Monday 04:00 UTC) trains on the week that ended with this Sunday;
            # the replay asks for that run over REST when the Sunday has been served.
            self.api.trigger("recsys_train", {"reason": f"weekly schedule (replayed after {day})"})
        for run in self.api.runs("recsys_train"):
            if run["dag_run_id"] in self.train_runs_seen:
                continue
            self.train_runs_seen.add(run["dag_run_id"])
            final = self.wait_training(run["dag_run_id"])
            self._note_training(final, day)

    def wait_training(self, run_id: str) -> dict[str, Any]:
        """Wait for a ``recsys_train`` run; when its promotion waits for a person (``require_approval``,
        on in the cluster profile), the demo is that person: it reads the request and approves over
        REST, as an operator would after checking the gate numbers and the model card."""

        def approve(ti: dict[str, Any]) -> None:
            self.log(f"approval requested: {ti['hitl']['subject']} — approving over REST as the demo's operator")
            self.api.respond(
                "recsys_train", run_id, ti["task_id"], "Approve", {"reason": APPROVAL_REASON}, ti["map_index"]
            )

        return self.api.wait_run("recsys_train", run_id, timeout=self.timeout, on_awaiting=approve)

    def _note_training(self, run: dict[str, Any], day: str) -> None:
        from jobs.core.tracking import client

        reason = (run.get("conf") or {}).get("reason") or "scheduled"
        name = self.cfg.mlflow.model_name
        versions = [
            v
            for v in client(self.cfg).search_model_versions(f"name='{name}'")
            if v.tags.get("airflow_run_id") == run["dag_run_id"]
        ]
        if run["state"] != "success":
            outcome = f"training run {run['state']}"
        elif not versions:
            outcome = "no model registered"
        else:  # one version per model family (recsys_train's tournament), in version order
            outcome = ", ".join(
                f"v{v.version} {v.tags.get('family', '?')} {v.tags.get('decision', '?')}"
                for v in sorted(versions, key=lambda v: int(v.version))
            )
        self.events.setdefault(day, []).append(f"train ({reason[:60]}) → {outcome}")
        self.log(f"recsys_train {run['dag_run_id']} [{run['state']}] reason: {reason} → {outcome}")

    # -- report -----------------------------------------------------------------------------

    def timeline(self) -> list[dict[str, Any]]:
        from jobs.core import catalog, storage
        from jobs.registry.aliases import show

        rows = []
        for n in range(1, self.world.days + 1):
            day = self.world.day(n)
            curated = catalog.manifest(self.cfg, "curated", day) or {}
            recs = catalog.manifest(self.cfg, "recommendations", day) or {}
            text = storage.read_text(catalog.report_json(self.cfg, "drift", day))
            report = json.loads(text) if text else None
            data = (report or {}).get("data_drift", {})
            perf = (report or {}).get("performance", {})
            rows.append(
                {
                    "day": day,
                    "drift_injected": self.world.drift_day is not None and n >= self.world.drift_day,
                    "rows": curated.get("rows"),
                    "model_version": recs.get("model_version"),
                    "hit_rate": perf.get("hit_rate") if perf.get("available") else None,
                    "alerts": data.get("alerts") if data.get("available") else None,
                    "max_psi": data.get("max_psi") if data.get("available") else None,
                    "retrain": (report or {}).get("decision", {}).get("retrain"),
                    "decision": (report or {}).get("decision", {}).get("reason"),
                    "events": self.events.get(day, []),
                }
            )
        self.aliases = show(self.cfg)
        self.champion_metrics = self.gate_metrics(self.aliases.get("champion"))
        return rows

    def gate_metrics(self, version: str | None) -> dict[str, dict[str, float]]:
        """The gate's numbers for a version: ranker → {recall_at_K, ndcg_at_K} (from its MLflow run)."""
        from jobs.core.tracking import client

        if not version:
            return {}
        cl = client(self.cfg)
        run = cl.get_run(cl.get_model_version(self.cfg.mlflow.model_name, version).run_id)
        out: dict[str, dict[str, float]] = {}
        for key, value in run.data.metrics.items():
            named = re.fullmatch(r"gate_((?:recall|ndcg)_at_\d+)_(\w+)", key)
            if named:
                out.setdefault(named[2], {})[named[1]] = value
        return out

    def version_costs(self) -> dict[str, dict[str, float]]:
        """What producing each registered version cost (its ``cost.*`` tags: the ledger's totals)."""
        from jobs.core.tracking import client

        cl = client(self.cfg)
        out = {}
        for mv in cl.search_model_versions(f"name='{self.cfg.mlflow.model_name}'"):
            tags = mv.tags or {}
            out[str(mv.version)] = {k[5:]: float(v) for k, v in tags.items() if k.startswith("cost.")}
        return dict(sorted(out.items(), key=lambda kv: int(kv[0])))

    def run(self) -> list[dict[str, Any]]:
        w = self.world
        self.generate()
        self.api.wait_for_dag("recsys_score")
        for dag_id in ("recsys_score", "recsys_monitor"):
            self.api.unpause(dag_id)
        self.log(f"backfilling recsys_ingest {w.day(1)} … {w.day(w.train_days)}")
        self.ingest(w.day(1), w.day(w.train_days))
        _wait("score runs of the backfill", lambda: _settled(self.api, ("recsys_score",)), self.timeout)
        self.initial_training()
        for n in range(w.train_days + 1, w.days + 1):
            self.log(f"serving day {w.day(n)}")
            self.serve_day(w.day(n))
        return self.timeline()


def render(rows: list[dict[str, Any]], aliases: dict[str, Any], metrics: dict[str, dict[str, float]]) -> str:
    head = " day        | drift | rows    | scored by | hit-rate | alerts (max PSI)          | retrain | events"
    lines = [head, "-" * len(head)]
    for r in rows:
        alerts = "-" if r["alerts"] is None else f"{len(r['alerts'])} ({r['max_psi']:.2f})"
        hit = "-" if r["hit_rate"] is None else f"{r['hit_rate']:.3f}"
        retrain = "-" if r["retrain"] is None else ("YES" if r["retrain"] else "no")
        lines.append(
            f" {r['day']} | {'yes' if r['drift_injected'] else 'no':5s} | {r['rows'] or '-':>7} |"
            f" {('v' + str(r['model_version'])) if r['model_version'] else '-':>9} | {hit:>8} | {alerts:25s} |"
            f" {retrain:7s} | {'; '.join(r['events'])}"
        )
    names = ("champion", "previous_champion", "challenger")
    lines.append(
        "\nregistry aliases: " + ", ".join(f"{a}=" + (f"v{aliases[a]}" if aliases.get(a) else "-") for a in names)
    )
    if metrics:
        lines.append(f"champion v{aliases.get('champion')} on its gate day (held-out interactions):")
        for ranker in ("challenger", "champion", "popularity", "recent_popularity", "oracle"):
            if ranker in metrics:
                shown = (
                    "champion (then)" if ranker == "champion" else ("this model" if ranker == "challenger" else ranker)
                )
                values = ", ".join(f"{k} {v:.4f}" for k, v in sorted(metrics[ranker].items()))
                lines.append(f"  {shown:18s} {values}")
    return "\n".join(lines)


def build_parser() -> argparse.ArgumentParser:
    """The demo's flags."""
    ap = argparse.ArgumentParser(prog="scripts/demo.py", description=__doc__.split("\n\n")[0])
    ap.add_argument(
        "--world",
        choices=("synthetic", "movielens-100k"),
        default="synthetic",
        help="synthetic: the generator (jobs.sim); movielens-100k: the last weeks of ML-100K's real ratings",
    )
    ap.add_argument("--train-days", type=int, help="days of history backfilled (synthetic 8, movielens 28)")
    ap.add_argument("--served-days", type=int, help="days that arrive one by one (synthetic 5, movielens 7)")
    ap.add_argument("--drift-day", type=int, default=10, help="1-based day on which the drift starts")
    ap.add_argument("--drift", default="catalog_launch", help="a jobs.sim drift kind")
    ap.add_argument("--drift-strength", type=float)
    ap.add_argument("--start", type=date.fromisoformat, help="first day (default: world.start_date)")
    ap.add_argument("--users", type=int)
    ap.add_argument("--items", type=int)
    ap.add_argument("--events-per-day", type=int)
    ap.add_argument("--keep-state", action="store_true", help="do not wipe the state folder first")
    ap.add_argument("--timeline-file", type=Path, help="also write the timeline as JSON here")
    return ap


def world_of(args: argparse.Namespace, train_days: int, served_days: int) -> DemoWorld | RealLogWorld:
    """The world the flags name (defaults from the ``world`` config section)."""
    from jobs.core.config import get_config

    if args.world != "synthetic":
        last = ML100K_LAST_DAY
        return RealLogWorld(
            start=args.start or last - timedelta(days=train_days + served_days - 1),
            train_days=train_days,
            served_days=served_days,
        )
    w = get_config().world
    return DemoWorld(
        start=args.start or w.start_date,
        train_days=train_days,
        served_days=served_days,
        drift_day=args.drift_day,
        drift=args.drift,
        drift_strength=args.drift_strength,
        users=args.users or w.users,
        items=args.items or w.items,
        events_per_day=args.events_per_day or w.events_per_day,
        factors=w.factors,
        seed=w.seed,
    )


def fresh_stack(stack: Stack, keep_state: bool) -> None:
    """Stop a running stack, wipe its state (unless ``keep_state``) and start it with the demo's settings."""
    if stack.running():
        print("stopping the running stack so the demo's settings apply")
        down(stack)
    if not keep_state and stack.db == "postgres":  # its databases and Redis keys live outside the folder
        destroy(stack)
    if not keep_state and stack.state.exists():
        print(f"starting from a clean slate: removing {stack.state}")
        shutil.rmtree(stack.state)
    print(f"starting the stack on 127.0.0.1: {', '.join(stack.components)}")
    up(stack)


def report(loop: Loop, rows: list[dict], timeline_file: Path | None) -> None:
    """The summary: timeline, gate settings, cost per version, task time (and the JSON timeline)."""
    task_time = loop.api.task_time(DAG_IDS)
    costs = loop.version_costs()
    print()
    print(render(rows, loop.aliases, loop.champion_metrics))
    g = loop.cfg.gate
    print(
        f"gate: blessed within {g.baseline_margin} NDCG@{g.k} of the best baseline and {g.replay_tolerance} of the"
        " champion (demo settings; shipped 0 and 0.02),"
        f" on >= {g.min_users} evaluated user-days over the held-out day + {g.replay_days} replay days"
    )
    print("\ncost per version (ledger: ingest + validation of its days, snapshot, training, gate):")
    for version, cost in costs.items():
        print(
            f"  v{version}: {cost.get('wall_s', 0):.0f} s wall, {cost.get('cpu_s', 0):.0f} CPU-s, "
            f"{cost.get('gpu_s', 0):.0f} GPU-s, price {cost.get('price', 0):.4f}"
        )
    print()
    print(render_task_time(task_time))
    if timeline_file:
        payload = {
            "rows": rows,
            "aliases": loop.aliases,
            "champion_metrics": loop.champion_metrics,
            "task_time": task_time,
            "version_costs": costs,
        }
        timeline_file.write_text(json.dumps(payload, indent=2))


def main(argv: list[str] | None = None) -> int:
    """Parse, start a clean stack, run the loop, report (or diagnose a failure)."""
    ap = build_parser()
    args = ap.parse_args(argv)
    real = args.world != "synthetic"
    train_days = args.train_days or (28 if real else 8)
    served_days = args.served_days or (7 if real else 5)
    if not real and not 1 <= args.drift_day - train_days <= served_days:
        ap.error("--drift-day must fall on a served day (after --train-days, within --served-days)")

    for key, value in (DEMO_ENV | DEMO_GATE_ENV | (REAL_LOG_ENV if real else {})).items():
        os.environ.setdefault(key, value)  # the caller's own setting wins
    stack = Stack.from_env()
    os.environ.update(stack.env())
    world = world_of(args, train_days, served_days)
    started = time.monotonic()
    fresh_stack(stack, args.keep_state)
    loop = Loop(stack, world)
    try:
        rows = loop.run()
    except (ApiError, RuntimeError, TimeoutError) as exc:
        print(f"demo failed: {exc}", file=sys.stderr)
        try:
            print(diagnose(loop.api, DAG_IDS), file=sys.stderr)
        except Exception as diag_exc:  # the diagnosis must not hide the failure
            print(f"(no diagnosis: {diag_exc!r})", file=sys.stderr)
        print(f"logs: {stack.state / 'logs'}; Airflow UI {stack.airflow_url}", file=sys.stderr)
        return 1
    report(loop, rows, args.timeline_file)
    creds = stack.credentials()
    print(f"\nfinished in {time.monotonic() - started:.0f}s")
    print(f"Airflow UI : {stack.airflow_url}  (admin / {creds['admin']}; viewer / {creds['viewer']})")
    print(f"MLflow UI  : {stack.mlflow_url}")
    print(f"data zones : {loop.cfg.storage.root_path()}")
    print(
        "stop with  : make down"
        + (
            " (python scripts/stack.py destroy also drops its databases and Redis keys)"
            if stack.db == "postgres"
            else ""
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
