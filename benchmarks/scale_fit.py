"""Cost laws of the pipeline's stages, fitted on the scale benchmark's measurements, and their self-check.

Input: ``benchmarks/results/scale.json`` (``python -m benchmarks --only scale``)::

    {"machine": {"cpus": 16, "memory_gib": 128, ...},
     "window_days": 7,                       # the snapshot's window at every measured size
     "factors": 64,                          # optional: embedding size trained (else the config's)
     "sizes": [{"events_per_day": n, "users": u, "items": i}, ...],
     "stages": {"ingest": [ROW, ...], "validate": [...], "snapshot": [...], "train": [...],
                "evaluate": [...], "score": [...], "monitor": [...]}}

    ROW = {"events_per_day": n, "users": u, "items": i,          # the size measured (required)
           "wall_s": s, "cpu_s": s,                               # required
           "peak_rss_mib": m, "server_peak_rss_mib": m,           # job process / Spark server
           "bytes_written": b,                                    # what the stage wrote
           "gpu_s": s, "result_bytes": b,                         # optional: accelerator time, result JSON
           "window_days": w, "factors": f}                        # optional per-row overrides

A stage's cost grows with one **driver** per kind of resource (``STAGE_DRIVERS``): ingest,
validate and monitor with events/day; snapshot with the window's events; train with the
window's events (pairs × epochs), its model bytes with (users + items) × factors; evaluate and
score with users × items (every item ranked for every user). Each (stage, resource) is fitted as
``cost = fixed + b · x^k`` (``fit_law``); ``self_check`` refits without the largest size and
predicts it. The method and its limits: docs/scale.md.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

STAGES = ("ingest", "validate", "snapshot", "train", "evaluate", "score", "monitor")
RESOURCES = ("wall_s", "cpu_s", "gpu_s", "peak_rss_mib", "server_peak_rss_mib", "bytes_written", "result_bytes")
REQUIRED = ("events_per_day", "users", "items", "wall_s", "cpu_s")
K_MAX = 3.0  # a steeper law is a measurement problem, not a cost
GOAL = 0.25  # the self-check's goal: |predicted / measured - 1| <= 25 %
# Below these the largest measured value is noise (start-up, rounding): reported, not judged.
JUDGE_FLOOR = {"wall_s": 1.0, "cpu_s": 1.0, "gpu_s": 1.0, "peak_rss_mib": 1.0, "server_peak_rss_mib": 1.0}
JUDGE_FLOOR |= {"bytes_written": 1024.0**2, "result_bytes": 1024.0}
# The local Spark server's memory holds the executors of one machine: shown, never projected, never judged.
INFORMATIONAL = ("server_peak_rss_mib",)
DEFAULT_FACTORS = 64  # training.factors in include/config/pipeline.yaml


class CoefficientsError(ValueError):
    """The coefficients file is missing a part or holds a bad value (the message names it)."""


@dataclass(frozen=True)
class Size:
    """A world size: what the drivers are computed from."""

    events_per_day: float
    users: float
    items: float
    window_days: float = 7.0
    factors: float = DEFAULT_FACTORS

    @property
    def window_events(self) -> float:
        return self.events_per_day * self.window_days


DRIVERS: dict[str, Callable[[Size], float]] = {
    "events/day": lambda s: s.events_per_day,
    "window events": lambda s: s.window_events,
    "users": lambda s: s.users,
    "users x items": lambda s: s.users * s.items,
    "(users + items) x factors": lambda s: (s.users + s.items) * s.factors,
}
# resource kind -> driver, per stage. work: wall/CPU/GPU seconds, the Spark server's memory and
# the result JSON; memory: the job process (the non-parallel part); bytes: what it wrote.
STAGE_DRIVERS: dict[str, dict[str, str]] = {
    "ingest": {"work": "events/day", "memory": "events/day", "bytes": "events/day"},
    "validate": {"work": "events/day", "memory": "events/day", "bytes": "events/day"},
    "snapshot": {"work": "window events", "memory": "window events", "bytes": "window events"},
    "train": {"work": "window events", "memory": "window events", "bytes": "(users + items) x factors"},
    "evaluate": {"work": "users x items", "memory": "(users + items) x factors", "bytes": "users"},
    "score": {"work": "users x items", "memory": "users", "bytes": "users"},
    "monitor": {"work": "events/day", "memory": "events/day", "bytes": "events/day"},
}
RESOURCE_KIND = {"peak_rss_mib": "memory", "bytes_written": "bytes"} | dict.fromkeys(
    ("wall_s", "cpu_s", "gpu_s", "server_peak_rss_mib", "result_bytes"), "work"
)


def driver_of(stage: str, resource: str) -> str:
    """The name of the size variable (a key of ``DRIVERS``) that drives ``resource`` of ``stage``."""
    return STAGE_DRIVERS[stage][RESOURCE_KIND[resource]]


@dataclass(frozen=True)
class Law:
    """``cost(x) = fixed + b · x^k`` with where it came from (``points``: the (x, cost) fitted)."""

    fixed: float
    b: float
    k: float
    driver: str = ""
    points: tuple[tuple[float, float], ...] = ()
    events_per_day: tuple[float, ...] = ()  # the measured sizes behind the points
    note: str = ""

    def variable(self, x: float) -> float:
        """The size-dependent part ``b · x^k`` (what more cores divide)."""
        return self.b * float(x) ** self.k if self.b else 0.0

    def predict(self, x: float) -> float:
        return self.fixed + self.variable(x)

    @property
    def x_max(self) -> float:
        return max((x for x, _ in self.points), default=0.0)


def _power(lx: np.ndarray, y: np.ndarray, fixed: float) -> tuple[float, float]:
    """(b, k) of the least-squares line through (log x, log(y - fixed)), k clamped to [0, K_MAX]."""
    lr = np.log(y - fixed)
    slope = float(np.polyfit(lx, lr, 1)[0]) if np.ptp(lx) > 0 else 0.0
    k = min(max(slope, 0.0), K_MAX)
    return float(np.exp(np.mean(lr - k * lx))), k


def _log_sse(lx: np.ndarray, y: np.ndarray, fixed: float) -> float:
    b, k = _power(lx, y, fixed)
    return float(np.sum((np.log(fixed + b * np.exp(k * lx)) - np.log(y)) ** 2))


def fit_law(x: Sequence[float], y: Sequence[float], driver: str = "", events_per_day: Sequence[float] = ()) -> Law:
    """Fit ``y ≈ fixed + b · x^k`` by least squares on the log of y (relative errors weigh alike).

    For a fixed part f in [0, min y) the best (b, k) is the line through (log x, log(y - f)); f
    is chosen on a grid over [0, min y) and refined by a bounded scalar search (Brent) on the log
    residuals. Two sizes fit b and k with f = 0; one size (or a flat y) is a constant. Zero or
    negative costs are left out (a resource a stage did not use).

    Args:
        x: the driver's value at each measured size (> 0).
        y: the cost measured at that size.
        driver: the driver's name, kept with the law.
        events_per_day: the events/day of each measured size, kept with the law.

    Returns:
        The law with the points it was fitted on.
    """
    from scipy.optimize import minimize_scalar

    xa, ya = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    if xa.shape != ya.shape or xa.ndim != 1:
        raise ValueError(f"x and y must be two lists of one length, got {xa.shape} and {ya.shape}")
    if not (np.isfinite(xa).all() and np.isfinite(ya).all()) or (xa <= 0).any():
        raise ValueError("sizes must be finite and > 0, costs finite")
    keep = ya > 0
    points = tuple(zip(xa[keep].tolist(), ya[keep].tolist(), strict=True))
    made = {"driver": driver, "points": points, "events_per_day": tuple(float(e) for e in events_per_day)}
    if not keep.any():
        return Law(0.0, 0.0, 0.0, note="no cost measured", **made)
    xs, ys = xa[keep], ya[keep]
    if len(np.unique(xs)) < 2 or np.ptp(ys) <= 1e-12 * ys.max():
        return Law(float(ys.mean()), 0.0, 0.0, note="constant: one size or a flat cost", **made)
    lx = np.log(xs)
    if len(np.unique(xs)) < 3:
        b, k = _power(lx, ys, 0.0)
        return Law(0.0, b, k, note="two sizes: no fixed part fitted", **made)
    top = float(ys.min())
    grid = np.linspace(0.0, 1.0, 201)[:-1]
    sse = [_log_sse(lx, ys, u * top) for u in grid]
    best = int(np.argmin(sse))
    lo, hi = grid[max(best - 1, 0)], grid[best + 1] if best + 1 < len(grid) else 1.0 - 1e-9
    refined = minimize_scalar(
        lambda u: _log_sse(lx, ys, u * top), bounds=(lo, hi), method="bounded", options={"xatol": 1e-12}
    )
    u = float(refined.x) if refined.fun <= sse[best] else float(grid[best])
    b, k = _power(lx, ys, u * top)
    return Law(u * top, b, k, **made)


@dataclass
class Coefficients:
    """The measurements of one scale run and the laws fitted on them."""

    path: str
    machine: dict[str, Any]
    window_days: float
    factors: float
    sizes: list[Size]
    rows: dict[str, list[dict[str, float]]]
    laws: dict[str, dict[str, Law]] = field(default_factory=dict)
    skipped: list[str] = field(default_factory=list)  # unknown stage names, left out

    @property
    def largest(self) -> Size:
        """The largest measured size (by events/day): where every extrapolation starts."""
        return max(self.sizes, key=lambda s: (s.events_per_day, s.users, s.items))


def _number(value: Any, where: str, positive: bool = False) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise CoefficientsError(f"{where}: expected a number, got {value!r}")
    if value < 0 or (positive and value == 0):
        raise CoefficientsError(f"{where}: expected a number {'> 0' if positive else '>= 0'}, got {value!r}")
    return float(value)


def row_size(row: Mapping[str, float], window_days: float, factors: float) -> Size:
    """The size a measured row stands for (its own window and factors where it gives them)."""
    return Size(
        row["events_per_day"],
        row["users"],
        row["items"],
        row.get("window_days", window_days),
        row.get("factors", factors),
    )


def parse_coefficients(data: Any, path: str = "<memory>", factors: float = DEFAULT_FACTORS) -> Coefficients:
    """Check the scale benchmark's document (format in the module docstring) and fit every law.

    Raises:
        CoefficientsError: naming the first malformed part (``stages.train[2].cpu_s``, ...).
    """
    if not isinstance(data, dict):
        raise CoefficientsError(f"top level must be an object, got {type(data).__name__}")
    for key in ("window_days", "sizes", "stages"):
        if key not in data:
            raise CoefficientsError(f"missing key {key!r}")
    window = _number(data["window_days"], "window_days", positive=True)
    factors = _number(data.get("factors", factors), "factors", positive=True)
    if not isinstance(data["sizes"], list) or not data["sizes"]:
        raise CoefficientsError("sizes: expected a non-empty list")
    sizes = []
    for i, s in enumerate(data["sizes"]):
        if not isinstance(s, dict):
            raise CoefficientsError(f"sizes[{i}]: expected an object")
        vals = [_number(s.get(k), f"sizes[{i}].{k}", positive=True) for k in ("events_per_day", "users", "items")]
        sizes.append(Size(*vals, window_days=window, factors=factors))
    if not isinstance(data["stages"], dict) or not data["stages"]:
        raise CoefficientsError("stages: expected an object of stage name -> list of rows")
    rows: dict[str, list[dict[str, float]]] = {}
    skipped = sorted(set(data["stages"]) - set(STAGES))
    for stage in (s for s in STAGES if s in data["stages"]):
        if not isinstance(data["stages"][stage], list) or not data["stages"][stage]:
            raise CoefficientsError(f"stages.{stage}: expected a non-empty list of rows")
        rows[stage] = []
        for i, row in enumerate(data["stages"][stage]):
            where = f"stages.{stage}[{i}]"
            if not isinstance(row, dict):
                raise CoefficientsError(f"{where}: expected an object")
            missing = [k for k in REQUIRED if k not in row]
            if missing:
                raise CoefficientsError(f"{where}: missing {', '.join(missing)}")
            clean = {}
            for key in (*REQUIRED, *RESOURCES, "window_days", "factors"):
                if row.get(key) is not None:
                    positive = key in ("events_per_day", "users", "items", "window_days", "factors")
                    clean[key] = _number(row[key], f"{where}.{key}", positive=positive)
            rows[stage].append(clean)
    if not rows:
        raise CoefficientsError(f"stages: none of {', '.join(STAGES)} measured")
    machine = data.get("machine") if isinstance(data.get("machine"), dict) else {}
    coeffs = Coefficients(path, machine, window, factors, sizes, rows, skipped=skipped)
    coeffs.laws = fit_all(coeffs)
    return coeffs


def load_coefficients(path: str | Path, factors: float = DEFAULT_FACTORS) -> Coefficients:
    """Read and fit ``path``; ``FileNotFoundError`` if absent, ``CoefficientsError`` if malformed."""
    text = Path(path).read_text()
    try:
        data = json.loads(text)
    except ValueError as exc:
        raise CoefficientsError(f"not JSON: {exc}") from None
    return parse_coefficients(data, str(path), factors)


def _series(coeffs: Coefficients, stage: str, resource: str, rows: list[dict[str, float]]) -> tuple[list, list, list]:
    driver = DRIVERS[driver_of(stage, resource)]
    used = [r for r in rows if resource in r]
    xs = [driver(row_size(r, coeffs.window_days, coeffs.factors)) for r in used]
    return xs, [r[resource] for r in used], [r["events_per_day"] for r in used]


def fit_all(coeffs: Coefficients) -> dict[str, dict[str, Law]]:
    """One law per (stage, resource) measured at one size at least."""
    laws: dict[str, dict[str, Law]] = {}
    for stage, rows in coeffs.rows.items():
        for resource in RESOURCES:
            xs, ys, events = _series(coeffs, stage, resource, rows)
            if xs:
                laws.setdefault(stage, {})[resource] = fit_law(xs, ys, driver_of(stage, resource), events)
    return laws


@dataclass(frozen=True)
class Check:
    """The self-check of one (stage, resource): fitted without the largest size, predicting it."""

    stage: str
    resource: str
    driver: str
    x: float  # the held-out (largest) driver value
    events_per_day: float
    predicted: float
    measured: float
    judged: bool  # False: below JUDGE_FLOOR, or an INFORMATIONAL resource

    @property
    def error(self) -> float:
        """Relative error ``predicted / measured - 1``."""
        return self.predicted / self.measured - 1.0 if self.measured else math.inf

    @property
    def passed(self) -> bool:
        return abs(self.error) <= GOAL


def self_check(coeffs: Coefficients) -> list[Check]:
    """Refit each (stage, resource) on all but its largest size and predict that size.

    Needs three distinct sizes of the driver; the held-out cost is the mean of the rows at the
    largest driver value.
    """
    checks = []
    for stage, rows in coeffs.rows.items():
        for resource in RESOURCES:
            xs, ys, events = _series(coeffs, stage, resource, rows)
            if len(set(xs)) < 3:
                continue
            top = max(xs)
            held = [i for i, x in enumerate(xs) if x == top]
            rest = [i for i, x in enumerate(xs) if x != top]
            law = fit_law([xs[i] for i in rest], [ys[i] for i in rest], driver_of(stage, resource))
            measured = float(np.mean([ys[i] for i in held]))
            checks.append(
                Check(
                    stage,
                    resource,
                    driver_of(stage, resource),
                    top,
                    events[held[0]],
                    law.predict(top),
                    measured,
                    measured >= JUDGE_FLOOR[resource] and resource not in INFORMATIONAL,
                )
            )
    return checks


def check_summary(checks: Sequence[Check]) -> dict[str, Any]:
    """Per stage the worst judged relative error, and the overall verdict against ``GOAL``."""
    stages: dict[str, float] = {}
    for c in checks:
        if c.judged:
            stages[c.stage] = max(stages.get(c.stage, 0.0), abs(c.error))
    judged = [c for c in checks if c.judged]
    return {
        "goal": GOAL,
        "worst_by_stage": stages,
        "judged": len(judged),
        "passed": bool(judged) and all(c.passed for c in judged),
    }
