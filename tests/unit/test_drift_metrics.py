"""Drift metrics against scipy and a plain PSI implementation on the same inputs (to 1e-9)."""

from __future__ import annotations

import math

import numpy as np
import pyarrow as pa
import pytest
from scipy.spatial.distance import jensenshannon
from scipy.stats import ks_2samp

from jobs.core import reference as refmod
from jobs.monitor import metrics as dm

pytestmark = pytest.mark.unit

TOL = 1e-9


def reference_psi(expected_counts, actual_counts, eps=1e-4):
    """The textbook loop: shares per bin, an empty bin counts as eps, Σ (a - e) ln(a / e)."""
    e_total, a_total = sum(expected_counts), sum(actual_counts)
    total = 0.0
    for e_count, a_count in zip(expected_counts, actual_counts, strict=True):
        e = e_count / e_total or eps
        a = a_count / a_total or eps
        total += (a - e) * math.log(a / e)
    return total


def _samples():
    rng = np.random.default_rng(3)
    yield "normal-shift", rng.normal(0, 1, 20_000), rng.normal(0.3, 1.2, 15_000)
    yield "lognormal-same", rng.lognormal(6.8, 0.7, 30_000), rng.lognormal(6.8, 0.7, 8_000)
    yield "poisson-ties", rng.poisson(3, 5_000).astype(float), rng.poisson(4, 7_000).astype(float)
    yield "tiny", np.array([1.0, 2.0, 2.0, 3.0]), np.array([2.0, 2.0, 5.0])
    yield "disjoint", rng.uniform(0, 1, 300), rng.uniform(2, 3, 200)


@pytest.mark.parametrize(("name", "ref", "cur"), list(_samples()), ids=lambda x: x if isinstance(x, str) else "")
def test_ks_statistic_equals_scipy(name, ref, cur):
    assert dm.ks_statistic(ref, cur) == pytest.approx(ks_2samp(ref, cur).statistic, abs=TOL)
    assert dm.ks_statistic(cur, ref) == pytest.approx(ks_2samp(cur, ref).statistic, abs=TOL)


def test_ks_statistic_ignores_nan_and_handles_identity():
    x = np.array([1.0, np.nan, 2.0, 3.0, np.inf])
    assert dm.ks_statistic(x, x) == 0.0
    assert math.isnan(dm.ks_statistic([], [1.0]))
    assert dm.ks_statistic([0.0], [1.0]) == 1.0


@pytest.mark.parametrize(("name", "ref", "cur"), list(_samples()), ids=lambda x: x if isinstance(x, str) else "")
def test_psi_and_js_on_reference_quantile_bins(name, ref, cur):
    edges = refmod.quantile_edges(ref)
    rc, cc = refmod.bin_counts(ref, edges), refmod.bin_counts(cur, edges)
    assert rc.sum() == len(ref) and cc.sum() == len(cur)
    assert dm.psi(rc, cc) == pytest.approx(reference_psi(list(rc), list(cc)), abs=TOL)
    assert dm.js_distance(rc, cc) == pytest.approx(jensenshannon(rc, cc, base=2), abs=TOL)
    assert dm.js_distance(rc, cc, base=math.e) == pytest.approx(jensenshannon(rc, cc), abs=TOL)


def test_psi_and_js_with_empty_bins_and_new_categories():
    ref = {"tv": 500, "mobile": 300, "web": 200}
    cur = {"tv": 100, "mobile": 700, "car": 50}
    labels, r, c = dm.aligned(ref, cur)
    assert labels == ["car", "mobile", "tv", "web"]
    assert dm.psi(r, c) == pytest.approx(reference_psi(list(r), list(c)), abs=TOL)
    assert dm.js_distance(r, c) == pytest.approx(jensenshannon(r, c, base=2), abs=TOL)
    same = dm.compare_categorical({"counts": ref}, ref)
    assert same["psi"] == 0.0 and same["js"] == 0.0
    moved = dm.compare_categorical({"counts": ref}, cur)
    assert moved["new_categories"] == ["car"]
    assert moved["psi"] > 0.25 and 0.1 < moved["js"] <= 1.0


