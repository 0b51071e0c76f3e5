"""The policies as pure functions, rule by rule: the gate's blessing and the monitor's retrain decision."""

from __future__ import annotations

import numpy as np
import pytest

from jobs.core.config import GateConfig
from jobs.evaluate import replay
from jobs.evaluate.gate import bless
from jobs.monitor.decision import decide
from recsys_airflow.decisions import decision_record, retrain_conf, retrain_decision, scoring_plan

pytestmark = pytest.mark.unit

RULES = GateConfig(k=10, min_recall=0.05, min_users=100, baseline_margin=0.0, replay_tolerance=0.02)


def interval(mean: float, half: float = 0.02, pairs: int = 300) -> dict:
    return {
        "mean": mean,
        "low": mean - half,
        "high": mean + half,
        "confidence": 0.95,
        "resamples": 1000,
        "pairs": pairs,
    }


def evidence(lifts: dict[str, float], users: int = 300, recall: float = 0.2, half: float = 0.02) -> dict:
    """Pooled evidence whose challenger has NDCG@10 0.2 and the given mean lift over each baseline."""
    pooled = {"challenger": {"recall_at_10": recall, "ndcg_at_10": 0.2}}
    pooled |= {name: {"recall_at_10": 0.1, "ndcg_at_10": 0.2 - lift} for name, lift in lifts.items()}
    return {
        "days": [{"day": "2026-03-06", "users": users, "metrics": {}}],
        "skipped": {},
        "users": users,
        "min_users": 100,
        "pooled": pooled,
        "intervals": {name: interval(lift, half, users) for name, lift in lifts.items()},
    }


LIFTS = {"popularity": 0.05, "recent_popularity": 0.04}


@pytest.mark.parametrize(
    ("ev", "blessed", "says"),
    [
        # a first model (no champion) held to the rule against both baselines
        (
            evidence(LIFTS),
            True,
            "blessed (300 user-days over 1 day(s)): ndcg@10 challenger − recent_popularity +0.0400",
        ),
        (evidence(LIFTS), True, "no champion yet; recall@10 0.2000"),
        # too few (day, user) pairs: refused with the count, whatever the numbers
        (evidence(LIFTS, users=40), False, "insufficient evidence: 40 user-days over 1 day(s) < gate.min_users 100"),
        # worse than recent popularity (the best baseline here): refused naming it and its CI
        (
            evidence({"popularity": 0.03, "recent_popularity": -0.01}),
            False,
            "ndcg@10 challenger − recent_popularity -0.0100 (95% CI -0.0300 .. +0.0100): lower bound not above −0.0",
        ),
        # better on average but the interval reaches zero: no lift shown
        (evidence({"popularity": 0.015, "recent_popularity": 0.01}), False, "(best baseline)"),
        (evidence(LIFTS, recall=0.04), False, "recall@10 0.0400 < floor 0.05"),  # the absolute floor
        # the champion: within the non-inferiority margin (low -0.015 >= -0.02) ...
        (evidence({**LIFTS, "champion": 0.005}), True, "ndcg@10 challenger − champion +0.0050 (95% CI -0.0150"),
        # ... and beyond it (low -0.025 < -0.02)
        (
            evidence({**LIFTS, "champion": -0.005}),
            False,
            "challenger − champion -0.0050 (95% CI -0.0250 .. +0.0150): lower bound below −0.02",
        ),
    ],
)
def test_gate_blesses_only_a_challenger_with_enough_evidence_against_every_baseline(ev, blessed, says):
    ok, reason = bless(ev, 10, RULES)
    assert ok is blessed, reason
    assert says in reason, reason
    assert reason.startswith("blessed" if blessed else "not blessed")


def test_a_baseline_margin_accepts_a_tie_and_a_champion_overlap_refuses():
    tie = evidence({"popularity": 0.0, "recent_popularity": -0.001}, half=0.0)
    assert not bless(tie, 10, RULES)[0]  # the default demands a lift: a tie is refused
    ok, reason = bless(tie, 10, RULES.model_copy(update={"baseline_margin": 0.01}))
    assert ok and "challenger − recent_popularity -0.0010 (95% CI -0.0010" in reason, reason  # the best one
    # A champion that trained on the held-out day (a backfill's older window) cannot be compared
    ok, reason = bless(evidence(LIFTS), 10, RULES, "champion v3 trained up to 2026-03-06, on or after the held-out day")
    assert not ok and reason == "not blessed: champion v3 trained up to 2026-03-06, on or after the held-out day"


