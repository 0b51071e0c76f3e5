"""The models the quality benchmark compares, each fitted on one training log and returned as a
scorer: ``scores(users) -> (len(users), n_items)`` float32, higher is better.

* ``popularity`` / ``recent_popularity``: counts of training interactions (all, or the last
  ``days`` days before the end of training, ties broken by the all-time count);
* ``ease``: the EASE family's own closed form (``jobs.ease.model.ease_weights``, what
  ``python -m jobs.ease`` fits) on the binary matrix; ``ease_recent_checkpoints``: the same fit
  with the family's recency prior (``jobs.ease.model.recency_bias`` of the distinct users per item
  over the last ``days`` days, ``jobs.core.recency.distinct_pair_counts``), every (days, α) of a
  grid on one fit;
* ``implicit_als`` / ``implicit_bpr_checkpoints``: ``implicit`` 0.7.3 on the binary matrix
  (BPR on one thread: its Hogwild SGD is not reproducible on more);
* ``mf_checkpoints``: the project's trainer (``jobs.train.trainer.Trainer``, in process, CPU),
  the factor arrays after each requested epoch;
* ``seq_checkpoints``: the sequential family's trainer (``jobs.seq.trainer.Trainer``, SASRec,
  in process, CPU), its exported arrays (the encoder's state for each user's latest history ×
  the item embeddings: the scoring contract) after each requested epoch. A user's history is
  their fitted pairs in time order (``jobs.seq.sequences.build_histories``), as the job builds
  it from the window's curated events.

Every product family is scored through its export (``user_factors @ item_factorsᵀ + item_bias``),
i.e. what batch scoring serves, not a benchmark-only reimplementation.

``rank`` turns a scorer into top-K lists with the seen items excluded (full ranking over the
catalogue).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import numpy as np

from benchmarks.quality_protocol import DAY

Scorer = Callable[[np.ndarray], np.ndarray]


@dataclass(frozen=True)
class FitData:
    """What a model is fitted on: distinct (user, item) codes in a fixed catalogue."""

    users: np.ndarray
    items: np.ndarray
    ts: np.ndarray
    n_users: int
    n_items: int

    def matrix(self):
        """The binary users × items CSR matrix (float32)."""
        import scipy.sparse as sp

        ones = np.ones(len(self.users), dtype=np.float32)
        m = sp.csr_matrix((ones, (self.users, self.items)), shape=(self.n_users, self.n_items))
        m.sum_duplicates()
        m.data[:] = 1.0
        return m


def _constant(scores: np.ndarray) -> Scorer:
    scores = scores.astype(np.float32)
    return lambda users: np.broadcast_to(scores, (len(users), len(scores)))


def popularity(data: FitData) -> Scorer:
    return _constant(np.bincount(data.items, minlength=data.n_items).astype(np.float64))


def recent_popularity(data: FitData, days: int) -> Scorer:
    """Interactions of the last ``days`` days before the latest training day; ties → all-time count."""
    recent = data.ts >= (int(data.ts.max()) // DAY + 1 - days) * DAY
    counts = np.bincount(data.items[recent], minlength=data.n_items).astype(np.float64)
    total = np.bincount(data.items, minlength=data.n_items).astype(np.float64)
    return _constant(counts + total / (total.max() + 1.0))


def ease(data: FitData, lam: float) -> Scorer:
    """The EASE family's closed form; scores ``X_u B`` (its export, ``X × (Bᵀ)ᵀ``, on the sparse rows)."""
    from jobs.ease.model import ease_weights

    x = data.matrix()
    b = ease_weights(x, lam).astype(np.float32)
    return lambda users: np.asarray(x[users] @ b)


def _recent_counts(data: FitData, end: int, days: int) -> np.ndarray:
    """Distinct users per item over the ``days`` days before day ``end`` (days since the epoch),
    as ``jobs.core.recency`` counts them for the job."""
    from jobs.core.recency import distinct_pair_counts

    day = data.ts // DAY
    window = (day >= end - days) & (day < end)
    return distinct_pair_counts(data.users[window], data.items[window], data.n_items)


