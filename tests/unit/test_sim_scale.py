"""jobs.sim's scale mode (``sampler="fast"``): the same world as the exact sampler, drawn faster.

Distributions, not size: small worlds, many draws, fixed seeds. The fast sampler must draw
each user's item from the softmax p(i | u) ∝ exp(beta <u, v_i> + b_i) (checked against that
softmax computed in float64), give the same marginals as the exact sampler, and keep the
generator's promises (seeded, same ground truth, same files otherwise).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import replace
from datetime import date, timedelta
from pathlib import Path

import numpy as np
import pyarrow.compute as pc
import pytest
from scipy import stats

from jobs.sim import COLUMNS, WorldParams, generate, generate_day, world_on, write_day
from jobs.sim.sampling import blocked_choices
from jobs.sim.world import DUPLICATE_SHARE, ENGAGED_TYPE_P, IMPRESSION_SHARE

pytestmark = pytest.mark.unit

D1 = date(2026, 1, 1)
WORLD = WorldParams()  # the default world: 2000 users, 500 items, 20,000 events a day


def softmax64(p: WorldParams, users: np.ndarray) -> np.ndarray:
    """The true item distribution of each user, in float64."""
    state = world_on(p, D1)
    logits = p.beta * state.user_factors[users] @ state.item_factors.T + state.item_bias
    w = np.exp(logits - logits.max(axis=1, keepdims=True))
    return w / w.sum(axis=1, keepdims=True)


def fast_draws(p: WorldParams, users: np.ndarray, uniforms: np.ndarray, **kw) -> tuple[np.ndarray, np.ndarray]:
    state = world_on(p, D1)
    return blocked_choices(p.beta, state.user_factors, state.item_factors, state.item_bias, users, uniforms, **kw)


def test_fast_sampler_draws_each_users_softmax():
    """60,000 draws for each of 4 users over 300 items (blocks of 16: two levels, a padded last
    block): a chi-square test against the float64 softmax passes, and the total-variation
    distance is the size of the sampling noise."""
    p = WorldParams(users=4, items=300, seed=3)
    draws = 60_000
    users = np.repeat(np.arange(4), draws)
    items, _ = fast_draws(p, users, np.random.default_rng(11).random(len(users)), block=16)
    probs = softmax64(p, np.arange(4))
    for user in range(4):
        counts = np.bincount(items[users == user], minlength=p.items)
        expected = probs[user] * draws
        small = expected < 5  # pooled into one bin, as the chi-square approximation needs
        observed = np.append(counts[~small], counts[small].sum())
        pooled = np.append(expected[~small], expected[small].sum())
        assert stats.chisquare(observed, pooled).pvalue > 1e-3
        tv = 0.5 * np.abs(counts / draws - probs[user]).sum()
        noise = 0.5 * np.sqrt(2 * probs[user] * (1 - probs[user]) / (np.pi * draws)).sum()  # E[TV] of a fair sample
        assert tv < 1.3 * noise


@pytest.mark.parametrize(
    ("beta", "items"),
    [
        (4.0, 2000),  # the default taste strength, a catalogue that is not a multiple of the block
        (250.0, 700),  # a bound far above some users' best item (their weights would underflow)
        (0.5, 130),  # almost popularity only
    ],
)
def test_fast_sampler_is_the_float64_inverse_cdf(beta, items):
    """Given the same uniforms, the fast sampler picks the item the float64 inverse CDF picks,
    but for float32 rounding ties (< 1e-3 of draws: a bound on its TV distance to the softmax),
    and returns that item's log-probability."""
    p = WorldParams(users=300, items=items, beta=beta, seed=5)
    users = np.sort(np.random.default_rng(1).integers(0, p.users, 40_000))
    uniforms = np.random.default_rng(2).random(len(users))
    items_fast, log_p = fast_draws(p, users, uniforms)
    probs = softmax64(p, np.arange(p.users))
    cdf = np.cumsum(probs, axis=1)
    reference = np.array(
        [np.searchsorted(cdf[us], un * cdf[us, -1], side="right") for us, un in zip(users, uniforms, strict=True)]
    )
    assert np.mean(items_fast != reference) < 1e-3
    assert np.abs(log_p - np.log(probs[users, items_fast])).max() < 1e-4


def test_fast_sampler_result_does_not_depend_on_threads():
    users = np.sort(np.random.default_rng(3).integers(0, WORLD.users, 20_000))
    uniforms = np.random.default_rng(4).random(len(users))
    one = fast_draws(WORLD, users, uniforms, workers=1)
    three = fast_draws(WORLD, users, uniforms, workers=3)
    assert np.array_equal(one[0], three[0])
    assert np.array_equal(one[1], three[1])


def test_same_seed_same_day_in_both_modes_but_for_rounding_ties():
    """The fast mode consumes the same random draws: its day is the exact mode's day, event for
    event, except items (and the watch time / rating they drive) at float32 rounding ties."""
    exact, _ = generate_day(WORLD, D1)
    fast, _ = generate_day(replace(WORLD, sampler="fast"), D1)
    for col in ("event_id", "user_id", "event_type", "ts", "device", "country"):
        assert exact.column(col).equals(fast.column(col)), col
    assert np.mean(exact.column("item_id").to_numpy() != fast.column("item_id").to_numpy()) < 1e-3
    rating = [np.nan_to_num(t.column("rating").to_numpy(zero_copy_only=False).astype(float)) for t in (exact, fast)]
    assert np.mean(rating[0] != rating[1]) < 1e-3
    watch = np.abs(np.nan_to_num(exact.column("watch_seconds").to_numpy() - fast.column("watch_seconds").to_numpy()))
    assert np.mean(watch <= 0.1 + 1e-9) > 0.999


