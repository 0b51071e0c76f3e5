"""Drift statistics: effect sizes of a day against the fixed bins of the training reference.

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

The reference itself (bins, sketches, popularity buckets, known ids) is ``jobs.core.reference``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from jobs.core.ranking import pair_keys, ranking_metrics
from jobs.core.reference import (
    NULL_LABEL,
    NUMERIC_BINS,
    NUMERIC_FEATURES,
    PSI_EPS,
    SKETCH_SIZE,
    bucket_counts,
    bucket_labels,
    category_counts,
    decode_codes,
    decode_ids,
    event_arrays,
    numeric_reference,
    sorted_bin_counts,
    sorted_finite,
    unseen_shares,
)

NOT_AVAILABLE = "not available"


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
    """PSI/JS over the union of the reference's and the day's categories (``order``: display order).

    Nulls are not a category: they are left out of the distributions and counted apart
    (``null_ref``, ``null_cur``). A side whose values are all null (a context column the source
    lacks, e.g. ``device`` in a ratings log) makes the feature ``available: False``: no PSI/JS,
    and ``feature_verdict`` says "not available" rather than 0 or an alert.
    """
    ref_counts = {k: v for k, v in ref["counts"].items() if k != NULL_LABEL}
    null_ref, null_cur = int(ref["counts"].get(NULL_LABEL, 0)), int(counts.get(NULL_LABEL, 0))
    labels, r, c = aligned(ref_counts, {k: v for k, v in counts.items() if k != NULL_LABEL}, order)
    out: dict[str, Any] = {
        "kind": "categorical",
        "n_ref": int(r.sum()),
        "n_cur": int(c.sum()),
        "null_ref": null_ref,
        "null_cur": null_cur,
        "available": not ((null_ref and r.sum() == 0) or (null_cur and c.sum() == 0)),
        "bins": labels,
        "ref_counts": r.astype(np.int64).tolist(),
        "cur_counts": c.astype(np.int64).tolist(),
        "new_categories": [k for k in labels if k not in ref_counts],
        "ks": None,
    }
    if r.sum() == 0 or c.sum() == 0:
        return {**out, "psi": None, "js": None}
    return {**out, "psi": psi(r, c), "js": js_distance(r, c)}


def day_features(table: Any, reference: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    """Every feature of one day of curated events compared with the reference (no verdicts yet)."""
    arrays = event_arrays(table)
    feats = reference["features"]
    out: dict[str, dict[str, Any]] = {}
    for name in NUMERIC_FEATURES:
        out[name] = compare_numeric(feats[name], arrays[name])
    for name in ("event_type", "device", "country", "rating"):
        out[name] = compare_categorical(feats[name], category_counts(arrays[name]))
    pop = reference["popularity"]
    codes = bucket_labels(arrays["items"], decode_ids(pop["item_ids"]), decode_codes(pop["item_buckets"]))
    out["item_popularity"] = compare_categorical(feats["item_popularity"], bucket_counts(codes), pop["buckets"])
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
    observations on the day → ``insufficient`` (no verdict). A feature whose values are all null
    in the reference or on the day → ``not available`` (the source lacks it; never an alert).
    """
    if result.get("available") is False:
        side = "the reference" if result.get("null_ref") and not result.get("n_ref") else "this day"
        return NOT_AVAILABLE, f"not available: every value is null in {side} (the source lacks this column)"
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
    offline recall@K. Evaluated users = users with recommendations and ≥ 1 relevant item; the
    metrics themselves are ``jobs.core.ranking.ranking_metrics``.

    Returns:
        ``{"users", "relevant", "hits", "hit_rate", "recall"}`` (rates None without users).
    """
    ru = np.asarray(rec_users, dtype=np.int64)
    pu = np.asarray(pos_users, dtype=np.int64)
    pi = np.asarray(pos_items, dtype=np.int64)
    keep = np.isin(pu, known_users) & np.isin(pi, known_items) & np.isin(pu, ru)
    pu, pi = pu[keep], pi[keep]
    if seen is not None and len(seen[0]) and len(pu):
        day_keys, seen_keys = pair_keys(pu, pi, seen)
        fresh = ~np.isin(day_keys, seen_keys)
        pu, pi = pu[fresh], pi[fresh]
    out = ranking_metrics(ru, rec_items, rec_ranks, pu, pi, k)
    return {key: out[key] for key in ("users", "relevant", "hits", "hit_rate", "recall")}
