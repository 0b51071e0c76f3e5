"""The drift reference of a training window: a contract between the snapshot (writer) and the monitor.

The reference (``reference_stats.json``, produced once at training time by
``jobs/snapshot.py`` from the curated events of the training window, logged with the model by
``jobs/train.py``) holds for every feature only what the metrics need:

* numeric: the bin cut points and reference counts (PSI/JS) and a **quantile sketch** of
  ``SKETCH_SIZE`` = 4096 points (all values when there are fewer) — the reference sample the
  KS statistic is computed against. Quantiles at evenly spaced probabilities keep the masses
  of discrete values (per-user counts) to 1/4096 and, unlike a random subsample, are
  deterministic, so the same window gives the same bytes;
* categorical: counts per category;
* item popularity: the window's items ranked by event count and cut into popularity-rank
  buckets (top 1%, 1-5%, 5-20%, 20-50%, 50-100%); the day's events are counted per bucket,
  with items outside the window in a ``new`` bucket. A popularity collapse moves mass out of
  the head buckets; a catalogue launch fills ``new``;
* the users and items known to the model (the training snapshot's id maps, i.e. the model's
  own ids) as sorted id lists, delta-encoded, zlib-compressed and base64'd (``encode_ids``),
  plus their shares on the snapshot's held-out day — the normal "unseen" level right after
  training that a day's unseen shares are compared with.

Features of a day of curated events (``FEATURES``): ``watch_seconds`` (play events),
``user_daily_events`` (events per active user and day), ``event_type``, ``device``,
``country``, ``rating`` (rating events), ``item_popularity``; ``unseen_users`` (share of the
day's active users unknown to the model) and ``unseen_items`` (share of the day's events on
items unknown to the model) are judged by their increase over the held-out baseline.
"""

from __future__ import annotations

import base64
import json
import zlib
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np

FORMAT = 1
PSI_EPS = 1e-4
NUMERIC_BINS = 10
SKETCH_SIZE = 4096
POPULARITY_BUCKETS = ((0.01, "top 1%"), (0.05, "1-5%"), (0.2, "5-20%"), (0.5, "20-50%"), (1.0, "50-100%"))
NEW_BUCKET = "new"
NUMERIC_FEATURES = ("watch_seconds", "user_daily_events")
CATEGORICAL_FEATURES = ("event_type", "device", "country", "rating", "item_popularity")
UNSEEN_FEATURES = ("unseen_users", "unseen_items")
FEATURES = NUMERIC_FEATURES + CATEGORICAL_FEATURES + UNSEEN_FEATURES
EVENT_COLUMNS = ("user_id", "item_id", "event_type", "watch_seconds", "rating", "device", "country")
NULL_LABEL = "<null>"  # the category counts of null values (a context column the source lacks)


class ReferenceFormatError(ValueError):
    """A reference document is malformed (the message names the part)."""


def finite(values: Any) -> np.ndarray:
    """float64 copy of ``values`` without NaN/inf (nulls of an Arrow column become NaN)."""
    v = np.asarray(values, dtype=np.float64)
    return v[np.isfinite(v)]


def sorted_finite(values: Any) -> np.ndarray:
    """``values`` as sorted float64 without NaN/inf (NaN sorts last, ±inf at the ends: sliced off)."""
    v = np.sort(np.asarray(values, dtype=np.float64))
    lo = np.searchsorted(v, -np.inf, side="right")
    hi = np.searchsorted(v, np.inf, side="left")
    return v[lo:hi]


def quantile_edges(values: np.ndarray, bins: int = NUMERIC_BINS) -> np.ndarray:
    """Interior cut points at the reference's ``1/bins … (bins-1)/bins`` quantiles, deduplicated.

    ``inverted_cdf`` quantiles are data values, so a discrete feature gets cuts at its own
    values; bin ``i`` holds ``edges[i-1] <= x < edges[i]`` (see ``bin_counts``).
    """
    if values.size == 0:
        return np.zeros(0)
    probs = np.arange(1, bins) / bins
    return np.unique(np.quantile(values, probs, method="inverted_cdf"))


