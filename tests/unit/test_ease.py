"""EASE (``jobs.ease``): the closed form, its determinism and the one scoring contract."""

from __future__ import annotations

import numpy as np
import pytest

from jobs.ease.model import (
    choose_l2,
    choose_recent_weight,
    ease_weights,
    export_arrays,
    interaction_matrix,
    recency_bias,
    top_k_unseen,
)


def _world(seed: int = 3, users: int = 40, items: int = 25, pairs: int = 300):
    rng = np.random.default_rng(seed)
    u = rng.integers(0, users, pairs)
    i = np.minimum(rng.zipf(1.6, pairs) - 1, items - 1)  # popular heads, as real logs
    return u, i, users, items


@pytest.mark.unit
def test_closed_form_matches_the_constrained_least_squares_solution():
    x = np.array([[1, 1, 0, 0], [0, 1, 1, 0], [1, 0, 1, 1], [0, 0, 1, 1], [1, 1, 1, 0]], dtype=np.float64)
    lam = 2.0
    b = ease_weights(x, lam)
    # Steck's solution, written out: B = I − P · diag(1 / diag P) with P = (XᵀX + λI)⁻¹.
    p = np.linalg.inv(x.T @ x + lam * np.eye(4))
    assert np.allclose(b, np.eye(4) - p @ np.diag(1.0 / np.diag(p)), atol=1e-12)
    assert np.all(np.diag(b) == 0)
    # It is the minimiser of ‖X − XB‖² + λ‖B‖² under diag(B) = 0: column j solves its own ridge
    # regression of X_j on the other columns.
    for j in range(4):
        others = [c for c in range(4) if c != j]
        a = x[:, others]
        ridge = np.linalg.solve(a.T @ a + lam * np.eye(3), a.T @ x[:, j])
        assert np.allclose(b[others, j], ridge, atol=1e-10)
    with pytest.raises(ValueError, match="> 0"):
        ease_weights(x, 0.0)


@pytest.mark.unit
def test_fit_and_lambda_choice_are_deterministic():
    u, i, n_users, n_items = _world()
    x = interaction_matrix(u, i, n_users, n_items)
    assert set(np.unique(x)) == {0.0, 1.0}  # duplicates count once
    assert ease_weights(x, 5.0).tobytes() == ease_weights(x, 5.0).tobytes()
    first, second = choose_l2(x, [1, 10, 100], k=5, seed=7), choose_l2(x, [100, 10, 1], k=5, seed=7)
    assert first == second and first["l2"] in (1.0, 10.0, 100.0)
    assert first["ndcg"] == max(v for key, v in first.items() if key.startswith("ndcg@"))


@pytest.mark.unit
def test_recency_bias_is_the_weighted_share_of_the_busiest_recent_item():
    assert recency_bias(np.array([0, 5, 10, 1]), 2.0).tolist() == [0.0, 1.0, 2.0, 0.2]
    assert recency_bias(np.array([0, 5, 10]), 0.0).tolist() == [0.0, 0.0, 0.0]  # α = 0: plain EASE
    assert recency_bias(np.zeros(3), 2.0).tolist() == [0.0, 0.0, 0.0]  # nothing recent: no prior
    with pytest.raises(ValueError, match=">= 0"):
        recency_bias(np.ones(3), -1.0)


@pytest.mark.unit
def test_the_prior_s_weight_is_chosen_on_the_window_s_last_day():
    """When the last days' new pairs go to the recently popular items the prior wins; when they go
    to items recency does not favour, plain EASE (α = 0) does; an item the user had before is no
    truth; no judged user: α = 0."""
    u, i, n_users, n_items = _world(seed=4, users=60, items=30, pairs=500)
    x = interaction_matrix(u, i, n_users, n_items)
    recent = np.zeros(n_items)
    recent[[27, 28, 29]] = [5, 8, 10]  # three tail items became popular lately
    users = np.arange(0, 60, 2)
    grid = [0.0, 1.0, 4.0]
    lifted = choose_recent_weight(x, np.repeat(users, 2), np.tile([28, 29], len(users)), recent, grid, 10.0, 5)
    assert lifted["alpha"] > 0 and lifted["ndcg@0"] < lifted[f"ndcg@{lifted['alpha']:g}"]
    assert lifted["users"] == len([v for v in users if x[v].sum() > 0 and x[v, [28, 29]].sum() < 2])
    co = np.argsort(-(x.T @ x)[0])[1]  # the item most often seen with item 0: EASE's pick
    holders = np.flatnonzero((x[:, 0] > 0) & (x[:, co] == 0))
    plain = choose_recent_weight(x, holders, np.full(len(holders), co), recent, grid, 10.0, 5)
    assert plain["alpha"] == 0.0 and plain["ndcg@0"] >= max(plain["ndcg@1"], plain["ndcg@4"])
    had = np.flatnonzero(x[:, 0] > 0)  # pairs every one of these users had before: nothing to find
    assert choose_recent_weight(x, had, np.zeros(len(had), int), recent, grid, 10.0, 5) == {"alpha": 0.0, "users": 0.0}
    assert choose_recent_weight(x, np.array([], int), np.array([], int), recent, grid, 10.0, 5) == {
        "alpha": 0.0,
        "users": 0.0,
    }


