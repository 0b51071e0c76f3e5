"""The sections of a day's drift report: data drift, prediction drift and online performance."""

from __future__ import annotations

from datetime import date, timedelta
from typing import Any

import numpy as np

from jobs.core import catalog
from jobs.core.cli import BadInput
from jobs.core.config import PipelineConfig
from jobs.core.reference import read_curated
from jobs.core.schema import POSITIVE_TYPES
from jobs.monitor import metrics
from jobs.monitor.models import ModelStore


def unavailable(reason: str, **extra: Any) -> dict[str, Any]:
    return {"available": False, "reason": reason, **extra}


def load_day(cfg: PipelineConfig, day: str) -> Any:
    """The validated curated events of ``day`` (feature columns); ``BadInput`` otherwise."""
    day = catalog.require_validated(cfg, day, "monitored")
    return read_curated(catalog.curated_files(cfg, [day]))


def read_recommendations(cfg: PipelineConfig, day: str) -> tuple[dict[str, Any] | None, Any]:
    """(manifest, table) of ``recommendations/dt=day``, or (None, None) when not published."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    manifest = catalog.manifest(cfg, "recommendations", day)
    if manifest is None:
        return None, None
    files = catalog.files_of(cfg, "recommendations", [day])
    cols = ["user_id", "rank", "item_id", "score"]
    table = pa.concat_tables([pq.read_table(f, columns=cols) for f in files]) if files else None
    if table is None:
        table = pa.table({c: pa.array([], pa.int64()) for c in cols})
    return manifest, table


def positive_pairs(table: Any) -> tuple[np.ndarray, np.ndarray]:
    import pyarrow as pa
    import pyarrow.compute as pc

    mask = pc.is_in(table.column("event_type"), value_set=pa.array(list(POSITIVE_TYPES)))
    pos = table.filter(mask)
    return (
        pos.column("user_id").to_numpy().astype(np.int64, copy=False),
        pos.column("item_id").to_numpy().astype(np.int64, copy=False),
    )


def data_drift(reference: dict[str, Any] | None, why: str | None, table: Any, th: dict[str, float]) -> dict[str, Any]:
    if reference is None:
        return unavailable(why or "no reference statistics")
    features = metrics.day_features(table, reference)
    for result in features.values():
        result["verdict"], result["why"] = metrics.feature_verdict(result, th)
    alerts = [n for n, f in features.items() if f["verdict"] == "alert"]
    warns = [n for n, f in features.items() if f["verdict"] == "warn"]
    psis = [f["psi"] for f in features.values() if f.get("psi") is not None]
    return {
        "available": True,
        "rows": table.num_rows,
        "features": features,
        "alerts": alerts,
        "warnings": warns,
        "max_psi": max(psis) if psis else None,
    }


def reference_day(cfg: PipelineConfig, version: str, up_to: str) -> str | None:
    """The first published recommendations day (≤ ``up_to``) served by ``version``."""
    for d in catalog.published_days(cfg, "recommendations"):
        if d > up_to:
            break
        manifest = catalog.manifest(cfg, "recommendations", d) or {}
        if str(manifest.get("model_version")) == version:
            return d
    return None


def _item_distribution(items: np.ndarray) -> dict[str, int]:
    ids, counts = np.unique(items, return_counts=True)
    return {str(i): int(c) for i, c in zip(ids, counts, strict=True)}


def prediction_drift(
    cfg: PipelineConfig, day: str, version: str, recs: Any, n_items: int | None, th: dict[str, float]
) -> dict[str, Any]:
    if recs is None:
        return unavailable(f"no recommendations partition for dt={day}")
    ref_day = reference_day(cfg, version, day)
    if ref_day is None:
        return unavailable(f"no recommendations partition served by version {version} up to dt={day}")
    _, ref = read_recommendations(cfg, ref_day) if ref_day != day else (None, recs)
    cur_items = recs.column("item_id").to_numpy()
    ref_items = ref.column("item_id").to_numpy()
    out: dict[str, Any] = {
        "available": True,
        "reference_day": ref_day,
        "rows": recs.num_rows,
        "coverage": float(np.unique(cur_items).size / n_items) if n_items else None,
        "reference_coverage": float(np.unique(ref_items).size / n_items) if n_items else None,
        "distinct_items": int(np.unique(cur_items).size),
    }
    if recs.num_rows == 0 or ref.num_rows == 0:
        return {**out, "score": None, "items_js": None, "verdict": "insufficient"}
    score = metrics.score_drift(ref.column("score").to_numpy(), recs.column("score").to_numpy())
    _, r, c = metrics.aligned(_item_distribution(ref_items), _item_distribution(cur_items))
    out["items_js"] = metrics.js_distance(r, c)
    score["verdict"], score["why"] = metrics.feature_verdict(score, th)
    out["score"] = score
    out["verdict"] = "reference" if ref_day == day else score["verdict"]
    if ref_day == day:
        out["note"] = "this is the version's first served day: it is the reference"
    return out


def _seen_pairs(arrays: dict[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    indptr = arrays["seen_indptr"]
    rows = np.repeat(np.arange(len(indptr) - 1), np.diff(indptr))
    return arrays["user_ids"][rows], arrays["item_ids"][arrays["seen_indices"]]


def judge_performance(
    result: dict[str, Any], offline_recall: float | None, k: int, th: dict[str, float]
) -> dict[str, Any]:
    """The performance section from ``drift_metrics.online_performance``'s result: decay and verdict."""
    decay = metrics.relative_decay(result["recall"], offline_recall)
    out: dict[str, Any] = {"available": True, "k": k, **result, "offline_recall": offline_recall, "decay": decay}
    if result["users"] < th["min_performance_users"]:
        out["verdict"] = "insufficient"
        out["why"] = f"{result['users']} evaluated users < min_performance_users {th['min_performance_users']:g}"
    elif decay is None:
        out["verdict"] = "insufficient"
        out["why"] = f"no offline recall_at_{k} to compare with"
    elif decay >= th["performance_decay"]:
        out["verdict"] = "alert"
        out["why"] = f"recall@{k} {result['recall']:.4f} is {decay:.0%} below offline {offline_recall:.4f}"
    else:
        out["verdict"] = "ok"
        out["why"] = f"recall@{k} {result['recall']:.4f} vs offline {offline_recall:.4f} ({decay:+.0%} decay)"
    return out


