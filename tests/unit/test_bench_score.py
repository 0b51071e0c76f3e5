"""An extrapolated figure is never in a value column: bench_score's sizes not run, and the
harness's rule for every benchmark."""

from __future__ import annotations

import sys
import types

import pytest

from benchmarks import __main__ as harness
from benchmarks.bench_score import not_run_row, predict

pytestmark = pytest.mark.unit


def test_a_size_not_run_has_no_value_and_its_extrapolation_is_labelled_in_the_note():
    estimate, how = predict([(25_000, 40.0), (100_000, 100.0)], 1_000_000)
    assert estimate == pytest.approx(820.0)
    row = harness._normalise("score", not_run_row(1_000_000, estimate, how, budget_s=360.0))
    assert row["value"] is None and row["reference"] is None and row["ratio"] is None
    assert row["metric"].endswith("(not run)")
    assert "extrapolated 820s" in row["note"] and "nothing measured" in row["note"]
    line = next(x for x in harness.markdown([row], {}).splitlines() if "(not run)" in x)
    cells = [c.strip() for c in line.strip().strip("|").split("|")]
    assert cells[harness.ROW_KEYS.index("value")] == ""


# The row bench_score wrote before: the prediction as the value.
OLD_ROW = {
    "metric": "jobs.score end to end, 1,000,000 users, command wall time (predicted, not run)",
    "value": 820.0,
    "unit": "s",
    "note": "line through 25,000 users (40s) and 100,000 users (100s)",
}


@pytest.mark.parametrize("key", ["value", "reference"])
def test_the_harness_refuses_a_figure_in_a_row_that_was_not_measured(key):
    row = {**OLD_ROW, "value": None, key: 820.0}
    with pytest.raises(ValueError, match="was not measured"):
        harness._normalise("score", row)


def test_a_benchmark_with_a_predicted_value_fails_its_run(monkeypatch):
    module = types.ModuleType("benchmarks.bench_fake")
    module.run = lambda quick: [{"metric": "measured", "value": 1.0}, OLD_ROW]
    monkeypatch.setitem(sys.modules, "benchmarks.bench_fake", module)
    rows, status = harness.run_one("fake", quick=True)
    assert status == "failed"
    assert [r["metric"] for r in rows] == ["error"] and "was not measured" in rows[0]["note"]
