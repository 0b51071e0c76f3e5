"""The row-count rule (``jobs.validate.volume``): counts in, verdicts out.

On the real ML-100K daily series (fetched once by ``jobs.importer.datasets.ml100k``) the shipped
rule refuses at most 5% of the days; on a steady simulated world it refuses the planted volume
corruptions (a 10x drop, a 10x surge, an empty day under the live stream's policy).
"""

from __future__ import annotations

import dataclasses
from datetime import date, timedelta

import pytest

from jobs import sim
from jobs.core.config import load_config
from jobs.validate import volume
from jobs.validate.job import volume_rule
from jobs.validate.volume import VolumeRule

pytestmark = pytest.mark.unit

SHIPPED = volume_rule(load_config(environ={}))
ML100K_START = date(1997, 9, 20)


@pytest.fixture(scope="module")
def ml100k_counts() -> list[int]:
    """Ratings per UTC day of ML-100K, 1997-09-20..1998-04-22, a quiet day as 0."""
    import pandas as pd

    from jobs.importer.datasets import ml100k

    ts = pd.read_csv(ml100k(), sep="\t", usecols=[3], header=0, names=["ts"])["ts"]
    days = pd.to_datetime(ts, unit="s", utc=True).dt.date
    counts = days.value_counts()
    full = [ML100K_START + timedelta(days=i) for i in range((max(counts.index) - ML100K_START).days + 1)]
    return [int(counts.get(d, 0)) for d in full]


def test_shipped_rule_refuses_at_most_five_percent_of_ml100k_days(ml100k_counts):
    counts = ml100k_counts
    assert (len(counts), sum(counts), counts.count(0)) == (215, 100_000, 2)
    rule = dataclasses.replace(SHIPPED, empty_day="pass")  # MovieLens declares its quiet days normal
    verdicts = volume.replay(counts, rule)
    refused = {(ML100K_START + timedelta(days=i)).isoformat(): counts[i] for i, ok, _ in verdicts if not ok}
    # the old rule (0.3-3x the median of the last 7 validated days) refused 53 of the 213 non-empty days
    assert len(refused) / sum(1 for n in counts if n) <= 0.05
    assert refused == {
        "1997-11-04": 1,  # the median of the 28 days before is ~280
        "1997-12-05": 72,  # three near-silent days after the November surge (median ~700)
        "1997-12-08": 64,
        "1997-12-10": 40,
        "1997-12-25": 4,
        "1998-02-05": 41,
        "1998-03-20": 6,
    }
    surge = [i for i, n in enumerate(counts) if n == 3550]  # 1997-11-13 and the growth after it pass
    assert all(ok for i, ok, _ in verdicts[surge[0] : surge[0] + 10])
    assert all(ok for i, ok, _ in verdicts if counts[i] == 0)


def steady_counts(days: int, scenario: str | None = None) -> list[int]:
    """Delivered rows per day of a steady simulated world; the last day carries ``scenario``."""
    start = date(2026, 1, 1)
    last = start + timedelta(days=days - 1)
    scenarios = (sim.Scenario.parse(f"{scenario}@{last.isoformat()}", sim.CORRUPTION_KINDS),) if scenario else ()
    p = sim.WorldParams(users=300, items=120, events_per_day=2000, scenarios=scenarios)
    out = []
    for i in range(days):
        table, _ = sim.generate_day(p, start + timedelta(days=i))
        out.append(len(table))
    return out


@pytest.fixture(scope="module")
def steady() -> list[int]:
    return steady_counts(28)


@pytest.mark.parametrize(("factor", "why"), [(0.1, "<"), (10.0, ">"), (0.0, "empty day: refused")])
def test_planted_volume_corruptions_on_a_steady_world_are_refused(steady, factor, why):
    ok, reason = volume.judge(round(steady[-1] * factor), steady, SHIPPED)
    assert not ok and why in reason
    assert volume.judge(steady[-1], steady, SHIPPED)[0]  # the normal day passes


def test_simulator_volume_corruptions_are_refused(tmp_path, steady):
    for kind in ("volume_drop", "volume_surge", "empty_day"):
        m = sim.write_day(
            sim.WorldParams(
                users=300, items=120, events_per_day=2000, scenarios=(sim.Scenario(kind, date(2026, 1, 29)),)
            ),
            date(2026, 1, 29),
            str(tmp_path / "landing"),
            str(tmp_path / "truth"),
        )
        ok, reason = volume.judge(m["rows_written"], steady, SHIPPED)
        assert not ok, (kind, m["rows_written"], reason)


def test_missing_days_are_no_observation_and_the_next_day_is_judged_as_usual(steady):
    history = steady[:10] + steady[12:]  # two days never arrived (the landing sensor fails those)
    assert volume.judge(steady[-1], history, SHIPPED)[0]


def test_no_history_only_the_absolute_floor():
    rule = VolumeRule(floor=5)
    assert volume.bounds([], rule) == volume.Bounds(5, None, None, None, 0)
    assert volume.judge(5, [], rule)[0] and volume.judge(10**9, [], rule)[0]
    assert not volume.judge(4, [], rule)[0]
    assert not volume.judge(0, [], rule)[0]
    assert volume.judge(0, [], dataclasses.replace(rule, empty_day="pass"))[0]


def test_one_observed_day_gives_the_narrowest_band():
    b = volume.bounds([1000], VolumeRule(min_days=1))
    assert (b.min_rows, b.max_rows, b.spread) == (300, 3002, 0.0)  # log1p scale: ceil(1001 x 0.3 - 1), 1001 x 3 - 1


def test_fewer_observed_days_than_min_days_only_the_floor():
    rule = VolumeRule(floor=2, min_days=7)
    assert volume.bounds([1000] * 6, rule) == volume.Bounds(2, None, None, None, 6)
    assert volume.judge(10_000, [1000] * 6, rule)[0] and not volume.judge(10_000, [1000] * 7, rule)[0]


def test_ml100k_last_five_weeks_replayed_from_nothing_refuses_no_day(ml100k_counts):
    """The MovieLens demo's slice (no earlier history): its quiet and burst days are data; the
    demo declares the source's 14-day learning period (scripts/demo.py REAL_LOG_ENV)."""
    rule = dataclasses.replace(SHIPPED, min_days=14)
    refused = [(i, why) for i, ok, why in volume.replay(ml100k_counts[-35:], rule) if not ok]
    assert refused == []


def test_a_lasting_level_shift_is_accepted_within_half_a_window():
    counts = [1000] * 28 + [4000] * 28
    refused = [i for i, ok, _ in volume.replay(counts, VolumeRule()) if not ok]
    assert refused and max(refused) < 28 + 15  # the old rule refused the new level for ever


def test_a_bursty_history_widens_the_bounds_and_refused_days_count():
    bursty = [300, 80, 900, 150, 1200, 60, 400] * 4
    b = volume.bounds(bursty, VolumeRule())
    assert b.min_rows < 0.1 * b.median < 10 * b.median < b.max_rows
    assert volume.bounds([*bursty[1:], 10], VolumeRule()).observed == 28


@pytest.mark.parametrize(
    ("rows", "policy", "expected"),
    [(0, "pass", (0, 0)), (0, "fail", (1, None)), (1000, "fail", (300, 3002))],
)
def test_row_count_bounds_for_the_gx_suite(rows, policy, expected):
    assert volume.row_count_bounds(rows, [1000] * 7, VolumeRule(empty_day=policy)) == expected
