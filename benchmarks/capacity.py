"""Capacity model: the pipeline's measured cost laws projected to a requested size, and its design limits.

``python -m benchmarks.capacity [--members 300e6] [--titles 18e3] [--events-per-day 5e9]
[--window-days 28] [--sla-hours 4] [--prices FILE] [--capacities FILE] [--coefficients FILE] [--json]``

Reads the scale benchmark's measurements (``benchmarks/results/scale.json``, written by
``python -m benchmarks --only scale``, or else the recorded run the docs quote,
``docs/data/scale.json``; its format and the fit: ``benchmarks.scale_fit``), then
prints: every fitted law with the file and sizes it came from; the self-check (each law refitted
without the largest size, predicting it; goal ≤ 25 %); per stage at the requested size the cores
(or GPUs) that finish the daily path (and the training path) within the SLA, the wall time, the
job process's memory, the bytes written and kept, and money per day at placeholder prices; and
the design limits, each with the size where it binds and the first one met between the largest
measured size and the requested one. Everything past the largest measured size is an extrapolation and labelled so. Exit 2 when
the coefficients are missing or malformed. How it works, and the limits: docs/scale.md.
"""

from __future__ import annotations

import argparse
import json
import math
import re
import sys
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path
from typing import Any

from benchmarks.scale_fit import (
    DRIVERS,
    GOAL,
    STAGE_DRIVERS,
    Coefficients,
    CoefficientsError,
    Law,
    Size,
    check_summary,
    load_coefficients,
    self_check,
)
from benchmarks.scale_limits import GIB, MIB, Capacities, bindings, design_limits, first_met

RESULTS = Path(__file__).resolve().parent / "results" / "scale.json"  # the latest local run
RECORDED = Path(__file__).resolve().parents[1] / "docs" / "data" / "scale.json"  # the run the docs quote
DEFAULT_COEFFICIENTS = RESULTS if RESULTS.is_file() else RECORDED
PRODUCER = "python -m benchmarks --only scale"
DAILY_PATH = ("ingest", "validate", "score", "monitor")  # one curated day, one after the other
WEEKLY = ("snapshot", "train", "evaluate")  # the training path, once per training


@dataclass(frozen=True)
class Prices:
    """Placeholder prices (the cluster profile's ledger list prices, S3 Standard's list price): not quotes."""

    core_hour: float = 0.048
    gpu_hour: float = 3.60
    gb_month: float = 0.023
    currency: str = "USD"
    source: str = "placeholder prices, not quotes (override with --prices FILE)"


@dataclass(frozen=True)
class Assumptions:
    """How CPU-seconds become cores, and what is kept."""

    sla_hours: float = 4.0  # the daily path (and the training path) must finish within this
    efficiency: float = 0.7  # parallel efficiency: c cores do the variable work c × 0.7 times as fast
    trainings_per_week: float = 1.0
    retention_days: float | None = None  # days of each stage's output kept (default: the window)
    pairs_per_event: float = 1.0  # positive (user, item) pairs per window event: 1 is the upper bound
    families: tuple[str, ...] = ("mf", "ease")


def runs_per_day(stage: str, assumptions: Assumptions) -> float:
    """Training-path stages run ``trainings_per_week`` / 7 times a day, the others daily."""
    return assumptions.trainings_per_week / 7.0 if stage in WEEKLY else 1.0


# ---------------------------------------------------------------------------------- projection


@dataclass(frozen=True)
class StagePlan:
    """One stage at the requested size."""

    stage: str
    driver: str
    x: float  # the work driver at the requested size
    extrapolation: float | None  # x / the largest measured x (> 1: extrapolated)
    device: str  # "cores" or "GPUs" (where the stage measured accelerator seconds)
    units: int | None  # None: the fixed part alone exceeds the SLA
    work_s: float  # CPU-(or GPU-)seconds of one run
    wall_s: float | None
    memory_gib: float | None  # the job process (driver / one process: does not divide)
    server_memory_gib: float | None  # the Spark server as measured on one node (divides over executors)
    bytes_per_run: float | None
    stored_bytes: float | None
    runs_per_day: float
    compute_per_day: float | None
    storage_per_day: float | None

    @property
    def money_per_day(self) -> float | None:
        """Compute plus storage; None when the SLA cannot be met (no unit count to price)."""
        return None if self.compute_per_day is None else self.compute_per_day + (self.storage_per_day or 0.0)


