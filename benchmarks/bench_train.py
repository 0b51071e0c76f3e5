"""Training throughput and ranking quality of ``jobs.train`` against ``implicit``'s BPR.

One generated world (``jobs.sim``; full: 20,000 users x 5,000 items, 7 days of 250,000
events, i.e. 1.75M events and about 0.77M distinct positive training pairs; ``--quick``:
4,000 users x 1,000 items, 7 days of 40,000 events). The snapshot is built in memory the way
``jobs/snapshot.py`` defines it: train = distinct positive (click/play/rating) pairs of days
1-6 with their event counts as weights, test = positive pairs of day 7 not seen in train, for
users and items present in train.

Throughput, in positive pairs per second (one epoch = every training pair once):
  * ours: ``jobs.train.Trainer`` on the CPU (the job's own code path, in process, without
    MLflow), the benchmark hyper-parameters below, ``training.factors`` factors;
  * reference: ``implicit.cpu.bpr.BayesianPersonalizedRanking`` (0.7.3, Cython, Hogwild SGD
    over all cores) with the same factors and epochs on the same pairs, timed around ``fit``.
  ``ratio`` = ours / implicit. A third row times ``torch_floor``, the leanest BPR step torch
  can run (SGD by hand into the tables), as the ceiling of any torch trainer on this CPU.

Headline, **time to quality**: wall seconds of training (evaluation excluded) for ours to reach
the NDCG@10 that implicit's BPR ends with after its epochs, on the same split and the same
cores, as a ratio to implicit's own training time (``ratio`` < 1: ours gets there sooner). Ours
is evaluated after every epoch and may run up to ``TTQ_MAX_EPOCHS_FACTOR`` × implicit's epochs;
a world where it never gets there fails the run.

The converse rows, so that the headline cannot only win:
  * **implicit's time to our quality**: implicit (the tuned learning rate), trained one epoch at
    a time and evaluated after each, until it reaches the NDCG@10 ours ends with after its
    epochs (up to ``TTQ_MAX_EPOCHS_FACTOR`` × epochs; if it never does, the row has no
    reference and says so); value = our training seconds, reference = implicit's;
  * **implicit at its own defaults, trained to convergence**: learning rate 0.01,
    regularization 0.01 (the library's defaults; factors as ours), one epoch at a time, at
    least ``CONVERGE_MIN_EPOCHS`` (its default ``iterations``: BPR sits on a popularity plateau
    for its first epochs, which a patience rule alone mistakes for convergence), then on until
    NDCG@10 stops improving (``converged``: the best of the last ``CONVERGE_PATIENCE`` epochs
    gains under ``CONVERGE_MIN_GAIN`` over the best before them) or ``CONVERGE_MAX_EPOCHS``;
    its best NDCG@10 (picked on the test day: optimistic for implicit) and the training seconds
    to that epoch against ours.
  Epoch-by-epoch ``fit`` calls (same seed stream, factors kept between calls) include
  ``fit``'s per-call set-up; the note gives their sum against the one-call time.

**Time to the best baseline, per family**: for each family the product trains (MF, EASE,
SASRec), at its shipped settings and through its own trainer (``family_curves``), the training
seconds until its NDCG@10 on the test day reaches the best baseline's (popularity or recent
popularity: the gate's baselines), against implicit BPR's seconds to the same target (one fit
call per epoch, evaluated after each). A family that never gets there within
``FAMILY_MAX_EPOCHS`` has no value and says what it reached: that is a result, not a failure.

Quality on the same split (recall@10 and NDCG@10, seen items excluded, ``jobs.core.ranking``):
ours vs implicit BPR, vs the popularity baseline and vs the oracle — the generator's own
ranking score ``beta * <u, v> + bias`` with the ground truth in force on the test day. The
oracle is the ceiling: held-out events are draws from a softmax over exactly that score.

Hyper-parameters were tuned on this world (a small grid over loss, learning rate, negatives,
L2 and epochs for ours; the learning rate for implicit), on the test day itself, so both
numbers are slightly optimistic in the same way; there is no separate validation day.
"""

from __future__ import annotations

import dataclasses
import os
import time
from collections.abc import Callable
from datetime import date, timedelta
from typing import TYPE_CHECKING, Any

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # see jobs/train.py

