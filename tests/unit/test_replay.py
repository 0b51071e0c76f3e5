"""The replay gate's pure parts: which days, what counts as history, the paired interval, the rule."""

from __future__ import annotations

import numpy as np
import pytest

from jobs.core.ranking import metrics_of_lists
from jobs.evaluate import replay
from recsys_airflow.factory import chosen_families, pick_days

pytestmark = pytest.mark.unit

DAYS = ["2026-03-02", "2026-03-03", "2026-03-04", "2026-03-05", "2026-03-06"]


def test_pick_days_holds_out_r_days_before_the_newest_and_replays_the_rest():
    assert pick_days(DAYS, None, "9999-12-31", 0) == ("2026-03-06", [])
    assert pick_days(DAYS, None, "9999-12-31", 2) == ("2026-03-04", ["2026-03-05", "2026-03-06"])
    # a backfilled run sees only the days up to its data interval
    assert pick_days(DAYS, None, "2026-03-04", 1) == ("2026-03-03", ["2026-03-04"])
    # an explicit day: the replay is what exists after it, at most R days
    assert pick_days(DAYS, "2026-03-05", "9999-12-31", 3) == ("2026-03-05", ["2026-03-06"])
    assert pick_days(DAYS, "2026-03-06", "9999-12-31", 2) == ("2026-03-06", [])
    # fewer days than R + 1: the oldest is held out
    assert pick_days(DAYS[:2], None, "9999-12-31", 5) == ("2026-03-02", ["2026-03-03"])
    with pytest.raises(ValueError, match="2026-03-09 is not a validated curated day"):
        pick_days(DAYS, "2026-03-09", "9999-12-31", 0)
    with pytest.raises(ValueError, match="run recsys_ingest first"):
        pick_days([], None, "9999-12-31", 1)


def test_a_run_trains_its_families_in_the_built_order_and_a_stranger_is_named():
    built = ["mf", "ease", "seq"]
    assert chosen_families(None, built) == built  # a pipeline without the choice trains all it builds
    assert chosen_families(["seq", "mf"], built) == ["mf", "seq"]  # tie-break order is the pipeline's
    with pytest.raises(ValueError, match=r"unknown: \['als'\]"):
        chosen_families(["mf", "als"], built)
    with pytest.raises(ValueError, match="the pipeline builds"):
        chosen_families([], built)


def test_history_is_the_window_and_earlier_days_only():
    positives = {
        "D": {1: {10, 11}, 2: {20}},
        "D+1": {1: {10, 12}, 2: {21}, 3: {30}},
        "D+2": {1: {12, 13}, 3: {30}},
    }
    seen = {1: {9}, 2: {20, 22}}
    sets = replay.replay_sets(positives.__getitem__, "D", seen, ["D+1", "D+2"])
    assert [day for day, _, _ in sets] == ["D+1", "D+2"]
    (_, truth1, hist1), (_, truth2, hist2) = sets
    # D+1: user 1's item 10 was seen on the held-out day D: not a new positive
    assert truth1 == {1: {12}, 2: {21}, 3: {30}}
    assert hist1 == {1: {9, 10, 11}, 2: {20, 22}, 3: set()}
    # D+2: D+1 is now history (user 3's item 30 again is no new positive: user 3 drops out);
    # D+2 itself never is
    assert truth2 == {1: {13}}
    assert hist2 == {1: {9, 10, 11, 12}}


def test_ranked_lists_skip_history_and_popularity_ties_go_to_the_lower_index():
    assert replay.unseen_top_k({1: [5, 6, 7, 8]}, {1: {6, 8}}, 2) == {1: [5, 7]}
    lists = replay.popularity_lists(np.array([100, 101, 102]), np.array([3, 5, 5]), [7, 8], 3)
    assert lists == {7: [101, 102, 100], 8: [101, 102, 100]}


