"""The quality benchmark's protocol pieces: temporal split without leakage, RecBole's 8:1:1 per
user, EASE's closed form, the paired bootstrap, and full ranking with seen items excluded."""

from __future__ import annotations

import numpy as np
import pytest

from benchmarks.quality_protocol import (
    DAY,
    LeakageError,
    check_no_leakage,
    from_arrays,
    heldout_truth,
    load_interactions,
    paired_bootstrap_ci,
    recbole_counts,
    recbole_split,
    rolling_cut_days,
    temporal_split,
)

pytestmark = pytest.mark.unit


def _log(n: int = 3000, users: int = 60, items: int = 80, days: int = 100, seed: int = 1):
    rng = np.random.default_rng(seed)
    return from_arrays(
        rng.integers(0, users, n), rng.integers(0, items, n) * 7 + 3, rng.integers(0, days * DAY, n) + 10**9
    )


def test_temporal_split_periods_are_ordered_and_disjoint_and_the_truth_is_new_and_known():
    d = _log()
    cut = rolling_cut_days(d.days, 3, 14)[0]
    s = temporal_split(d.days, cut, 14, 14)
    assert not (s.train & s.valid).any() and not (s.valid & s.test).any() and not (s.train & s.test).any()
    assert d.days[s.train].max() < cut - 14 <= d.days[s.valid].min()
    assert d.days[s.valid].max() < cut <= d.days[s.test].min() and d.days[s.test].max() < cut + 14
    fit = s.train | s.valid
    tu, ti = heldout_truth(d.users[fit], d.items[fit], d.users[s.test], d.items[s.test])
    assert len(tu) > 0
    fitted = set(zip(d.users[fit].tolist(), d.items[fit].tolist(), strict=True))
    assert not fitted & set(zip(tu.tolist(), ti.tolist(), strict=True))
    assert np.isin(tu, d.users[fit]).all() and np.isin(ti, d.items[fit]).all()
    check_no_leakage(d.users[fit], d.items[fit], d.ts[fit], tu, ti, d.ts[s.test])


def test_rolling_cut_days_end_the_last_test_period_on_the_last_day():
    days = np.array([0, 50, 99])
    assert rolling_cut_days(days, 3, 14) == [58, 72, 86]


def test_heldout_truth_drops_unknown_users_items_and_seen_pairs():
    fit_users, fit_items = [0, 0, 1, 1], [0, 1, 1, 2]
    tu, ti = heldout_truth(fit_users, fit_items, [0, 0, 1, 3, 1, 1], [1, 2, 0, 0, 5, 0])
    assert tu.tolist() == [0, 1] and ti.tolist() == [2, 0]  # (0,1) seen; user 3, item 5 unknown; (1,0) once


@pytest.mark.parametrize(
    ("truth", "heldout_ts", "message"),
    [
        (([0], [0]), None, "in the training data"),
        (([5], [1]), None, "unknown"),
        (([0], [1]), [50], "reaches into"),
        (([], []), None, "no held-out pair"),
    ],
)
def test_a_leaky_split_is_refused(truth, heldout_ts, message):
    with pytest.raises(LeakageError, match=message):
        check_no_leakage([0, 1], [0, 1], [10, 60], *truth, heldout_ts)


def test_recbole_counts_round_like_recbole():
    assert recbole_counts(10) == [8, 1, 1]
    assert recbole_counts(20) == [16, 2, 2]
    assert recbole_counts(27) == [23, 2, 2]  # later parts rounded down
    assert recbole_counts(5) == [3, 1, 1]  # an empty part with a positive share gets one
    assert recbole_counts(2) == [1, 0, 1] and recbole_counts(1) == [1, 0, 0]


def test_recbole_split_is_8_1_1_per_user_seeded_and_shuffled():
    users = np.repeat(np.arange(4), [10, 20, 30, 25])
    part = recbole_split(users, seed=2020)
    for u, n in zip(range(4), [10, 20, 30, 25], strict=True):
        assert np.bincount(part[users == u], minlength=3).tolist() == recbole_counts(n)
    assert np.array_equal(part, recbole_split(users, seed=2020))
    assert not np.array_equal(part, recbole_split(users, seed=7))
    assert not np.array_equal(part[users == 2], np.repeat([0, 1, 2], [24, 3, 3]))  # RO: not in file order