def ease_recent_checkpoints(
    data: FitData, lam: float, days: list[int], alpha: list[float]
) -> Iterator[tuple[int, float, Scorer]]:
    """``(days, α, scorer)`` of the EASE family with its recency prior: ``X_u B + recency_bias``
    (its export's ``item_bias``), one closed-form fit for every (days, α)."""
    from jobs.ease.model import ease_weights, recency_bias

    x = data.matrix()
    b = ease_weights(x, lam).astype(np.float32)
    end = int(data.ts.max()) // DAY + 1
    for n in days:
        counts = _recent_counts(data, end, n)
        for a in alpha:
            bias = recency_bias(counts, a).astype(np.float32)
            yield n, a, (lambda users, bias=bias: np.asarray(x[users] @ b) + bias)


def ease_recent_shipped(data: FitData, lam: float, days: int, weights: list[float], k: int, valid_days: int) -> Scorer:
    """The EASE family as ``python -m jobs.ease`` fits it at its shipped settings: α of the prior
    chosen among ``weights`` on the fitted log's last ``valid_days`` days
    (``jobs.ease.model.choose_recent_weight``, recent popularity as of the day before them), then
    the prior over the last ``days`` days. The choice holds a dense users × items copy (as the job
    does): fine for MovieLens up to ML-1M."""
    from jobs.ease.model import choose_recent_weight, ease_weights, recency_bias

    last = int(data.ts.max()) // DAY
    x = data.matrix()
    on_last = data.ts // DAY > last - valid_days
    x_before = np.zeros((data.n_users, data.n_items))
    x_before[data.users[~on_last], data.items[~on_last]] = 1.0
    chosen = choose_recent_weight(
        x_before,
        data.users[on_last],
        data.items[on_last],
        _recent_counts(data, last - valid_days + 1, days),
        weights,
        lam,
        k,
    )
    b = ease_weights(x, lam).astype(np.float32)
    bias = recency_bias(_recent_counts(data, last + 1, days), chosen["alpha"]).astype(np.float32)
    return lambda users: np.asarray(x[users] @ b) + bias


def _factor_scorer(user_factors: np.ndarray, item_factors: np.ndarray, item_bias: np.ndarray | None = None) -> Scorer:
    p, q = np.asarray(user_factors, dtype=np.float32), np.asarray(item_factors, dtype=np.float32)
    b = None if item_bias is None else np.asarray(item_bias, dtype=np.float32)
    return lambda users: p[users] @ q.T + (0.0 if b is None else b)


def implicit_als(
    data: FitData, factors: int, regularization: float, alpha: float, iterations: int, seed: int
) -> Scorer:
    from implicit.cpu.als import AlternatingLeastSquares
    from threadpoolctl import threadpool_limits

    model = AlternatingLeastSquares(
        factors=factors,
        regularization=regularization,
        alpha=alpha,
        iterations=iterations,
        random_state=seed,
        num_threads=os.cpu_count() or 1,
    )
    with threadpool_limits(1, "blas"):  # implicit's advice: its own threads, single-threaded BLAS
        model.fit(data.matrix(), show_progress=False)
    return _factor_scorer(model.user_factors, model.item_factors)


BPR_STEP = 50  # implicit BPR trains in chunks of this many iterations (see implicit_bpr_checkpoints)