def test_js_distance_is_one_for_disjoint_supports_and_psi_rejects_bad_input():
    assert dm.js_distance([1, 0], [0, 1]) == pytest.approx(1.0, abs=TOL)
    with pytest.raises(ValueError, match="bins differ"):
        dm.psi([1, 2], [1, 2, 3])
    with pytest.raises(ValueError, match="at least one observation"):
        dm.psi([0, 0], [1, 2])


def test_quantile_edges_follow_discrete_values_and_bins_are_half_open():
    values = np.array([1, 1, 1, 1, 2, 2, 3, 5, 8, 13], dtype=float)
    edges = refmod.quantile_edges(values, bins=5)
    assert edges.tolist() == [1.0, 2.0, 5.0]  # the 20/40/60/80% quantiles 1, 1, 2, 5, merged
    assert refmod.bin_counts(values, edges).tolist() == [0, 4, 3, 3]
    assert refmod.bin_counts(np.array([0.5, 1.0, 2.5, 100.0]), edges).tolist() == [1, 1, 1, 1]


def test_quantile_sketch_keeps_discrete_masses_and_small_samples_exactly():
    rng = np.random.default_rng(0)
    values = rng.poisson(2, 100_000).astype(float)
    sketch = refmod.quantile_sketch(values, 4096)
    assert len(sketch) == 4096 and np.all(np.diff(sketch) >= 0)
    for v in range(6):
        assert abs((sketch == v).mean() - (values == v).mean()) <= 1 / 4096
    # KS against the sketch is within 1/4096 of KS against the full reference.
    cur = rng.poisson(2.3, 5_000).astype(float)
    assert abs(dm.ks_statistic(sketch, cur) - ks_2samp(values, cur).statistic) <= 2 / 4096
    small = np.array([3.0, 1.0, 2.0])
    assert refmod.quantile_sketch(small).tolist() == [1.0, 2.0, 3.0]


def test_ids_roundtrip_compactly():
    rng = np.random.default_rng(1)
    ids = rng.choice(10_000_000, 200_000, replace=False)
    text = refmod.encode_ids(ids)
    assert np.array_equal(refmod.decode_ids(text), np.sort(ids))
    assert len(text) < 200_000 * 8 / 2  # well under the raw int64 size
    assert refmod.decode_ids(refmod.encode_ids([])).size == 0


def test_category_counts_from_arrow_and_numpy():
    arr = pa.array(["a", "b", "a", None]).dictionary_encode()
    assert refmod.category_counts(arr) == {"a": 2, "b": 1, "<null>": 1}
    assert refmod.category_counts(np.array([3, 3, 5])) == {"3": 2, "5": 1}


def test_popularity_buckets_rank_by_count_with_id_ties():
    ids = np.arange(100, 300)  # 200 items
    counts = np.arange(200, 0, -1)  # item 100 is the most popular
    sorted_ids, codes = refmod.popularity_buckets(ids, counts)
    assert sorted_ids.tolist() == ids.tolist()
    assert codes[:2].tolist() == [0, 0]  # top 1% of 200 = 2 items
    assert (codes == 1).sum() == 8 and (codes == 4).sum() == 100
    labels = refmod.bucket_labels(np.array([100, 299, 5]), sorted_ids, codes)
    assert labels.tolist() == [0, 4, len(refmod.POPULARITY_BUCKETS)]


