"""The quality benchmark's machinery: protocols as held-out periods, cached fits, grid tuning.

A ``Period`` is one training log and the held-out pairs it is judged on; a ``Protocol`` is a list
of (validation period, test period) folds. ``tune`` fits a model family's grid (in stages) on a
validation period and keeps the best mean NDCG@K; ``run_protocol`` refits the chosen setting
on each fold's test period (a cached result is reused when the test period's training log is
the one a grid point was already fitted on) and pools the per-user metrics over folds.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from itertools import pairwise, product
from typing import Any

import numpy as np

from benchmarks import quality_models as qm
from benchmarks.quality_protocol import (
    Interactions,
    LeakageError,
    check_no_leakage,
    heldout_truth,
    recbole_counts,
    recbole_split,
    rolling_cut_days,
    temporal_split,
)

K = 10
RECBOLE_SEED = 2020  # RecBole's default seed (overall.yaml); the permutation is numpy's
PERIOD_DAYS = 14  # validation and test periods, and the step between cut days


@dataclass(frozen=True)
class Family:
    """A model and its tuning: ``stages`` map the best settings so far (None first) to the
    groups to fit next; ``fit`` yields (settings, scorer) for a group (several for checkpoints)."""

    name: str
    fit: Callable[[qm.FitData, dict[str, Any]], Iterator[tuple[dict[str, Any], qm.Scorer]]]
    stages: list[Callable[[dict[str, Any] | None], list[dict[str, Any]]]]
    baseline: bool = False


# ---- protocols -------------------------------------------------------------------------------


@dataclass
class Period:
    """A training log and the held-out pairs it is judged on; results cached per setting."""

    label: str
    data: qm.FitData
    seen: Any  # jobs.core.model.CSR of the pairs excluded per user
    truth_users: np.ndarray
    truth_items: np.ndarray
    blocked_items: np.ndarray
    results: dict[tuple[str, str], dict[str, np.ndarray]] = field(default_factory=dict)

    @property
    def users(self) -> np.ndarray:
        return np.unique(self.truth_users)


@dataclass(frozen=True)
class Protocol:
    name: str
    folds: list[tuple[Period, Period]]  # (validation, test)
    description: str


def _sub(d: Interactions, mask: np.ndarray) -> qm.FitData:
    return qm.FitData(d.users[mask], d.items[mask], d.ts[mask], d.n_users, d.n_items)


def _csr(users: np.ndarray, items: np.ndarray, d: Interactions):
    from jobs.core.model import CSR

    return CSR.from_pairs(users, items, d.n_users, d.n_items)


def temporal_protocol(d: Interactions, n_splits: int) -> Protocol:
    """Rolling splits; period j (fitted on everything before it) is split j's validation and
    split j-1's test, so the ``n_splits + 1`` periods are built once."""
    cuts = rolling_cut_days(d.days, n_splits + 1, PERIOD_DAYS)
    periods = []
    for cut in cuts:  # the period [cut, cut + PERIOD_DAYS), fitted on everything before cut
        split = temporal_split(d.days, cut, 0, PERIOD_DAYS)
        fit, held = split.train, split.test
        tu, ti = heldout_truth(d.users[fit], d.items[fit], d.users[held], d.items[held])
        label = f"{d.name} {np.datetime64(int(cut), 'D')}+{PERIOD_DAYS}d"
        check_no_leakage(d.users[fit], d.items[fit], d.ts[fit], tu, ti, d.ts[held], label=label)
        blocked = np.setdiff1d(np.arange(d.n_items), d.items[fit])
        periods.append(Period(label, _sub(d, fit), _csr(d.users[fit], d.items[fit], d), tu, ti, blocked))
    folds = list(pairwise(periods))
    for (valid, test), cut in zip(folds, cuts[1:], strict=True):
        split = temporal_split(d.days, cut, PERIOD_DAYS, PERIOD_DAYS)
        if len(valid.data.users) != split.train.sum() or len(test.data.users) != (split.train | split.valid).sum():
            raise LeakageError(f"{test.label}: the fitted logs are not train and train + valid")
    first, last = (np.datetime64(int(c), "D") for c in (cuts[1], cuts[-1]))
    description = (
        f"{n_splits} cut days {first}..{last} every {PERIOD_DAYS} days; valid = the {PERIOD_DAYS} days before "
        f"the cut (fit on what precedes it), test = the {PERIOD_DAYS} days from the cut (refit on train + valid)"
    )
    return Protocol("temporal", folds, description)