import numpy as np

if TYPE_CHECKING:
    from jobs.core.snapshots import TrainData

START = date(2026, 1, 1)
DAYS = 7
K = 10
POSITIVE = ("click", "play", "rating")
FULL = {"users": 20_000, "items": 5_000, "events_per_day": 250_000, "epochs": 10, "batch_size": 8192}
QUICK = {"users": 4_000, "items": 1_000, "events_per_day": 40_000, "epochs": 5, "batch_size": 1024}
# Ours, tuned on the full world (see the module docstring).
OURS = {
    "loss": "softmax",
    "batch_size": 8192,
    "lr": 0.005,
    "weight_decay": 1e-2,
    "negatives": 8,
    "init_std": 0.01,
    "seed": 42,
}
# Like for like with implicit's sampler (one negative per positive, BPR), for throughput only.
OURS_BPR1 = {**OURS, "loss": "bpr", "negatives": 1}
# implicit: its defaults except the learning rate, the best of 0.1/0.05/0.02/0.01 at 10
# epochs here (its default 0.01 needs ~30 epochs: NDCG@10 0.105 at 30 vs 0.076 at 10).
IMPLICIT = {"learning_rate": 0.02, "regularization": 0.01}
# implicit's own defaults (BayesianPersonalizedRanking.__init__), for the convergence row.
IMPLICIT_DEFAULTS = {"learning_rate": 0.01, "regularization": 0.01}
CONVERGE_MIN_EPOCHS = 100  # implicit's default ``iterations``
CONVERGE_MAX_EPOCHS = 300
CONVERGE_PATIENCE = 10
CONVERGE_MIN_GAIN = 0.005  # relative NDCG gain


def build_world(
    users: int, items: int, events_per_day: int, seed: int = 7
) -> tuple[TrainData, dict[str, np.ndarray], dict[str, np.ndarray]]:
    """The in-memory snapshot of a generated week, the oracle's arrays for its test day and the
    train days' positive events (``users``/``items`` indices, ``ms`` since the first day), one per
    event (upstream redeliveries dropped): the sequential family's histories are built from them."""
    from jobs import sim as gen
    from jobs.core.snapshots import TrainData

    params = gen.WorldParams(users=users, items=items, factors=8, seed=seed, events_per_day=events_per_day)
    train_keys, test_keys, train_ts = [], np.zeros(0, dtype=np.int64), []
    for offset in range(DAYS):
        table, _ = gen.generate_day(params, START + timedelta(days=offset))
        positive = np.isin(table.column("event_type").to_numpy(zero_copy_only=False), POSITIVE)
        event_ids = table.column("event_id").to_numpy(zero_copy_only=False)[positive]
        _, first = np.unique(event_ids, return_index=True)  # drop upstream redeliveries
        u = table.column("user_id").to_numpy()[positive][first].astype(np.int64)
        i = table.column("item_id").to_numpy()[positive][first].astype(np.int64)
        if offset < DAYS - 1:
            train_keys.append(u * items + i)
            ms = _ms(table.column("ts").to_numpy(zero_copy_only=False)[positive][first])
            train_ts.append(offset * 86_400_000 + ms)
        else:
            test_keys = np.unique(u * items + i)
    all_keys, all_ts = np.concatenate(train_keys), np.concatenate(train_ts)
    keys, counts = np.unique(all_keys, return_counts=True)
    tu, ti = np.divmod(keys, items)
    user_ids, item_ids = np.unique(tu), np.unique(ti)
    uidx, iidx = np.searchsorted(user_ids, tu), np.searchsorted(item_ids, ti)
    test_keys = test_keys[~np.isin(test_keys, keys)]
    eu, ei = np.divmod(test_keys, items)
    keep = np.isin(eu, user_ids) & np.isin(ei, item_ids)
    test_day = START + timedelta(days=DAYS - 1)
    data = TrainData(
        users=uidx.astype(np.int64),
        items=iidx.astype(np.int64),
        weights=counts.astype(np.float32),
        test_users=np.searchsorted(user_ids, eu[keep]),
        test_items=np.searchsorted(item_ids, ei[keep]),
        user_ids=user_ids,
        item_ids=item_ids,
        popularity=np.bincount(iidx, minlength=len(item_ids)).astype(np.int64),
        manifest={"day": test_day.isoformat(), "synthetic": True},
        uri="memory://bench_train",
    )
    truth = gen.world_on(params, test_day)
    oracle = {
        "user_factors": (params.beta * truth.user_factors[user_ids]).astype(np.float32),
        "item_factors": truth.item_factors[item_ids].astype(np.float32),
        "item_bias": truth.item_bias[item_ids].astype(np.float32),
    }
    eu, ei = np.divmod(all_keys, items)
    events = {"users": np.searchsorted(user_ids, eu), "items": np.searchsorted(item_ids, ei), "ms": all_ts}
    return data, oracle, events


