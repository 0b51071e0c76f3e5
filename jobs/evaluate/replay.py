"""The gate's evidence: every ranker on the held-out day and the replay days, paired per user.

The held-out day D alone holds too few users on a sparse log (ML-100K: 5–17 a day), so the gate
pools D and the ``gate.replay_days`` R validated days after it (the training DAG holds out D = R
days before the newest one: ``factory.pick_days``). For each day d of that period, in order:

* the truth is the positive pairs of d for users and items the snapshot knows, minus the
  user's **history**: the window's pairs and every positive pair of D .. d - 1 (only earlier
  days count as history: no leakage from d or later); on D itself it is the snapshot's test set;
* every ranker (challenger, champion, popularity over the window, recent popularity over the
  window's last ``gate.recent_days`` days) ranks top-K items the user has no history with (the
  models are asked for more and filtered, so all exclude the same history);
* Recall@K and NDCG@K per ranker and day, and NDCG@K per (day, user) pair.

The evidence is the pooled (day, user) pairs: their count (``gate.min_users`` is the least the
gate decides on) and, per baseline, the mean paired NDCG@K difference challenger − baseline
with a seeded percentile bootstrap interval (``gate.replay_bootstrap`` resamples). A replay day
inside the champion's own training window (a champion trained later than this snapshot: a
backfill) is skipped, and said so. ``jobs.evaluate.gate.bless`` turns it into the decision.
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
    item_ids: np.ndarray, popularity: np.ndarray, users: list[int], depth: int, tiebreak: np.ndarray | None = None
) -> dict[int, list[int]]:
    """The ``depth`` most popular items, the same list for every user; ties go to the higher
    ``tiebreak`` (when given), then to the lower index."""
    index = np.arange(len(popularity))
    keys = (index, -np.asarray(tiebreak), -np.asarray(popularity)) if tiebreak is not None else (index, -popularity)
    top = [int(i) for i in item_ids[np.lexsort(keys)[:depth]]]
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


def intervals(ndcg: dict[str, np.ndarray], resamples: int) -> dict[str, dict[str, float]]:
    """Per baseline (every ranker but ``challenger``): the paired interval of challenger − baseline
    over the same (day, user) pairs (``ndcg``: ranker → NDCG@K per pair, one order for all)."""
    ch = ndcg["challenger"]
    return {name: paired_interval(ch - values, resamples) for name, values in ndcg.items() if name != "challenger"}


def usable_days(
    days: list[str], champion_uri: str | None, champion_window_end: str | None
) -> tuple[list[str], dict[str, str]]:
    """The replay days the evidence may use, and the skipped ones with why: a day up to the end of
    the champion's training window (a champion trained on a later snapshot: a backfill) would
    compare the challenger with a model that trained on that very day."""
    usable, skipped = [], {}
    for day in days:
        if champion_uri and champion_window_end and day <= champion_window_end:
            skipped[day] = f"inside the champion's training window (ends {champion_window_end})"
        else:
            usable.append(day)
    return usable, skipped


def pool(
    cfg: Any,
    held: Any,
    days: list[str],
    model_recs: Any,
    challenger_uri: str,
    champion_uri: str | None,
    champion_window_end: str | None,
    recent: np.ndarray,
) -> dict[str, Any]:
    """The evidence of the held-out day and the replay ``days`` (see the module docstring).

    Args:
        held: the gate's ``HeldOut`` (snapshot users, items, truth, window history, popularity).
        model_recs: ``(model_uri, users, depth) → {user: [item ids]}``.
        champion_window_end: the last training day of the champion (replay days up to it are skipped).
        recent: recent popularity per snapshot item (``recent_counts``).
    """
    k, rules = cfg.gate.k, cfg.gate
    usable, skipped = usable_days(days, champion_uri, champion_window_end)
    known_users = {int(u) for u in held.data.user_ids.tolist()}
    known_items = {int(i) for i in held.item_ids.tolist()}
    held_out_day = held.data.manifest["day"]
    sets = [(held_out_day, held.truth, {u: held.seen.get(u, set()) for u in held.truth})]
    sets += replay_sets(lambda d: positives(cfg, d, known_users, known_items), held_out_day, held.seen, usable)
    table, per_pair = [], {}
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
        rankers["recent_popularity"] = popularity_lists(held.item_ids, recent, users, depth, tiebreak=held.popularity)
        metrics = {}
        for name, ranked in rankers.items():
            m = metrics_of_lists(unseen_top_k(ranked, history, k), truth, k, per_user=True)
            metrics[name] = {f"recall_at_{k}": m["recall"], f"ndcg_at_{k}": m["ndcg"], "users": m["users"]}
            assert m["per_user"]["users"].tolist() == users  # one truth, one user order for every ranker
            per_pair.setdefault(name, {"recall": [], "ndcg": []})
            per_pair[name]["recall"].append(m["per_user"]["recall"])
            per_pair[name]["ndcg"].append(m["per_user"]["ndcg"])
        table.append({"day": day, "users": len(users), "metrics": metrics})
    ndcg = {name: np.concatenate(v["ndcg"]) for name, v in per_pair.items()}
    n = len(ndcg.get("challenger", ()))
    result = {
        "days": table,
        "skipped": skipped,
        "users": n,
        "min_users": rules.min_users,
        "pooled": {
            name: {
                f"recall_at_{k}": float(np.concatenate(v["recall"]).mean()),
                f"ndcg_at_{k}": float(ndcg[name].mean()),
            }
            for name, v in per_pair.items()
        },
        "intervals": intervals(ndcg, rules.replay_bootstrap) if n else {},
    }
    result["summary"] = summary(result, k)
    return result


def describe(name: str, interval: dict[str, float], k: int) -> str:
    """``ndcg@K challenger − NAME +m (95% CI lo .. hi)``."""
    return (
        f"ndcg@{k} challenger − {name} {interval['mean']:+.4f} "
        f"({interval['confidence']:.0%} CI {interval['low']:+.4f} .. {interval['high']:+.4f})"
    )


def summary(result: dict[str, Any], k: int) -> str:
    """One line for tags, logs and the approval request."""
    days = [row["day"] for row in result["days"]]
    head = f"evidence: {result['users']} user-days over {len(days)} day(s) ({', '.join(days) or 'none'})"
    return "; ".join([head, *(describe(name, iv, k) for name, iv in result["intervals"].items())])


def table_lines(result: dict[str, Any], k: int) -> list[str]:
    """The evidence table as text lines (task log)."""
    lines = [f"{'day':12s} {'users':>6s} {'ranker':18s} {'recall@' + str(k):>10s} {'ndcg@' + str(k):>10s}"]
    for row in result["days"]:
        for name, m in row["metrics"].items():
            lines.append(
                f"{row['day']:12s} {row['users']:6d} {name:18s} {m[f'recall_at_{k}']:10.4f} {m[f'ndcg_at_{k}']:10.4f}"
            )
    for day, why in result["skipped"].items():
        lines.append(f"{day:12s} skipped: {why}")
    lines.append(summary(result, k))
    return lines
