"""The capacity model (benchmarks/capacity.py, scale_fit.py, scale_limits.py) on fixed coefficients.

The fit recovers known laws; the self-check's error is predicted / measured − 1; the projection's
cores, wall time and money match sums done by hand; the first design limit is the right one at
demo size (none), at Netflix size and with the one-node limits lifted; the CLI exits 2 on a
missing or malformed coefficients file and reports on a small fixture.
"""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from benchmarks import capacity
from benchmarks.scale_fit import Law, Size, check_summary, fit_law, parse_coefficients, self_check
from benchmarks.scale_limits import GIB, Capacities, bindings, design_limits, find_binding, first_met

pytestmark = pytest.mark.unit

DEMO = Size(events_per_day=2e4, users=2e3, items=500, window_days=7, factors=64)
NETFLIX = Size(events_per_day=5e9, users=300e6, items=18e3, window_days=28, factors=64)
X = np.array([1e4, 3e4, 1e5, 3e5, 1e6, 3e6])


@pytest.mark.parametrize(
    ("fixed", "b", "k"), [(5.0, 2e-3, 1.2), (0.0, 1e-4, 1.0), (300.0, 0.01, 0.8), (50.0, 1e-6, 2.0)]
)
def test_fit_recovers_a_known_law(fixed, b, k):
    law = fit_law(X, fixed + b * X**k, driver="events/day")
    assert law.fixed == pytest.approx(fixed, rel=1e-5, abs=1e-6 * (fixed + b * X[0] ** k))
    assert law.b == pytest.approx(b, rel=1e-5)
    assert law.k == pytest.approx(k, abs=1e-6)
    assert law.driver == "events/day" and len(law.points) == len(X)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_fit_with_small_seeded_noise_predicts_ten_times_further(seed):
    fixed, b, k = 20.0, 3e-4, 1.1
    noisy = (fixed + b * X**k) * (1 + 0.02 * np.random.default_rng(seed).standard_normal(len(X)))
    law = fit_law(X, noisy)
    assert law.k == pytest.approx(k, abs=0.05)
    assert law.predict(3e7) == pytest.approx(fixed + b * 3e7**k, rel=0.1)


def test_fit_with_two_sizes_one_size_and_a_zero_cost():
    two = fit_law([10.0, 1000.0], [20.0, 2000.0])
    assert (two.fixed, two.k) == (0.0, pytest.approx(1.0)) and two.b == pytest.approx(2.0)
    one = fit_law([10.0, 10.0], [3.0, 5.0])
    assert (one.fixed, one.b, one.k) == (4.0, 0.0, 0.0)
    assert fit_law([1.0, 2.0, 3.0], [0.0, 0.0, 0.0]).predict(1e9) == 0.0
    with pytest.raises(ValueError, match="> 0"):
        fit_law([0.0, 1.0], [1.0, 2.0])


def _row(events: float, **costs: float) -> dict[str, float]:
    return {"events_per_day": events, "users": events / 10, "items": 500.0, **costs}


def _doc(stages: dict[str, list[dict[str, float]]]) -> dict:
    sizes = [{"events_per_day": e, "users": e / 10, "items": 500.0} for e in (1e4, 1e5, 1e6, 1e7)]
    return {"machine": {"cpus": 2}, "window_days": 7, "sizes": sizes, "stages": stages}


@pytest.mark.parametrize(("off", "passed"), [(1.2, True), (1.5, False)])
def test_self_check_predicts_the_largest_size_from_the_others(off, passed):
    law = lambda e: 2.0 + 1e-3 * e  # noqa: E731
    rows = [_row(e, wall_s=law(e), cpu_s=law(e)) for e in (1e4, 1e5, 1e6)]
    rows.append(_row(1e7, wall_s=law(1e7), cpu_s=law(1e7) * off))
    checks = {c.resource: c for c in self_check(parse_coefficients(_doc({"ingest": rows})))}
    assert checks["wall_s"].error == pytest.approx(0.0, abs=1e-6)
    assert checks["cpu_s"].predicted == pytest.approx(law(1e7), rel=1e-6)
    assert checks["cpu_s"].error == pytest.approx(1 / off - 1, rel=1e-6)
    summary = check_summary(list(checks.values()))
    assert summary["passed"] is passed and summary["worst_by_stage"]["ingest"] == pytest.approx(1 - 1 / off)