def _ms(iso: np.ndarray) -> np.ndarray:
    """Milliseconds into the day of ``YYYY-MM-DDTHH:MM:SS.mmmZ`` strings (the generator's form)."""
    text = np.asarray(iso, dtype="S24")
    digits = text.view(np.uint8).reshape(-1, 24).astype(np.int64) - 48

    def field(lo: int, width: int) -> np.ndarray:
        return sum(digits[:, lo + j] * 10 ** (width - 1 - j) for j in range(width))

    return ((field(11, 2) * 60 + field(14, 2)) * 60 + field(17, 2)) * 1000 + field(20, 3)


def train_ours(
    data: TrainData, factors: int, epochs: int, hparams: dict[str, Any] = OURS
) -> tuple[dict[str, np.ndarray], float, float]:
    import torch

    from jobs.train.trainer import DistContext, Hparams, Trainer

    hp = Hparams(epochs=epochs, factors=factors, **hparams)
    trainer = Trainer(data, hp, DistContext(device=torch.device("cpu")))
    seconds = 0.0
    samples = 0
    for epoch in range(1, epochs + 1):
        stats = trainer.run_epoch(epoch)
        seconds += stats["seconds"]
        samples += stats["samples"]
    return trainer.module.arrays(), samples / seconds, seconds


TTQ_MAX_EPOCHS_FACTOR = 3


def time_to_quality(
    data: TrainData, factors: int, target: float, max_epochs: int, hparams: dict[str, Any] = OURS
) -> tuple[float, int, float]:
    """Training seconds (evaluation excluded) until ours reaches NDCG@K ``target``; epochs it
    took and the NDCG@K reached. Raises when ``max_epochs`` do not get there."""
    import torch

    from jobs.train.trainer import DistContext, Hparams, Trainer, evaluate_arrays

    hp = Hparams(epochs=max_epochs, factors=factors, **hparams)
    trainer = Trainer(data, hp, DistContext(device=torch.device("cpu")))
    seconds, ndcg = 0.0, 0.0
    for epoch in range(1, max_epochs + 1):
        seconds += trainer.run_epoch(epoch)["seconds"]
        ndcg = evaluate_arrays(trainer.module.arrays(), data, K)[f"ndcg_at_{K}"]
        if ndcg >= target:
            return seconds, epoch, ndcg
    raise RuntimeError(f"ours did not reach NDCG@{K} {target:.4f} in {max_epochs} epochs (got {ndcg:.4f})")


def train_implicit(data: TrainData, factors: int, epochs: int) -> tuple[dict[str, np.ndarray], float, float]:
    from implicit.cpu.bpr import BayesianPersonalizedRanking

    matrix = _implicit_matrix(data)
    model = BayesianPersonalizedRanking(
        factors=factors, iterations=epochs, num_threads=0, random_state=OURS["seed"], **IMPLICIT
    )
    started = time.perf_counter()
    model.fit(matrix, show_progress=False)
    seconds = time.perf_counter() - started
    # implicit appends the item bias as a factor (the user side holds a constant 1 there).
    arrays = {
        "user_factors": np.asarray(model.user_factors, dtype=np.float32),
        "item_factors": np.asarray(model.item_factors, dtype=np.float32),
        "item_bias": None,
    }
    return arrays, matrix.nnz * epochs / seconds, seconds


def _implicit_matrix(data: TrainData):
    import scipy.sparse as sp

    return sp.csr_matrix(
        (np.ones(len(data.users), dtype=np.float32), (data.users, data.items)), shape=(data.n_users, data.n_items)
    )