def test_paired_bootstrap_ci_of_a_known_difference():
    rng = np.random.default_rng(0)
    base = rng.random(4000)
    assert paired_bootstrap_ci(base + 0.1, base, n_boot=200) == pytest.approx((0.1, 0.1, 0.1))
    noisy = base + 0.1 + rng.normal(0.0, 0.05, len(base))
    diff, low, high = paired_bootstrap_ci(noisy, base, n_boot=1000, seed=3)
    assert low < 0.1 < high and low < diff < high
    assert high - low == pytest.approx(2 * 1.96 * 0.05 / np.sqrt(len(base)), rel=0.15)  # paired: base cancels
    assert paired_bootstrap_ci(noisy, base, n_boot=1000, seed=3) == (diff, low, high)


@pytest.mark.parametrize(
    ("name", "text"),
    [
        (
            "ml-100k.inter",
            "user_id:token\titem_id:token\trating:float\ttimestamp:float\n7\t3\t4\t100\n2\t3\t1\t90\n7\t3\t5\t80\n",
        ),
        ("ratings.dat", "7::3::4::100\n2::3::1::90\n7::3::5::80\n"),
        ("ratings.csv", "userId,movieId,rating,timestamp\n7,3,4.0,100\n2,3,1.0,90\n7,3,5.0,80\n"),
    ],
)
def test_movielens_files_load_as_implicit_interactions_keeping_a_pairs_first_rating(tmp_path, name, text):
    path = tmp_path / name
    path.write_text(text)
    d = load_interactions(path)
    assert d.user_ids.tolist() == [2, 7] and d.item_ids.tolist() == [3]
    assert sorted(zip(d.users.tolist(), d.ts.tolist(), strict=True)) == [(0, 90), (1, 80)]


def test_rank_is_full_ranking_without_seen_or_blocked_items_and_refuses_nan():
    from benchmarks.quality_models import rank
    from jobs.core.model import CSR

    scores = np.array([[5.0, 4.0, 3.0, 2.0, 1.0], [1.0, 2.0, 2.0, 4.0, 5.0]])
    seen = CSR.from_pairs(np.array([0, 1]), np.array([0, 4]), 2, 5)
    top = rank(lambda users: scores[users], np.array([0, 1]), seen, 3, blocked_items=np.array([3]))
    assert top.tolist() == [[1, 2, 4], [1, 2, 0]]  # ties to the lower item
    with pytest.raises(FloatingPointError):
        rank(lambda users: np.full((len(users), 5), np.nan), np.array([0]), seen, 2)


def test_temporal_protocol_tunes_on_the_period_before_the_cut_and_tests_on_the_period_after_it():
    from benchmarks.quality_tuning import PERIOD_DAYS, temporal_protocol

    d = _log(n=6000, days=120)
    protocol = temporal_protocol(d, 3)
    cuts = rolling_cut_days(d.days, 4, PERIOD_DAYS)
    assert len(protocol.folds) == 3
    for j, (valid, test) in enumerate(protocol.folds):
        for period, cut in ((valid, cuts[j]), (test, cuts[j + 1])):
            assert len(period.data.users) == (d.days < cut).sum()  # fitted on everything before the cut
            held = (d.days >= cut) & (d.days < cut + PERIOD_DAYS)
            pairs = set(zip(d.users[held].tolist(), d.items[held].tolist(), strict=True))
            assert set(zip(period.truth_users.tolist(), period.truth_items.tolist(), strict=True)) <= pairs
            assert not np.isin(period.truth_items, period.blocked_items).any()
    assert all(test is nxt for (_, test), (nxt, _) in zip(protocol.folds, protocol.folds[1:], strict=False))


def test_a_group_yields_one_setting_per_combination_of_its_listed_values():
    """Checkpoints (epochs) and the recency prior's days × α on one EASE fit are all keys of the group."""
    import json

    from benchmarks.quality_tuning import _wanted

    keys = [json.loads(k) for k in _wanted({"lam": 500, "days": [7, 14], "alpha": [0.0, 2.0]})]
    assert sorted((k["days"], k["alpha"]) for k in keys) == [(7, 0.0), (7, 2.0), (14, 0.0), (14, 2.0)]
    assert all(k["lam"] == 500 for k in keys)
    assert [json.loads(k)["epochs"] for k in _wanted({"lr": 0.1, "epochs": [5, 10]})] == [5, 10]
    assert _wanted({"lam": 500}) == ['{"lam": 500}']