def _day(rng, n, device_p=(0.45, 0.33, 0.17, 0.05), users=500, items=200, new_items=0):
    etype = rng.choice(["impression", "click", "play", "rating"], n, p=[0.3, 0.25, 0.35, 0.1])
    return pa.table(
        {
            "user_id": rng.integers(0, users, n),
            "item_id": np.minimum(rng.zipf(1.6, n) - 1, items - 1)
            + rng.choice([0, 10_000], n, p=[1 - new_items, new_items]),
            "event_type": etype,
            "watch_seconds": np.where(etype == "play", rng.lognormal(6.8, 0.7, n), np.nan),
            "rating": pa.array(np.where(etype == "rating", rng.integers(1, 6, n), 0)).cast(pa.int64()),
            "device": rng.choice(["tv", "mobile", "web", "tablet"], n, p=list(device_p)),
            "country": rng.choice(["US", "GB", "DE"], n),
        }
    )


THRESHOLDS = {
    "psi_warn": 0.1,
    "psi_alert": 0.25,
    "js_threshold": 0.1,
    "unseen_share_warn": 0.05,
    "unseen_share_alert": 0.1,
    "min_samples": 100,
}


def test_reference_roundtrip_and_day_comparison_flags_only_what_moved():
    rng = np.random.default_rng(5)
    window = [(f"2026-01-0{i}", _day(rng, 20_000)) for i in range(1, 4)]
    known_users, known_items = np.arange(500), np.arange(200)
    ref = refmod.compute_reference(window, known_users, known_items, holdout=("2026-01-04", _day(rng, 20_000)))
    import json

    ref = refmod.validate_reference(json.loads(refmod.dumps_reference(ref)))
    assert ref["known"]["users"]["count"] == 500
    assert ref["features"]["watch_seconds"]["n"] == sum(
        int((t.column("event_type").to_numpy(zero_copy_only=False) == "play").sum()) for _, t in window
    )
    assert sum(ref["features"]["item_popularity"]["counts"].values()) == 60_000
    stable = dm.day_features(_day(rng, 20_000), ref)
    verdicts = {k: dm.feature_verdict(v, THRESHOLDS)[0] for k, v in stable.items()}
    assert set(verdicts.values()) == {"ok"}, verdicts
    moved = dm.day_features(_day(rng, 20_000, device_p=(0.15, 0.7, 0.1, 0.05), new_items=0.3), ref)
    verdicts = {k: dm.feature_verdict(v, THRESHOLDS)[0] for k, v in moved.items()}
    assert verdicts["device"] == "alert"
    assert verdicts["unseen_items"] == "alert" and moved["unseen_items"]["share"] == pytest.approx(0.3, abs=0.02)
    assert verdicts["item_popularity"] == "alert"
    assert verdicts["watch_seconds"] == "ok" and verdicts["country"] == "ok"
    few = dm.day_features(_day(rng, 50), ref)
    assert dm.feature_verdict(few["watch_seconds"], THRESHOLDS)[0] == "insufficient"


def _without_context(table: pa.Table) -> pa.Table:
    """A ratings log's day: device and country null (the source lacks them)."""
    nulls = pa.nulls(table.num_rows, pa.string())
    return table.set_column(table.schema.get_field_index("device"), "device", nulls).set_column(
        table.schema.get_field_index("country"), "country", nulls
    )