def bin_counts(values: np.ndarray, edges: np.ndarray) -> np.ndarray:
    """Counts of ``values`` in the ``len(edges) + 1`` bins ``(-inf, e0), [e0, e1), …, [e_last, inf)``."""
    return np.bincount(np.searchsorted(edges, values, side="right"), minlength=len(edges) + 1)


def sorted_bin_counts(ordered: np.ndarray, edges: np.ndarray) -> np.ndarray:
    """``bin_counts`` of an already sorted sample: one binary search per edge."""
    below = np.searchsorted(ordered, edges, side="left")  # values < edge
    return np.diff(np.concatenate([[0], below, [ordered.size]]))


def quantile_sketch(values: np.ndarray, size: int = SKETCH_SIZE, presorted: bool = False) -> np.ndarray:
    """Sorted values at the ``(i + 0.5) / size`` quantiles (all values, sorted, when fewer)."""
    ordered = values if presorted else np.sort(values)
    if ordered.size <= size:
        return ordered
    idx = np.ceil((np.arange(size) + 0.5) / size * ordered.size).astype(np.int64) - 1
    return ordered[idx]


def category_counts(values: Any) -> dict[str, int]:
    """Counts per category of an Arrow array/chunked array or a numpy/sequence of labels.

    Nulls are counted under ``NULL_LABEL``.
    """
    import pyarrow as pa
    import pyarrow.compute as pc

    if isinstance(values, pa.ChunkedArray | pa.Array):
        arr = values
    else:
        arr = pa.array(np.asarray(values).astype(str) if not isinstance(values, list) else values)
    if not (pa.types.is_dictionary(arr.type) or pa.types.is_string(arr.type) or pa.types.is_large_string(arr.type)):
        arr = pc.cast(arr, pa.string())
    vc = pc.value_counts(arr)
    out: dict[str, int] = {}
    for key, count in zip(vc.field("values").to_pylist(), vc.field("counts").to_pylist(), strict=True):
        label = NULL_LABEL if key is None else str(key)
        out[label] = out.get(label, 0) + int(count)
    return out


def numeric_reference(values: Any, bins: int = NUMERIC_BINS, sketch_size: int = SKETCH_SIZE) -> dict[str, Any]:
    """Reference of a numeric feature: cut points, counts, quantile sketch and a summary."""
    v = sorted_finite(values)
    if v.size == 0:
        return {"kind": "numeric", "n": 0, "edges": [], "counts": [0], "sketch": []}
    edges = quantile_edges(v, bins)
    return {
        "kind": "numeric",
        "n": int(v.size),
        "edges": edges.tolist(),
        "counts": sorted_bin_counts(v, edges).tolist(),
        "sketch": quantile_sketch(v, sketch_size, presorted=True).tolist(),
        "mean": float(v.mean()),
        "std": float(v.std()),
    }


def categorical_reference(values: Any) -> dict[str, Any]:
    counts = category_counts(values)
    return {"kind": "categorical", "n": int(sum(counts.values())), "counts": counts}


def encode_ids(ids: Any) -> str:
    """Sorted distinct int64 ids → base64(zlib(delta-encoded little-endian int64))."""
    arr = np.unique(np.asarray(ids, dtype=np.int64))
    deltas = np.diff(arr, prepend=np.int64(0)).astype("<i8")
    return base64.b64encode(zlib.compress(deltas.tobytes(), 6)).decode("ascii")


def decode_ids(text: str) -> np.ndarray:
    """Inverse of ``encode_ids``: the sorted distinct ids."""
    raw = zlib.decompress(base64.b64decode(text.encode("ascii")))
    return np.cumsum(np.frombuffer(raw, dtype="<i8")).astype(np.int64)


def _encode_codes(codes: np.ndarray) -> str:
    return base64.b64encode(zlib.compress(np.asarray(codes, dtype=np.uint8).tobytes(), 6)).decode("ascii")


