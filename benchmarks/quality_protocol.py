"""The pure pieces of the quality benchmark (``bench_quality``): data, splits, paired CIs.

numpy only, no I/O but ``load_interactions``. Metrics
are ``jobs.core.ranking``'s; everything here is tested in ``tests/unit/test_bench_quality.py``.

Two protocols:

* **temporal** (the project's own): for a cut day ``c``, train = interactions before
  ``c - valid_days``, valid = ``[c - valid_days, c)``, test = ``[c, c + test_days)``. Truth of a
  held-out period = its (user, item) pairs whose user *and* item occur in the data the model was
  fitted on, minus the pairs seen there (``heldout_truth``): a user or item unknown at training
  time cannot be ranked by any model here, so it is dropped from the truth for every model alike.
* **RecBole's** ``RO`` + ``RS [0.8, 0.1, 0.1]`` grouped by user (``recbole_split``): the
  interactions are shuffled, then each user's are cut 8:1:1 with RecBole's own rounding.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

DAY = 86_400


class LeakageError(AssertionError):
    """A split puts held-out information into what a model is fitted on."""


@dataclass(frozen=True)
class Interactions:
    """An interaction log as dense codes: ``users``/``items`` index ``user_ids``/``item_ids``."""

    users: np.ndarray  # int64 codes
    items: np.ndarray  # int64 codes
    ts: np.ndarray  # int64 seconds (UTC)
    user_ids: np.ndarray
    item_ids: np.ndarray
    name: str = ""

    @property
    def n_users(self) -> int:
        return len(self.user_ids)

    @property
    def n_items(self) -> int:
        return len(self.item_ids)

    @property
    def days(self) -> np.ndarray:
        return self.ts // DAY


def from_arrays(users, items, ts, name: str = "") -> Interactions:
    """Factorise raw user/item ids; duplicate (user, item) pairs keep their first (earliest) row."""
    users, items, ts = (np.asarray(a).astype(np.int64) for a in (users, items, ts))
    order = np.lexsort((ts, items, users))
    users, items, ts = users[order], items[order], ts[order]
    first = np.ones(len(users), dtype=bool)
    first[1:] = (users[1:] != users[:-1]) | (items[1:] != items[:-1])
    users, items, ts = users[first], items[first], ts[first]
    user_ids, u = np.unique(users, return_inverse=True)
    item_ids, i = np.unique(items, return_inverse=True)
    return Interactions(u.astype(np.int64), i.astype(np.int64), ts, user_ids, item_ids, name)


def load_interactions(path: str | Path) -> Interactions:
    """Read MovieLens in RecBole's ``.inter`` (tab, header), ``ratings.dat`` (``::``) or
    ``ratings.csv`` (comma, header) form; every rating is an implicit interaction."""
    path = Path(path)
    if path.suffix == ".inter":
        data = np.loadtxt(path, delimiter="\t", skiprows=1, usecols=(0, 1, 3), dtype=np.float64)
    elif path.suffix == ".dat":
        text = path.read_text(encoding="latin-1").replace("::", "\t")
        data = np.loadtxt(text.splitlines(), delimiter="\t", usecols=(0, 1, 3), dtype=np.float64)
    elif path.suffix == ".csv":
        data = np.loadtxt(path, delimiter=",", skiprows=1, usecols=(0, 1, 3), dtype=np.float64)
    else:
        raise ValueError(f"{path}: expected a .inter, ratings.dat or ratings.csv file")
    return from_arrays(data[:, 0], data[:, 1], data[:, 2], name=path.parent.name or path.stem)


# ---- protocol (a): temporal rolling splits -------------------------------------------------


@dataclass(frozen=True)
class TemporalSplit:
    """Boolean masks over an ``Interactions`` log for one cut day (days since the epoch)."""

    cut_day: int
    train: np.ndarray
    valid: np.ndarray
    test: np.ndarray


def temporal_split(days: np.ndarray, cut_day: int, valid_days: int, test_days: int) -> TemporalSplit:
    """train < cut - valid_days <= valid < cut <= test < cut + test_days."""
    days = np.asarray(days)
    start = cut_day - valid_days
    return TemporalSplit(
        int(cut_day),
        days < start,
        (days >= start) & (days < cut_day),
        (days >= cut_day) & (days < cut_day + test_days),
    )


def rolling_cut_days(days: np.ndarray, n_splits: int, test_days: int) -> list[int]:
    """``n_splits`` cut days ``test_days`` apart, the last test period ending on the last day."""
    last = int(np.max(days))
    return [last + 1 - test_days * (n + 1) for n in reversed(range(n_splits))]


def heldout_truth(
    fit_users: np.ndarray, fit_items: np.ndarray, users: np.ndarray, items: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """The held-out (user, item) pairs a model fitted on ``fit_*`` can be judged on.

    Kept: distinct pairs whose user and item both occur in the fitted data and that the fitted
    data does not contain. Returns (users, items) sorted by user then item.
    """
    fit_users, fit_items, users, items = (np.asarray(a, dtype=np.int64) for a in (fit_users, fit_items, users, items))
    width = int(max(fit_items.max(initial=-1), items.max(initial=-1))) + 1
    known = np.isin(users, fit_users) & np.isin(items, fit_items)
    keys = np.unique(users[known] * width + items[known])
    keys = keys[~np.isin(keys, fit_users * width + fit_items)]
    return keys // width, keys % width


def check_no_leakage(
    fit_users, fit_items, fit_ts, truth_users, truth_items, heldout_ts=None, label: str = "split"
) -> None:
    """Raise ``LeakageError`` when the truth repeats a fitted pair, names a user or item the
    fitted data lacks, or (temporal) a fitted interaction is not older than every held-out one."""
    fit_users, fit_items, truth_users, truth_items = (
        np.asarray(a, dtype=np.int64) for a in (fit_users, fit_items, truth_users, truth_items)
    )
    if not len(truth_users):
        raise LeakageError(f"{label}: no held-out pair to evaluate")
    width = int(max(fit_items.max(initial=-1), truth_items.max(initial=-1))) + 1
    if np.isin(truth_users * width + truth_items, fit_users * width + fit_items).any():
        raise LeakageError(f"{label}: a held-out pair is in the training data")
    if not (np.isin(truth_users, fit_users).all() and np.isin(truth_items, fit_items).all()):
        raise LeakageError(f"{label}: a held-out user or item is unknown to the training data")
    if heldout_ts is not None and len(heldout_ts) and np.max(fit_ts) >= np.min(heldout_ts):
        raise LeakageError(f"{label}: training data reaches into the held-out period")


# ---- protocol (b): RecBole RO + RS 8:1:1 by user ---------------------------------------------


def recbole_counts(total: int, ratios=(0.8, 0.1, 0.1)) -> list[int]:
    """Sizes of the parts of one user's ``total`` interactions, rounded as RecBole 1.2.1's
    ``Dataset._calcu_split_ids``: parts after the first are rounded down, and one that would be
    empty but has a positive share gets one interaction while the first part keeps more than one."""
    ratios = [r / sum(ratios) for r in ratios]
    cnt = [int(r * total) for r in ratios]
    cnt[0] = total - sum(cnt[1:])
    for i in range(1, len(ratios)):
        if cnt[0] <= 1:
            break
        if 0 < ratios[-i] * total < 1:
            cnt[-i] += 1
            cnt[0] -= 1
    return cnt


def recbole_split(users: np.ndarray, seed: int, ratios=(0.8, 0.1, 0.1)) -> np.ndarray:
    """Part (0 train, 1 valid, 2 test) of each interaction: a seeded shuffle of the whole log
    (``RO``), then each user's interactions in shuffled order cut by ``recbole_counts``."""
    users = np.asarray(users, dtype=np.int64)
    order = np.random.default_rng(seed).permutation(len(users))
    order = order[np.argsort(users[order], kind="stable")]  # grouped by user, shuffled within
    part = np.empty(len(users), dtype=np.int8)
    starts = np.flatnonzero(np.r_[True, users[order][1:] != users[order][:-1]])
    for start, end in zip(starts, np.r_[starts[1:], len(users)], strict=True):
        sizes = recbole_counts(int(end - start), ratios)
        part[order[start:end]] = np.repeat(np.arange(len(sizes), dtype=np.int8), sizes)
    return part


# ---- paired bootstrap ------------------------------------------------------------------------


def paired_bootstrap_ci(
    a: np.ndarray, b: np.ndarray, n_boot: int = 2000, seed: int = 0, level: float = 0.95
) -> tuple[float, float, float]:
    """Mean of ``a - b`` over paired units (users) and its percentile bootstrap interval.

    The same resampled units are used for both sides (a paired bootstrap). Returns
    (mean difference, low, high).
    """
    diff = np.asarray(a, dtype=np.float64) - np.asarray(b, dtype=np.float64)
    if diff.ndim != 1 or not len(diff):
        raise ValueError("paired_bootstrap_ci needs two equally long, non-empty 1-d arrays")
    rng = np.random.default_rng(seed)
    means = np.empty(n_boot)
    for lo in range(0, n_boot, 256):  # bounded memory: 256 resamples at a time
        idx = rng.integers(0, len(diff), size=(min(256, n_boot - lo), len(diff)))
        means[lo : lo + len(idx)] = diff[idx].mean(axis=1)
    tail = (1.0 - level) / 2.0 * 100.0
    low, high = np.percentile(means, [tail, 100.0 - tail])
    return float(diff.mean()), float(low), float(high)