def test_gate_decides_on_bootstrap_intervals_of_per_user_pairs():
    """End to end through the real interval: a clearly better challenger over 300 pairs is
    blessed; the same effect over 60 pairs is insufficient; a worse one is refused."""
    rng = np.random.default_rng(3)
    base = rng.uniform(0, 0.4, 300)

    def ev(challenger: np.ndarray, n: int) -> dict:
        ndcg = {"challenger": challenger[:n], "popularity": base[:n], "recent_popularity": base[:n] * 0.9}
        out = evidence({})
        out["users"] = n
        out["pooled"] = {name: {"recall_at_10": 0.2, "ndcg_at_10": float(v.mean())} for name, v in ndcg.items()}
        out["intervals"] = replay.intervals(ndcg, 500)
        return out

    better = base + 0.05 + rng.normal(0, 0.1, 300)
    assert bless(ev(better, 300), 10, RULES)[0]
    ok, reason = bless(ev(better, 60), 10, RULES)
    assert not ok and "insufficient evidence: 60 user-days" in reason
    ok, reason = bless(ev(base - 0.05 + rng.normal(0, 0.1, 300), 300), 10, RULES)
    assert not ok and "challenger − popularity -0.05" in reason, reason


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


def test_monitor_records_its_decision_and_triggers_with_a_bounded_conf():
    report = {"retrain": True, "report_html": "s3://b/reports/" + "x" * 2000}
    yes = retrain_decision(**BASE)
    record = decision_record(report, yes, False, 0, 48.0)
    assert record == {
        "retrain": True,
        "reason": "data drift on 3 features",
        "force_retrain": False,
        "detector_retrain": True,
        "training_runs_active": 0,
        "last_training_end_hours_ago": 48.0,
        "report_html": report["report_html"],
    }
    conf = retrain_conf(report, yes, False)
    assert conf == {
        "reason": "data drift on 3 features",
        "report_html": report["report_html"][:1000],
        "force_retrain": False,
    }
    # no retraining: no conf, so the trigger task is skipped (short circuit)
    assert retrain_conf(report, retrain_decision(**{**BASE, "active_trainings": 1}), True) is None


SERVED_BY_OTHER = {"served_by": "manual__2026-03-06T00:00:00+00:00"}  # the day's recommendations manifest


@pytest.mark.parametrize(
    ("served", "sources", "rescore", "zone", "held"),
    [
        # 4. a live day never served: scored into the served zone
        (None, ["scheduled"], False, "recommendations", None),
        (None, [], False, "recommendations", None),  # a day param
        # 2. served by another run (or before the record existed): held, whoever asks
        (SERVED_BY_OTHER, [], False, "recommendations", "served already (by manual__"),
        ({"rows": 10}, [], False, "recommendations", "served already (by an earlier run)"),
        (SERVED_BY_OTHER, ["backfill"], False, "recommendations", "served already"),
        # 4. served by this very run (a cleared run): scored again
        ({"served_by": "this-run"}, ["scheduled"], False, "recommendations", None),
        # 3. only backfills published it and it was never served: held
        (None, ["backfill"], False, "recommendations", "backfill only"),
        # ... but a live run of the same day makes it live
        (None, ["backfill", "manual"], False, "recommendations", None),
        # 1. rescore: into the rescored zone (the served record stays)
        (SERVED_BY_OTHER, [], True, "rescored", None),
    ],
)
def test_scoring_plan_rule_by_rule(served, sources, rescore, zone, held):
    plan = scoring_plan("2026-03-06", run_id="this-run", served=served, sources=sources, rescore=rescore)
    assert (plan.day, plan.zone) == ("2026-03-06", zone)
    if held is None:
        assert plan.held is None
    else:
        assert held in plan.held, plan.held