def performance(
    cfg: PipelineConfig, day: date, version: str, models: ModelStore, today: Any, th: dict[str, float]
) -> dict[str, Any]:
    """Online outcome of the recommendations of ``day`` - 1 against ``today``'s events (the day's positives)."""
    prev = (day - timedelta(days=1)).isoformat()
    manifest, recs = read_recommendations(cfg, prev)
    if manifest is None:
        return unavailable(f"no recommendations partition for dt={prev} (nothing was served on {day})", recs_day=prev)
    served_by = str(manifest.get("model_version", ""))
    if not served_by:
        return unavailable(f"recommendations dt={prev} name no model_version", recs_day=prev)
    arrays = models.arrays(served_by)
    if isinstance(arrays, str):
        return unavailable(arrays, recs_day=prev, model_version=served_by)
    offline = models.offline(served_by)
    k = min(int(offline["k"]), int(manifest.get("k") or offline["k"]))
    if k != offline["k"]:
        offline = models.offline(served_by, k)
    seen_u, seen_i = _seen_pairs(arrays)
    excluded = [d for d in manifest.get("source_days", []) if d < day.isoformat()]
    extra_u, extra_i = [seen_u], [seen_i]
    for d in excluded:
        try:
            u, i = positive_pairs(load_day(cfg, d))
        except BadInput:
            continue
        extra_u.append(u)
        extra_i.append(i)
    pos_u, pos_i = positive_pairs(today)
    result = metrics.online_performance(
        recs.column("user_id").to_numpy(),
        recs.column("item_id").to_numpy(),
        recs.column("rank").to_numpy(),
        pos_u,
        pos_i,
        k,
        known_users=np.unique(arrays["user_ids"]),
        known_items=np.unique(arrays["item_ids"]),
        seen=(np.concatenate(extra_u), np.concatenate(extra_i)),
    )
    out = {
        "recs_day": prev,
        "model_version": served_by,
        "excluded_days": excluded,
        **judge_performance(result, offline["recall"], k, th),
        "used_for_decision": served_by == version,
    }
    if served_by != version:
        out["note"] = f"served by version {served_by}, since replaced by {version}: reported, not used to decide"
    return out
