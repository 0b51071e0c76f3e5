"""`make demo`'s loop on a small world, on its own stack: real scheduler, every DAG, the timeline.

Runs ``scripts/demo.py`` as a user would (``clean_demo``: a private state folder and private
ports, so it never touches the session's shared stack; ``tests/demo_loop.py``) and checks what the timeline promises: every day
ingested, the served days scored by a pinned champion, the online hit-rate measured, the drift
on the drift day detected by the monitor, a retraining triggered through the scheduler with the
monitor's reason, gated and registered, and the registry left with one champion.
"""

from __future__ import annotations

import pytest

from tests.demo_loop import SERVED_DAYS, TRAIN_DAYS

pytestmark = pytest.mark.e2e


@pytest.mark.timeout(3000)
def test_demo_runs_the_whole_loop_and_retrains_on_drift(clean_demo):
    done = clean_demo
    assert done.returncode == 0, done.failure()
    print(done.stdout[-3000:])
    timeline = done.timeline
    rows = {r["day"]: r for r in timeline["rows"]}
    days = sorted(rows)
    assert len(days) == TRAIN_DAYS + SERVED_DAYS
    assert all(rows[d]["rows"] and rows[d]["rows"] > 2500 for d in days), rows
    train_days, served = days[:TRAIN_DAYS], days[TRAIN_DAYS:]
    # No champion while the first week was ingested: nothing scored, nothing monitored.
    assert all(rows[d]["model_version"] is None and rows[d]["retrain"] is None for d in train_days)
    # The weekly run trained on the first days and promoted the first champion.
    assert any("→ v1 promoted" in e for e in rows[train_days[-1]]["events"]), rows[train_days[-1]]
    # Every served day scored by a pinned champion version and monitored.
    assert all(rows[d]["model_version"] for d in served), rows
    assert rows[served[0]]["model_version"] == "1"
    assert all(rows[d]["retrain"] is not None for d in served)
    # The online outcome of the previous day's recommendations is measured from day 2 on.
    assert rows[served[0]]["hit_rate"] is None
    assert all(0 <= rows[d]["hit_rate"] <= 1 for d in served[1:]), rows
    # Stable day: no retrain. Drift day: alerts, retrain, a training run with the monitor's reason.
    assert rows[served[0]]["retrain"] is False, rows[served[0]]["decision"]
    drift = rows[served[1]]
    assert drift["retrain"] is True, drift["decision"]
    assert drift["alerts"], drift
    retrains = [e for e in drift["events"] if e.startswith("train (")]
    assert len(retrains) == 1 and "scheduled" not in retrains[0], drift["events"]
    assert ("promoted" in retrains[0]) or ("not_blessed" in retrains[0]), retrains
    # Whichever way the gate went, exactly one champion, and the last day used it.
    aliases = timeline["aliases"]
    assert aliases["champion"] in ("1", "2")
    assert rows[served[2]]["model_version"] == aliases["champion"]
    # The demo ends with the champion's gate numbers against popularity and the oracle.
    gate = timeline["champion_metrics"]
    assert {"challenger", "popularity", "oracle"} <= set(gate), gate
    assert gate["oracle"]["ndcg_at_10"] >= gate["challenger"]["ndcg_at_10"] >= gate["popularity"]["ndcg_at_10"]
    assert "this model" in done.stdout and "oracle" in done.stdout
