"""bench_object_store interleaves the sides, alternates their order and compares medians."""

from __future__ import annotations

import pytest

from benchmarks.bench_object_store import REPEATS, comparison_row, interleaved, median_rates, schedule

pytestmark = pytest.mark.unit


def test_the_order_alternates_so_no_side_always_runs_first():
    assert schedule(["local", "s3"], 3) == ["local", "s3", "s3", "local", "local", "s3"]
    order = schedule(["local", "s3"], 4)
    firsts = [order[i] for i in range(0, len(order), 2)]
    assert firsts == ["local", "s3", "local", "s3"]
    assert REPEATS >= 3


def test_runs_follow_the_schedule_and_medians_ignore_a_warm_up_outlier():
    calls = []
    # The first run of the session pays a 50 s warm-up, whichever side it is.
    walls = iter([60.0, 20.0, 21.0, 11.0, 9.0, 19.0])

    def once(side: str) -> float:
        calls.append(side)
        return next(walls)

    got = interleaved(["local", "s3"], 3, once)
    assert calls == ["local", "s3", "s3", "local", "local", "s3"]
    assert got == {"local": [60.0, 11.0, 9.0], "s3": [20.0, 21.0, 19.0]}
    row = median_rates(1_000, got)
    assert row["value"] == pytest.approx(1_000 / 20.0)
    assert row["reference"] == pytest.approx(1_000 / 11.0)
    assert row["ratio"] == pytest.approx(11.0 / 20.0)


def test_fewer_than_three_runs_per_side_are_refused():
    with pytest.raises(ValueError, match="at least 3 runs per side"):
        interleaved(["local", "s3"], 2, lambda side: 1.0)


def _results(counts: list[tuple[int, int, int]]) -> list[dict[str, int]]:
    return [{"rows": r, "quarantined": q, "input_rows": n} for r, q, n in counts]


def test_the_row_reports_each_sides_median_and_every_run():
    walls = {"local": [60.0, 11.0, 9.0], "s3": [20.0, 21.0, 19.0]}
    same = _results([(990, 10, 1_000)] * 3)
    row = comparison_row(1_000, walls, {"local": same, "s3": same}, [])
    assert (row["value"], row["reference"]) == (pytest.approx(1_000 / 20.0), pytest.approx(1_000 / 11.0))
    assert "median of 3 runs per side" in row["note"] and "(local s3 s3 local local s3)" in row["note"]
    assert "local 60.0, 11.0, 9.0 s; s3 20.0, 21.0, 19.0 s" in row["note"]


def test_runs_that_disagree_void_the_comparison_and_keep_the_earlier_rows():
    walls = {"local": [1.0, 1.0, 1.0], "s3": [2.0, 2.0, 2.0]}
    kept = [{"metric": "ingest_day 200,000 events: zones on S3 (moto) vs local disk", "value": 1.0}]
    results = {"local": _results([(990, 10, 1_000)] * 3), "s3": _results([(990, 10, 1_000)] * 2 + [(980, 20, 1_000)])}
    with pytest.raises(RuntimeError, match="runs disagree") as info:
        comparison_row(1_000, walls, results, kept)
    assert info.value.partial_rows is kept