def implicit_bpr_checkpoints(
    data: FitData, factors: int, learning_rate: float, regularization: float, iterations: list[int], seed: int
) -> Iterator[tuple[int, Scorer]]:
    """(iterations, scorer) at each of ``iterations`` (multiples of ``BPR_STEP``) of one model.

    ``fit`` on a fitted ``implicit`` model continues from its factors, so the model trains in
    chunks of ``BPR_STEP`` iterations, chunk ``c`` seeded ``seed + c``: the model after N
    iterations is the same whichever checkpoints are asked for.
    """
    from implicit.cpu.bpr import BayesianPersonalizedRanking

    if any(n % BPR_STEP for n in iterations):
        raise ValueError(f"BPR iterations must be multiples of {BPR_STEP}")
    model = BayesianPersonalizedRanking(
        factors=factors,
        learning_rate=learning_rate,
        regularization=regularization,
        iterations=BPR_STEP,
        num_threads=1,
    )
    matrix = data.matrix()
    for chunk in range(max(iterations) // BPR_STEP):
        model.random_state = seed + chunk
        model.fit(matrix, show_progress=False)
        if (chunk + 1) * BPR_STEP in iterations:
            # implicit appends the item bias as the last factor (the user side holds a constant 1)
            yield (chunk + 1) * BPR_STEP, _factor_scorer(model.user_factors, model.item_factors)


def mf_checkpoints(data: FitData, hparams, epochs: list[int]) -> Iterator[tuple[int, Scorer]]:
    """(epoch, scorer) after each epoch in ``epochs`` of one run of the project's trainer."""
    import torch

    from jobs.train.trainer import DistContext, Trainer

    trainer = Trainer(_train_data(data), hparams, DistContext(device=torch.device("cpu")))
    for epoch in range(1, max(epochs) + 1):
        trainer.run_epoch(epoch)
        if epoch in epochs:
            a = trainer.module.arrays()
            yield epoch, _factor_scorer(a["user_factors"], a["item_factors"], a["item_bias"])


def _train_data(data: FitData):
    """The in-memory snapshot a product trainer reads (unit weights: every pair once)."""
    from jobs.core.snapshots import TrainData

    empty = np.zeros(0, dtype=np.int64)
    return TrainData(
        users=data.users.astype(np.int64),
        items=data.items.astype(np.int64),
        weights=np.ones(len(data.users), dtype=np.float32),
        test_users=empty,
        test_items=empty,
        user_ids=np.arange(data.n_users, dtype=np.int64),
        item_ids=np.arange(data.n_items, dtype=np.int64),
        popularity=np.bincount(data.items, minlength=data.n_items).astype(np.int64),
        manifest={"benchmark": "quality"},
        uri="memory://bench_quality",
    )


def seq_checkpoints(data: FitData, hparams, epochs: list[int]) -> Iterator[tuple[int, Scorer]]:
    """(epoch, scorer) after each epoch in ``epochs`` of one run of the sequential family's trainer."""
    import torch

    from jobs.core.training import DistContext
    from jobs.seq.sequences import build_histories
    from jobs.seq.trainer import Trainer

    hist = build_histories(data.users, data.items, data.ts, data.n_users)
    trainer = Trainer(_train_data(data), hist, hparams, DistContext(device=torch.device("cpu")))
    for epoch in range(1, max(epochs) + 1):
        trainer.run_epoch(epoch)
        if epoch in epochs:
            a = trainer.arrays()
            yield epoch, _factor_scorer(a["user_factors"], a["item_factors"], a["item_bias"])


def rank(
    scorer: Scorer, users: np.ndarray, seen, k: int, blocked_items: np.ndarray | None = None, batch: int = 2048
) -> np.ndarray:
    """Top-``k`` item codes per user (len(users), k), best first, over the whole catalogue minus
    the user's row of ``seen`` (a ``jobs.core.model.CSR``) and ``blocked_items`` (items no user
    may get); ties go to the lower item code.

    Raises ``FloatingPointError`` when a scorer returns NaN: a broken model must not be ranked.
    """
    users = np.asarray(users, dtype=np.int64)
    out = np.empty((len(users), k), dtype=np.int64)
    for lo in range(0, len(users), batch):
        part = users[lo : lo + batch]
        scores = np.array(scorer(part), dtype=np.float64)
        if np.isnan(scores).any():
            raise FloatingPointError("a scorer returned NaN")
        rows, cols = seen.gather(part)
        scores[rows, cols] = -np.inf
        if blocked_items is not None and len(blocked_items):
            scores[:, blocked_items] = -np.inf
        out[lo : lo + len(part)] = np.argsort(-scores, axis=1, kind="stable")[:, :k]
    return out