def implicit_curve(
    data: TrainData,
    factors: int,
    max_epochs: int,
    params: dict[str, float],
    stop: Callable[[list[tuple[int, float, float]]], bool],
    ndcg: Callable[[dict[str, Any]], float] | None = None,
) -> list[tuple[int, float, float]]:
    """implicit's BPR trained one epoch per ``fit`` call (factors kept, one seed stream), evaluated
    after each: ``[(epoch, training seconds so far, NDCG@K)]`` until ``stop(history)`` or ``max_epochs``.

    ``ndcg``: the arrays' NDCG@K (default: ``evaluate_arrays`` on the test pairs)."""
    from implicit.cpu.bpr import BayesianPersonalizedRanking

    if ndcg is None:
        from jobs.train.trainer import evaluate_arrays

        def ndcg(arrays: dict[str, Any]) -> float:
            return evaluate_arrays(arrays, data, K)[f"ndcg_at_{K}"]

    matrix = _implicit_matrix(data)
    # A Generator, kept by implicit across fit calls (its check_random_state breaks on a RandomState in 0.7.3).
    model = BayesianPersonalizedRanking(
        factors=factors, iterations=1, num_threads=0, random_state=np.random.default_rng(OURS["seed"]), **params
    )
    seconds = 0.0
    history: list[tuple[int, float, float]] = []
    for epoch in range(1, max_epochs + 1):
        started = time.perf_counter()
        model.fit(matrix, show_progress=False)
        seconds += time.perf_counter() - started
        arrays = {
            "user_factors": np.asarray(model.user_factors, dtype=np.float32),
            "item_factors": np.asarray(model.item_factors, dtype=np.float32),
            "item_bias": None,
        }
        history.append((epoch, seconds, ndcg(arrays)))
        if stop(history):
            break
    return history


def first_reaching(history: list[tuple[int, float, float]], target: float) -> tuple[int, float, float] | None:
    """The first ``(epoch, seconds, ndcg)`` of ``history`` with NDCG ≥ ``target``; None if none."""
    return next((h for h in history if h[2] >= target), None)


def converged(
    ndcgs: list[float],
    patience: int = CONVERGE_PATIENCE,
    min_gain: float = CONVERGE_MIN_GAIN,
    min_epochs: int = CONVERGE_MIN_EPOCHS,
) -> bool:
    """True after ``min_epochs`` values when the best of the last ``patience`` beats the best
    before them by less than ``min_gain`` (relative): the curve has flattened or turned down."""
    if len(ndcgs) < max(min_epochs, patience + 1):
        return False
    before, recent = max(ndcgs[:-patience]), max(ndcgs[-patience:])
    return recent < before * (1 + min_gain)


def converse_ttq_row(
    ours_s: float, target: float, history: list[tuple[int, float, float]], epochs: int, extra: str = ""
) -> dict[str, Any]:
    """Row: training seconds to our final NDCG@K, ours (value) vs implicit (reference; empty when
    implicit never got there, with what it reached in the note)."""
    hit = first_reaching(history, target)
    last_epoch, last_s, _ = history[-1]
    best = max(history, key=lambda h: h[2])
    if hit is None:
        how = (
            f"implicit did NOT reach it in {last_epoch} epochs ({last_s:.1f}s of training; its best {best[2]:.4f} "
            f"at epoch {best[0]}): no reference; ours/implicit < {ours_s / last_s:.2f} if it ever does"
        )
    else:
        how = f"implicit reached {hit[2]:.4f} after {hit[0]} epochs"
    return {
        "metric": f"time to our NDCG@{K}, ours vs implicit BPR (converse; CPU, training seconds)",
        "value": ours_s,
        "unit": "s",
        "reference": None if hit is None else hit[1],
        "note": f"target NDCG@{K} {target:.4f} (ours after {epochs} epochs); {how}; implicit {IMPLICIT}, "
        "one fit call per epoch, evaluated after each (evaluation excluded)"
        + (f"; {extra}" if extra else "")
        + "; lower is better",
    }


