"""Drift statistics: effect sizes on fixed reference bins, and the compact reference itself.

Metrics (numpy, vectorised; each is checked against scipy or a plain implementation in
``tests/unit/test_drift_metrics.py`` to 1e-9):

* **PSI** (population stability index) ``Σ (a - e) · ln(a / e)`` over the shares ``e``
  (reference) and ``a`` (current) of fixed bins. The bins come from the reference only:
  quantile cut points for numeric features (``NUMERIC_BINS`` = 10 deciles; duplicated cut
  points of discrete data are merged), the categories for categorical ones (the union with
  the current day's, so a new category shows up as mass where the reference had none).
  **Epsilon**: a bin with share 0 on either side gets share ``PSI_EPS`` = 1e-4 instead (the
  usual PSI convention, and Evidently's unless a non-empty bin holds less than 1e-4 — then it
  uses that share / 1e6; shares are not renormalised), so PSI stays finite and a category that
  appears or disappears weighs as if it held 0.01%.
* **Jensen-Shannon distance**, base 2 (in [0, 1]): ``sqrt((KL(p‖m) + KL(q‖m)) / 2)`` with
  ``m = (p + q) / 2`` on the same bins; zero shares need no epsilon (``0 · log 0 = 0``).
  Equals ``scipy.spatial.distance.jensenshannon(p, q, base=2)``.
* **KS statistic** ``sup_x |F_ref(x) - F_cur(x)|`` for numeric features, as an effect size
  only. It is never turned into a p-value: on the large samples of a daily batch every p-value
  is ~0 (a 1% shift is "significant" with a million rows), which is exactly the false-alarm
  source the detector avoids. Equals ``scipy.stats.ks_2samp(ref, cur).statistic``.

Cost: per numeric feature one sort of the day's values serves both the bin counts (a binary
search per cut point) and the KS statistic (two per sketch value); categorical counts are
Arrow's ``value_counts`` on the (dictionary) column. ``benchmarks/bench_drift.py`` measures it
against Evidently's ``DataDriftPreset`` on 10M rows × 10 features.

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
import math
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


class ReferenceFormatError(ValueError):
    """A reference document is malformed (the message names the part)."""


# ---- metrics ------------------------------------------------------------------------------


def _shares(counts: Any) -> np.ndarray:
    c = np.asarray(counts, dtype=np.float64)
    total = c.sum()
    if total <= 0:
        raise ValueError("a distribution needs at least one observation (all counts are 0)")
    return c / total


def psi(ref_counts: Any, cur_counts: Any, eps: float = PSI_EPS) -> float:
    """Population stability index of two count vectors over the same bins.

    Args:
        ref_counts: counts (or shares) of the reference per bin.
        cur_counts: counts (or shares) of the current sample per bin, same order.
        eps: share given to an empty bin (on either side) so that the logarithm is finite.

    Returns:
        ``Σ (cur - ref) · ln(cur / ref)`` over the shares; 0 for identical distributions.
    """
    e, a = _shares(ref_counts), _shares(cur_counts)
    if e.shape != a.shape:
        raise ValueError(f"bins differ: reference has {e.shape[0]}, current {a.shape[0]}")
    e = np.where(e == 0, eps, e)
    a = np.where(a == 0, eps, a)
    return float(np.sum((a - e) * np.log(a / e)))


def js_distance(ref_counts: Any, cur_counts: Any, base: float = 2.0) -> float:
    """Jensen-Shannon distance (square root of the divergence) of two count vectors.

    With ``base=2`` it lies in [0, 1]; ``base=math.e`` gives scipy's default units.
    """
    p, q = _shares(ref_counts), _shares(cur_counts)
    if p.shape != q.shape:
        raise ValueError(f"bins differ: reference has {p.shape[0]}, current {q.shape[0]}")
    m = (p + q) / 2.0
    with np.errstate(divide="ignore", invalid="ignore"):
        left = np.where(p > 0, p * np.log(p / m), 0.0)
        right = np.where(q > 0, q * np.log(q / m), 0.0)
    js = (left.sum() + right.sum()) / np.log(base)
    return float(np.sqrt(max(js, 0.0) / 2.0))


def ks_statistic(ref: Any, cur: Any) -> float:
    """Two-sample Kolmogorov-Smirnov statistic ``sup |F_ref - F_cur|`` (exact, ties allowed).

    Non-finite values are ignored; NaN when either side is empty. See ``ks_sorted``.
    """
    return ks_sorted(sorted_finite(ref), sorted_finite(cur))


def ks_sorted(ref: np.ndarray, cur: np.ndarray) -> float:
    """KS statistic of two **sorted** finite samples.

    The difference of two right-continuous step functions reaches its supremum at a jump of
    one of them; between two distinct reference values ``F_ref`` is constant and ``F_cur``
    monotone, so checking ``F_cur`` at and just below every distinct reference value is
    enough — two binary searches per reference value in the sorted current sample (the
    reference is the 4096-point sketch in the drift job, so this costs nothing next to the
    sort of the day's values, which the PSI bins reuse).
    """
    n, m = ref.size, cur.size
    if n == 0 or m == 0:
        return float("nan")
    values, counts = np.unique(ref, return_counts=True)
    f_ref = np.cumsum(counts) / n
    f_ref_before = np.concatenate([[0.0], f_ref[:-1]])
    f_cur = np.searchsorted(cur, values, side="right") / m
    f_cur_before = np.searchsorted(cur, values, side="left") / m
    return float(max(np.abs(f_ref - f_cur).max(), np.abs(f_ref_before - f_cur_before).max()))


# ---- binning ------------------------------------------------------------------------------


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

    Nulls are counted under ``"<null>"``.
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
        label = "<null>" if key is None else str(key)
        out[label] = out.get(label, 0) + int(count)
    return out


def aligned(
    ref: Mapping[str, int], cur: Mapping[str, int], order: Sequence[str] = ()
) -> tuple[list[str], np.ndarray, np.ndarray]:
    """Union of categories (``order`` first, then the rest sorted) with both count vectors in that order."""
    labels = [k for k in order if k in ref or k in cur]
    labels += sorted((set(ref) | set(cur)) - set(labels))
    return (
        labels,
        np.array([ref.get(k, 0) for k in labels], dtype=np.float64),
        np.array([cur.get(k, 0) for k in labels], dtype=np.float64),
    )


# ---- reference ----------------------------------------------------------------------------


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


def _decode_codes(text: str) -> np.ndarray:
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


def _bucket_counts(codes: np.ndarray) -> dict[str, int]:
    labels = [label for _, label in POPULARITY_BUCKETS] + [NEW_BUCKET]
    counts = np.bincount(codes, minlength=len(labels))
    return {label: int(c) for label, c in zip(labels, counts, strict=True)}


def _column(table: Any, name: str) -> Any:
    return table.column(name) if name in table.column_names else None


def _event_arrays(table: Any) -> dict[str, Any]:
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
    """
    day_names: list[str] = []
    parts: dict[str, list[Any]] = {k: [] for k in ("watch_seconds", "user_daily_events", "items")}
    cats: dict[str, dict[str, int]] = {k: {} for k in ("event_type", "device", "country", "rating")}
    rows = 0
    for day, table in days:
        day_names.append(day)
        rows += table.num_rows
        arrays = _event_arrays(table)
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
    pop_counts = _bucket_counts(bucket_labels(all_items, sorted_ids, codes))
    features["item_popularity"] = {"kind": "categorical", "n": int(all_items.size), "counts": pop_counts}
    users = np.unique(np.asarray(known_users, dtype=np.int64))
    items = np.unique(np.asarray(known_items, dtype=np.int64))
    baseline = {"day": None, "users": 0.0, "items": 0.0}
    if holdout is not None:
        shares = unseen_shares(_event_arrays(holdout[1]), users, items)
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


# ---- comparison ---------------------------------------------------------------------------


def unseen_shares(arrays: Mapping[str, Any], known_users: np.ndarray, known_items: np.ndarray) -> dict[str, float]:
    """Share of the day's distinct users, and of its events' items, that the model does not know."""
    users = np.unique(arrays["users"])
    items = arrays["items"]
    return {
        "users": float(1.0 - np.isin(users, known_users, assume_unique=True).mean()) if users.size else 0.0,
        "items": float(1.0 - np.isin(items, known_items).mean()) if items.size else 0.0,
    }


def compare_numeric(ref: Mapping[str, Any], values: Any) -> dict[str, Any]:
    """PSI/JS on the reference bins and KS against the reference sketch for one numeric feature."""
    v = sorted_finite(values)
    edges = np.asarray(ref["edges"], dtype=np.float64)
    cur = sorted_bin_counts(v, edges)
    out: dict[str, Any] = {
        "kind": "numeric",
        "n_ref": int(ref["n"]),
        "n_cur": int(v.size),
        "bins": [_edge_label(edges, i) for i in range(len(edges) + 1)],
        "ref_counts": [int(x) for x in ref["counts"]],
        "cur_counts": cur.tolist(),
        "ref_mean": ref.get("mean"),
        "cur_mean": float(v.mean()) if v.size else None,
    }
    if v.size == 0 or ref["n"] == 0:
        return {**out, "psi": None, "js": None, "ks": None}
    return {
        **out,
        "psi": psi(ref["counts"], cur),
        "js": js_distance(ref["counts"], cur),
        "ks": ks_sorted(np.asarray(ref["sketch"], dtype=np.float64), v),
    }


def _edge_label(edges: np.ndarray, i: int) -> str:
    if len(edges) == 0:
        return "all"
    if i == 0:
        return f"< {edges[0]:g}"
    if i == len(edges):
        return f">= {edges[-1]:g}"
    return f"[{edges[i - 1]:g}, {edges[i]:g})"


def compare_categorical(ref: Mapping[str, Any], counts: Mapping[str, int], order: Sequence[str] = ()) -> dict[str, Any]:
    """PSI/JS over the union of the reference's and the day's categories (``order``: display order)."""
    labels, r, c = aligned(ref["counts"], counts, order)
    out: dict[str, Any] = {
        "kind": "categorical",
        "n_ref": int(r.sum()),
        "n_cur": int(c.sum()),
        "bins": labels,
        "ref_counts": r.astype(np.int64).tolist(),
        "cur_counts": c.astype(np.int64).tolist(),
        "new_categories": [k for k in labels if k not in ref["counts"]],
        "ks": None,
    }
    if r.sum() == 0 or c.sum() == 0:
        return {**out, "psi": None, "js": None}
    return {**out, "psi": psi(r, c), "js": js_distance(r, c)}


def day_features(table: Any, reference: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    """Every feature of one day of curated events compared with the reference (no verdicts yet)."""
    arrays = _event_arrays(table)
    feats = reference["features"]
    out: dict[str, dict[str, Any]] = {}
    for name in NUMERIC_FEATURES:
        out[name] = compare_numeric(feats[name], arrays[name])
    for name in ("event_type", "device", "country", "rating"):
        out[name] = compare_categorical(feats[name], category_counts(arrays[name]))
    pop = reference["popularity"]
    codes = bucket_labels(arrays["items"], decode_ids(pop["item_ids"]), _decode_codes(pop["item_buckets"]))
    out["item_popularity"] = compare_categorical(feats["item_popularity"], _bucket_counts(codes), pop["buckets"])
    known = reference["known"]
    shares = unseen_shares(arrays, decode_ids(known["users"]["ids"]), decode_ids(known["items"]["ids"]))
    base = reference["unseen_baseline"]
    for name, key, n in (
        ("unseen_users", "users", int(np.unique(arrays["users"]).size)),
        ("unseen_items", "items", int(arrays["items"].size)),
    ):
        out[name] = {
            "kind": "share",
            "n_cur": n,
            "share": shares[key],
            "baseline": float(base.get(key) or 0.0),
            "increase": shares[key] - float(base.get(key) or 0.0),
            "known": int(known[key]["count"]),
            "psi": None,
            "js": None,
            "ks": None,
        }
    return out


def feature_verdict(result: Mapping[str, Any], thresholds: Mapping[str, float]) -> tuple[str, str]:
    """``(verdict, why)`` of one compared feature: ``ok``, ``warn``, ``alert`` or ``insufficient``.

    Distribution features: alert when PSI ≥ ``psi_alert`` or JS ≥ ``js_threshold``; warn when
    PSI ≥ ``psi_warn``. Unseen shares: alert/warn when the increase over the held-out baseline
    reaches ``unseen_share_alert`` / ``unseen_share_warn``. Fewer than ``min_samples``
    observations on the day → ``insufficient`` (no verdict).
    """
    if result.get("n_cur", 0) < thresholds["min_samples"]:
        return "insufficient", f"{result.get('n_cur', 0)} observations < min_samples {thresholds['min_samples']:g}"
    if result["kind"] == "share":
        inc = result["increase"]
        if inc >= thresholds["unseen_share_alert"]:
            return (
                "alert",
                f"share {result['share']:.3f} is {inc:+.3f} over baseline ≥ {thresholds['unseen_share_alert']:g}",
            )
        if inc >= thresholds["unseen_share_warn"]:
            return (
                "warn",
                f"share {result['share']:.3f} is {inc:+.3f} over baseline ≥ {thresholds['unseen_share_warn']:g}",
            )
        return "ok", f"share {result['share']:.3f} ({inc:+.3f} vs baseline)"
    p, j = result.get("psi"), result.get("js")
    if p is None or j is None:
        return "insufficient", "no reference observations"
    if p >= thresholds["psi_alert"] or j >= thresholds["js_threshold"]:
        parts = []
        if p >= thresholds["psi_alert"]:
            parts.append(f"PSI {p:.3f} ≥ {thresholds['psi_alert']:g}")
        if j >= thresholds["js_threshold"]:
            parts.append(f"JS {j:.3f} ≥ {thresholds['js_threshold']:g}")
        return "alert", "; ".join(parts)
    if p >= thresholds["psi_warn"]:
        return "warn", f"PSI {p:.3f} ≥ {thresholds['psi_warn']:g}"
    return "ok", f"PSI {p:.3f}, JS {j:.3f}"


# ---- performance --------------------------------------------------------------------------


def online_performance(
    rec_users: Any,
    rec_items: Any,
    rec_ranks: Any,
    pos_users: Any,
    pos_items: Any,
    k: int,
    known_users: np.ndarray,
    known_items: np.ndarray,
    seen: tuple[np.ndarray, np.ndarray] | None = None,
) -> dict[str, Any]:
    """Hit-rate@K and recall@K of served recommendations against the next day's positives.

    The relevant items of a user are the distinct items of their positive events that the
    offline evaluation would count: user and item known to the model and the pair not among
    the model's training pairs (``seen``: user ids and item ids of those pairs) — the same
    definition as the snapshot's test set, so the figure is comparable with the champion's
    offline recall@K. Evaluated users = users with recommendations and ≥ 1 relevant item.

    Returns:
        ``{"users", "relevant", "hits", "hit_rate", "recall"}`` (rates None without users).
    """
    ru = np.asarray(rec_users, dtype=np.int64)
    ri = np.asarray(rec_items, dtype=np.int64)
    rr = np.asarray(rec_ranks)
    top = rr <= k
    ru, ri = ru[top], ri[top]
    pu = np.asarray(pos_users, dtype=np.int64)
    pi = np.asarray(pos_items, dtype=np.int64)
    keep = np.isin(pu, known_users) & np.isin(pi, known_items) & np.isin(pu, ru)
    pu, pi = pu[keep], pi[keep]
    all_users = np.unique(np.concatenate([ru, pu, seen[0] if seen else np.zeros(0, np.int64)]))
    all_items = np.unique(np.concatenate([ri, pi, seen[1] if seen else np.zeros(0, np.int64)]))

    def keys(u: np.ndarray, i: np.ndarray) -> np.ndarray:
        return np.searchsorted(all_users, u).astype(np.int64) * all_items.size + np.searchsorted(all_items, i)

    rel = np.unique(keys(pu, pi))
    if seen is not None and len(seen[0]):
        rel = rel[~np.isin(rel, keys(*seen))]
    hit = np.isin(rel, keys(ru, ri))
    user_of = rel // max(all_items.size, 1)
    users, inverse = np.unique(user_of, return_inverse=True)
    if users.size == 0:
        return {"users": 0, "relevant": 0, "hits": 0, "hit_rate": None, "recall": None}
    relevant = np.bincount(inverse, minlength=users.size)
    hits = np.bincount(inverse, weights=hit.astype(np.float64), minlength=users.size)
    return {
        "users": int(users.size),
        "relevant": int(rel.size),
        "hits": int(hit.sum()),
        "hit_rate": float((hits > 0).mean()),
        "recall": float((hits / relevant).mean()),
    }


def relative_decay(online: float | None, offline: float | None) -> float | None:
    """``1 - online / offline`` (positive = worse online); None when either is missing or offline is 0."""
    if online is None or offline is None or not math.isfinite(offline) or offline <= 0:
        return None
    return 1.0 - online / offline


def score_drift(ref_scores: Any, cur_scores: Any, bins: int = NUMERIC_BINS) -> dict[str, Any]:
    """PSI/JS on reference-quantile bins and KS of served scores (prediction drift)."""
    ref = numeric_reference(ref_scores, bins=bins, sketch_size=max(SKETCH_SIZE, 1))
    return compare_numeric(ref, cur_scores)


def share_table(labels: Sequence[str], counts: Sequence[float]) -> dict[str, float]:
    total = float(sum(counts)) or 1.0
    return {label: float(c) / total for label, c in zip(labels, counts, strict=True)}


def read_curated(files: Sequence[str]) -> Any:
    """The feature columns of curated Parquet files (local paths or object-store URIs) as one Table."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    tables = [pq.read_table(f, columns=list(EVENT_COLUMNS)) for f in files]
    if not tables:
        raise ValueError("no curated file to read")
    return pa.concat_tables(tables).combine_chunks() if len(tables) > 1 else tables[0]