@dataclass(frozen=True)
class Work:
    """What one run of a stage must do at a size: the law that sets its units, and its parts."""

    law: Law
    device: str  # "cores", or "GPUs" where the stage measured accelerator seconds
    driver: str
    x: float
    wall_fixed: float  # the fixed part of the wall law: start-up, never divided
    variable: float  # CPU- (or GPU-) seconds that more units divide


def stage_work(stage: str, laws: Mapping[str, Law], size: Size) -> Work | None:
    """The work of one run (GPU seconds where measured, else CPU seconds); None without either law."""
    gpu = laws.get("gpu_s")
    law = gpu if gpu is not None and gpu.b > 0 else laws.get("cpu_s")
    if law is None:
        return None
    driver = STAGE_DRIVERS[stage]["work"]
    x = DRIVERS[driver](size)
    wall = laws.get("wall_s")
    return Work(law, "GPUs" if law is gpu else "cores", driver, x, wall.fixed if wall else law.fixed, law.variable(x))


def sla_budgets(works: Mapping[str, Work], sla_s: float) -> dict[str, float | None]:
    """Each stage's share of the SLA for its variable part, the stages running one after the other.

    The budget left after the fixed parts, B = SLA − Σ fixed, is shared ∝ √variable: with
    ``units_i = variable_i / (efficiency × share_i)`` this is the split that needs the fewest
    units in all (Lagrange). None for every stage when the fixed parts alone exceed the SLA.
    """
    left = sla_s - sum(w.wall_fixed for w in works.values())
    roots = {st: math.sqrt(w.variable) for st, w in works.items()}
    if left <= 0:
        return dict.fromkeys(works)
    return {st: left * r / sum(roots.values()) if r else left for st, r in roots.items()}


def plan_stage(
    stage: str,
    laws: Mapping[str, Law],
    size: Size,
    assumptions: Assumptions,
    prices: Prices,
    budget_s: float | None,
) -> StagePlan | None:
    """Cores or GPUs for one run of ``stage`` at ``size``, and what it costs.

    ``wall = wall_fixed + variable / (units × efficiency)`` with ``units`` the fewest that keep
    the variable part within ``budget_s`` (its share of the SLA, ``sla_budgets``; None: unmet).
    Money = units × wall × runs/day × price, plus the bytes kept at the object store's price.
    """
    work = stage_work(stage, laws, size)
    if work is None:
        return None
    units: int | None
    if work.variable <= 0:
        units, wall = 1, work.wall_fixed
    elif budget_s is None:
        units, wall = None, None
    else:
        units = max(1, math.ceil(work.variable / (assumptions.efficiency * budget_s) - 1e-9))
        wall = work.wall_fixed + work.variable / (units * assumptions.efficiency)
    drivers = STAGE_DRIVERS[stage]

    def at(resource: str, kind: str, scale: float = 1.0) -> float | None:
        law = laws.get(resource)
        return law.predict(DRIVERS[drivers[kind]](size)) * scale if law else None

    per_day = runs_per_day(stage, assumptions)
    retention = assumptions.retention_days if assumptions.retention_days is not None else size.window_days
    written = at("bytes_written", "bytes")
    stored = written * per_day * retention if written is not None else None
    price = prices.gpu_hour if work.device == "GPUs" else prices.core_hour
    return StagePlan(
        stage=stage,
        driver=work.driver,
        x=work.x,
        extrapolation=work.x / work.law.x_max if work.law.x_max else None,
        device=work.device,
        units=units,
        work_s=work.law.predict(work.x),
        wall_s=wall,
        memory_gib=at("peak_rss_mib", "memory", MIB / GIB),
        server_memory_gib=at("server_peak_rss_mib", "work", MIB / GIB),
        bytes_per_run=written,
        stored_bytes=stored,
        runs_per_day=per_day,
        compute_per_day=units * wall / 3600.0 * per_day * price if units and wall is not None else None,
        storage_per_day=stored / 1e9 * prices.gb_month / 30.0 if stored is not None else None,
    )


