"""The policies as pure functions, rule by rule: the gate's blessing and the monitor's retrain decision."""

from __future__ import annotations

import pytest

from jobs.core.config import GateConfig
from jobs.evaluate.gate import bless
from jobs.monitor.decision import decide
from recsys_airflow.decisions import retrain_decision, scoring_plan

pytestmark = pytest.mark.unit

RULES = GateConfig(k=10, min_recall=0.05, min_lift_over_popularity=1.1, max_regression_vs_champion=0.01)


def metrics(challenger: tuple[float, float], popularity: float, champion: float | None = None) -> dict:
    out = {
        "challenger": {"recall_at_10": challenger[0], "ndcg_at_10": challenger[1]},
        "popularity": {"recall_at_10": 0.1, "ndcg_at_10": popularity},
    }
    if champion is not None:
        out["champion"] = {"recall_at_10": 0.2, "ndcg_at_10": champion}
    return out


@pytest.mark.parametrize(
    ("m", "blessed", "says"),
    [
        (metrics((0.20, 0.15), 0.10), True, "blessed: ndcg@10 0.1500 vs popularity 0.1000 (no champion yet)"),
        (metrics((0.04, 0.15), 0.10), False, "recall@10 0.0400 < floor 0.05"),  # the absolute floor
        (metrics((0.20, 0.105), 0.10), False, "ndcg@10 0.1050 < 1.1× popularity 0.1000"),  # lift over popularity
        (metrics((0.20, 0.111), 0.10), True, "blessed"),  # just over the lift: blessed
        (metrics((0.20, 0.15), 0.10, champion=0.165), False, "< champion 0.1650 − 0.01"),  # regression
        (metrics((0.20, 0.15), 0.10, champion=0.16), True, "champion 0.1600"),  # within the tolerance
        (metrics((0.01, 0.09), 0.10, champion=0.2), False, "floor 0.05; ndcg@10 0.0900 < 1.1× popularity"),
    ],
)
def test_gate_blesses_only_a_challenger_that_passes_every_rule(m, blessed, says):
    ok, reason = bless(m, 10, RULES)
    assert ok is blessed
    assert says in reason
    assert reason.startswith("blessed" if blessed else "not blessed")
    if not blessed and "champion" in m and "champion" in says:
        assert "champion" in reason


TH = {"performance_decay": 0.3, "min_drifted_features": 2}


def perf(verdict: str, used: bool = True) -> dict:
    return {"available": True, "verdict": verdict, "why": f"recall {verdict}", "used_for_decision": used}


@pytest.mark.parametrize(
    ("data", "pred", "performance", "retrain", "alerts", "says"),
    [
        ({"available": True, "alerts": []}, {}, perf("ok"), False, [], "no retrain: no feature in alert"),
        ({"available": True, "alerts": ["a"]}, {}, perf("ok"), False, ["a"], "data drift on 1 feature(s) (a) < 2"),
        ({"available": True, "alerts": ["a", "b"]}, {}, perf("ok"), True, ["a", "b"], "data drift on 2 features"),
        ({"available": True, "alerts": []}, {}, perf("alert"), True, ["performance"], "performance decay"),
        # decay measured on recommendations of a replaced version: reported, not decisive
        ({"available": True, "alerts": []}, {}, perf("alert", used=False), False, [], "no retrain"),
        (
            {"available": False, "reason": "no reference"},
            {},
            {"available": False, "reason": "x"},
            False,
            [],
            "unavailable",
        ),
        # prediction drift alone: announced, never a retrain
        (
            {"available": True, "alerts": []},
            {"available": True, "verdict": "alert"},
            perf("ok"),
            False,
            ["prediction"],
            "no",
        ),
    ],
)
def test_monitor_detector_decides_on_drift_count_or_decay(data, pred, performance, retrain, alerts, says):
    out = decide(data, pred, performance, TH)
    assert out["retrain"] is retrain
    assert out["alerts"] == alerts
    assert out["drift_alert"] is bool(alerts)
    assert says in out["reason"]