@pytest.mark.unit
@pytest.mark.parametrize("weight", [0.0, 2.0])
def test_exported_artifact_scores_like_the_closed_form_through_the_scoring_core(tmp_path, weight):
    """user_factors @ item_factorsᵀ + item_bias = X B + prior: the batch scoring core and the
    pyfunc's engine rank exactly the closed form's top-k (with the recency prior as the bias when
    α > 0), seen items excluded."""
    from jobs.core.model import CSR, Recommender, save_artifact
    from jobs.score.core import score_users

    u, i, n_users, n_items = _world()
    x = interaction_matrix(u, i, n_users, n_items)
    b = ease_weights(x, 10.0)
    recent = np.bincount(i[-60:], minlength=n_items)  # the last pairs as the "recent" ones
    bias = recency_bias(recent, weight) if weight else None
    arrays = export_arrays(x, b, bias)
    assert arrays["user_factors"].shape == (n_users, n_items) and arrays["item_factors"].shape == (n_items, n_items)
    expected_scores = x @ b + (0.0 if bias is None else bias[None, :])
    assert np.allclose(
        arrays["user_factors"] @ arrays["item_factors"].T + arrays["item_bias"], expected_scores, atol=1e-5
    )
    user_ids, item_ids = np.arange(n_users) + 1000, np.arange(n_items) + 10
    path = tmp_path / "recsys.npz"
    save_artifact(
        str(path),
        **arrays,
        user_ids=user_ids,
        item_ids=item_ids,
        popularity=np.bincount(i, minlength=n_items),
        seen=CSR.from_pairs(u, i, n_users, n_items),
        default_k=5,
    )
    rec = Recommender.load(str(path))
    users = np.unique(u)
    expected = top_k_unseen(x, b, users, 5, bias)
    if weight:  # the prior changes the lists (else this case would prove nothing new)
        assert not np.array_equal(expected, top_k_unseen(x, b, users, 5))
    scored = score_users(rec, user_ids[users], None, 5)
    got = scored.item_id.reshape(len(users), -1) - 10
    assert np.array_equal(got, expected)
    served = rec.recommend(user_ids[users], 5)
    assert [r["item_ids"] for r in served] == [list(item_ids[row[row >= 0]]) for row in expected]


@pytest.mark.unit
def test_ease_equals_the_closed_form_and_each_column_is_a_ridge_regression_without_its_item():
    x = np.array([[1, 1, 0, 0], [0, 1, 1, 0], [1, 0, 1, 1], [1, 1, 1, 0], [0, 0, 1, 1]], dtype=np.float64)
    g, lam = x.T @ x, 2.0
    b = ease_weights(x, lam)
    p = np.linalg.inv(g + lam * np.eye(4))
    np.testing.assert_allclose(b, np.eye(4) - p @ np.diag(1.0 / np.diag(p)), atol=1e-12)
    assert np.allclose(np.diag(b), 0.0)
    for j in range(4):  # argmin ||x_j - X_{-j} w||² + λ||w||², independently of the closed form
        rest = [i for i in range(4) if i != j]
        w = np.linalg.solve(g[np.ix_(rest, rest)] + lam * np.eye(3), g[rest, j])
        np.testing.assert_allclose(b[rest, j], w, atol=1e-12)


@pytest.mark.unit
def test_ease_weights_of_a_sparse_matrix_are_the_dense_ones():
    """The quality benchmark fits the family on scipy.sparse rows (ML-20M's users × items would not fit dense)."""
    import scipy.sparse as sp

    rng = np.random.default_rng(3)
    x = (rng.random((60, 25)) < 0.2).astype(np.float64)
    assert ease_weights(sp.csr_matrix(x), 7.0).tobytes() == ease_weights(x, 7.0).tobytes()
