"""jobs.sim: the synthetic world is reproducible, realistic, and its knobs do what they say.

Every test writes a small world (300 users, 120 items, 3000 events a day) under ``tmp_path``
and asserts on the files, read back the way a consumer would read them.
"""

from __future__ import annotations

import csv
import io
import json
from collections import Counter
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from jobs.core.catalog import read_truth as load_truth
from jobs.sim import (
    COLUMNS,
    CORRUPTION_KINDS,
    COUNTRIES,
    DEFAULT_STRENGTH,
    DEVICES,
    DRIFT_KINDS,
    EVENT_TYPES,
    Scenario,
    WorldParams,
    generate,
    generate_day,
    write_day,
)

pytestmark = pytest.mark.unit

USERS, ITEMS, EVENTS = 300, 120, 3000
D1 = date(2026, 1, 1)
REQUIRED = ("event_id", "user_id", "item_id", "event_type", "ts", "device", "country")


def day(i: int) -> date:
    """The i-th day of the test world (1-based)."""
    return D1 + timedelta(days=i - 1)


def params(*scenarios: Scenario, **kw) -> WorldParams:
    kw = {"users": USERS, "items": ITEMS, "events_per_day": EVENTS, **kw}
    return WorldParams(scenarios=tuple(scenarios), **kw)


def run(
    root: Path, p: WorldParams, days: int = 1, start: date = D1, fmt: str = "jsonl", rows_per_file: int = 1_000_000
) -> list[dict]:
    return generate(p, start, days, str(root / "landing"), str(root / "truth"), fmt, rows_per_file)


def day_dir(root: Path, d: date) -> Path:
    return root / "landing" / f"dt={d.isoformat()}"


def data_files(root: Path, d: date) -> list[Path]:
    return sorted(p for p in day_dir(root, d).iterdir() if p.name.startswith("part-"))


def marker(root: Path, d: date) -> dict:
    return json.loads((day_dir(root, d) / "_SUCCESS").read_text())