def project(coeffs: Coefficients, size: Size, assumptions: Assumptions, prices: Prices) -> list[StagePlan]:
    """Every measured stage planned at ``size``; the daily path (ingest → validate → score →
    monitor) and the training path (snapshot → train → evaluate) each share one SLA."""
    works = {st: w for st, laws in coeffs.laws.items() if (w := stage_work(st, laws, size))}
    budgets: dict[str, float | None] = {}
    for path in (DAILY_PATH, WEEKLY):
        budgets |= sla_budgets({st: w for st, w in works.items() if st in path}, assumptions.sla_hours * 3600.0)
    plans = [plan_stage(st, coeffs.laws[st], size, assumptions, prices, budgets.get(st)) for st in works]
    return [p for p in plans if p is not None]


def totals(plans: Sequence[StagePlan], assumptions: Assumptions) -> dict[str, Any]:
    def total(values: list[float | None]) -> float | None:
        return None if any(v is None for v in values) else sum(v for v in values if v is not None)

    daily = [p for p in plans if p.stage in DAILY_PATH]
    return {
        "money_per_day": total([p.money_per_day for p in plans]),
        "stored_bytes": sum(p.stored_bytes or 0.0 for p in plans),
        "core_hours_per_day": total(
            [
                p.units * p.wall_s / 3600 * p.runs_per_day if p.units and p.wall_s else None
                for p in plans
                if p.device == "cores"
            ]
        ),
        "gpu_hours_per_day": total(
            [
                p.units * p.wall_s / 3600 * p.runs_per_day if p.units and p.wall_s else None
                for p in plans
                if p.device == "GPUs"
            ]
        ),
        "daily_path_wall_s": total([p.wall_s for p in daily]),
        "daily_path": [p.stage for p in daily],
        "training_path_wall_s": total([p.wall_s for p in plans if p.stage in WEEKLY]),
        "training_path": [p.stage for p in plans if p.stage in WEEKLY],
        "sla_s": assumptions.sla_hours * 3600.0,
    }


# ------------------------------------------------------------------------------------- report


def _n(x: float | None) -> str:
    if x is None:
        return "-"
    if x == 0 or 0.01 <= abs(x) < 1e5:
        return f"{x:,.3g}" if abs(x) < 1000 else f"{x:,.0f}"
    mantissa, exp = f"{x:.2e}".split("e")
    return f"{mantissa}e{int(exp)}"


def _bytes(b: float | None) -> str:
    if b is None:
        return "-"
    for unit in ("B", "KiB", "MiB", "GiB", "TiB", "PiB", "EiB"):
        if abs(b) < 1024 or unit == "EiB":
            return f"{b:.3g} {unit}"
        b /= 1024
    return ""


def _hours(s: float | None) -> str:
    return "-" if s is None else f"{s / 3600:.2f} h"


def _table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
    widths = [max(len(str(c)) for c in col) for col in zip(header, *rows, strict=True)]
    line = lambda cells: "  ".join(str(c).ljust(w) for c, w in zip(cells, widths, strict=True)).rstrip()  # noqa: E731
    return [line(header), line(["-" * w for w in widths]), *[line(r) for r in rows]]


