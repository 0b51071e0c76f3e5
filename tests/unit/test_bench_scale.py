"""The scale benchmark's pure parts (benchmarks/scale_run.py): the size schedule, the bytes and
memory accounting, and the rows and document built from measurements (no Spark, no jobs)."""

from __future__ import annotations

import os
import signal

import pytest

from benchmarks.__main__ import _normalise
from benchmarks.scale_fit import STAGES, parse_coefficients
from benchmarks.scale_run import (
    Measure,
    WorldSize,
    bytes_written,
    curve,
    failure_resource,
    failure_row,
    fit_table,
    harness_rows,
    median_measure,
    sample_peaks,
    scale_document,
    scale_row,
    schedule,
    size_label,
    tree_bytes,
    world_size,
)

pytestmark = pytest.mark.unit


def _measure(stage: str = "ingest", wall: float = 10.0, **kw) -> Measure:
    base = {
        "wall_s": wall,
        "job_cpu_s": 2.0,
        "server_cpu_s": 3.0,
        "peak_rss_mib": 200.0,
        "server_peak_rss_mib": 900.0,
        "bytes_written": 1000,
    }
    return Measure(stage, **(base | kw))


@pytest.mark.parametrize(
    ("events", "users", "items"),
    [(10_000, 1_000, 500), (1_000, 1_000, 500), (10_000_000, 1_000_000, 20_000), (100_000_000, 1_000_000, 20_000)],
)
def test_world_size_ends_of_the_schedule(events, users, items):
    assert world_size(events) == WorldSize(events, users, items)


def test_users_and_items_grow_with_the_events():
    sizes = [world_size(n) for n in (10_000, 30_000, 100_000, 300_000, 1_000_000, 10_000_000)]
    assert [s.users for s in sizes] == [1_000, 3_000, 10_000, 30_000, 100_000, 1_000_000]
    items = [s.items for s in sizes]
    assert items == sorted(items) and len(set(items)) == len(items)
    assert 500 < world_size(1_000_000).items < 20_000


@pytest.mark.parametrize("quick", [True, False])
def test_schedule_spans_a_hundred_times(quick):
    sizes = schedule(quick)
    assert len(sizes) >= 3 and sizes[-1].events_per_day / sizes[0].events_per_day >= 100
    assert [s.events_per_day for s in sizes] == sorted(s.events_per_day for s in sizes)
    assert (sizes[0].events_per_day, sizes[-1].events_per_day) == (
        (10_000, 1_000_000) if quick else (100_000, 10_000_000)
    )


def test_schedule_override_is_sorted_and_deduplicated():
    assert [s.events_per_day for s in schedule(True, "300000, 10000,1e5,10000")] == [10_000, 100_000, 300_000]
    with pytest.raises(ValueError, match="RECSYS_SCALE_SIZES"):
        schedule(True, "0")


@pytest.mark.parametrize(
    ("n", "label"), [(500, "500"), (10_000, "10k"), (300_000, "300k"), (1_000_000, "1M"), (2_500_000, "2.5M")]
)
def test_size_label(n, label):
    assert size_label(n) == label


def test_tree_bytes_counts_every_file_and_growth_is_never_negative(tmp_path):
    assert tree_bytes(tmp_path / "absent") == 0
    (tmp_path / "a" / "b").mkdir(parents=True)
    (tmp_path / "a" / "x.bin").write_bytes(b"x" * 100)
    (tmp_path / "a" / "b" / "y.bin").write_bytes(b"y" * 23)
    before = tree_bytes(tmp_path)
    assert before == 123
    (tmp_path / "a" / "b" / "z.bin").write_bytes(b"z" * 7)
    assert bytes_written(before, tree_bytes(tmp_path)) == 7
    assert bytes_written(123, 100) == 0  # a stage that replaced a partition with a smaller one


def test_sample_peaks_sees_this_process():
    with sample_peaks({"me": os.getpid()}, interval=0.01) as peaks:
        pass
    assert peaks["me"] > 10  # MiB: a Python interpreter with pytest loaded


def test_median_measure_takes_each_figure_separately():
    runs = [_measure(wall=w, peak_rss_mib=p, bytes_written=b) for w, p, b in [(1, 300, 10), (9, 100, 30), (5, 200, 20)]]
    m = median_measure(runs)
    assert (m.wall_s, m.peak_rss_mib, m.bytes_written, m.runs) == (5, 200, 20, 3)
    assert m.cpu_s == 5.0
    with pytest.raises(ValueError):
        median_measure([])