def recbole_protocol(d: Interactions) -> Protocol:
    part = recbole_split(d.users, RECBOLE_SEED)
    sizes = np.bincount(d.users * 3 + part, minlength=3 * d.n_users).reshape(-1, 3)
    expected = {n: recbole_counts(int(n)) for n in np.unique(sizes.sum(axis=1))}
    if any(row.tolist() != expected[row.sum()] for row in sizes):
        raise LeakageError("RecBole split: a user's parts are not 8:1:1")
    train, valid, test = part == 0, part == 1, part == 2
    fit = _sub(d, train)
    trv = train | valid
    none = np.zeros(0, dtype=np.int64)
    pv = Period(
        f"{d.name} RecBole valid", fit, _csr(d.users[train], d.items[train], d), d.users[valid], d.items[valid], none
    )
    pt = Period(f"{d.name} RecBole test", fit, _csr(d.users[trv], d.items[trv], d), d.users[test], d.items[test], none)
    keys = d.users * d.n_items + d.items
    if np.intersect1d(keys[train], keys[valid | test]).size or np.intersect1d(keys[valid], keys[test]).size:
        raise LeakageError("RecBole split: a pair is in two parts")
    description = (
        f"RO + RS [0.8, 0.1, 0.1] grouped by user (seed {RECBOLE_SEED}); fit on train; valid excludes train "
        "items, test excludes train + valid items; catalogue = every item"
    )
    return Protocol("recbole", [(pv, pt)], description)


# ---- tuning and evaluation -------------------------------------------------------------------


def _key(settings: dict[str, Any]) -> str:
    return json.dumps(settings, sort_keys=True, default=str)


def evaluate(period: Period, scorer: qm.Scorer) -> dict[str, np.ndarray]:
    """Per-user NDCG@K and Recall@K of a scorer on a period (users sorted by code)."""
    from jobs.core.ranking import ranking_metrics

    users = period.users
    top = qm.rank(scorer, users, period.seen, K, period.blocked_items)
    out = ranking_metrics(
        np.repeat(users, K),
        top.ravel(),
        np.tile(np.arange(1, K + 1), len(users)),
        period.truth_users,
        period.truth_items,
        K,
        per_user=True,
    )["per_user"]
    if not np.array_equal(out["users"], users):
        raise AssertionError(f"{period.label}: per-user metrics are not over the evaluated users")
    for name in ("ndcg", "recall"):
        if not np.isfinite(out[name]).all() or out[name].min() < 0 or out[name].max() > 1:
            raise FloatingPointError(f"{period.label}: {name} outside [0, 1] or not finite")
    return {"ndcg": out["ndcg"], "recall": out["recall"]}


def _wanted(group: dict[str, Any]) -> list[str]:
    """The settings keys a group yields: one per combination of its list values (checkpoints of
    ``epochs``/``iterations``; the recency prior's ``days`` × ``alpha`` on one EASE fit)."""
    axes = [axis for axis, value in group.items() if isinstance(value, list)]
    return [_key({**group, **dict(zip(axes, values, strict=True))}) for values in product(*(group[a] for a in axes))]


def fit_groups(family: Family, period: Period, groups: list[dict[str, Any]]) -> list[str]:
    """Fit and score the groups a period has no result for yet; the keys of all the groups."""
    keys = []
    for group in groups:
        wanted = _wanted(group)
        keys += wanted
        if all((family.name, w) in period.results for w in wanted):
            continue
        for settings, scorer in family.fit(period.data, group):
            period.results[(family.name, _key(settings))] = evaluate(period, scorer)
    return keys


def tune(family: Family, period: Period) -> dict[str, Any]:
    """The grid point with the highest mean NDCG@K on ``period`` (the first of equals)."""
    best: dict[str, Any] | None = None
    candidates: list[str] = []
    for stage in family.stages:
        candidates += fit_groups(family, period, stage(best))
        scores = [float(period.results[(family.name, key)]["ndcg"].mean()) for key in candidates]
        best = json.loads(candidates[int(np.argmax(scores))])
    assert best is not None
    return best


@dataclass
class Outcome:
    family: str
    settings: list[dict[str, Any]]  # per fold
    valid: dict[str, np.ndarray]  # pooled per-user metrics
    test: dict[str, np.ndarray]


def run_protocol(protocol: Protocol, fams: list[Family]) -> list[Outcome]:
    outcomes = []
    for family in fams:
        started = time.perf_counter()
        chosen, valid, test = [], [], []
        for vp, tp in protocol.folds:
            settings = tune(family, vp)
            fit_groups(family, tp, [settings])
            chosen.append(settings)
            valid.append(vp.results[(family.name, _key(settings))])
            test.append(tp.results[(family.name, _key(settings))])
        pool = lambda parts: {m: np.concatenate([p[m] for p in parts]) for m in ("ndcg", "recall")}  # noqa: E731
        outcomes.append(Outcome(family.name, chosen, pool(valid), pool(test)))
        print(
            f"  {protocol.name:8s} {family.name:22s} valid NDCG@{K} {outcomes[-1].valid['ndcg'].mean():.4f} "
            f"test NDCG@{K} {outcomes[-1].test['ndcg'].mean():.4f} ({time.perf_counter() - started:.0f}s)",
            flush=True,
        )
    return outcomes
