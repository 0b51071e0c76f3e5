"""The row-count rule of a day: robust bounds from the recent *observed* counts.

Pure functions, no I/O: counts in, bounds and verdict out (``jobs.validate.job.parameters``
reads the history from the curated manifests and hands the bounds to the GX suite).

The rule, on ``log(1 + rows)``:

* the **centre** is the median of the last ``window_days`` observed days — every published
  day counts, refused ones included, so a lasting rise or fall in volume becomes the new
  normal within half a window instead of locking itself out (the old rule took only validated
  days into a 7-day median: a surge refused itself day after day);
* the **spread** is the median absolute deviation of those log counts (× 1.4826, a normal
  σ); a day may stray ``mads`` spreads from the centre, and never less than the
  ``[min_ratio, max_ratio]`` band around it. A steady source (the simulator) thus gets the
  band (0.3–3× the median: a 10× drop or surge is refused), a bursty one (MovieLens) gets
  bounds as wide as its own history says is normal;
* ``floor`` is an absolute lower bound that holds with or without history; with fewer than
  ``min_days`` observed days (the rule is still learning the source's volume) it is the only
  bound.

An empty day (0 rows) is not judged by the volume rule but by the source's declared policy:
``pass`` for a sparse log with quiet days, ``fail`` for a live stream, where it means an outage.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

MAD_TO_SIGMA = 1.4826  # MAD of a normal sample x this = its standard deviation


@dataclass(frozen=True)
class VolumeRule:
    """The knobs (``ingest.*`` in the pipeline config)."""

    window_days: int = 28
    mads: float = 3.5
    min_ratio: float = 0.3
    max_ratio: float = 3.0
    floor: int = 1
    empty_day: Literal["pass", "fail"] = "fail"
    min_days: int = 7


@dataclass(frozen=True)
class Bounds:
    """Row-count bounds of a non-empty day; ``max_rows`` None means unbounded (no history)."""

    min_rows: int
    max_rows: int | None
    median: float | None  # median observed count of the window
    spread: float | None  # robust σ of the window's log counts
    observed: int  # days of history used


def bounds(history: Sequence[int], rule: VolumeRule) -> Bounds:
    """Bounds for the next day from the counts of the observed days before it (any order); with
    fewer than ``rule.min_days`` of them, only the absolute floor (a dispersion estimated from a
    few days of a bursty source refuses its ordinary quiet days)."""
    if len(history) < rule.min_days:
        return Bounds(max(rule.floor, 0), None, None, None, len(history))
    logs = [math.log1p(max(0, int(n))) for n in history]
    centre = statistics.median(logs)
    spread = MAD_TO_SIGMA * statistics.median(abs(v - centre) for v in logs)
    below = max(rule.mads * spread, -math.log(rule.min_ratio))
    above = max(rule.mads * spread, math.log(rule.max_ratio))
    low = math.ceil(math.expm1(centre - below) - 1e-9)
    high = math.floor(math.expm1(centre + above) + 1e-9)
    return Bounds(max(rule.floor, low, 0), max(high, 0), math.expm1(centre), spread, len(history))


def judge(rows: int, history: Sequence[int], rule: VolumeRule) -> tuple[bool, str]:
    """(passed, why) for a day of ``rows`` rows after ``history``; an empty day follows ``rule.empty_day``."""
    if rows == 0:
        ok = rule.empty_day == "pass"
        return (
            ok,
            f"empty day: {'passed' if ok else 'refused'} by the source's policy (ingest.empty_day={rule.empty_day})",
        )
    b = bounds(history, rule)
    if rows < b.min_rows:
        return False, f"{rows} rows < {b.min_rows} (low bound of {b.observed} observed days)"
    if b.max_rows is not None and rows > b.max_rows:
        return False, f"{rows} rows > {b.max_rows} (high bound of {b.observed} observed days)"
    return True, f"{rows} rows within [{b.min_rows}, {b.max_rows}]"


def row_count_bounds(rows: int, history: Sequence[int], rule: VolumeRule) -> tuple[int, int | None]:
    """``(min_rows, max_rows)`` for the GX row-count expectation of a day of ``rows`` rows:
    the volume bounds, or, for an empty day, bounds that let the empty-day policy decide."""
    if rows == 0:
        return (0, 0) if rule.empty_day == "pass" else (max(1, rule.floor), None)
    b = bounds(history, rule)
    return b.min_rows, b.max_rows


def replay(counts: Sequence[int], rule: VolumeRule) -> list[tuple[int, bool, str]]:
    """Judge a series of daily counts in order, each day against the ``window_days`` before it
    (every day an observation, refused or not); returns ``(index, passed, why)`` per day."""
    return [(i, *judge(n, counts[max(0, i - rule.window_days) : i], rule)) for i, n in enumerate(counts)]