def test_projection_by_hand():
    coeffs = parse_coefficients(_doc({"ingest": [_row(e, wall_s=1.0, cpu_s=1.0) for e in (1e4, 1e5, 1e6)]}))
    coeffs.laws = {
        "ingest": {  # events/day
            "cpu_s": Law(10.0, 1e-3, 1.0, points=((1e6, 1010.0),)),
            "wall_s": Law(100.0, 1e-4, 1.0),
            "bytes_written": Law(0.0, 100.0, 1.0),
        },
        "score": {"cpu_s": Law(0.0, 1e-6, 1.0), "wall_s": Law(200.0, 0.0, 0.0)},  # users × items
        "train": {"gpu_s": Law(0.0, 1e-4, 1.0), "cpu_s": Law(1.0, 1.0, 1.0), "wall_s": Law(60.0, 0.0, 0.0)},
    }
    target = Size(events_per_day=1e8, users=1e6, items=1e3, window_days=10, factors=64)
    assumptions = capacity.Assumptions(sla_hours=1.0, efficiency=0.5, trainings_per_week=1.0, retention_days=10)
    prices = capacity.Prices(core_hour=0.1, gpu_hour=2.0, gb_month=0.02)
    plans = {p.stage: p for p in capacity.project(coeffs, target, assumptions, prices)}
    # Daily path: 3600 s − (100 + 200) s fixed = 3300 s shared ∝ √variable (1e5 and 1e3 CPU-s).
    ingest_share = 3300 * math.sqrt(1e5) / (math.sqrt(1e5) + math.sqrt(1e3))  # = 3000 s
    assert ingest_share == pytest.approx(3000.0)
    ingest, score, train = plans["ingest"], plans["score"], plans["train"]
    assert (ingest.device, ingest.units) == ("cores", 67)  # ⌈1e5 / (0.5 × 3000)⌉
    assert ingest.wall_s == pytest.approx(100 + 1e5 / (67 * 0.5))
    assert (score.units, score.wall_s) == (7, pytest.approx(200 + 1e3 / (7 * 0.5)))  # ⌈1e3 / (0.5 × 300)⌉
    assert ingest.wall_s + score.wall_s <= 3600
    assert ingest.bytes_per_run == pytest.approx(1e10) and ingest.stored_bytes == pytest.approx(1e11)
    assert ingest.compute_per_day == pytest.approx(67 * (100 + 1e5 / 33.5) / 3600 * 0.1)
    assert ingest.storage_per_day == pytest.approx(100 * 0.02 / 30)  # 100 GB kept
    assert ingest.extrapolation == pytest.approx(100.0)  # 1e8 events/day vs 1e6 measured
    # Training path alone: window events 1e9 → 1e5 GPU-s, 3540 s left, once a week.
    assert (train.device, train.units, train.runs_per_day) == ("GPUs", 57, pytest.approx(1 / 7))
    assert train.wall_s == pytest.approx(60 + 1e5 / (57 * 0.5))
    assert train.money_per_day == pytest.approx(57 * train.wall_s / 3600 / 7 * 2.0)
    totals = capacity.totals(list(plans.values()), assumptions)
    assert totals["money_per_day"] == pytest.approx(sum(p.money_per_day for p in plans.values()))
    assert totals["daily_path"] == ["ingest", "score"]


def test_a_fixed_part_over_the_sla_is_reported_unmet():
    budgets = capacity.sla_budgets(
        {"ingest": capacity.Work(Law(0, 1, 1), "cores", "events/day", 1.0, 5000.0, 10.0)}, 3600.0
    )
    assert budgets == {"ingest": None}


def test_nothing_binds_at_demo_size():
    found = bindings(design_limits(None), DEMO, DEMO)
    assert first_met(found) is None
    assert all(b.where in ("beyond", "never") for b in found)


def test_the_ease_model_per_scoring_worker_binds_first_on_the_way_to_netflix():
    first = first_met(bindings(design_limits(None), DEMO, NETFLIX))
    assert first is not None and first.limit.name == "ease_model_per_scoring_worker"

    # users × items × 4 B + items² × 4 B = 16 GiB on the geometric path DEMO → NETFLIX:
    # users × items grows from 1e6 to 5.4e12 (× 5.4e6), items from 500 to 18,000 (× 36), as r^t.
    def need(t: float) -> float:
        ui, items = 1e6 * 5.4e6**t, 500 * 36**t
        return ui * 4 + items**2 * 4

    lo, hi = 0.0, 1.0
    for _ in range(80):
        mid = (lo + hi) / 2
        lo, hi = (lo, mid) if need(mid) >= 16 * GIB else (mid, hi)
    assert first.position == pytest.approx(hi, abs=1e-6)
    assert first.size.users * first.size.items == pytest.approx(1e6 * 5.4e6**hi, rel=1e-6)


def test_without_ease_the_one_node_reference_binds_first():
    first = first_met(bindings(design_limits(None, families=("mf",)), DEMO, NETFLIX))
    assert first is not None and first.limit.name == "reference_one_node"
    assert first.size.window_events * 32 + first.size.events_per_day * 56 == pytest.approx(128 * GIB, rel=1e-9)


def test_embeddings_bind_first_when_nodes_and_executors_are_large():
    big = Capacities(node_memory_gib=1e6, executor_memory_gib=1e6, model_scratch_gib=1e6)
    found = bindings(design_limits(None, big, families=("mf",)), DEMO, NETFLIX)
    first = first_met(found)
    assert first is not None and first.limit.name == "mf_embeddings_one_gpu"
    s = first.size
    assert (s.users + s.items) * 64 * 4 * 3 == pytest.approx(80 * GIB, rel=1e-9)
    assert first.need_at_target == pytest.approx((300e6 + 18e3) * 64 * 4 * 3)