def torch_floor(
    data: TrainData, factors: int, epochs: int, batch_size: int
) -> tuple[dict[str, np.ndarray], float, float]:
    """pairs/s of the leanest BPR step torch can express: SGD straight into the tables.

    One uniform negative per positive, three gathers, the BPR gradient by hand and three
    ``index_add_`` updates; no autograd, no optimizer state, no L2 bookkeeping beyond the
    plain SGD decay. It trains (implicit's algorithm, Hogwild aside) but is not our trainer:
    it is a practical ceiling for a torch trainer of this model on this CPU, so ours / implicit
    is not expected to pass this row's ratio without leaving torch for a native kernel.
    """
    import torch

    gen = torch.Generator().manual_seed(OURS["seed"])
    user_f = torch.randn(data.n_users, factors, generator=gen) * 0.01
    item_f = torch.randn(data.n_items, factors, generator=gen) * 0.01
    bias = torch.zeros(data.n_items)
    users = torch.as_tensor(data.users)
    items = torch.as_tensor(data.items)
    lr, reg = IMPLICIT["learning_rate"], IMPLICIT["regularization"]
    started = time.perf_counter()
    for _ in range(epochs):
        perm = torch.randperm(len(users), generator=gen)
        eu, ei = users[perm], items[perm]
        ej = torch.randint(0, data.n_items, (len(users),), generator=gen)
        for start in range(0, len(users), batch_size):
            u, i, j = eu[start : start + batch_size], ei[start : start + batch_size], ej[start : start + batch_size]
            pu, qi, qj = user_f[u], item_f[i], item_f[j]
            diff = qi - qj
            z = torch.sigmoid(-((pu * diff).sum(1) + bias[i] - bias[j]))  # d(-log σ(x))/dx = -z
            zc = z.unsqueeze(1)
            user_f.index_add_(0, u, zc * diff - reg * pu, alpha=lr)
            item_f.index_add_(0, i, zc * pu - reg * qi, alpha=lr)
            item_f.index_add_(0, j, -zc * pu - reg * qj, alpha=lr)
            bias.index_add_(0, i, z, alpha=lr)
            bias.index_add_(0, j, z, alpha=-lr)
    seconds = time.perf_counter() - started
    arrays = {"user_factors": user_f.numpy(), "item_factors": item_f.numpy(), "item_bias": bias.numpy()}
    return arrays, len(users) * epochs / seconds, seconds


FAMILY_MAX_EPOCHS = {"full": 40, "quick": 20}  # per epoch-trained family, for the time-to-baseline rows


def _constant_arrays(scores: np.ndarray, n_users: int) -> dict[str, Any]:
    """The scoring contract's arrays of a non-personal ranking (every user gets ``scores``)."""
    return {
        "user_factors": np.ones((n_users, 1), dtype=np.float32),
        "item_factors": np.asarray(scores, dtype=np.float32)[:, None],
        "item_bias": None,
    }


def best_baseline(data: TrainData, events: dict[str, np.ndarray]) -> tuple[str, float, dict[str, float]]:
    """(name, NDCG@K, every baseline's NDCG@K) of the best baseline on the test day: popularity
    over the train days, or recent popularity (the last train day's positive events, ties by the
    all-time count) — the gate's two baselines."""
    from jobs.train.trainer import evaluate_arrays

    pop = data.popularity.astype(np.float64)
    last = events["ms"] >= (DAYS - 2) * 86_400_000
    recent = np.bincount(events["items"][last], minlength=data.n_items) + pop / (pop.max() + 1.0)
    scores = {
        name: evaluate_arrays(_constant_arrays(s, data.n_users), data, K)[f"ndcg_at_{K}"]
        for name, s in (("popularity", pop), ("recent popularity", recent))
    }
    name = max(scores, key=lambda n: scores[n])
    return name, scores[name], scores


