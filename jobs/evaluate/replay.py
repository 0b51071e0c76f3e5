"""The replay gate: challenger and champion on the real days after the held-out day.

The held-out day is one day. With ``gate.replay_days`` R > 0 the training DAG holds out day D
= R validated days before the newest one (``plan``), so the R days after D are real
interactions that neither the challenger (window ``[D - N, D - 1]``) nor, in steady state, the
champion has trained on. For each replay day d, in order:

* the truth is the positive pairs of d for users and items the snapshot knows, minus the
  user's **history**: the window's pairs and every positive pair of D .. d - 1 (only earlier
  days count as history: no leakage from d or later);
* every ranker (challenger, champion, popularity) ranks top-K items the user has no history
  with (the models are asked for more and filtered, so all three exclude the same history);
* Recall@K and NDCG@K per ranker and day (``jobs.core.ranking``).

The paired comparison: per (day, user) the challenger's NDCG@K minus the champion's, pooled over
the days; the mean and a percentile bootstrap interval over those pairs (``gate.replay_bootstrap``
resamples, seeded, so a rerun gives the same interval). The challenger passes the replay when it
is **non-inferior**: the interval's lower bound is at least ``-gate.replay_tolerance``. A day
inside the champion's own training window (a champion trained later than this snapshot: a
backfill) is skipped for the comparison, and said so. Without a champion, or without a replay
day, the replay decides nothing and says why.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from jobs.core import catalog
from jobs.core.ranking import metrics_of_lists
from jobs.core.schema import POSITIVE_TYPES

CONFIDENCE = 0.95
SEED = 20260101


def positives(cfg: Any, day: str, users: set[int], items: set[int]) -> dict[int, set[int]]:
    """Positive (user → items) of one curated day, for known users and items."""
    import pyarrow.compute as pc

    from jobs.core.reference import read_curated

    table = read_curated(catalog.curated_files(cfg, [day]))
    table = table.filter(
        pc.is_in(table["event_type"], value_set=pc.cast(list(POSITIVE_TYPES), table["event_type"].type))
    )
    out: dict[int, set[int]] = {}
    for u, i in zip(table["user_id"].to_pylist(), table["item_id"].to_pylist(), strict=True):
        if u in users and i in items:
            out.setdefault(u, set()).add(i)
    return out


def replay_sets(
    positives_of: Callable[[str], dict[int, set[int]]], held_out_day: str, seen: dict[int, set[int]], days: list[str]
) -> list[tuple[str, dict[int, set[int]], dict[int, set[int]]]]:
    """Per replay day: ``(day, truth, history)`` — history = ``seen`` (the window) plus the
    positives of the held-out day and of earlier replay days; truth excludes it.

    ``positives_of(day)``: the day's positive items per user (``positives``)."""
    history = {u: set(s) for u, s in seen.items()}
    out = []
    for day in [held_out_day, *days]:
        pairs = positives_of(day)
        if day != held_out_day:
            truth = {u: got - history.get(u, set()) for u, got in pairs.items()}
            truth = {u: got for u, got in truth.items() if got}
            out.append((day, truth, {u: set(history.get(u, ())) for u in truth}))
        for u, got in pairs.items():
            history.setdefault(u, set()).update(got)
    return out


def unseen_top_k(ranked: dict[int, list[int]], history: dict[int, set[int]], k: int) -> dict[int, list[int]]:
    """Each user's list without the items of their history, cut to ``k``."""
    return {u: [i for i in items if i not in history.get(u, ())][:k] for u, items in ranked.items()}


def popularity_lists(
    item_ids: np.ndarray, popularity: np.ndarray, users: list[int], depth: int
) -> dict[int, list[int]]:
    """The ``depth`` most popular items (ties: lower index first), the same list for every user."""
    order = np.lexsort((np.arange(len(popularity)), -np.asarray(popularity)))[:depth]
    top = [int(i) for i in item_ids[order]]
    return dict.fromkeys(users, top)


