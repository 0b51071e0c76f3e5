"""Real ratings through the real scheduler: ``scripts/demo.py --world movielens-100k`` on a slice.

The last 11 days of MovieLens-100K (fetched from the RecBole wheel by ``jobs.importer``): ten
days of history by backfill, then the last day arriving live, on a private stack (one served
day: serving day after day is the synthetic demo's, ``tests/e2e/test_demo_loop.py``). What a user of
a real log needs to hold: every day's curated rows equal the source's count for that day (the
ratings log has no device/country: null, not invented), every day passes validation (a
36-rating Sunday and a 696-rating Friday are data), the training run trains every family and
the gate decides, the champion scores the arriving days and the monitor reports them, with the
context features it cannot compute said to be "not available".

The drift cooldown is 24 h here (no retraining of a model minutes old). The gate is opened here
(``gate.min_users`` 5, no recall floor, ``gate.baseline_margin`` 1.0, no replay: the slice's
held-out day has 5 evaluated users) so that the arriving days get a champion to serve them; the evidence rules themselves are tested in ``tests/unit/test_decisions.py``
and ``tests/dags/test_train_dag_run.py``.
"""

from __future__ import annotations

import json
import os
from collections import Counter
from datetime import UTC, date, datetime, timedelta

import pytest

pytestmark = pytest.mark.e2e

LAST = date(1998, 4, 22)
TRAIN_DAYS, SERVED_DAYS = 10, 1
DAYS = [(LAST - timedelta(days=n)).isoformat() for n in range(TRAIN_DAYS + SERVED_DAYS - 1, -1, -1)]
OPEN_GATE = {
    "RECSYS__GATE__MIN_USERS": "5",
    "RECSYS__GATE__MIN_RECALL": "0",
    "RECSYS__GATE__BASELINE_MARGIN": "1.0",
    "RECSYS__GATE__REPLAY_DAYS": "0",
    # The served day's monitor reports drift on real data (a day's films vs a 10-day reference:
    # rating and item popularity); the cooldown keeps it from retraining a model minutes old (a
    # second training adds minutes and asserts nothing here; drift retraining is the demo's).
    "RECSYS__DRIFT__COOLDOWN_HOURS": "24",
}


@pytest.fixture(scope="module")
def replay(tmp_path_factory):
    from tests.demo_loop import run_demo

    args = ("--world=movielens-100k", f"--train-days={TRAIN_DAYS}", f"--served-days={SERVED_DAYS}")
    return run_demo(tmp_path_factory.mktemp("movielens"), extra_env=OPEN_GATE, args=args, timeout=1500)


def source_counts() -> Counter:
    """Ratings per UTC day, counted from the source file with the standard library."""
    from jobs.importer.datasets import ml100k

    lines = ml100k().read_text().splitlines()[1:]
    return Counter(datetime.fromtimestamp(int(float(x.split("\t")[3])), UTC).date().isoformat() for x in lines if x)


@pytest.mark.timeout(1800)
def test_movielens_days_flow_through_the_scheduler_and_are_served(replay):
    assert replay.returncode == 0, replay.failure()
    print(replay.stdout[-2500:])
    rows = {r["day"]: r for r in replay.timeline["rows"]}
    assert sorted(rows) == DAYS
    counts = source_counts()
    assert {d: rows[d]["rows"] for d in DAYS} == {d: counts[d] for d in DAYS}

    curated = replay.end_state["curated"]
    assert {d: curated[d]["validated"] for d in DAYS} == dict.fromkeys(DAYS, True)

    from jobs.core import catalog, storage
    from jobs.core.config import load_config

    stack = replay.stack
    cfg = load_config(environ={**os.environ, **stack.env(), "RECSYS__STORAGE__ROOT": str(stack.state / "data")})

    first = DAYS[TRAIN_DAYS - 1]
    assert any(e.startswith("train (scheduled)") and "promoted" in e for e in rows[first]["events"]), rows[first]
    assert replay.timeline["aliases"]["champion"], replay.timeline["aliases"]
    for day in DAYS[TRAIN_DAYS:]:
        assert rows[day]["model_version"] is not None, rows[day]
        assert replay.end_state["recommendations"][day]["rows"] > 0, replay.end_state["recommendations"][day]
        report = json.loads(storage.read_text(catalog.report_json(cfg, "drift", day)))
        features = report["data_drift"]["features"]
        for name in ("device", "country"):
            assert features[name]["available"] is False and features[name]["verdict"] == "not available", features[name]
    assert "gate: blessed within 1.0 NDCG@10 of the best baseline" in replay.stdout