def _marginals(table) -> dict[str, float]:
    types = table.column("event_type").to_numpy(zero_copy_only=False)
    users = table.column("user_id").to_numpy()
    items = table.column("item_id").to_numpy()
    engaged = types != "impression"
    user_counts = np.sort(np.bincount(users, minlength=WORLD.users))[::-1]
    item_counts = np.sort(np.bincount(items[engaged], minlength=WORLD.items))[::-1]
    return {
        "impression": float(np.mean(~engaged)),
        "duplicates": 1 - pc.count_distinct(table.column("event_id")).as_py() / len(table),
        **{t: float(np.mean(types[engaged] == t)) for t in ("click", "play", "rating")},
        "top 10% users": user_counts[: WORLD.users // 10].sum() / len(table),
        "top 1% items": item_counts[: WORLD.items // 100].sum() / engaged.sum(),
        "mean rating": float(pc.mean(table.column("rating")).as_py()),
        "mean log watch": float(np.nanmean(np.log(table.column("watch_seconds").to_numpy()))),
    }


def test_fast_mode_has_the_marginals_of_the_exact_mode():
    """Independent days (day 1 exact, day 2 fast, the same world): event-type, impression and
    duplicate shares, activity skew, item concentration, ratings and watch times agree to within
    sampling noise, and with the world's constants."""
    exact = _marginals(generate_day(WORLD, D1)[0])
    fast = _marginals(generate_day(replace(WORLD, sampler="fast"), D1 + timedelta(days=1))[0])
    n = WORLD.events_per_day
    assert fast["impression"] == pytest.approx(exact["impression"], abs=0.002)
    assert fast["impression"] == pytest.approx(IMPRESSION_SHARE, abs=0.002)
    assert fast["duplicates"] == exact["duplicates"] == pytest.approx(DUPLICATE_SHARE, rel=0.01)
    for t, share in zip(("click", "play", "rating"), ENGAGED_TYPE_P, strict=True):
        sigma = np.sqrt(share * (1 - share) / (0.7 * n))
        assert abs(fast[t] - share) < 4 * sigma and abs(exact[t] - share) < 4 * sigma, t
    assert fast["top 10% users"] == pytest.approx(exact["top 10% users"], abs=0.02)
    assert fast["top 1% items"] == pytest.approx(exact["top 1% items"], abs=0.02)
    assert fast["mean rating"] == pytest.approx(exact["mean rating"], abs=0.05)
    assert fast["mean log watch"] == pytest.approx(exact["mean log watch"], abs=0.03)


def test_fast_mode_is_seeded():
    p = replace(WORLD, sampler="fast")
    assert generate_day(p, D1)[0].equals(generate_day(p, D1)[0])
    assert not generate_day(p, D1)[0].equals(generate_day(replace(p, seed=8), D1)[0])


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_fast_mode_writes_the_same_ground_truth_and_logs_its_sampler(tmp_path):
    exact_root, fast_root = tmp_path / "exact", tmp_path / "fast"
    generate(WORLD, D1, 1, str(exact_root / "landing"), str(exact_root / "truth"))
    generate(replace(WORLD, sampler="fast"), D1, 1, str(fast_root / "landing"), str(fast_root / "truth"))
    truth = f"dt={D1.isoformat()}/truth.npz"
    assert _sha(exact_root / "truth" / truth) == _sha(fast_root / "truth" / truth)
    assert "sampler" not in json.loads((exact_root / "truth" / "scenarios.json").read_text())["params"]
    assert json.loads((fast_root / "truth" / "scenarios.json").read_text())["params"]["sampler"] == "fast"
    fast_lines = (fast_root / "landing" / f"dt={D1.isoformat()}" / "part-00000.jsonl").read_text().splitlines()
    assert len(fast_lines) == round(WORLD.events_per_day * (1 + DUPLICATE_SHARE))
    assert tuple(json.loads(fast_lines[0])) == COLUMNS


def test_unknown_sampler_is_refused(tmp_path, capsys):
    with pytest.raises(ValueError, match="unknown sampler 'approx'"):
        WorldParams(sampler="approx")
    from jobs.sim.job import main

    argv = ["--landing", str(tmp_path / "landing"), "--truth", str(tmp_path / "truth"), "--users", "300"]
    with pytest.raises(SystemExit) as exc:
        main([*argv, "--sampler", "approx"])
    assert exc.value.code == 2
    assert "argument --sampler" in capsys.readouterr().err


def test_cli_sampler_flag_matches_the_library(tmp_path):
    from jobs.sim.job import main

    argv = ["--start", D1.isoformat(), "--days", "1", "--users", "300", "--items", "120", "--events-per-day", "3000"]
    assert main([*argv, "--landing", str(tmp_path / "cli"), "--truth", str(tmp_path / "t"), "--sampler", "fast"]) == 0
    p = WorldParams(users=300, items=120, events_per_day=3000, sampler="fast")
    write_day(p, D1, str(tmp_path / "lib"), str(tmp_path / "t2"))
    day_dir = f"dt={D1.isoformat()}/part-00000.jsonl"
    assert _sha(tmp_path / "cli" / day_dir) == _sha(tmp_path / "lib" / day_dir)