def report(result: Mapping[str, Any], coeffs: Coefficients) -> str:
    """The readable report of ``run``'s result."""
    target, measured, a, p = result["target"], result["measured"], result["assumptions"], result["prices"]
    out = [f"Capacity model from {coeffs.path}", f"machine: {json.dumps(coeffs.machine, sort_keys=True) or '{}'}"]
    if coeffs.skipped:
        out.append(f"stages not modelled (unknown names): {', '.join(coeffs.skipped)}")
    out += ["", "Fitted laws: cost = fixed + b · x^k (x = the driver at the size; sizes as events/day)"]
    rows = []
    for stage, laws in coeffs.laws.items():
        for res, law in laws.items():
            sizes = ", ".join(_n(e) for e in sorted(set(law.events_per_day)))
            rows.append([stage, res, law.driver, _n(law.fixed), f"{law.b:.3e}", f"{law.k:.3f}", sizes, law.note])
    out += _table(["stage", "resource", "driver x", "fixed", "b", "k", "sizes (events/day)", "note"], rows)
    check = result["self_check"]
    out += ["", f"Self-check: each law refitted without its largest size, predicting it (goal |error| ≤ {GOAL:.0%})"]
    rows = [
        [c["stage"], c["resource"], _n(c["events_per_day"]), _n(c["predicted"]), _n(c["measured"]),
         f"{c['error']:+.1%}", ("ok" if abs(c["error"]) <= GOAL else "MISS") if c["judged"] else "shown, not judged"]
        for c in check["checks"]
    ]  # fmt: skip
    out += (
        _table(["stage", "resource", "held-out size", "predicted", "measured", "error", "verdict"], rows)
        if rows
        else []
    )
    worst = ", ".join(f"{st} {err:.1%}" for st, err in check["worst_by_stage"].items()) or "nothing judged"
    verdict = "PASS" if check["passed"] else ("FAIL" if check["judged"] else "NOT CHECKED (fewer than 3 sizes)")
    out += [f"worst per stage: {worst}; overall {verdict}"]
    out += [
        "",
        f"Projection (EXTRAPOLATED from the largest measured size: {_size(measured)})",
        f"to {_size(target)}",
        f"assumptions: SLA {a['sla_hours']:g} h for the daily path and for the training path, shared ∝ √work; parallel efficiency {a['efficiency']:g} "
        f"(wall = fixed + variable CPU-s ÷ (cores × {a['efficiency']:g})); {a['trainings_per_week']:g} training(s)/week; "
        f"outputs kept {a['retention_days']:g} days",
        f"prices: {p['core_hour']:g} {p['currency']}/core-hour, {p['gpu_hour']:g}/GPU-hour, "
        f"{p['gb_month']:g}/GB-month: {p['source']}",
    ]
    rows = [
        [s["stage"], f"{s['driver']} = {_n(s['x'])}", f"×{_n(s['extrapolation'])}", f"{s['units'] or 'SLA unmet'} {s['device']}",
         _hours(s["wall_s"]), _bytes(s["memory_gib"] * GIB if s["memory_gib"] is not None else None),
         _bytes(s["bytes_per_run"]), _bytes(s["stored_bytes"]), _n(s["money_per_day"])]
        for s in result["stages"]
    ]  # fmt: skip
    out += _table(
        [
            "stage",
            "driver at size",
            "extrapolated",
            "to meet SLA",
            "wall",
            "job memory",
            "written/run",
            "kept",
            "money/day",
        ],
        rows,
    )
    t = result["totals"]
    out += [
        f"total per day: {_n(t['money_per_day'])} {p['currency']}; {_n(t['core_hours_per_day'])} core-hours, "
        f"{_n(t['gpu_hours_per_day'])} GPU-hours; object store {_bytes(t['stored_bytes'])}",
        f"daily path {' → '.join(t['daily_path'])}: {_hours(t['daily_path_wall_s'])}; training path "
        f"{' → '.join(t['training_path'])}: {_hours(t['training_path_wall_s'])} (SLA {_hours(t['sla_s'])} each)",
        "",
        "Design limits (need at the requested size vs capacity; where each binds):",
    ]
    rows = []
    for b in result["limits"]:
        fmt = _bytes if b["unit"] == "bytes" else _n
        where = {"measured": "already at the measured size", "never": "never (≤ ×1e6)"}.get(b["where"], "")
        if b["where"] == "on the way":
            where = f"on the way: {_size(b['binds_at'])}"
        elif b["where"] == "beyond":
            where = f"at ×{_n(b['position'])} the requested size: {_size(b['binds_at'])}"
        rows.append([b["name"], fmt(b["need_at_target"]), b["capacity_label"], b["formula"], where])
    out += _table(["limit", "need at size", "capacity", "need =", "binds"], rows)
    first = result["first_limit"]
    if first is None:
        out += ["", "First design limit met: none between the measured size and the requested one"]
    else:
        at = "already at the largest measured size" if first["where"] == "measured" else "at"
        out += ["", f"First design limit met: {first['name']} ({first['what']}) {at} {_size(first['binds_at'])}"]
        out += [f"fix: {first['fix']} (docs/scale.md, Design limits)"]
    return "\n".join(out)


