"""The tournament: model families compete for one champion (pure, unit-tested).

Every family's candidate is judged by the same gate on the same evidence (one snapshot, the
same replay days); ``standings`` then orders them: blessed before refused, then the higher
pooled NDCG@K, then the higher lower bound of its interval against the best baseline, then
family order (the ``training.families`` list). The first is the **challenger** — promoted only
when the gate blessed it; a refused challenger means no blessed family, no promotion. Every
other candidate is registered with its reason: the gate's own refusal, or "lost the tournament
to <winner>: pooled ndcg@K a vs b".
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

BASELINES = ("popularity", "recent_popularity")


def _scores(evaluation: Mapping[str, Any]) -> tuple[float, float]:
    """(pooled NDCG@K, lower bound of the interval vs the best baseline) of one gated candidate."""
    k, evidence = evaluation["k"], evaluation["evidence"]
    pooled, intervals = evidence["pooled"], evidence["intervals"]
    ndcg = float(pooled["challenger"][f"ndcg_at_{k}"])
    present = [b for b in BASELINES if b in pooled and b in intervals]
    if not present:
        return ndcg, float("-inf")
    best = max(present, key=lambda b: (pooled[b][f"ndcg_at_{k}"], b == "popularity"))
    return ndcg, float(intervals[best]["low"])


def standings(
    evaluations: Mapping[str, Mapping[str, Any] | None],
    trained: Mapping[str, Mapping[str, Any] | None],
    order: Sequence[str],
) -> dict[str, Any]:
    """The tournament's result (see the module docstring).

    Args:
        evaluations: family → its gate result (``jobs.evaluate gate``), None when the family
            was not evaluated (its trainer hit the cache).
        trained: family → its trainer's result (``run_id``, ``model_uri``, ``cached``...).
        order: the families in tie-break order.

    Returns:
        The winner's gate result (``blessed``, ``reason``, ``champion_version``, ``metrics``…) with
        ``winner`` (family or None), ``model_uri``, ``candidates`` (each candidate in family order:
        ``family``, ``run_id``, ``model_uri``, ``blessed``, ``ndcg``, ``low``, ``rank``,
        ``challenger``, ``tags`` for its registered version) and ``cached`` (family → version).
    """
    cached = {
        f: str((trained.get(f) or {}).get("cached_version"))
        for f in order
        if (trained.get(f) or {}).get("cached") and evaluations.get(f) is None
    }
    gated = [f for f in order if evaluations.get(f) is not None]
    if not gated:
        why = "no candidate: " + (f"every family was cached ({cached})" if cached else "no family was evaluated")
        return {"winner": None, "blessed": False, "reason": why, "candidates": [], "cached": cached}
    scores = {f: _scores(evaluations[f]) for f in gated}
    ranked = sorted(gated, key=lambda f: (not evaluations[f]["blessed"], -scores[f][0], -scores[f][1], order.index(f)))
    winner, win = ranked[0], evaluations[ranked[0]]
    k = win["k"]
    candidates = []
    for f in gated:
        ev, (ndcg, low) = evaluations[f], scores[f]
        tags = {"family": f}
        if f == winner:
            others = ", ".join(f"{o} {scores[o][0]:.4f}" for o in ranked[1:])
            head = "won" if ev["blessed"] else "challenger, but no family was blessed"
            tags["tournament"] = f"{head}: pooled ndcg@{k} {ndcg:.4f}" + (f" vs {others}" if others else " (alone)")
        elif ev["blessed"]:  # blessed by the gate, beaten by a better family
            tie = " (tie broken by the interval's lower bound, then family order)" if ndcg == scores[winner][0] else ""
            reason = f"lost the tournament to {winner}: pooled ndcg@{k} {ndcg:.4f} vs {scores[winner][0]:.4f}{tie}"
            tags.update({"decision": "lost_tournament", "decision_reason": reason, "tournament": reason})
        else:  # the gate's own refusal stays the decision (registration copies it from the run)
            tags["tournament"] = f"not blessed by the gate; pooled ndcg@{k} {ndcg:.4f}"
        candidates.append(
            {
                "family": f,
                "run_id": ev["run_id"],
                "model_uri": (trained.get(f) or {}).get("model_uri") or f"runs:/{ev['run_id']}/model",
                "blessed": bool(ev["blessed"]),
                "ndcg": ndcg,
                "low": low,
                "rank": ranked.index(f) + 1,
                "challenger": f == winner,
                "tags": tags,
            }
        )
    summary = "; ".join(f"{c['family']} {'blessed' if c['blessed'] else 'refused'} {c['ndcg']:.4f}" for c in candidates)
    reason = f"{winner} wins ({summary}): {win['reason']}" if len(gated) > 1 else win["reason"]
    return {
        **{key: win[key] for key in ("k", "day", "metrics", "evidence", "champion_version", "run_id") if key in win},
        "winner": winner,
        "blessed": bool(win["blessed"]),
        "reason": reason,
        "model_uri": candidates[gated.index(winner)]["model_uri"],
        "candidates": candidates,
        "cached": cached,
    }
