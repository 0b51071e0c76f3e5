"""A validated empty day (a quiet day of a sparse source) downstream of validation.

The snapshot's drift reference takes an empty train day and an empty held-out day; the monitor
judges an empty day's features and an empty day's performance "insufficient" (not judged) and
does not ask for a retrain. Scoring an empty day is covered in tests/integration/test_score.py.
"""

from __future__ import annotations

import json
from datetime import date

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pytest

from jobs import sim
from jobs.core.config import load_config
from jobs.core.reference import compute_reference
from jobs.core.schema import curated_schema
from jobs.monitor import decision, metrics, sections
from jobs.monitor.job import thresholds

pytestmark = pytest.mark.unit

EMPTY = curated_schema().empty_table()


@pytest.fixture(scope="module")
def day_table() -> pa.Table:
    table, _ = sim.generate_day(sim.WorldParams(users=200, items=100, events_per_day=2000), date(2026, 1, 1))
    table = table.set_column(
        table.schema.get_field_index("ts"), "ts", pc.cast(table.column("ts"), pa.timestamp("us", tz="UTC"))
    )
    return table.set_column(table.schema.get_field_index("rating"), "rating", table.column("rating").cast(pa.int32()))


def reference_of(table: pa.Table, *empty_days: str, holdout: pa.Table | None = None) -> dict:
    ref = compute_reference(
        [("2026-01-01", table.cast(curated_schema())), *((d, EMPTY) for d in empty_days)],
        known_users=np.unique(table.column("user_id").to_numpy()),
        known_items=np.unique(table.column("item_id").to_numpy()),
        holdout=("2026-01-03", EMPTY if holdout is None else holdout),
    )
    return json.loads(json.dumps(ref, default=lambda o: o.tolist() if hasattr(o, "tolist") else str(o)))


def test_reference_takes_an_empty_train_day_and_an_empty_holdout(day_table):
    ref = reference_of(day_table, "2026-01-02")
    assert ref["days"] == ["2026-01-01", "2026-01-02"]
    assert ref["rows"] == reference_of(day_table)["rows"] == day_table.num_rows


def test_monitor_judges_nothing_on_an_empty_day_and_does_not_retrain(day_table):
    th = thresholds(load_config(environ={}))
    data = sections.data_drift(reference_of(day_table), None, EMPTY, th)
    assert data["available"] and data["rows"] == 0 and data["alerts"] == [] and data["warnings"] == []
    assert {f["verdict"] for f in data["features"].values()} == {"insufficient"}
    online = metrics.online_performance(
        np.array([1, 1]),
        np.array([3, 4]),
        np.array([1, 2]),
        np.zeros(0),
        np.zeros(0),
        10,
        np.array([1]),
        np.array([3, 4]),
    )
    perf = {**sections.judge_performance(online, 0.1, 10, th), "used_for_decision": True}
    assert (perf["users"], perf["recall"], perf["verdict"]) == (0, None, "insufficient")
    verdict = decision.decide(data, {"available": True, "verdict": "insufficient"}, perf, th)
    assert not verdict["retrain"] and not verdict["drift_alert"]
    assert "performance insufficient: 0 evaluated users" in verdict["reason"]