def _size(s: Mapping[str, float]) -> str:
    return (
        f"{_n(s['events_per_day'])} events/day, {_n(s['users'])} members, {_n(s['items'])} titles, "
        f"window {s['window_days']:.3g} days, {s['factors']:.3g} factors"
    )


def run(
    coeffs: Coefficients,
    target: Size,
    assumptions: Assumptions,
    prices: Prices,
    caps: Capacities,
    snapshot_collects: bool = False,
) -> dict[str, Any]:
    """Everything the report shows, as plain data (``--json``)."""
    checks = self_check(coeffs)
    plans = project(coeffs, target, assumptions, prices)
    limits = design_limits(coeffs, caps, assumptions.pairs_per_event, assumptions.families, snapshot_collects)
    found = bindings(limits, coeffs.largest, target)
    first = first_met(found)
    retention = assumptions.retention_days if assumptions.retention_days is not None else target.window_days
    return {
        "coefficients": coeffs.path,
        "machine": coeffs.machine,
        "laws": {
            st: {res: {**asdict(law), "x_max": law.x_max} for res, law in laws.items()}
            for st, laws in coeffs.laws.items()
        },
        "self_check": {
            **check_summary(checks),
            "checks": [{**asdict(c), "error": c.error} for c in checks],
        },
        "measured": asdict(coeffs.largest),
        "target": asdict(target),
        "extrapolated": True,
        "assumptions": {**asdict(assumptions), "retention_days": retention},
        "prices": asdict(prices),
        "capacities": asdict(caps),
        "stages": [{**asdict(p), "money_per_day": p.money_per_day} for p in plans],
        "totals": totals(plans, assumptions),
        "limits": [b.as_dict() for b in found],
        "first_limit": first.as_dict() if first else None,
    }


# ---------------------------------------------------------------------------------------- CLI


def _config_defaults() -> dict[str, Any]:
    """factors, scoring batch, shuffle partitions, families and prices of the cluster profile
    (the shape the limits are about); the constants above when the config cannot be read."""
    try:
        from jobs.core.config import load_config

        cfg = load_config(profile="cluster", environ={})
    except Exception as exc:  # the model must run without a valid config
        print(f"note: cluster profile not read ({exc}); using built-in defaults", file=sys.stderr)
        return {}
    caps = {"shuffle_partitions": cfg.spark.shuffle_partitions, "score_batch_users": cfg.scoring.batch_users}
    scratch = re.fullmatch(r"(\d+(?:\.\d+)?)(Gi|G|Ti|T|Mi|M)", cfg.training.scratch_size)
    if scratch:
        scale = {"Gi": 1.0, "G": 1e9 / GIB, "Ti": 1024.0, "T": 1e12 / GIB, "Mi": 1 / 1024, "M": 1e6 / GIB}
        caps["model_scratch_gib"] = float(scratch[1]) * scale[scratch[2]]
    prices = {"core_hour": cfg.ledger.cpu_hour_price, "gpu_hour": cfg.ledger.gpu_hour_price}
    return {
        "factors": cfg.training.factors,
        "caps": caps,
        "families": tuple(cfg.training.families),
        "prices": {**prices, "currency": cfg.ledger.currency} if cfg.ledger.cpu_hour_price else {},
    }