def test_a_catalogue_limit_binds_beyond_the_requested_size_by_the_right_factor():
    batch = next(lim for lim in design_limits(None) if lim.name == "score_batch_catalogue")
    found = find_binding(batch, DEMO, NETFLIX)
    assert found.where == "beyond"
    assert found.position == pytest.approx(16 * GIB / 4 / (4096 * 18e3 * 8), rel=1e-9)  # ×7.28
    assert find_binding(batch, NETFLIX.__class__(1, 1, 1e9), NETFLIX).where == "measured"


def test_the_snapshot_process_uses_the_measured_law_and_the_former_snapshot_its_formula():
    coeffs = parse_coefficients(_doc({"snapshot": [_row(e, wall_s=1.0, cpu_s=1.0) for e in (1e4, 1e5, 1e6)]}))
    coeffs.laws = {"snapshot": {"peak_rss_mib": Law(100.0, 1e-3, 1.0)}}
    limits = {lim.name: lim for lim in design_limits(coeffs)}
    assert limits["snapshot_process"].source == "measured law"
    assert limits["snapshot_process"].need(NETFLIX) == pytest.approx((100 + 1e-3 * 1.4e11) * 1024**2)
    assert limits["reference_one_node"].need(NETFLIX) == pytest.approx(1.4e11 * 32 + 5e9 * 56)
    assert "snapshot_driver" not in limits and "snapshot_process" not in {lim.name for lim in design_limits(None)}
    former = next(lim for lim in design_limits(None, snapshot_collects=True) if lim.name == "snapshot_driver")
    assert former.need(NETFLIX) == pytest.approx(1.4e11 * 28 + (300e6 + 18e3) * 16)


def _law_rows(events: float) -> dict[str, float]:
    users, items = events / 10, 500.0
    return {
        "events_per_day": events,
        "users": users,
        "items": items,
        "wall_s": 5 + 2e-4 * events,
        "cpu_s": 3 + 1e-3 * events,
        "peak_rss_mib": 200 + 1e-4 * events,
        "bytes_written": 40.0 * events,
    }


@pytest.fixture
def coefficients_file(tmp_path):
    stages = {stage: [_law_rows(e) for e in (1e4, 1e5, 1e6, 1e7)] for stage in ("ingest", "score", "monitor")}
    path = tmp_path / "scale.json"
    path.write_text(json.dumps(_doc(stages)))
    return path


def test_cli_happy_path(coefficients_file, tmp_path, capsys):
    prices = tmp_path / "prices.json"
    prices.write_text(json.dumps({"core_hour": 1.0, "gb_month": 0.0}))
    assert capacity.main(["--coefficients", str(coefficients_file), "--prices", str(prices)]) == 0
    text = capsys.readouterr().out
    assert str(coefficients_file) in text and "EXTRAPOLATED" in text and "placeholder prices" in text
    assert "overall PASS" in text and "First design limit met:" in text
    assert capacity.main(["--coefficients", str(coefficients_file), "--prices", str(prices), "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["self_check"]["passed"] is True
    assert out["prices"]["core_hour"] == 1.0 and out["target"]["users"] == 300e6
    assert out["first_limit"]["name"] == out["limits"][0]["name"]
    money = {s["stage"]: s["money_per_day"] for s in out["stages"]}
    plans = {s["stage"]: s for s in out["stages"]}
    assert money["ingest"] == pytest.approx(plans["ingest"]["units"] * plans["ingest"]["wall_s"] / 3600)
    assert {law["events_per_day"][0] for law in out["laws"]["ingest"].values()} == {1e4}


def test_cli_exits_2_when_the_coefficients_are_missing(tmp_path, capsys):
    assert capacity.main(["--coefficients", str(tmp_path / "scale.json")]) == 2
    err = capsys.readouterr().err
    assert "not found" in err and "python -m benchmarks --only scale" in err


@pytest.mark.parametrize(
    ("doc", "message"),
    [
        ("{not json", "not JSON"),
        (json.dumps({"sizes": [], "stages": {}}), "missing key 'window_days'"),
        (json.dumps(_doc({"train": [{"events_per_day": 1, "users": 1, "items": 1, "wall_s": 1}]})), "stages.train[0]: missing cpu_s"),
        (json.dumps(_doc({"score": [_law_rows(1e4) | {"cpu_s": "fast"}]})), "stages.score[0].cpu_s: expected a number"),
        (json.dumps(_doc({"score": [_law_rows(1e4) | {"users": -1}]})), "stages.score[0].users: expected a number > 0"),
        (json.dumps(_doc({"scoring": [_law_rows(1e4)]})), "none of ingest"),
    ],
)  # fmt: skip
def test_cli_names_what_is_malformed(tmp_path, capsys, doc, message):
    path = tmp_path / "scale.json"
    path.write_text(doc)
    assert capacity.main(["--coefficients", str(path)]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: {path}: malformed coefficients") and message in err