def test_per_user_metrics_are_keyed_by_user_id_and_average_to_the_totals():
    recs = {30: [1, 2], 10: [3, 4], 20: []}
    truth = {10: {3}, 20: {9}, 30: {2, 5}}
    m = metrics_of_lists(recs, truth, 2, per_user=True)
    per = m["per_user"]
    assert per["users"].tolist() == [10, 20, 30]
    assert per["ndcg"][0] == pytest.approx(1.0) and per["ndcg"][1] == 0.0
    assert per["ndcg"][2] == pytest.approx((1 / np.log2(3)) / (1 + 1 / np.log2(3)))
    assert per["ndcg"].mean() == pytest.approx(m["ndcg"]) and per["recall"].mean() == pytest.approx(m["recall"])


def test_paired_interval_is_seeded_and_brackets_the_mean():
    rng = np.random.default_rng(1)
    diffs = rng.normal(0.01, 0.2, size=3000)
    a = replay.paired_interval(diffs, 400)
    assert a == replay.paired_interval(diffs, 400)  # the same interval on a rerun
    assert a["low"] < a["mean"] < a["high"] and a["pairs"] == 3000 and a["resamples"] == 400
    assert a["high"] - a["low"] == pytest.approx(2 * 1.96 * 0.2 / np.sqrt(3000), rel=0.25)
    same = replay.paired_interval(np.zeros(50), 100)
    assert (same["low"], same["mean"], same["high"]) == (0.0, 0.0, 0.0)
    with pytest.raises(ValueError, match="no paired observation"):
        replay.paired_interval(np.zeros(0), 100)


def test_recent_popularity_counts_distinct_users_and_breaks_ties_by_window_popularity():
    from jobs.core.recency import distinct_pair_counts

    items = np.array([100, 101, 102, 103])
    # (user, item) index pairs of two days; -1: an item or user not in the snapshot
    users = np.array([0, 0, 1, 0, 0, 2, -1])
    picks = np.array([0, 1, 1, 1, -1, 2, 3])
    counts = distinct_pair_counts(users, picks, len(items))
    assert counts.tolist() == [1, 2, 1, 0]  # user 0's item 1 on two days counts once
    # ties in recent popularity (100 and 102) go to the more popular item over the window
    lists = replay.popularity_lists(items, counts, [7], 4, tiebreak=np.array([1, 9, 5, 9]))
    assert lists == {7: [101, 102, 100, 103]}


def test_intervals_pair_the_challenger_with_every_baseline_on_the_same_pairs():
    rng = np.random.default_rng(2)
    base = rng.uniform(0, 0.5, 400)
    ndcg = {"challenger": base + 0.05, "popularity": base, "champion": base + 0.05}
    out = replay.intervals(ndcg, 300)
    assert set(out) == {"popularity", "champion"}
    # a constant paired difference has a point interval, however spread the per-user values are
    assert out["popularity"]["low"] == pytest.approx(0.05) and out["popularity"]["high"] == pytest.approx(0.05)
    assert (out["champion"]["low"], out["champion"]["high"]) == (0.0, 0.0)
    summary = replay.summary({"days": [{"day": "D"}, {"day": "D+1"}], "users": 400, "intervals": out}, 10)
    assert summary.startswith("evidence: 400 user-days over 2 day(s) (D, D+1); ndcg@10 challenger − popularity +0.0500")


def test_replay_days_inside_the_champions_window_are_skipped_and_said_so():
    days = ["2026-03-05", "2026-03-06", "2026-03-07"]
    # a champion trained on a later snapshot (a backfill): its window ends 2026-03-06
    usable, skipped = replay.usable_days(days, "models:/m/3", "2026-03-06")
    assert usable == ["2026-03-07"]
    assert skipped == dict.fromkeys(days[:2], "inside the champion's training window (ends 2026-03-06)")
    # a champion whose window ends before the replay days: every day is evidence
    assert replay.usable_days(days, "models:/m/3", "2026-03-04") == (days, {})
    # no champion (a first training), or one without a recorded window: nothing to skip
    assert replay.usable_days(days, None, "2026-03-06") == (days, {})
    assert replay.usable_days(days, "models:/m/3", None) == (days, {})