def _overrides(path: Path | None, kind: type, base: Any) -> Any:
    if path is None:
        return base
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise ValueError(f"{path}: cannot read {kind.__name__.lower()}: {exc}") from None
    known = {f.name: f.type for f in fields(kind)}
    if not isinstance(data, dict) or set(data) - set(known):
        raise ValueError(f"{path}: expected an object with keys among {', '.join(known)}")
    for key, value in data.items():
        if key not in ("currency", "source") and (
            isinstance(value, bool) or not isinstance(value, int | float) or value < 0
        ):
            raise ValueError(f"{path}: {key} must be a number >= 0, got {value!r}")
    return replace(base, **data)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.capacity", description=__doc__.split("\n\n")[0])
    ap.add_argument("--members", type=float, default=300e6, help="users (default 300e6: Netflix's paid members)")
    ap.add_argument("--titles", type=float, default=18e3, help="items (default 18e3: titles making 99%% of viewing)")
    ap.add_argument("--events-per-day", type=float, default=5e9)
    ap.add_argument("--window-days", type=float, default=28.0, help="the training window at the requested size")
    ap.add_argument("--factors", type=float, help="embedding size (default: training.factors)")
    ap.add_argument("--sla-hours", type=float, default=4.0, help="hours for the daily path and for the training path")
    ap.add_argument("--efficiency", type=float, default=0.7, help="parallel efficiency of added cores")
    ap.add_argument("--trainings-per-week", type=float, default=1.0)
    ap.add_argument("--retention-days", type=float, help="days of outputs kept (default: the window)")
    ap.add_argument("--pairs-per-event", type=float, default=1.0, help="positive pairs per window event (≤ 1)")
    ap.add_argument("--families", help="comma-separated trained families (default: training.families)")
    ap.add_argument(
        "--snapshot-collects", action="store_true", help="model the former snapshot that collected its split"
    )
    ap.add_argument("--prices", type=Path, metavar="FILE", help="JSON: core_hour, gpu_hour, gb_month, currency")
    ap.add_argument("--capacities", type=Path, metavar="FILE", help="JSON: fields of Capacities (gpu_memory_gib, ...)")
    ap.add_argument("--coefficients", type=Path, default=DEFAULT_COEFFICIENTS, metavar="FILE")
    ap.add_argument("--json", action="store_true", help="machine-readable output")
    args = ap.parse_args(argv)
    for name in ("members", "titles", "events_per_day", "window_days", "sla_hours", "efficiency"):
        if not getattr(args, name) > 0:
            ap.error(f"--{name.replace('_', '-')} must be > 0")
    if not args.coefficients.is_file():
        print(
            f"error: {args.coefficients} not found: the capacity model needs the scale benchmark's "
            f"measurements; run `{PRODUCER}` first (or pass --coefficients FILE)",
            file=sys.stderr,
        )
        return 2
    conf = _config_defaults()
    factors = args.factors or conf.get("factors", 64)
    try:
        coeffs = load_coefficients(args.coefficients, factors)
    except CoefficientsError as exc:
        print(f"error: {args.coefficients}: malformed coefficients: {exc}", file=sys.stderr)
        return 2
    try:
        prices = _overrides(args.prices, Prices, Prices(**conf.get("prices", {})))
        caps = _overrides(args.capacities, Capacities, Capacities(**conf.get("caps", {})))
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    families = (
        tuple(f.strip() for f in args.families.split(",") if f.strip())
        if args.families
        else conf.get("families", ("mf", "ease"))
    )
    assumptions = Assumptions(
        args.sla_hours, args.efficiency, args.trainings_per_week, args.retention_days, args.pairs_per_event, families
    )
    target = Size(args.events_per_day, args.members, args.titles, args.window_days, factors)
    result = run(coeffs, target, assumptions, prices, caps, snapshot_collects=args.snapshot_collects)
    print(json.dumps(result, indent=2, default=str) if args.json else report(result, coeffs))
    return 0


if __name__ == "__main__":
    sys.exit(main())
