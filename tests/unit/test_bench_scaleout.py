"""bench_scaleout's checks: the same rows in other files or order are the same output, a changed
row is not; a stage that did not run on every worker is named; the row of a stage."""

from __future__ import annotations

import pyarrow as pa
import pytest

from benchmarks import __main__ as harness
from benchmarks.bench_scaleout import (
    ScaleOutFailed,
    cores_note,
    executors_used,
    output_mismatches,
    spread_problems,
    stage_row,
    table_digest,
)
from scripts import spark_service
from scripts.stack_shape import Stack

pytestmark = pytest.mark.unit

TABLE = pa.table(
    {
        "user_id": pa.array([1, 1, 2, 3], pa.int64()),
        "rank": pa.array([1, 2, 1, 1], pa.int32()),
        "score": pa.array([0.5, None, 0.25, 0.125], pa.float32()),
        "model_version": ["1", "1", "1", "1"],
    }
)


def test_the_digest_is_of_the_rows_not_of_their_files_or_order():
    one_file = table_digest(TABLE)
    two_files_reversed = table_digest(pa.concat_tables([TABLE.slice(2).take([1, 0]), TABLE.slice(0, 2)]))
    assert one_file == two_files_reversed and one_file["rows"] == 4
    changed = TABLE.set_column(2, "score", pa.array([0.5, None, 0.25, 0.5], pa.float32()))
    assert table_digest(changed)["digest"] != one_file["digest"]
    assert table_digest(TABLE.slice(0, 3))["rows"] == 3
    retyped = TABLE.set_column(1, "rank", pa.array([1, 2, 1, 1], pa.int64()))
    assert table_digest(retyped)["digest"] != one_file["digest"]  # the schema is part of the output
    assert table_digest(TABLE.slice(0, 0)) != table_digest(pa.table({}))


def test_outputs_that_differ_are_named_with_both_sides():
    same = {"curated dt=2026-01-01": {"rows": 4, "digest": "a"}, "recommendations": {"rows": 2, "digest": "b"}}
    assert output_mismatches({1: same, 2: dict(same)}) == []
    other = {**same, "recommendations": {"rows": 2, "digest": "c"}}
    (problem,) = output_mismatches({2: other, 1: same})
    assert problem.startswith("recommendations differs: 1 worker(s) {'rows': 2, 'digest': 'b'} vs 2 worker(s)")
    assert output_mismatches({1: same, 2: {"recommendations": same["recommendations"]}}) == [
        "curated dt=2026-01-01 differs: 1 worker(s) {'rows': 4, 'digest': 'a'} vs 2 worker(s) None"
    ]


def test_a_stage_that_ran_on_fewer_executors_than_workers_is_a_problem():
    assert executors_used({"driver": 5, "0": 3, "1": 0, "2": 1}) == ["0", "2"]
    good = {1: {"ingest": {"0": 3}, "score": {"0": 4}}, 2: {"ingest": {"0": 2, "1": 2}, "score": {"0": 1, "1": 5}}}
    assert spread_problems(good) == []
    bad = {**good, 2: {"ingest": {"0": 2, "1": 2}, "score": {"0": 6, "1": 0, "driver": 2}}}
    assert spread_problems(bad) == ["score with 2 workers ran on executors ['0']: {'0': 6, '1': 0, 'driver': 2}"]
    assert spread_problems({1: {"ingest": {}}}) == ["ingest with 1 workers ran on executors none: {}"]


def test_a_stage_row_is_the_two_worker_wall_against_the_one_worker_wall():
    row = harness._normalise("scaleout", stage_row("ingest", "1 day", {1: 40.0, 2: 32.0}, {1: 50.0, 2: 70.0}, "x"))
    assert (row["value"], row["reference"], row["unit"]) == (32.0, 40.0, "s")
    assert row["ratio"] == pytest.approx(0.8)
    assert "speed-up 1.25x" in row["note"] and row["note"].endswith("; x")
    assert "cannot be reached" in cores_note(2) and "cannot" not in cores_note(4)


def test_a_failed_check_keeps_the_rows_and_fails_the_run():
    rows = [{"metric": "scale-out ingest wall", "value": 1.0}]
    exc = ScaleOutFailed(["recommendations differs", "score with 2 workers ran on executors ['0']"], rows)
    assert exc.partial_rows is rows and str(exc).startswith("recommendations differs; score")


def test_a_cluster_of_one_worker_starts_one_worker_and_caps_its_cores(tmp_path):
    ports = {"connect": 1, "ui": 2, "master": 3}
    assert spark_service.components("standalone") == ("spark-master", *spark_service.WORKERS, "spark-connect")
    one = spark_service.commands("standalone", "local[2]", ports, "1g", {}, tmp_path, workers=1)
    assert set(one) == {"spark-master", "spark-worker-1", "spark-connect"}
    assert f"spark.cores.max={spark_service.WORKER_CORES}" in one["spark-connect"]
    both = spark_service.commands("standalone", "local[2]", ports, "1g", {}, tmp_path)
    assert f"spark.cores.max={2 * spark_service.WORKER_CORES}" in both["spark-connect"]
    with pytest.raises(ValueError, match="1 to 2 workers"):
        spark_service.components("standalone", 3)
    stack = Stack.on_free_ports(tmp_path, spark_cluster="standalone", spark_workers=1)
    assert stack.components[:3] == ("spark-master", "spark-worker-1", "spark-connect")
    assert Stack.on_free_ports(tmp_path).spark_workers == len(spark_service.WORKERS)  # the default: both