def family_curves(
    data: TrainData, events: dict[str, np.ndarray], target: float, max_epochs: int, batch_size: int
) -> dict[str, list[tuple[int, float, float]]]:
    """Each product family at its shipped settings, trained until it reaches NDCG@K ``target``:
    ``[(epoch, training seconds so far, NDCG@K)]`` (EASE: one closed-form fit, epoch 1).

    The families' own code on the CPU, in process (what ``python -m jobs.train|ease|seq`` runs,
    without MLflow): MF (``jobs.train``, the job's defaults but the world's batch size), EASE
    (``jobs.ease.job.fit`` at ``training.ease_l2``, without its recency prior: this world has no
    curated window), SASRec (``jobs.seq``, the job's defaults, the histories in time order from
    ``events``). Evaluation is excluded from the seconds.
    """
    import torch

    from jobs.core.config import get_config
    from jobs.core.training import DistContext
    from jobs.ease.job import fit as ease_fit
    from jobs.seq import job as seq_job
    from jobs.seq.sequences import build_histories
    from jobs.seq.trainer import Trainer as SeqTrainer
    from jobs.train import job as mf_job
    from jobs.train.trainer import Trainer as MfTrainer
    from jobs.train.trainer import evaluate_arrays

    cfg, cpu = get_config(), DistContext(device=torch.device("cpu"))
    argv = ["--snapshot", "-", "--epochs", str(max_epochs)]
    mf_hp = dataclasses.replace(mf_job.hparams(mf_job.build_parser(cfg).parse_args(argv)), batch_size=batch_size)
    seq_hp = seq_job.hparams(seq_job.build_parser(cfg).parse_args(argv))
    hist = build_histories(events["users"], events["items"], events["ms"], data.n_users)
    curves: dict[str, list[tuple[int, float, float]]] = {}
    for name, trainer, arrays in (
        ("mf", MfTrainer(data, mf_hp, cpu), lambda t: t.module.arrays()),
        ("seq", SeqTrainer(data, hist, seq_hp, cpu), lambda t: t.arrays()),
    ):
        seconds, curve = 0.0, []
        for epoch in range(1, max_epochs + 1):
            seconds += trainer.run_epoch(epoch)["seconds"]
            curve.append((epoch, seconds, evaluate_arrays(arrays(trainer), data, K)[f"ndcg_at_{K}"]))
            if curve[-1][2] >= target:
                break
        curves[name] = curve
    started = time.perf_counter()
    ease_arrays, _, _ = ease_fit(data, cfg.training.ease_l2, K, cfg.training.seed, [])
    seconds = time.perf_counter() - started
    ease = [(1, seconds, evaluate_arrays(ease_arrays, data, K)[f"ndcg_at_{K}"])]
    return {"mf": curves["mf"], "ease": ease, "seq": curves["seq"]}


FAMILY_LABELS = {"mf": "MF (jobs.train)", "ease": "EASE (jobs.ease)", "seq": "SASRec (jobs.seq)"}


def family_rows(
    curves: dict[str, list[tuple[int, float, float]]],
    implicit: list[tuple[int, float, float]],
    baseline: tuple[str, float, dict[str, float]],
    shape: str,
) -> list[dict[str, Any]]:
    """Rows: each family's training seconds to the best baseline's NDCG@K (value; empty when it
    never got there, with its best in the note) against implicit BPR's to the same target
    (reference; empty when implicit never got there)."""
    name, target, scores = baseline
    ref = first_reaching(implicit, target)
    ref_note = (
        f"implicit BPR {IMPLICIT} reached it after {ref[0]} epochs"
        if ref
        else f"implicit BPR did NOT reach it in {implicit[-1][0]} epochs (best {max(h[2] for h in implicit):.4f})"
    )
    rows = []
    for family, curve in curves.items():
        hit = first_reaching(curve, target)
        best = max(curve, key=lambda h: h[2])
        how = (
            (f"reached {hit[2]:.4f} after {hit[0]} epoch(s)" if family != "ease" else f"one fit: {hit[2]:.4f}")
            if hit
            else f"did NOT reach it in {curve[-1][0]} epoch(s), {curve[-1][1]:.1f}s (best {best[2]:.4f} at epoch {best[0]})"
        )
        rows.append(
            {
                "metric": f"time to the best baseline's NDCG@{K}, {FAMILY_LABELS[family]} vs implicit BPR "
                "(CPU, training seconds)",
                "value": hit[1] if hit else None,
                "unit": "s",
                "reference": ref[1] if ref else None,
                "note": f"{shape}; target: {name} NDCG@{K} {target:.4f} (baselines: "
                + ", ".join(f"{n} {v:.4f}" for n, v in scores.items())
                + f"); {family} {how}; {ref_note}; shipped settings, evaluation excluded; lower is better",
            }
        )
    return rows