def paired_interval(diffs: np.ndarray, resamples: int, confidence: float = CONFIDENCE) -> dict[str, float]:
    """Mean of paired differences and its percentile bootstrap interval (seeded)."""
    n = len(diffs)
    if n == 0:
        raise ValueError("no paired observation to compare")
    rng = np.random.default_rng(SEED)
    means = np.empty(resamples)
    chunk = max(1, 2_000_000 // n)  # bounded memory: at most ~2M indices drawn at once
    for start in range(0, resamples, chunk):
        stop = min(start + chunk, resamples)
        means[start:stop] = diffs[rng.integers(0, n, size=(stop - start, n))].mean(axis=1)
    alpha = (1.0 - confidence) / 2.0
    return {
        "mean": float(diffs.mean()),
        "low": float(np.quantile(means, alpha)),
        "high": float(np.quantile(means, 1.0 - alpha)),
        "confidence": confidence,
        "resamples": resamples,
        "pairs": n,
    }


def verdict(interval: dict[str, float] | None, tolerance: float) -> str:
    """``non-inferior`` when the interval's lower bound is ≥ -tolerance, else ``inferior``."""
    if interval is None:
        return "not compared"
    return "non-inferior" if interval["low"] >= -tolerance else "inferior"


def replay(
    cfg: Any,
    held: Any,
    days: list[str],
    model_recs: Any,
    challenger_uri: str,
    champion_uri: str | None,
    champion_window_end: str | None,
) -> dict[str, Any]:
    """The replay table and paired comparison (see the module docstring).

    Args:
        held: the gate's ``HeldOut`` (snapshot users, items, window history, popularity).
        model_recs: ``(model_uri, users, depth) → {user: [item ids]}``.
        champion_window_end: the last training day of the champion (days up to it are skipped).
    """
    k, rules = cfg.gate.k, cfg.gate
    skipped = {}
    usable = []
    for day in days:
        if champion_uri and champion_window_end and day <= champion_window_end:
            skipped[day] = f"inside the champion's training window (ends {champion_window_end})"
        else:
            usable.append(day)
    known_users = {int(u) for u in held.data.user_ids.tolist()}
    known_items = {int(i) for i in held.item_ids.tolist()}
    table, diffs = [], []
    sets = replay_sets(
        lambda d: positives(cfg, d, known_users, known_items), held.data.manifest["day"], held.seen, usable
    )
    for day, truth, history in sets:
        if not truth:
            skipped[day] = "no known user with a new positive item"
            continue
        users = sorted(truth)
        depth = min(k + max(len(h) for h in history.values()), len(held.item_ids))
        rankers = {"challenger": model_recs(challenger_uri, users, depth)}
        if champion_uri:
            rankers["champion"] = model_recs(champion_uri, users, depth)
        rankers["popularity"] = popularity_lists(held.item_ids, held.popularity, users, depth)
        metrics, per_user = {}, {}
        for name, ranked in rankers.items():
            m = metrics_of_lists(unseen_top_k(ranked, history, k), truth, k, per_user=True)
            metrics[name] = {f"recall_at_{k}": m["recall"], f"ndcg_at_{k}": m["ndcg"]}
            per_user[name] = m["per_user"]
        table.append({"day": day, "users": len(users), "metrics": metrics})
        if "champion" in per_user:
            ch, champ = per_user["challenger"], per_user["champion"]
            assert np.array_equal(ch["users"], champ["users"])  # one truth, one user set
            diffs.append(ch["ndcg"] - champ["ndcg"])
    interval = paired_interval(np.concatenate(diffs), rules.replay_bootstrap) if diffs else None
    if not days:
        why = "no replay day (gate.replay_days = 0, or no validated day after the held-out day yet)"
    elif interval is None:
        why = "no champion to compare with" if not champion_uri else "no usable replay day"
    else:
        why = ""
    result = {
        "days": table,
        "skipped": skipped,
        "ndcg_diff": interval,
        "tolerance": rules.replay_tolerance,
        "verdict": verdict(interval, rules.replay_tolerance),
        "why_not_compared": why,
    }
    result["summary"] = summary(result, k)
    return result


def summary(result: dict[str, Any], k: int) -> str:
    """One line for tags, logs and the approval request."""
    n = len(result["days"])
    interval = result["ndcg_diff"]
    if interval is None:
        return f"replay over {n} day(s): not compared — {result['why_not_compared']}"
    return (
        f"replay over {n} day(s), {interval['pairs']} user-days: ndcg@{k} challenger − champion "
        f"{interval['mean']:+.4f} ({interval['confidence']:.0%} CI {interval['low']:+.4f} .. {interval['high']:+.4f}), "
        f"tolerance {result['tolerance']}: {result['verdict']}"
    )


def table_lines(result: dict[str, Any], k: int) -> list[str]:
    """The replay table as text lines (task log)."""
    lines = [f"{'replay day':12s} {'users':>6s} {'ranker':12s} {'recall@' + str(k):>10s} {'ndcg@' + str(k):>10s}"]
    for row in result["days"]:
        for name, m in row["metrics"].items():
            lines.append(
                f"{row['day']:12s} {row['users']:6d} {name:12s} {m[f'recall_at_{k}']:10.4f} {m[f'ndcg_at_{k}']:10.4f}"
            )
    for day, why in result["skipped"].items():
        lines.append(f"{day:12s} skipped: {why}")
    lines.append(summary(result, k))
    return lines
