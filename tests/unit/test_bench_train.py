"""bench_train's converse rows: implicit's time to our quality, and its convergence rule."""

from __future__ import annotations

import itertools

import pytest

from benchmarks.bench_train import converged, converse_ttq_row, first_reaching

pytestmark = pytest.mark.unit

CURVE = [(1, 0.5, 0.05), (2, 1.0, 0.08), (3, 1.5, 0.095), (4, 2.0, 0.11)]


def test_the_converse_row_times_implicit_to_our_final_quality():
    assert first_reaching(CURVE, 0.09) == (3, 1.5, 0.095)
    row = converse_ttq_row(ours_s=3.0, target=0.09, history=CURVE, epochs=10)
    assert (row["value"], row["reference"]) == (3.0, 1.5)
    assert "implicit reached 0.0950 after 3 epochs" in row["note"]


def test_implicit_that_never_gets_there_leaves_the_reference_empty():
    row = converse_ttq_row(ours_s=3.0, target=0.2, history=CURVE, epochs=10)
    assert first_reaching(CURVE, 0.2) is None
    assert row["value"] == 3.0 and row["reference"] is None
    assert "did NOT reach it in 4 epochs (2.0s" in row["note"] and "best 0.1100 at epoch 4" in row["note"]


@pytest.mark.parametrize(
    ("ndcgs", "expected"),
    [
        ([0.05, 0.06, 0.07], False),  # fewer epochs than the patience window + 1
        ([0.05, 0.06, 0.07, 0.08, 0.09, 0.10, 0.11], False),  # still climbing
        ([0.05, 0.10, 0.1001, 0.1002, 0.1001, 0.1003, 0.1004], True),  # flat: < 0.5% gain in 5 epochs
        ([0.05, 0.10, 0.09, 0.08, 0.09, 0.085, 0.08], True),  # turned down
    ],
    ids=["short", "climbing", "flat", "down"],
)
def test_convergence_is_a_flat_or_falling_window(ndcgs, expected):
    assert converged(ndcgs, patience=5, min_gain=0.005, min_epochs=0) is expected


def test_a_plateau_before_the_minimum_epochs_is_not_convergence():
    plateau_then_climb = [0.098] * 20 + [0.10 + 0.001 * i for i in range(20)]
    assert converged(plateau_then_climb[:20], patience=10, min_gain=0.005, min_epochs=0)  # what patience alone says
    assert not converged(plateau_then_climb[:20], patience=10, min_gain=0.005, min_epochs=30)
    assert not converged(plateau_then_climb, patience=10, min_gain=0.005, min_epochs=30)
    assert converged([*plateau_then_climb, *[0.119] * 10], patience=10, min_gain=0.005, min_epochs=30)


def test_implicit_keeps_training_across_fit_calls_and_stops_on_the_rule():
    """One epoch per ``fit`` call continues the same model (a re-initialised one would share
    nothing with the previous epoch's factors) and stops where ``stop`` says or at the cap."""
    import numpy as np

    from benchmarks.bench_train import implicit_curve
    from jobs.core.snapshots import TrainData

    rng = np.random.default_rng(0)
    keys = np.unique(rng.integers(0, 200, 3_000) * 60 + rng.zipf(1.5, 3_000) % 60)
    users, items = np.divmod(keys, 60)
    data = TrainData(
        users=users, items=items, weights=np.ones(len(keys), np.float32), test_users=users[:10],
        test_items=items[:10], user_ids=np.arange(200), item_ids=np.arange(60),
        popularity=np.bincount(items, minlength=60),
    )  # fmt: skip
    seen: list[np.ndarray] = []

    def ndcg(arrays):
        seen.append(arrays["item_factors"][:, :-1].copy())  # the last column is implicit's item bias
        return float(len(seen))

    params = {"learning_rate": 0.05, "regularization": 0.01}
    history = implicit_curve(data, 8, 6, params, lambda h: h[-1][2] >= 4, ndcg=ndcg)
    assert [(h[0], h[2]) for h in history] == [(1, 1.0), (2, 2.0), (3, 3.0), (4, 4.0)]
    assert all(b[1] >= a[1] for a, b in itertools.pairwise(history))  # seconds accumulate
    for before, after in itertools.pairwise(seen):
        assert np.corrcoef(before.ravel(), after.ravel())[0, 1] > 0.5
    capped = implicit_curve(data, 8, 3, params, lambda h: False, ndcg=lambda arrays: 0.0)
    assert [h[0] for h in capped] == [1, 2, 3]