def tree_bytes(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def read_jsonl(root: Path, d: date) -> tuple[list[dict], list[bytes]]:
    """Parsed rows and the raw lines that are not valid JSON."""
    rows, bad = [], []
    for path in data_files(root, d):
        for line in path.read_bytes().splitlines():
            try:
                rows.append(json.loads(line))
            except ValueError:
                bad.append(line)
    return rows, bad


def read_csv(root: Path, d: date) -> tuple[list[str], list[dict], list[str]]:
    """Header, rows, and the lines that do not parse as one record of the header's width."""
    header: list[str] = []
    rows, bad = [], []
    for path in data_files(root, d):
        lines = path.read_text().splitlines()
        if not lines:
            continue
        header = next(csv.reader([lines[0]]))
        for line in lines[1:]:
            try:
                fields = next(csv.reader([line], strict=True))
            except csv.Error:
                bad.append(line)
                continue
            if len(fields) != len(header):
                bad.append(line)
            else:
                rows.append(dict(zip(header, fields, strict=True)))
    return header, rows, bad


def frame(root: Path, d: date) -> pd.DataFrame:
    rows, bad = read_jsonl(root, d)
    assert not bad
    return pd.DataFrame(rows, columns=list(COLUMNS))


def parse_ts(text: str) -> datetime:
    return datetime.strptime(text, "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=UTC)


def day_bounds(d: date) -> tuple[datetime, datetime]:
    start = datetime(d.year, d.month, d.day, tzinfo=UTC)
    return start, start + timedelta(days=1)


def is_int(value) -> bool:
    if isinstance(value, bool):
        return False
    if isinstance(value, int):
        return True
    try:
        int(value)
    except (TypeError, ValueError):
        return False
    return True


def is_number_or_null(value) -> bool:
    if value is None or value == "" or isinstance(value, int | float):
        return True
    try:
        float(value)
    except (TypeError, ValueError):
        return False
    return True


def without_seconds(manifest: dict) -> dict:
    return {k: v for k, v in manifest.items() if k != "seconds"}


@pytest.fixture(scope="module")
def base_world(tmp_path_factory) -> Path:
    """Three clean JSON-lines days of the default small world."""
    root = tmp_path_factory.mktemp("base")
    run(root, params(), days=3)
    return root


# --- reproducibility and publishing -------------------------------------------------------


def test_same_arguments_give_byte_identical_files_in_another_folder(tmp_path):
    p = params(
        Scenario("taste_shift", day(2), 0.5),
        Scenario("null_required", day(2), 0.05),
        Scenario("malformed_lines", day(3), 0.02),
    )
    manifests_a = run(tmp_path / "a", p, days=3)
    manifests_b = run(tmp_path / "b", p, days=3)
    files_a, files_b = tree_bytes(tmp_path / "a"), tree_bytes(tmp_path / "b")
    assert files_a.keys() == files_b.keys()
    assert "landing/dt=2026-01-02/_SUCCESS" in files_a
    assert "truth/dt=2026-01-03/truth.npz" in files_a
    assert "truth/scenarios.json" in files_a
    for name in files_a:
        assert files_a[name] == files_b[name], name
    assert [without_seconds(m) for m in manifests_a] == [without_seconds(m) for m in manifests_b]


def test_a_day_does_not_depend_on_the_other_days_generated(tmp_path):
    p = params(Scenario("catalog_launch", day(2), 0.2), Scenario("device_mix", day(3), 0.5))
    run(tmp_path / "all", p, days=3)
    run(tmp_path / "one", p, days=1, start=day(3))
    assert tree_bytes(day_dir(tmp_path / "all", day(3))) == tree_bytes(day_dir(tmp_path / "one", day(3)))
    truth_all, truth_one = (
        load_truth(str(tmp_path / "all" / "truth"), day(3)),
        load_truth(str(tmp_path / "one" / "truth"), "2026-01-03"),
    )
    for key in truth_all:
        np.testing.assert_array_equal(truth_all[key], truth_one[key])
    assert not day_dir(tmp_path / "one", day(1)).exists()


def test_a_different_seed_gives_different_data(tmp_path):
    run(tmp_path / "a", params(seed=7))
    run(tmp_path / "b", params(seed=8))
    a, b = frame(tmp_path / "a", D1), frame(tmp_path / "b", D1)
    assert len(a) == len(b)  # same size of world...
    assert not set(a.event_id) & set(b.event_id)  # ...but other events
    assert not np.array_equal(a.user_id.to_numpy(), b.user_id.to_numpy())
    ta, tb = load_truth(str(tmp_path / "a" / "truth"), D1), load_truth(str(tmp_path / "b" / "truth"), D1)
    assert not np.allclose(ta["user_factors"], tb["user_factors"])


def test_different_days_carry_different_events(base_world):
    ids = [set(frame(base_world, day(i)).event_id) for i in (1, 2, 3)]
    assert not ids[0] & ids[1]
    assert not ids[1] & ids[2]


def test_second_run_replaces_the_day(tmp_path):
    p = params()
    run(tmp_path, p, days=2, rows_per_file=1000)
    assert [f.name for f in data_files(tmp_path, D1)] == [f"part-0000{i}.jsonl" for i in range(4)]
    first = tree_bytes(tmp_path / "landing")
    run(tmp_path, p, days=2, rows_per_file=1000)
    assert tree_bytes(tmp_path / "landing") == first  # same arguments: same bytes, nothing added
    manifests = run(tmp_path, p, days=2)  # fewer, larger files: the old shards must go
    for m in manifests:
        d = date.fromisoformat(m["day"])
        assert [f.name for f in data_files(tmp_path, d)] == ["part-00000.jsonl"]
        rows = frame(tmp_path, d)
        assert len(rows) == m["rows_written"] == m["clean_rows"]
        assert rows.event_id.duplicated().sum() == m["duplicates"]
    names = sorted(p.name for p in (tmp_path / "landing").iterdir())
    assert names == ["dt=2026-01-01", "dt=2026-01-02"]  # no .staging-/.trash- leftovers
    assert not [p for p in (tmp_path / "truth").rglob("*") if p.name.startswith(".")]


def test_manifest_is_published_as_the_success_marker(tmp_path):
    (m,) = run(tmp_path, params(), rows_per_file=1000)
    assert marker(tmp_path, D1) == without_seconds(m)
    assert m["seconds"] >= 0
    assert m == {**marker(tmp_path, D1), "seconds": m["seconds"]}
    assert m["files"] == [f.name for f in data_files(tmp_path, D1)]
    assert m["format"] == "jsonl"
    assert m["corruptions"] == {}


# --- the shape of the data ----------------------------------------------------------------


def test_jsonl_rows_have_the_nine_columns_and_valid_values(base_world):
    for d in (day(1), day(2)):
        rows, bad = read_jsonl(base_world, d)
        assert not bad
        assert len(rows) == marker(base_world, d)["rows_written"] == EVENTS + round(EVENTS * 0.003)
        lo, hi = day_bounds(d)
        stamps = []
        for row in rows:
            assert tuple(row) == COLUMNS
            assert isinstance(row["event_id"], str)
            assert len(row["event_id"]) == 16
            int(row["event_id"], 16)
            assert 0 <= row["user_id"] < USERS
            assert 0 <= row["item_id"] < ITEMS
            assert row["event_type"] in EVENT_TYPES
            assert row["device"] in DEVICES
            assert row["country"] in COUNTRIES
            ts = parse_ts(row["ts"])
            assert lo <= ts < hi
            stamps.append(ts)
            if row["event_type"] == "play":
                assert isinstance(row["watch_seconds"], int | float)
                assert 1.0 <= row["watch_seconds"] <= 14400.0
            else:
                assert row["watch_seconds"] is None
            if row["event_type"] == "rating":
                assert isinstance(row["rating"], int)
                assert 1 <= row["rating"] <= 5
            else:
                assert row["rating"] is None
        assert stamps == sorted(stamps)  # delivered in time order
        types = Counter(r["event_type"] for r in rows)
        assert set(types) == set(EVENT_TYPES)
        assert 0.25 < types["impression"] / len(rows) < 0.35
        # the day is covered, with a diurnal shape: the busiest hour is well above the quietest
        hours = Counter(t.hour for t in stamps)
        assert len(hours) == 24
        assert max(hours.values()) > 3 * min(hours.values())


def test_ratings_and_watch_time_spread_over_their_range(base_world):
    df = frame(base_world, D1)
    ratings = df.rating.dropna().astype(int)
    assert set(ratings) == {1, 2, 3, 4, 5}
    watch = df.watch_seconds.dropna()
    assert watch.nunique() > 100
    assert 300 < watch.median() < 3000


def test_about_three_per_mille_of_events_are_identical_redeliveries(base_world):
    df = frame(base_world, D1)
    dup_ids = df.event_id[df.event_id.duplicated()]
    assert len(dup_ids) == marker(base_world, D1)["duplicates"] == round(EVENTS * 0.003)
    assert 0.002 < len(dup_ids) / len(df) < 0.004
    groups = df[df.event_id.isin(dup_ids)].groupby("event_id")
    assert (groups.size() == 2).all()
    for _, group in groups:
        assert group.iloc[0].equals(group.iloc[1])  # identical rows, ts included
    # outside the redeliveries ids are unique
    assert df.event_id.nunique() == len(df) - len(dup_ids)


def test_popularity_follows_a_power_law(base_world):
    df = pd.concat([frame(base_world, day(i)) for i in (1, 2, 3)])
    counts = df.item_id.value_counts().to_numpy()  # sorted, most popular first
    top = counts[: ITEMS // 10].sum() / len(df)
    assert top > 0.35, top  # a uniform catalogue would give 0.10
    assert counts[0] > 20 * np.median(counts)
    # the ranking follows the true item bias
    truth = load_truth(str(base_world / "truth"), D1)
    by_bias = np.argsort(-truth["item_bias"])[: ITEMS // 10]
    assert df.item_id.isin(by_bias).mean() > 0.35
    # both engaged events and impressions are popularity-driven
    for part in (df[df.event_type == "impression"], df[df.event_type != "impression"]):
        assert part.item_id.isin(by_bias).mean() > 0.3


def test_personal_taste_drives_engagement(base_world):
    df = frame(base_world, D1)
    truth = load_truth(str(base_world / "truth"), D1)
    u, v = truth["user_factors"], truth["item_factors"]
    eng = df[df.event_type != "impression"]
    chosen = np.einsum("ij,ij->i", u[eng.user_id], v[eng.item_id])
    rng = np.random.default_rng(0)
    random_items = np.einsum("ij,ij->i", u[eng.user_id], v[rng.integers(0, ITEMS, len(eng))])
    # same items, same popularity, but handed to other users: taste no longer matches
    shuffled = np.einsum("ij,ij->i", u[eng.user_id], v[rng.permutation(eng.item_id.to_numpy())])
    assert chosen.mean() > random_items.mean() + 0.2
    assert chosen.mean() > shuffled.mean() + 0.2
    # impressions are drawn by popularity only: no taste signal
    imp = df[df.event_type == "impression"]
    assert abs(np.einsum("ij,ij->i", u[imp.user_id], v[imp.item_id]).mean()) < 0.1
    # ratings grow with the true affinity
    rated = eng[eng.event_type == "rating"]
    affinity = np.einsum("ij,ij->i", u[rated.user_id], v[rated.item_id])
    assert affinity[rated.rating.to_numpy() >= 4].mean() > affinity[rated.rating.to_numpy() <= 2].mean()
    assert np.corrcoef(affinity, rated.rating.astype(float))[0, 1] > 0.1


def test_user_activity_is_skewed(base_world):
    df = pd.concat([frame(base_world, day(i)) for i in (1, 2, 3)])
    per_user = df.user_id.value_counts().to_numpy()
    assert per_user[: USERS // 10].sum() / len(df) > 0.25  # top 10% of users: > 2.5x their share
    assert per_user[0] > 8 * np.median(per_user)
    # each user keeps a home country
    assert (df.groupby("user_id").country.nunique() == 1).all()
    # and mostly one device
    own = df.groupby("user_id").device.agg(lambda s: s.value_counts(normalize=True).iloc[0])
    assert own.mean() > 0.75


def test_csv_carries_the_same_events_as_jsonl(tmp_path, base_world):
    (m,) = run(tmp_path, params(), fmt="csv", rows_per_file=2000)
    assert m["format"] == "csv"
    assert m["files"] == ["part-00000.csv", "part-00001.csv"]
    header, rows, bad = read_csv(tmp_path, D1)
    assert tuple(header) == COLUMNS
    assert not bad
    assert len(rows) == m["rows_written"]
    ref = frame(base_world, D1)
    got = pd.DataFrame(rows)
    for col in ("event_id", "event_type", "ts", "device", "country"):
        assert got[col].tolist() == ref[col].tolist(), col
    for col in ("user_id", "item_id"):
        assert got[col].astype(int).tolist() == ref[col].tolist(), col
    watch = pd.to_numeric(got.watch_seconds.replace("", None))
    np.testing.assert_allclose(watch.to_numpy(dtype=float), ref.watch_seconds.to_numpy(dtype=float), equal_nan=True)
    assert got.rating.tolist() == ["" if pd.isna(r) else str(int(r)) for r in ref.rating]
    # pandas reads it back with the same columns too
    parsed = pd.read_csv(io.BytesIO(data_files(tmp_path, D1)[0].read_bytes()))
    assert tuple(parsed.columns) == COLUMNS


def test_generate_day_matches_the_published_file(base_world):
    table, state = generate_day(params(), D1)
    assert table.column_names == list(COLUMNS)
    assert table.num_rows == marker(base_world, D1)["clean_rows"]
    assert table.column("event_id").to_pylist() == frame(base_world, D1).event_id.tolist()
    truth = load_truth(str(base_world / "truth"), D1)
    np.testing.assert_array_equal(truth["user_factors"], state.user_factors)
    np.testing.assert_array_equal(truth["item_bias"], state.item_bias)
    assert float(truth["beta"]) == params().beta


def test_zero_events_per_day_publishes_an_empty_day(tmp_path):
    (m,) = run(tmp_path, params(events_per_day=0))
    assert m["rows_written"] == 0
    assert [f.stat().st_size for f in data_files(tmp_path, D1)] == [0]


# --- drift --------------------------------------------------------------------------------


def _drift_run(tmp_path: Path, kind: str, strength: float | None = None) -> tuple[Path, Path]:
    """A 4-day world with ``kind`` from day 3 on, beside the same world without it."""
    text = f"{kind}@{day(3).isoformat()}" + (f":{strength}" if strength is not None else "")
    sc = Scenario.parse(text, DRIFT_KINDS)
    assert sc == Scenario(kind, day(3), DEFAULT_STRENGTH[kind] if strength is None else strength)
    run(tmp_path / "drift", params(sc), days=4)
    run(tmp_path / "clean", params(), days=4)
    drifted, clean = tmp_path / "drift", tmp_path / "clean"
    for i in (1, 2):  # before the day: untouched
        assert tree_bytes(day_dir(drifted, day(i))) == tree_bytes(day_dir(clean, day(i)))
    for i in (3, 4):  # from the day on: changed
        assert [p.read_bytes() for p in data_files(drifted, day(i))] != [
            p.read_bytes() for p in data_files(clean, day(i))
        ]
        assert marker(drifted, day(i))["corruptions"] == {}
    log = json.loads((drifted / "truth" / "scenarios.json").read_text())
    assert log["scenarios"] == [{"kind": kind, "day": "2026-01-03", "strength": sc.strength, "category": "drift"}]
    return drifted, clean


def _aff(truth: dict, df: pd.DataFrame) -> float:
    eng = df[df.event_type != "impression"]
    return float(np.einsum("ij,ij->i", truth["user_factors"][eng.user_id], truth["item_factors"][eng.item_id]).mean())


def test_taste_shift_changes_user_factors_from_its_day(tmp_path):
    drifted, _ = _drift_run(tmp_path, "taste_shift")
    truth = {i: load_truth(str(drifted / "truth"), day(i)) for i in (1, 2, 3, 4)}
    np.testing.assert_array_equal(truth[1]["user_factors"], truth[2]["user_factors"])
    assert not np.allclose(truth[2]["user_factors"], truth[3]["user_factors"])
    np.testing.assert_array_equal(truth[3]["user_factors"], truth[4]["user_factors"])  # a shift, then stable
    np.testing.assert_array_equal(truth[2]["item_factors"], truth[3]["item_factors"])  # items untouched
    np.testing.assert_array_equal(truth[2]["item_bias"], truth[3]["item_bias"])
    # new events follow the new taste and much less the old one
    old = truth[2]
    before = _aff(old, frame(drifted, day(2)))
    after_old = _aff(old, frame(drifted, day(3)))
    after_new = _aff(truth[3], frame(drifted, day(3)))
    assert after_old < 0.7 * before, (before, after_old)
    assert after_new > before * 0.8
    assert after_new > after_old + 0.1
    # users keep about the same scale of factors
    ratio = np.linalg.norm(truth[3]["user_factors"]) / np.linalg.norm(old["user_factors"])
    assert 0.8 < ratio < 1.2


def test_catalog_launch_adds_items_from_its_day(tmp_path):
    drifted, _ = _drift_run(tmp_path, "catalog_launch", 0.1)
    n_new = round(0.1 * ITEMS)
    for i in (1, 2):
        assert frame(drifted, day(i)).item_id.max() < ITEMS
        assert load_truth(str(drifted / "truth"), day(i))["item_factors"].shape == (ITEMS, 8)
    for i in (3, 4):
        df = frame(drifted, day(i))
        new = df.item_id[df.item_id >= ITEMS]
        assert new.max() < ITEMS + n_new
        assert new.nunique() > n_new // 2
        assert len(new) / len(df) > 0.1  # launches are promoted
        truth = load_truth(str(drifted / "truth"), day(i))
        assert truth["item_factors"].shape == (ITEMS + n_new, 8)
        assert truth["item_bias"].shape == (ITEMS + n_new,)
    np.testing.assert_array_equal(
        load_truth(str(drifted / "truth"), day(2))["item_factors"],
        load_truth(str(drifted / "truth"), day(3))["item_factors"][:ITEMS],
    )


def test_popularity_collapse_demotes_the_top_items_from_its_day(tmp_path):
    drifted, _ = _drift_run(tmp_path, "popularity_collapse")
    before_truth = load_truth(str(drifted / "truth"), day(2))
    top = np.argsort(-before_truth["item_bias"])[: ITEMS // 20]
    share = {i: frame(drifted, day(i)).item_id.isin(top).mean() for i in (1, 2, 3, 4)}
    assert share[1] > 0.2
    assert share[2] > 0.2
    assert share[3] < share[2] / 3, share
    assert share[4] < share[2] / 3, share
    after_truth = load_truth(str(drifted / "truth"), day(3))
    np.testing.assert_allclose(after_truth["item_bias"][top], before_truth["item_bias"][top] - 3.0)
    others = np.setdiff1d(np.arange(ITEMS), top)
    np.testing.assert_array_equal(after_truth["item_bias"][others], before_truth["item_bias"][others])


def test_device_mix_moves_users_to_mobile_from_its_day(tmp_path):
    drifted, _ = _drift_run(tmp_path, "device_mix")
    mobile = {i: (frame(drifted, day(i)).device == "mobile").mean() for i in (1, 2, 3, 4)}
    assert mobile[1] < 0.5
    assert mobile[2] < 0.5
    assert mobile[3] > 0.7, mobile
    assert mobile[4] > 0.7, mobile
    assert mobile[3] - mobile[2] > 0.3
    # only the device moves: who watches what stays the same world
    np.testing.assert_array_equal(
        load_truth(str(drifted / "truth"), day(2))["user_factors"],
        load_truth(str(drifted / "truth"), day(3))["user_factors"],
    )


def test_drift_strength_scales_the_effect(tmp_path):
    run(tmp_path / "weak", params(Scenario("device_mix", D1, 0.2)))
    run(tmp_path / "strong", params(Scenario("device_mix", D1, 0.9)))
    weak = (frame(tmp_path / "weak", D1).device == "mobile").mean()
    strong = (frame(tmp_path / "strong", D1).device == "mobile").mean()
    assert strong > weak + 0.3


def test_drifts_stack_in_date_order(tmp_path):
    p = params(Scenario("catalog_launch", day(2), 0.1), Scenario("popularity_collapse", day(3), 3.0))
    run(tmp_path, p, days=3)
    truth = {i: load_truth(str(tmp_path / "truth"), day(i)) for i in (2, 3)}
    assert truth[2]["item_bias"].shape == truth[3]["item_bias"].shape == (ITEMS + 12,)
    # the collapse hits the top 5% of the catalogue in force, launched items included
    top = np.argsort(-truth[2]["item_bias"])[: len(truth[2]["item_bias"]) // 20]
    assert (top >= ITEMS).sum() >= 3
    np.testing.assert_allclose(truth[3]["item_bias"][top], truth[2]["item_bias"][top] - 3.0)
    assert frame(tmp_path, day(3)).item_id.isin(top).mean() < frame(tmp_path, day(2)).item_id.isin(top).mean() / 3


# --- corruption ---------------------------------------------------------------------------


def _corrupt_run(
    root: Path, kind: str, fmt: str = "jsonl", strength: float | None = None, rows_per_file: int = 1_000_000
) -> dict:
    """Day 2 of a 3-day world corrupted with ``kind``; days 1 and 3 must stay clean."""
    text = f"{kind}@{day(2).isoformat()}" + (f":{strength}" if strength is not None else "")
    sc = Scenario.parse(text, CORRUPTION_KINDS)
    manifests = run(root, params(sc), days=3, fmt=fmt, rows_per_file=rows_per_file)
    clean = root.parent / f"{root.name}-clean"
    run(clean, params(), days=3, fmt=fmt, rows_per_file=rows_per_file)
    for i in (1, 3):
        assert tree_bytes(day_dir(root, day(i))) == tree_bytes(day_dir(clean, day(i))), f"day {i} changed"
    m = manifests[1]
    assert m["day"] == "2026-01-02"
    assert set(m["corruptions"]) == {kind}
    assert m["clean_rows"] == manifests[0]["clean_rows"]  # corruption is applied after generation
    if kind != "missing_day":
        assert marker(root, day(2)) == without_seconds(m)
    log = json.loads((root / "truth" / "scenarios.json").read_text())
    assert log["scenarios"] == [{"kind": kind, "day": "2026-01-02", "strength": sc.strength, "category": "corruption"}]
    assert log["format"] == fmt
    return m


@pytest.mark.parametrize("fmt", ["jsonl", "csv"])
def test_malformed_lines_match_the_manifest(tmp_path, fmt):
    m = _corrupt_run(tmp_path / "w", "malformed_lines", fmt, 0.05, rows_per_file=2000)
    assert len(m["files"]) == 2
    expected = m["corruptions"]["malformed_lines"]
    assert expected == round(2000 * 0.05) + round((m["rows_written"] - 2000) * 0.05)
    if fmt == "jsonl":
        rows, bad = read_jsonl(tmp_path / "w", day(2))
    else:
        header, rows, bad = read_csv(tmp_path / "w", day(2))
        assert tuple(header) == COLUMNS
    assert len(bad) == expected
    assert len(rows) + len(bad) == m["rows_written"]
    assert all(tuple(r) == COLUMNS for r in rows)


@pytest.mark.parametrize("fmt", ["jsonl", "csv"])
def test_null_required_matches_the_manifest(tmp_path, fmt):
    m = _corrupt_run(tmp_path / "w", "null_required", fmt)
    expected = m["corruptions"]["null_required"]
    assert expected == round(m["rows_written"] * DEFAULT_STRENGTH["null_required"])
    if fmt == "jsonl":
        rows, bad = read_jsonl(tmp_path / "w", day(2))
    else:
        _, rows, bad = read_csv(tmp_path / "w", day(2))
    assert not bad
    assert len(rows) == m["rows_written"]
    nulls = [sum(r[c] in (None, "") for c in REQUIRED) for r in rows]
    assert sum(n > 0 for n in nulls) == expected
    assert max(nulls) == 1  # one required field per affected row
    hit = Counter(c for r in rows for c in REQUIRED if r[c] in (None, ""))
    assert len(hit) >= 4  # spread over the required columns


@pytest.mark.parametrize("fmt", ["jsonl", "csv"])
def test_wrong_types_match_the_manifest(tmp_path, fmt):
    m = _corrupt_run(tmp_path / "w", "wrong_types", fmt)
    expected = m["corruptions"]["wrong_types"]
    assert expected > 0
    if fmt == "jsonl":
        rows, _ = read_jsonl(tmp_path / "w", day(2))
    else:
        _, rows, _ = read_csv(tmp_path / "w", day(2))
    bad_user = [r for r in rows if not is_int(r["user_id"])]
    bad_watch = [r for r in rows if not is_number_or_null(r["watch_seconds"])]
    assert len(bad_user) + len(bad_watch) == expected
    assert len(bad_user) == expected - expected // 2
    assert len(bad_watch) == expected // 2
    assert all(str(r["user_id"]).startswith("user-") for r in bad_user)
    assert {r["watch_seconds"] for r in bad_watch} == {"n/a"}


@pytest.mark.parametrize("fmt", ["jsonl", "csv"])
def test_future_timestamps_match_the_manifest(tmp_path, fmt):
    m = _corrupt_run(tmp_path / "w", "future_timestamps", fmt)
    if fmt == "jsonl":
        rows, _ = read_jsonl(tmp_path / "w", day(2))
    else:
        _, rows, _ = read_csv(tmp_path / "w", day(2))
    lo, hi = day_bounds(day(2))
    stamps = [parse_ts(r["ts"]) for r in rows]
    future = [t for t in stamps if t >= hi]
    assert len(future) == m["corruptions"]["future_timestamps"] > 0
    assert all(day_bounds(day(5))[0] <= t < day_bounds(day(5))[1] for t in future)  # shifted by 3 days
    assert all(lo <= t < hi for t in stamps if t < hi)


@pytest.mark.parametrize("fmt", ["jsonl", "csv"])
def test_unknown_event_types_match_the_manifest(tmp_path, fmt):
    m = _corrupt_run(tmp_path / "w", "unknown_event_type", fmt)
    if fmt == "jsonl":
        rows, _ = read_jsonl(tmp_path / "w", day(2))
    else:
        _, rows, _ = read_csv(tmp_path / "w", day(2))
    unknown = [r["event_type"] for r in rows if r["event_type"] not in EVENT_TYPES]
    assert len(unknown) == m["corruptions"]["unknown_event_type"] > 0
    assert set(unknown) <= {"purchase", "PLAY?", "share"}


@pytest.mark.parametrize("fmt", ["jsonl", "csv"])
def test_renamed_column_matches_the_manifest(tmp_path, fmt):
    m = _corrupt_run(tmp_path / "w", "renamed_column", fmt)
    assert m["corruptions"]["renamed_column"] == m["rows_written"]
    if fmt == "jsonl":
        rows, _ = read_jsonl(tmp_path / "w", day(2))
        assert all("userId" in r and "user_id" not in r for r in rows)
    else:
        header, rows, _ = read_csv(tmp_path / "w", day(2))
        assert "userId" in header
        assert "user_id" not in header
        assert header == [("userId" if c == "user_id" else c) for c in COLUMNS]
    assert len(rows) == m["rows_written"]


@pytest.mark.parametrize("fmt", ["jsonl", "csv"])
def test_dropped_column_matches_the_manifest(tmp_path, fmt):
    m = _corrupt_run(tmp_path / "w", "dropped_column", fmt)
    assert m["corruptions"]["dropped_column"] == m["rows_written"]
    if fmt == "jsonl":
        rows, _ = read_jsonl(tmp_path / "w", day(2))
    else:
        header, rows, _ = read_csv(tmp_path / "w", day(2))
        assert "device" not in header
    assert len(rows) == m["rows_written"]
    assert all(tuple(r) == tuple(c for c in COLUMNS if c != "device") for r in rows)


def test_empty_file_matches_the_manifest(tmp_path):
    m = _corrupt_run(tmp_path / "w", "empty_file", rows_per_file=2000)
    assert m["corruptions"]["empty_file"] == 0
    files = data_files(tmp_path / "w", day(2))
    assert [f.name for f in files] == m["files"] == ["part-00000.jsonl", "part-00001.jsonl", "part-00002.jsonl"]
    assert [f.stat().st_size == 0 for f in files] == [False, False, True]
    rows, bad = read_jsonl(tmp_path / "w", day(2))
    assert len(rows) == m["rows_written"] == m["clean_rows"]
    assert not bad


@pytest.mark.parametrize("fmt", ["jsonl", "csv"])
def test_empty_day_matches_the_manifest(tmp_path, fmt):
    m = _corrupt_run(tmp_path / "w", "empty_day", fmt)
    assert m["rows_written"] == 0
    assert m["corruptions"]["empty_day"] == m["clean_rows"] > 0
    files = data_files(tmp_path / "w", day(2))
    assert [f.name for f in files] == m["files"] == [f"part-00000.{fmt}"]
    assert all(f.stat().st_size == 0 for f in files)
    assert (day_dir(tmp_path / "w", day(2)) / "_SUCCESS").is_file()  # published, just empty


def test_missing_day_matches_the_manifest(tmp_path):
    root = tmp_path / "w"
    m = _corrupt_run(root, "missing_day")
    assert m["files"] == []
    assert m["corruptions"]["missing_day"] == m["clean_rows"]
    assert "rows_written" not in m
    assert not day_dir(root, day(2)).exists()
    assert day_dir(root, day(1)).is_dir()
    assert day_dir(root, day(3)).is_dir()
    assert load_truth(str(root / "truth"), day(2))["user_factors"].shape == (USERS, 8)  # the truth still exists
    assert sorted(p.name for p in (root / "landing").iterdir()) == ["dt=2026-01-01", "dt=2026-01-03"]


def test_missing_day_removes_a_previously_published_day(tmp_path):
    run(tmp_path, params(), days=2)
    assert day_dir(tmp_path, day(2)).is_dir()
    run(tmp_path, params(Scenario("missing_day", day(2))), days=2)
    assert not day_dir(tmp_path, day(2)).exists()
    assert day_dir(tmp_path, day(1)).is_dir()


def test_volume_drop_delivers_a_tenth_of_the_day(tmp_path):
    m = _corrupt_run(tmp_path / "w", "volume_drop")
    rows, bad = read_jsonl(tmp_path / "w", day(2))
    assert len(rows) == m["rows_written"] == round(m["clean_rows"] / 10) and not bad
    assert m["corruptions"]["volume_drop"] == m["clean_rows"] - m["rows_written"]
    assert len({r["event_id"] for r in rows}) > 0.99 * len(rows)  # a sample of the day, not one hour of it
    assert len({r["ts"][11:13] for r in rows}) >= 20


def test_volume_surge_delivers_ten_times_the_day_and_leaves_other_days(tmp_path):
    p = params(Scenario.parse(f"volume_surge@{day(2).isoformat()}", CORRUPTION_KINDS))
    clean, surged = run(tmp_path / "c", params(), days=3), run(tmp_path / "w", p, days=3)
    assert surged[1]["corruptions"] == {"volume_surge": 9 * EVENTS}
    assert surged[1]["rows_written"] == surged[1]["clean_rows"] > 9.9 * clean[1]["clean_rows"]
    for i in (1, 3):
        assert tree_bytes(day_dir(tmp_path / "w", day(i))) == tree_bytes(day_dir(tmp_path / "c", day(i)))
    with pytest.raises(ValueError, match="factor and must be at least 1"):
        Scenario.parse(f"volume_drop@{day(2).isoformat()}:0.5", CORRUPTION_KINDS)


def test_corruption_fraction_is_respected(tmp_path):
    m = _corrupt_run(tmp_path / "w", "unknown_event_type", strength=0.2)
    assert m["corruptions"]["unknown_event_type"] == round(0.2 * m["rows_written"])


def test_several_corruptions_on_one_day_are_each_counted(tmp_path):
    p = params(
        Scenario("unknown_event_type", D1, 0.05), Scenario("future_timestamps", D1, 0.02), Scenario("empty_file", D1)
    )
    (m,) = run(tmp_path, p)
    assert set(m["corruptions"]) == {"unknown_event_type", "future_timestamps", "empty_file"}
    rows, _ = read_jsonl(tmp_path, D1)
    assert sum(r["event_type"] not in EVENT_TYPES for r in rows) == m["corruptions"]["unknown_event_type"]
    assert sum(parse_ts(r["ts"]) >= day_bounds(D1)[1] for r in rows) == m["corruptions"]["future_timestamps"]
    assert data_files(tmp_path, D1)[-1].stat().st_size == 0


def test_write_day_returns_what_it_publishes(tmp_path):
    p = params(Scenario("null_required", D1, 0.1))
    m = write_day(p, D1, str(tmp_path / "landing"), str(tmp_path / "truth"), "csv", 1000)
    assert marker(tmp_path, D1) == without_seconds(m)
    assert m["corruptions"] == {"null_required": round(0.1 * m["rows_written"])}
    assert m["files"] == [f"part-0000{i}.csv" for i in range(4)]
    assert (tmp_path / "truth" / "dt=2026-01-01" / "truth.npz").is_file()
    assert not (tmp_path / "truth" / "scenarios.json").exists()  # the log is written by generate()


def test_scenario_log_lists_every_scenario_and_the_world(tmp_path):
    scenarios = (
        Scenario("taste_shift", day(2), 0.5),
        Scenario("device_mix", day(3)),
        Scenario("malformed_lines", day(1), 0.01),
        Scenario("missing_day", day(3)),
    )
    run(tmp_path, params(*scenarios, seed=11), days=3, fmt="csv")
    log = json.loads((tmp_path / "truth" / "scenarios.json").read_text())
    assert log["format"] == "csv"
    assert log["params"]["seed"] == 11
    assert log["params"]["users"] == USERS
    assert log["params"]["items"] == ITEMS
    assert log["scenarios"] == [s.to_json() for s in scenarios]
    assert [(s["kind"], s["day"], s["category"]) for s in log["scenarios"]] == [
        ("taste_shift", "2026-01-02", "drift"),
        ("device_mix", "2026-01-03", "drift"),
        ("malformed_lines", "2026-01-01", "corruption"),
        ("missing_day", "2026-01-03", "corruption"),
    ]


# --- scenario parsing and the CLI ---------------------------------------------------------


def test_scenario_parse():
    assert Scenario.parse("taste_shift@2026-01-05", DRIFT_KINDS) == Scenario("taste_shift", date(2026, 1, 5), 0.8)
    assert Scenario.parse("device_mix@2026-01-05:0.25", DRIFT_KINDS).strength == 0.25
    assert Scenario.parse("empty_day@2026-01-05", CORRUPTION_KINDS).strength is None
    assert Scenario.parse("popularity_collapse@2026-01-05:5", DRIFT_KINDS).strength == 5.0
    assert Scenario("device_mix", D1).category == "drift"
    assert Scenario("empty_day", D1).category == "corruption"


@pytest.mark.parametrize(
    ("text", "allowed", "message"),
    [
        ("taste_shift", DRIFT_KINDS, "expected KIND@YYYY-MM-DD"),
        ("taste_shift@2026-02-30", DRIFT_KINDS, "expected KIND@YYYY-MM-DD"),
        ("taste_shift@2026-01-02:lots", DRIFT_KINDS, "expected KIND@YYYY-MM-DD"),
        ("taste_drift@2026-01-02", DRIFT_KINDS, "unknown kind 'taste_drift'"),
        ("empty_day@2026-01-02", DRIFT_KINDS, "unknown kind 'empty_day'"),
        ("taste_shift@2026-01-02:1.5", DRIFT_KINDS, "at most 1"),
        ("malformed_lines@2026-01-02:2", CORRUPTION_KINDS, "at most 1"),
        ("null_required@2026-01-02:-0.1", CORRUPTION_KINDS, ">= 0"),
        ("popularity_collapse@2026-01-02:nan", DRIFT_KINDS, "finite"),
    ],
)
def test_scenario_parse_rejects_bad_text(text, allowed, message):
    with pytest.raises(ValueError, match="scenario") as err:
        Scenario.parse(text, allowed)
    assert message in str(err.value)
    assert repr(text) in str(err.value)


def test_scenario_objects_are_validated_too():
    with pytest.raises(ValueError, match="unknown kind 'bogus'"):
        Scenario("bogus", D1)
    with pytest.raises(ValueError, match="at most 1"):
        Scenario("device_mix", D1, 1.5)


def _cli(tmp_path: Path, *args: str) -> int:
    from jobs.sim.job import main

    return main(
        [
            "--landing",
            str(tmp_path / "landing"),
            "--truth",
            str(tmp_path / "truth"),
            "--users",
            "300",
            "--items",
            "120",
            *args,
        ]
    )


def test_cli_generates_days_with_scenarios(tmp_path, capsys):
    rc = _cli(
        tmp_path,
        "--start",
        "2026-01-01",
        "--days",
        "2",
        "--events-per-day",
        "3000",
        "--drift",
        "device_mix@2026-01-02",
        "--corrupt",
        "missing_day@2026-01-01",
        "--format",
        "csv",
        "--result-file",
        str(tmp_path / "result.json"),
    )
    assert rc == 0
    out = capsys.readouterr().out
    assert "2026-01-01: 0 rows" in out
    assert "missing_day" in out
    assert "2026-01-02: 3009 rows, 9 redelivered" in out
    assert not day_dir(tmp_path, day(1)).exists()
    header, rows, _ = read_csv(tmp_path, day(2))
    assert tuple(header) == COLUMNS
    assert sum(r["device"] == "mobile" for r in rows) / len(rows) > 0.7
    result = json.loads((tmp_path / "result.json").read_text())
    assert result["days"] == 2
    assert result["rows"] == 3009
    log = json.loads((tmp_path / "truth" / "scenarios.json").read_text())
    assert [s["kind"] for s in log["scenarios"]] == ["device_mix", "missing_day"]


def test_cli_output_matches_the_library(tmp_path):
    assert _cli(tmp_path / "cli", "--days", "1", "--events-per-day", "3000", "--seed", "7", "--factors", "8") == 0
    run(tmp_path / "lib", params())
    assert tree_bytes(day_dir(tmp_path / "cli", D1)) == tree_bytes(day_dir(tmp_path / "lib", D1))


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--drift", "taste_drift@2026-01-02"], "unknown kind 'taste_drift'"),
        (["--corrupt", "taste_shift@2026-01-02"], "unknown kind 'taste_shift'"),
        (["--drift", "taste_shift@2026-02-30"], "expected KIND@YYYY-MM-DD"),
        (["--corrupt", "malformed_lines@2026-01-02:1.5"], "at most 1"),
        (["--start", "2026-13-01"], "argument --start"),
        (["--days", "0"], "--days must be at least 1"),
        (["--users", "0"], "--users must be at least 1"),
        (["--events-per-day", "-1"], "--events-per-day must not be negative"),
        (["--format", "parquet"], "argument --format"),
    ],
)
def test_cli_rejects_bad_input_with_exit_code_2(tmp_path, capsys, args, message):
    try:  # argparse's own checks exit 2; the job's exit 2 through jobs.core.cli
        code = _cli(tmp_path, *args)
    except SystemExit as exc:
        code = exc.code
    assert code == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "landing").exists()
