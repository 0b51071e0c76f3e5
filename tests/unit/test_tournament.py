"""The families' tournament (``recsys_airflow.tournament.standings``): who is the challenger, and why the others lost."""

from __future__ import annotations

import pytest

from recsys_airflow.tournament import standings

K = 10


def _gate(run_id: str, blessed: bool, ndcg: float, low: float = 0.01, reason: str = "") -> dict:
    """A gate result (``jobs.evaluate gate``) reduced to what the tournament reads."""
    return {
        "run_id": run_id,
        "blessed": blessed,
        "reason": reason or ("blessed (…)" if blessed else "not blessed (…): recall@10 0.01 < floor 0.02"),
        "k": K,
        "day": "2026-01-05",
        "champion_version": "3",
        "metrics": {"challenger": {f"ndcg_at_{K}": ndcg}},
        "evidence": {
            "pooled": {
                "challenger": {f"ndcg_at_{K}": ndcg},
                "popularity": {f"ndcg_at_{K}": 0.2},
                "recent_popularity": {f"ndcg_at_{K}": 0.1},
            },
            "intervals": {"popularity": {"low": low}, "recent_popularity": {"low": low + 0.1}},
        },
    }


def _trained(*families: str) -> dict:
    return {f: {"run_id": f"r-{f}", "model_uri": f"models:/m-{f}", "cached": False} for f in families}


ORDER = ["mf", "ease"]


@pytest.mark.unit
def test_the_better_blessed_family_wins_and_the_loser_says_why():
    result = standings({"mf": _gate("r-mf", True, 0.31), "ease": _gate("r-ease", True, 0.35)}, _trained(*ORDER), ORDER)
    assert result["winner"] == "ease" and result["blessed"] is True
    assert result["run_id"] == "r-ease" and result["model_uri"] == "models:/m-ease"
    assert result["champion_version"] == "3" and result["reason"].startswith("ease wins (")
    mf, ease = result["candidates"]  # family order, whatever the ranking
    assert (mf["family"], mf["rank"], mf["challenger"]) == ("mf", 2, False)
    assert mf["tags"]["decision"] == "lost_tournament"
    assert mf["tags"]["decision_reason"] == "lost the tournament to ease: pooled ndcg@10 0.3100 vs 0.3500"
    assert ease["challenger"] and ease["tags"] == {
        "family": "ease",
        "tournament": "won: pooled ndcg@10 0.3500 vs mf 0.3100",
    }


@pytest.mark.unit
def test_only_a_blessed_family_can_win_and_a_refused_one_keeps_the_gates_reason():
    refused = _gate("r-ease", False, 0.50, reason="not blessed (…): lower bound below −0.02")
    result = standings({"mf": _gate("r-mf", True, 0.30), "ease": refused}, _trained(*ORDER), ORDER)
    assert result["winner"] == "mf" and result["blessed"] is True
    ease = result["candidates"][1]
    assert "decision" not in ease["tags"]  # registration copies the gate's not_blessed and its reason
    assert ease["tags"]["tournament"].startswith("not blessed by the gate")


@pytest.mark.unit
def test_no_blessed_family_means_a_refused_challenger_and_no_promotion():
    result = standings(
        {"mf": _gate("r-mf", False, 0.20), "ease": _gate("r-ease", False, 0.25)}, _trained(*ORDER), ORDER
    )
    assert result["winner"] == "ease" and result["blessed"] is False  # the best refused one, for the record
    assert [c["challenger"] for c in result["candidates"]] == [False, True]
    assert result["candidates"][1]["tags"]["tournament"].startswith("challenger, but no family was blessed")


@pytest.mark.unit
def test_ties_break_on_the_lower_bound_then_family_order():
    tie = standings(
        {"mf": _gate("r-mf", True, 0.3, low=0.01), "ease": _gate("r-ease", True, 0.3, low=0.02)},
        _trained(*ORDER),
        ORDER,
    )
    assert tie["winner"] == "ease"
    assert "tie broken" in tie["candidates"][0]["tags"]["decision_reason"]
    same = standings({"mf": _gate("r-mf", True, 0.3), "ease": _gate("r-ease", True, 0.3)}, _trained(*ORDER), ORDER)
    assert same["winner"] == "mf"


@pytest.mark.unit
def test_cached_families_are_not_candidates_and_one_family_wins_alone():
    trained = {**_trained("mf"), "ease": {"cached": True, "cached_version": "4", "model_uri": "models:/x/4"}}
    result = standings({"mf": _gate("r-mf", True, 0.3), "ease": None}, trained, ORDER)
    assert result["winner"] == "mf" and result["cached"] == {"ease": "4"}
    assert [c["family"] for c in result["candidates"]] == ["mf"]
    assert result["reason"] == "blessed (…)"  # one candidate: the gate's reason unchanged
    nothing = standings({"mf": None, "ease": None}, {f: {"cached": True, "cached_version": "1"} for f in ORDER}, ORDER)
    assert nothing["winner"] is None and nothing["blessed"] is False and nothing["candidates"] == []