def run(quick: bool = False) -> list[dict[str, Any]]:
    """Long because it is the benchmark's script: both measured sides and the result rows, top to bottom."""
    import torch

    from jobs.core.config import get_config
    from jobs.train.trainer import evaluate_arrays

    size = QUICK if quick else FULL
    factors = get_config().training.factors
    epochs = size["epochs"]
    started = time.perf_counter()
    data, oracle, events = build_world(size["users"], size["items"], size["events_per_day"])
    built = time.perf_counter() - started
    shape = (
        f"{data.n_users:,} users x {data.n_items:,} items, {len(data.users):,} train pairs, "
        f"{len(data.test_users):,} test pairs; {factors} factors, {epochs} epochs"
    )

    batch = {"batch_size": size["batch_size"]}
    ours_arrays, ours_rate, ours_s = train_ours(data, factors, epochs, {**OURS, **batch})
    _, bpr1_rate, bpr1_s = train_ours(data, factors, 2, OURS_BPR1)
    floor_arrays, floor_rate, floor_s = torch_floor(data, factors, 2, OURS_BPR1["batch_size"])
    floor_ndcg = evaluate_arrays(floor_arrays, data, K)[f"ndcg_at_{K}"]
    imp_arrays, imp_rate, imp_s = train_implicit(data, factors, epochs)
    ours = evaluate_arrays(ours_arrays, data, K)
    imp = evaluate_arrays(imp_arrays, data, K)
    target = imp[f"ndcg_at_{K}"]
    ttq_s, ttq_epochs, ttq_ndcg = time_to_quality(
        data, factors, target, TTQ_MAX_EPOCHS_FACTOR * epochs, {**OURS, **batch}
    )
    ours_target = ours[f"ndcg_at_{K}"]
    baseline = best_baseline(data, events)
    cap = FAMILY_MAX_EPOCHS["quick" if quick else "full"]
    curves = family_curves(data, events, baseline[1], cap, size["batch_size"])
    to_baseline = implicit_curve(data, factors, cap, IMPLICIT, lambda h: h[-1][2] >= baseline[1])
    converse = implicit_curve(
        data, factors, TTQ_MAX_EPOCHS_FACTOR * epochs, IMPLICIT, lambda h: h[-1][2] >= ours_target
    )
    defaults = implicit_curve(
        data, factors, CONVERGE_MAX_EPOCHS, IMPLICIT_DEFAULTS, lambda h: converged([x[2] for x in h])
    )
    d_best = max(defaults, key=lambda h: h[2])
    d_stop = (
        "flattened" if converged([x[2] for x in defaults]) else f"still climbing at the {CONVERGE_MAX_EPOCHS}-epoch cap"
    )
    d_at_default = (
        f" (NDCG@{K} {defaults[CONVERGE_MIN_EPOCHS - 1][2]:.4f} at epoch {CONVERGE_MIN_EPOCHS}, its default iterations)"
        if len(defaults) >= CONVERGE_MIN_EPOCHS
        else ""
    )
    per_epoch = f"{converse[-1][1] / converse[-1][0]:.2f}s per epoch one fit call at a time vs {imp_s / epochs:.2f}s in one call"
    best = evaluate_arrays(oracle, data, K)
    pop = {"recall": ours[f"pop_recall_at_{K}"], "ndcg": ours[f"pop_ndcg_at_{K}"]}
    q = {
        name: {"recall": m[f"recall_at_{K}"], "ndcg": m[f"ndcg_at_{K}"]}
        for name, m in (("ours", ours), ("implicit", imp), ("oracle", best))
    }
    q["popularity"] = pop
    hp_note = ", ".join(f"{k}={v}" for k, v in {**OURS, **batch}.items() if k != "seed")
    threads = f"torch {torch.get_num_threads()} threads, implicit num_threads=0 ({os.cpu_count()} CPUs)"
    rows: list[dict[str, Any]] = [
        {
            "metric": f"time to implicit BPR's NDCG@{K}, ours vs implicit (CPU, training seconds)",
            "value": ttq_s,
            "unit": "s",
            "reference": imp_s,
            "note": f"{shape}; target NDCG@{K} {target:.4f} (implicit after {epochs} epochs); ours reached "
            f"{ttq_ndcg:.4f} after {ttq_epochs} epochs; lower is better; {threads}",
        },
        converse_ttq_row(ours_s, ours_target, converse, epochs, per_epoch),
        *family_rows(curves, to_baseline, baseline, shape.rsplit(";", 1)[0]),
        {
            "metric": f"NDCG@{K} ours ({epochs} epochs) vs implicit BPR at its defaults trained to convergence",
            "value": ours_target,
            "unit": "ndcg",
            "reference": d_best[2],
            "note": f"implicit {IMPLICIT_DEFAULTS} (its defaults), {factors} factors, one epoch per fit call: "
            f"{d_stop} after {len(defaults)} epochs, best NDCG@{K} {d_best[2]:.4f} at epoch {d_best[0]}"
            f"{d_at_default}; stop rule: at least {CONVERGE_MIN_EPOCHS} epochs, then the best of the last "
            f"{CONVERGE_PATIENCE} < {1 + CONVERGE_MIN_GAIN:g} x the best before (cap {CONVERGE_MAX_EPOCHS}); "
            "best epoch picked on the test day (optimistic for implicit; no validation day, as for the tuning)",
        },
        {
            "metric": f"training seconds, ours ({epochs} epochs) vs implicit BPR at its defaults to its best epoch",
            "value": ours_s,
            "unit": "s",
            "reference": d_best[1],
            "note": f"implicit to epoch {d_best[0]} of {len(defaults)} ({defaults[-1][1]:.1f}s until the stop rule "
            f"fired); {per_epoch}; lower is better",
        },
        {
            "metric": "train throughput, ours vs implicit BPR (CPU)",
            "value": ours_rate,
            "unit": "pairs/s",
            "reference": imp_rate,
            "note": f"{shape}; ours: {hp_note}, {ours_s:.1f}s; implicit: {imp_s:.1f}s; {threads}",
        },
        {
            "metric": "train throughput, ours with BPR + 1 negative vs implicit BPR (CPU)",
            "value": bpr1_rate,
            "unit": "pairs/s",
            "reference": imp_rate,
            "note": f"implicit's sampling (1 negative per positive), batch {OURS_BPR1['batch_size']}; ours 2 epochs in {bpr1_s:.1f}s",
        },
        {
            "metric": "train throughput, torch floor (hand-written BPR-SGD step) vs implicit BPR (CPU)",
            "value": floor_rate,
            "unit": "pairs/s",
            "reference": imp_rate,
            "note": f"no autograd, no optimizer state: the ceiling of any torch trainer here; 2 epochs in {floor_s:.1f}s, NDCG@{K} {floor_ndcg:.3f}",
        },
    ]
    for metric in ("ndcg", "recall"):
        label = f"{metric.upper() if metric == 'ndcg' else metric}@{K}"
        rows += [
            {
                "metric": f"{label} ours vs implicit BPR",
                "value": q["ours"][metric],
                "unit": metric,
                "reference": q["implicit"][metric],
                "note": f"implicit {IMPLICIT}",
            },
            {
                "metric": f"{label} ours vs popularity",
                "value": q["ours"][metric],
                "unit": metric,
                "reference": q["popularity"][metric],
                "note": "most popular unseen items",
            },
            {
                "metric": f"{label} ours vs oracle",
                "value": q["ours"][metric],
                "unit": metric,
                "reference": q["oracle"][metric],
                "note": "oracle = beta*<u,v> + bias of the truth on the test day",
            },
            {
                "metric": f"{label} implicit BPR vs oracle",
                "value": q["implicit"][metric],
                "unit": metric,
                "reference": q["oracle"][metric],
                "note": "",
            },
            {
                "metric": f"{label} popularity vs oracle",
                "value": q["popularity"][metric],
                "unit": metric,
                "reference": q["oracle"][metric],
                "note": f"world built in {built:.0f}s",
            },
        ]
    return rows


if __name__ == "__main__":
    import json
    import sys

    for row in run(quick="--quick" in sys.argv):
        print(json.dumps(row))