def decode_codes(text: str) -> np.ndarray:
    return np.frombuffer(zlib.decompress(base64.b64decode(text.encode("ascii"))), dtype=np.uint8)


def popularity_buckets(item_ids: np.ndarray, counts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Bucket code (index into ``POPULARITY_BUCKETS``) of each item, ranked by count.

    Ties are broken by item id so that the same counts always give the same buckets.
    Returns ``(sorted item ids, their bucket codes)``.
    """
    order = np.lexsort((item_ids, -counts))
    n = len(item_ids)
    rank_share = np.empty(n, dtype=np.float64)
    rank_share[order] = np.arange(n) / max(n, 1)
    bounds = np.array([b for b, _ in POPULARITY_BUCKETS])
    codes = np.searchsorted(bounds, rank_share, side="right").clip(0, len(bounds) - 1)
    by_id = np.argsort(item_ids, kind="stable")
    return item_ids[by_id], codes[by_id].astype(np.uint8)


def bucket_labels(item_ids: np.ndarray, sorted_ids: np.ndarray, codes: np.ndarray) -> np.ndarray:
    """Popularity-bucket code of each event's item; ``len(POPULARITY_BUCKETS)`` = new item."""
    new = len(POPULARITY_BUCKETS)
    if sorted_ids.size == 0:
        return np.full(len(item_ids), new, dtype=np.int64)
    pos = np.searchsorted(sorted_ids, item_ids).clip(0, sorted_ids.size - 1)
    return np.where(sorted_ids[pos] == item_ids, codes[pos].astype(np.int64), new)


def bucket_counts(codes: np.ndarray) -> dict[str, int]:
    labels = [label for _, label in POPULARITY_BUCKETS] + [NEW_BUCKET]
    counts = np.bincount(codes, minlength=len(labels))
    return {label: int(c) for label, c in zip(labels, counts, strict=True)}


def event_arrays(table: Any) -> dict[str, Any]:
    """The arrays the features are built from, for one day of curated events (a pyarrow Table)."""
    import pyarrow.compute as pc

    missing = [c for c in EVENT_COLUMNS if c not in table.column_names]
    if missing:
        raise ValueError(f"curated events lack column(s) {', '.join(missing)}")
    etype = table.column("event_type")
    plays = pc.equal(etype, "play")
    ratings = pc.equal(etype, "rating")
    users = table.column("user_id").to_numpy().astype(np.int64, copy=False)
    return {
        "users": users,
        "items": table.column("item_id").to_numpy().astype(np.int64, copy=False),
        "watch_seconds": finite(pc.filter(table.column("watch_seconds"), plays).to_numpy(zero_copy_only=False)),
        "user_daily_events": np.unique(users, return_counts=True)[1].astype(np.float64),
        "event_type": etype,
        "device": table.column("device"),
        "country": table.column("country"),
        "rating": pc.filter(table.column("rating"), ratings),
    }


def compute_reference(
    days: Iterable[tuple[str, Any]],
    known_users: Any,
    known_items: Any,
    holdout: tuple[str, Any] | None = None,
) -> dict[str, Any]:
    """The reference document from the training window's curated events.

    Args:
        days: ``(day, pyarrow.Table)`` per window day, in date order.
        known_users / known_items: the ids the model knows (the snapshot's id maps).
        holdout: ``(day, table)`` of the snapshot's held-out day: its unseen shares are the
            baseline a served day is compared with. ``None`` → baseline 0.

    Long because every reference statistic comes from one pass over the window's table.
    """
    day_names: list[str] = []
    parts: dict[str, list[Any]] = {k: [] for k in ("watch_seconds", "user_daily_events", "items")}
    cats: dict[str, dict[str, int]] = {k: {} for k in ("event_type", "device", "country", "rating")}
    rows = 0
    for day, table in days:
        day_names.append(day)
        rows += table.num_rows
        arrays = event_arrays(table)
        for key in parts:
            parts[key].append(arrays[key])
        for key in cats:
            for label, count in category_counts(arrays[key]).items():
                cats[key][label] = cats[key].get(label, 0) + count
    if not day_names:
        raise ValueError("a reference needs at least one day of events")
    all_items = np.concatenate(parts["items"]) if parts["items"] else np.zeros(0, np.int64)
    item_ids, item_counts = np.unique(all_items, return_counts=True)
    sorted_ids, codes = popularity_buckets(item_ids, item_counts)
    features: dict[str, Any] = {
        "watch_seconds": numeric_reference(np.concatenate(parts["watch_seconds"])),
        "user_daily_events": numeric_reference(np.concatenate(parts["user_daily_events"])),
    }
    for key, counts in cats.items():
        features[key] = {"kind": "categorical", "n": int(sum(counts.values())), "counts": counts}
    pop_counts = bucket_counts(bucket_labels(all_items, sorted_ids, codes))
    features["item_popularity"] = {"kind": "categorical", "n": int(all_items.size), "counts": pop_counts}
    users = np.unique(np.asarray(known_users, dtype=np.int64))
    items = np.unique(np.asarray(known_items, dtype=np.int64))
    baseline = {"day": None, "users": 0.0, "items": 0.0}
    if holdout is not None:
        shares = unseen_shares(event_arrays(holdout[1]), users, items)
        baseline = {"day": holdout[0], **shares}
    return {
        "format": FORMAT,
        "days": day_names,
        "rows": rows,
        "bins": NUMERIC_BINS,
        "psi_eps": PSI_EPS,
        "features": features,
        "popularity": {
            "buckets": [label for _, label in POPULARITY_BUCKETS] + [NEW_BUCKET],
            "item_ids": encode_ids(sorted_ids),
            "item_buckets": _encode_codes(codes),
        },
        "known": {
            "users": {"count": int(users.size), "ids": encode_ids(users)},
            "items": {"count": int(items.size), "ids": encode_ids(items)},
        },
        "unseen_baseline": baseline,
    }


def dumps_reference(reference: Mapping[str, Any]) -> str:
    """Deterministic JSON text of a reference (same window → same bytes)."""
    return json.dumps(reference, sort_keys=True, separators=(",", ":"))


def validate_reference(reference: Any) -> dict[str, Any]:
    """Check the shape of a loaded reference; raises ``ReferenceFormatError`` naming what is wrong."""
    if not isinstance(reference, dict):
        raise ReferenceFormatError("reference statistics must be a JSON object")
    if reference.get("format") != FORMAT:
        raise ReferenceFormatError(f"reference format {reference.get('format')!r} is not {FORMAT}")
    for key in ("features", "popularity", "known", "unseen_baseline"):
        if key not in reference:
            raise ReferenceFormatError(f"reference statistics lack {key!r}")
    missing = [f for f in NUMERIC_FEATURES + CATEGORICAL_FEATURES if f not in reference["features"]]
    if missing:
        raise ReferenceFormatError(f"reference statistics lack feature(s) {', '.join(missing)}")
    return reference


def unseen_shares(arrays: Mapping[str, Any], known_users: np.ndarray, known_items: np.ndarray) -> dict[str, float]:
    """Share of the day's distinct users, and of its events' items, that the model does not know."""
    users = np.unique(arrays["users"])
    items = arrays["items"]
    return {
        "users": float(1.0 - np.isin(users, known_users, assume_unique=True).mean()) if users.size else 0.0,
        "items": float(1.0 - np.isin(items, known_items).mean()) if items.size else 0.0,
    }


def read_curated(files: Sequence[str]) -> Any:
    """The feature columns of curated Parquet files (local paths or object-store URIs) as one Table."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    tables = [pq.read_table(f, columns=list(EVENT_COLUMNS)) for f in files]
    if not tables:
        raise ValueError("no curated file to read")
    return pa.concat_tables(tables).combine_chunks() if len(tables) > 1 else tables[0]