@pytest.mark.parametrize(
    ("rc", "timed_out", "text", "alive", "expected"),
    [
        (-9, True, "", True, "wall time"),
        (1, False, "Spark Connect server unavailable", False, "memory (the Spark Connect server died)"),
        (-signal.SIGKILL, False, "", True, "memory (job killed by SIGKILL: the OOM killer)"),
        (137, False, "", True, "memory (job killed by SIGKILL: the OOM killer)"),
        (1, False, "java.lang.OutOfMemoryError: Java heap space", True, "memory (Spark server JVM heap)"),
        (1, False, "numpy.core._exceptions._ArrayMemoryError: Unable to allocate 3 GiB", True, "memory (job process)"),
        (1, False, "OSError: [Errno 28] No space left on device", True, "disk"),
        (4, False, "validation failed: expectation x", True, "error (not a resource)"),
    ],
)
def test_failure_resource(rc, timed_out, text, alive, expected):
    assert failure_resource(rc, timed_out, text, alive) == expected


def _document(law=lambda x: 5.0 + 1e-4 * x):
    sizes = [world_size(n) for n in (10_000, 100_000, 1_000_000)]
    stages = {stage: [scale_row(s, _measure(stage, wall=law(s.events_per_day))) for s in sizes] for stage in STAGES}
    return sizes, scale_document({"cpus": 2}, sizes, stages, window_days=7, factors=64, extra={"epochs": 1})


def test_document_is_the_capacity_models_format():
    sizes, doc = _document()
    assert doc["window_days"] == 7 and doc["factors"] == 64 and doc["epochs"] == 1 and doc["failures"] == []
    assert doc["sizes"] == [{"events_per_day": s.events_per_day, "users": s.users, "items": s.items} for s in sizes]
    row = doc["stages"]["ingest"][0]
    assert row["cpu_s"] == row["job_cpu_s"] + row["server_cpu_s"] == 5.0
    coeffs = parse_coefficients(doc)
    assert set(coeffs.rows) == set(STAGES)
    ingest = coeffs.laws["ingest"]["wall_s"]  # driver events/day: the law is recovered
    assert ingest.k == pytest.approx(1.0, abs=1e-3) and ingest.fixed == pytest.approx(5.0, rel=1e-2)


def test_document_lists_only_sizes_that_measured_something():
    sizes = [world_size(n) for n in (10_000, 100_000)]
    doc = scale_document({}, sizes, {"ingest": [scale_row(sizes[0], _measure())]}, window_days=7, factors=64)
    assert [s["events_per_day"] for s in doc["sizes"]] == [10_000] and list(doc["stages"]) == ["ingest"]


def test_harness_rows_are_valid_rows_with_a_reference_and_an_exponent():
    _, doc = _document()
    coeffs = parse_coefficients(doc)
    rows = [_normalise("scale", r) for r in harness_rows(coeffs, doc["stages"])]
    metrics = [r["metric"] for r in rows]
    assert "scale ingest 1M: wall" in metrics and "scale monitor: growth exponent k (wall)" in metrics
    per_unit = next(r for r in rows if r["metric"].startswith("scale ingest: wall per unit"))
    assert per_unit["value"] == pytest.approx((5 + 100) / 1e6) and per_unit["reference"] == pytest.approx((5 + 1) / 1e4)
    assert per_unit["ratio"] == pytest.approx(per_unit["value"] / per_unit["reference"])
    k = next(r for r in rows if r["metric"] == "scale ingest: growth exponent k (wall)")
    assert k["value"] == pytest.approx(1.0, abs=1e-3) and "events/day" in k["note"]
    assert "job 2.0 + Spark server 3.0" in next(r for r in rows if r["metric"] == "scale ingest 10k: wall")["note"]
    table = fit_table(coeffs)
    assert table.splitlines()[0].split()[:6] == ["stage", "resource", "driver", "fixed", "b", "k"]
    assert any(line.startswith("train ") and "wall_s" in line for line in table.splitlines())


def test_a_failure_names_stage_size_and_resource_with_its_curve():
    sizes = [world_size(n) for n in (10_000, 100_000)]
    done = [scale_row(s, _measure("snapshot", peak_rss_mib=p)) for s, p in zip(sizes, (300.0, 900.0), strict=True)]
    attempt = _measure("snapshot", wall=42.0, peak_rss_mib=2_000.0)
    shown = curve(done, "memory (job process)", attempt)
    assert shown == "peak_rss_mib curve: 10k 300 MiB, 100k 900 MiB, failed attempt 2,000 MiB after 42 s"
    assert curve([], "wall time").endswith("no smaller size measured")
    assert curve(done, "memory (Spark server JVM heap)").startswith("server_peak_rss_mib curve")
    failure = {"stage": "snapshot", "size": "1M", "resource": "memory (job process)", "error": "MemoryError"}
    row = _normalise("scale", failure_row(failure, shown))
    assert row["metric"] == "scale snapshot 1M FAILED" and row["value"] is None
    assert "snapshot at 1M" in row["note"] and "memory (job process)" in row["note"] and "900 MiB" in row["note"]