def test_a_context_column_all_null_in_the_reference_or_the_day_is_not_available_never_an_alert():
    from jobs.monitor import report, sections

    rng = np.random.default_rng(7)
    window = [(f"2026-01-0{i}", _without_context(_day(rng, 5_000))) for i in range(1, 3)]
    ref = refmod.compute_reference(window, np.arange(500), np.arange(200))
    day = dm.day_features(_without_context(_day(rng, 5_000)), ref)
    verdicts = {k: dm.feature_verdict(v, THRESHOLDS)[0] for k, v in day.items()}
    assert verdicts["device"] == verdicts["country"] == "not available"
    assert day["device"]["psi"] is None and day["device"]["null_cur"] == 5_000 and day["device"]["n_cur"] == 0
    assert verdicts["event_type"] == verdicts["rating"] == "ok"
    # A reference with values and a day without them (the source changed): not available either.
    full = refmod.compute_reference([("2026-01-01", _day(rng, 5_000))], np.arange(500), np.arange(200))
    verdict, why = dm.feature_verdict(dm.day_features(_without_context(_day(rng, 5_000)), full)["device"], THRESHOLDS)
    assert verdict == "not available" and "this day" in why
    # Some nulls beside values: the values are compared, the nulls counted apart.
    mixed = _day(rng, 5_000)
    mixed = mixed.set_column(6, "country", pa.array([None] * 100 + mixed.column("country").to_pylist()[100:]))
    country = dm.day_features(mixed, full)["country"]
    assert country["available"] and country["null_cur"] == 100 and country["n_cur"] == 4_900
    assert dm.feature_verdict(country, THRESHOLDS)[0] == "ok"
    section = sections.data_drift(ref, None, _without_context(_day(rng, 5_000)), THRESHOLDS)
    assert "device" not in section["alerts"] and "country" not in section["warnings"]
    assert report._feature_rows(section["features"]).count(">not available</span>") == 2


def test_reference_is_deterministic():
    window = [("2026-01-01", _day(np.random.default_rng(9), 5_000))]
    a = refmod.dumps_reference(refmod.compute_reference(window, np.arange(10), np.arange(10)))
    b = refmod.dumps_reference(refmod.compute_reference(window, np.arange(10), np.arange(10)))
    assert a == b


def test_validate_reference_names_what_is_missing():
    with pytest.raises(refmod.ReferenceFormatError, match="format"):
        refmod.validate_reference({"format": 99})
    with pytest.raises(refmod.ReferenceFormatError, match="lack 'popularity'"):
        refmod.validate_reference({"format": refmod.FORMAT, "features": {}})


def test_online_performance_counts_hits_on_unseen_relevant_pairs():
    # user 1 got items 10, 11 (ranks 1-2) and 12 (rank 3); user 2 got 10, 13.
    rec_u = [1, 1, 1, 2, 2]
    rec_i = [10, 11, 12, 10, 13]
    rec_r = [1, 2, 3, 1, 2]
    # Day's positives: user 1 → 11 (hit), 14 (miss), 15 (seen in training: not relevant);
    # user 2 → 14 (miss); user 3 has no recommendations; item 99 is unknown to the model.
    pos_u = [1, 1, 1, 1, 2, 3, 2]
    pos_i = [11, 14, 15, 11, 14, 10, 99]
    known_u, known_i = np.array([1, 2, 3]), np.array([10, 11, 12, 13, 14, 15])
    seen = (np.array([1]), np.array([15]))
    out = dm.online_performance(rec_u, rec_i, rec_r, pos_u, pos_i, 2, known_u, known_i, seen)
    assert out == {"users": 2, "relevant": 3, "hits": 1, "hit_rate": 0.5, "recall": pytest.approx(0.25)}
    # K = 1 drops user 1's hit at rank 2.
    assert dm.online_performance(rec_u, rec_i, rec_r, pos_u, pos_i, 1, known_u, known_i, seen)["hits"] == 0
    empty = dm.online_performance([], [], [], pos_u, pos_i, 2, known_u, known_i)
    assert empty["users"] == 0 and empty["recall"] is None
    assert dm.relative_decay(0.1, 0.2) == pytest.approx(0.5)
    assert dm.relative_decay(0.1, 0.0) is None


def test_sorted_paths_match_the_plain_ones():
    rng = np.random.default_rng(11)
    values = np.concatenate([rng.poisson(4, 5_000).astype(float), [np.nan, np.inf, -np.inf]])
    clean = refmod.sorted_finite(values)
    assert clean.size == 5_000 and np.all(np.diff(clean) >= 0)
    edges = refmod.quantile_edges(clean)
    assert refmod.sorted_bin_counts(clean, edges).tolist() == refmod.bin_counts(refmod.finite(values), edges).tolist()