BASE = {
    "detector_retrain": True,
    "detector_reason": "data drift on 3 features",
    "force": False,
    "active_trainings": 0,
    "hours_since_training": 48.0,
    "cooldown_hours": 24.0,
    "last_training_run": "r1",
}


@pytest.mark.parametrize(
    ("change", "retrain", "says"),
    [
        ({}, True, "data drift on 3 features"),  # detector yes, no cooldown: retrain
        ({"detector_retrain": False, "detector_reason": "no retrain: quiet"}, False, "no retrain: quiet"),
        ({"active_trainings": 1}, False, "cooldown: 1 recsys_train run(s) queued or running"),
        ({"active_trainings": 1, "force": True}, False, "queued or running"),  # force never passes a running one
        ({"hours_since_training": 3.0}, False, "cooldown: training run r1 finished 3.0 h ago (< 24 h)"),
        ({"hours_since_training": 3.0, "force": True}, True, "force_retrain"),  # force overrides the cooldown
        ({"detector_retrain": False, "force": True}, True, "force_retrain (detector:"),  # and the detector
        ({"hours_since_training": None}, True, "data drift"),  # never trained: no cooldown
        ({"hours_since_training": 24.0}, True, "data drift"),  # the boundary: cooldown over
    ],
)
def test_retrain_decision_applies_cooldown_running_training_and_force(change, retrain, says):
    decision = retrain_decision(**{**BASE, **change})
    assert decision.retrain is retrain
    assert says in decision.reason


SERVED_BY_OTHER = {"2026-03-06": "manual__2026-03-06T00:00:00+00:00", "2026-03-07": None}


@pytest.mark.parametrize(
    ("days", "served_by", "sources", "rescore", "score", "zone", "held"),
    [
        # 4. live days never served: scored into the served zone
        (["2026-03-09"], {}, {"2026-03-09": ["scheduled"]}, False, ["2026-03-09"], "recommendations", {}),
        (["2026-03-09"], {}, {}, False, ["2026-03-09"], "recommendations", {}),  # a day param
        # 2. served by another run (or before the record existed): held, whoever asks
        (
            ["2026-03-06", "2026-03-07"],
            SERVED_BY_OTHER,
            {},
            False,
            [],
            "recommendations",
            {"2026-03-06": "served", "2026-03-07": "served"},
        ),
        (
            ["2026-03-06"],
            SERVED_BY_OTHER,
            {"2026-03-06": ["backfill"]},
            False,
            [],
            "recommendations",
            {"2026-03-06": "served"},
        ),
        # 4. served by this very run (a cleared run): scored again
        (
            ["2026-03-06"],
            {"2026-03-06": "this-run"},
            {"2026-03-06": ["scheduled"]},
            False,
            ["2026-03-06"],
            "recommendations",
            {},
        ),
        # 3. only backfills published it and it was never served: held
        (
            ["2026-02-01"],
            {},
            {"2026-02-01": ["backfill"]},
            False,
            [],
            "recommendations",
            {"2026-02-01": "backfill only"},
        ),
        # ... but a live run of the same day makes it live
        (["2026-02-01"], {}, {"2026-02-01": ["backfill", "manual"]}, False, ["2026-02-01"], "recommendations", {}),
        # 1. rescore: every day, into the rescored zone (the served record stays)
        (["2026-03-06"], SERVED_BY_OTHER, {}, True, ["2026-03-06"], "rescored", {}),
    ],
)
def test_scoring_plan_rule_by_rule(days, served_by, sources, rescore, score, zone, held):
    plan = scoring_plan(days, run_id="this-run", served_by=served_by, sources=sources, rescore=rescore)
    assert (plan.score, plan.zone) == (score, zone)
    assert set(plan.held) == set(held)
    for day, word in held.items():
        assert word in plan.held[day], plan.held[day]
