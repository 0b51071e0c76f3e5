"""Batch scoring (``jobs.score``): the pure core, then the Spark job against a real MLflow server.

The world is built by hand so that the expected top-K is known exactly: two latent factors and
item biases drawn from small dyadic values (multiples of 1/2 and 1/4), so every score is exact
in float32 and equal scores are frequent — the tie rule (higher score first, equal scores by
smaller item id, also for the last slot) is exercised on many users. The reference ranking in
this file is a plain Python sort per user, independent of the torch code under test.

Days (curated partitions written in the ingest layout, with their ``_VALIDATION`` marker):
2026-01-01..03 = the model's training window (version tags ``window_start``/``window_end``), 01-04 validated
(its positives must be excluded), 01-05 published but FAILED validation (ignored), 01-06 = D.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from jobs.core import storage
from jobs.core.results import ScoreResult, problems
from jobs.core.schema import recommendations_schema
from jobs.score.core import Exclusions, ScoringModel, score_users
from jobs.score.job import plan_buckets

REPO = Path(__file__).resolve().parents[2]
D = date(2026, 1, 6)
WINDOW = ("2026-01-01", "2026-01-03")
POSITIVE = ("click", "play", "rating")
N_ITEMS = 12
ITEM_IDS = np.arange(100, 100 + N_ITEMS, dtype=np.int64)
KNOWN = np.arange(1, 301, dtype=np.int64)  # users in the model
UNKNOWN = np.arange(1000, 1010, dtype=np.int64)  # active on D, not in the model


# ---- a hand-made model and a reference ranking ---------------------------------------------


def make_arrays(seed: int, user_ids: np.ndarray = KNOWN, item_ids: np.ndarray = ITEM_IDS) -> dict[str, np.ndarray]:
    """Model arrays with dyadic values (exact float32 scores, many ties) and a seen CSR."""
    from jobs.core.model import CSR

    rng = np.random.default_rng(seed)
    n_u, n_i = len(user_ids), len(item_ids)
    seen_u = rng.integers(0, n_u, 3 * n_u)
    seen_i = rng.integers(0, n_i, 3 * n_u)
    seen = CSR.from_pairs(seen_u, seen_i, n_u, n_i)
    return {
        "user_factors": rng.choice([-1.0, -0.5, 0.0, 0.5, 1.0], size=(n_u, 2)).astype(np.float32),
        "item_factors": rng.choice([-1.0, -0.5, 0.0, 0.5, 1.0], size=(n_i, 2)).astype(np.float32),
        "item_bias": rng.choice([0.0, 0.25, 0.5], size=n_i).astype(np.float32),
        "user_ids": np.asarray(user_ids, dtype=np.int64),
        "item_ids": np.asarray(item_ids, dtype=np.int64),
        "popularity": rng.choice([0, 1, 2, 5, 5, 9], size=n_i).astype(np.int64),
        "seen_indptr": seen.indptr,
        "seen_indices": seen.indices,
        "default_k": np.array(5),
    }


def seen_sets(arrays: dict[str, np.ndarray]) -> dict[int, set[int]]:
    out: dict[int, set[int]] = {}
    ptr, idx = arrays["seen_indptr"], arrays["seen_indices"]
    for row, uid in enumerate(arrays["user_ids"]):
        out[int(uid)] = {int(arrays["item_ids"][j]) for j in idx[ptr[row] : ptr[row + 1]]}
    return out


def reference(
    arrays: dict[str, np.ndarray], users: list[int], extra: dict[int, set[int]], k: int
) -> list[tuple[int, int, int, float]]:
    """(user, rank, item, score) by a plain sort: score desc, item id asc; seen and extra excluded."""
    row_of = {int(u): r for r, u in enumerate(arrays["user_ids"])}
    seen = seen_sets(arrays)
    out = []
    for user in users:
        if user in row_of:
            p = arrays["user_factors"][row_of[user]].astype(np.float64)
            scores = arrays["item_factors"].astype(np.float64) @ p + arrays["item_bias"]
            banned = seen[user] | extra.get(user, set())
        else:
            scores = arrays["popularity"].astype(np.float64)
            banned = extra.get(user, set())
        ranked = sorted(
            ((float(s), int(i)) for s, i in zip(scores, arrays["item_ids"], strict=True) if int(i) not in banned),
            key=lambda x: (-x[0], x[1]),
        )
        out += [(user, r + 1, item, score) for r, (score, item) in enumerate(ranked[:k])]
    return out


def as_tuples(user_id, rank, item_id, score) -> list[tuple[int, int, int, float]]:
    return [(int(u), int(r), int(i), float(s)) for u, r, i, s in zip(user_id, rank, item_id, score, strict=True)]


# ---- the pure core ---------------------------------------------------------------------------


@pytest.mark.unit
def test_score_users_matches_the_reference_ranking_with_ties_exclusions_and_unknown_users():
    from jobs.core.model import Recommender

    arrays = make_arrays(seed=3)
    rec = Recommender(arrays)
    rng = np.random.default_rng(4)
    users = [*rng.permutation(KNOWN)[:200].tolist(), *UNKNOWN[:5].tolist()]
    extra = {u: set(rng.choice(ITEM_IDS, size=rng.integers(0, 4), replace=False).tolist()) for u in users}
    extra[int(UNKNOWN[0])] = {999_999}  # an id outside the catalogue is ignored
    lists = [sorted(extra[u]) for u in users]
    expected = reference(arrays, users, extra, k=4)
    for batch in (7, 4096):  # chunking must not change anything
        got = score_users(rec, users, lists, 4, batch_users=batch)
        assert as_tuples(got.user_id, got.rank, got.item_id, got.score) == expected
        assert got.users == len(users) and got.unknown_users == 5
    # the test is not vacuous: exclusions changed some top-4, and ties decided some slots
    unmasked = reference(arrays, users, {}, k=4)
    assert unmasked != expected
    by_user: dict[int, list[float]] = {}
    for u, _, _, s in expected:
        by_user.setdefault(u, []).append(s)
    assert sum(len(set(v)) < len(v) for v in by_user.values()) > 20


@pytest.mark.unit
def test_score_users_tie_rule_boundary_unsorted_catalogue_and_small_catalogue():
    from jobs.core.model import CSR, Recommender

    # Items stored in a non-id order: the rule is still "equal scores → smaller item id first".
    item_ids = np.array([105, 101, 104, 100, 103, 102], dtype=np.int64)
    seen = CSR.from_pairs(np.array([1, 2, 2, 2, 2, 2, 2]), np.array([0, 0, 1, 2, 3, 4, 5]), 3, 6)
    arrays = {
        "user_factors": np.zeros((3, 1), np.float32),
        "item_factors": np.zeros((6, 1), np.float32),
        # 105 and 101 tie at the top, 104/100/103 tie below, 102 last
        "item_bias": np.array([1.0, 1.0, 0.5, 0.5, 0.5, 0.0], np.float32),
        "user_ids": np.array([7, 8, 9], dtype=np.int64),
        "item_ids": item_ids,
        "popularity": np.array([2, 2, 2, 1, 1, 0], dtype=np.int64),
        "seen_indptr": seen.indptr,
        "seen_indices": seen.indices,
        "default_k": np.array(3),
    }
    rec = Recommender(arrays)
    got = score_users(rec, [7, 8, 9, 11], None, 3)
    rows = as_tuples(got.user_id, got.rank, got.item_id, got.score)
    assert rows == [
        (7, 1, 101, 1.0),
        (7, 2, 105, 1.0),
        (7, 3, 100, 0.5),  # a 3-way tie for the last slot goes to the smallest id
        (8, 1, 101, 1.0),  # 105 is seen by user 8
        (8, 2, 100, 0.5),
        (8, 3, 103, 0.5),
        # user 9 has seen everything: no row at all
        (11, 1, 101, 2.0),  # unknown: popularity, ties by id
        (11, 2, 104, 2.0),
        (11, 3, 105, 2.0),
    ]
    # K above the catalogue: everything eligible, in order
    got = score_users(ScoringModel(rec), [8], [[100]], 50)
    assert got.item_id.tolist() == [101, 103, 104, 102] and got.rank.tolist() == [1, 2, 3, 4]
    with pytest.raises(ValueError, match="k must be at least 1"):
        score_users(rec, [7], None, 0)
    with pytest.raises(ValueError, match="extra_seen has 1 rows for 2 users"):
        score_users(rec, [7, 8], [[1]], 2)


@pytest.mark.unit
def test_exclusions_from_arrow_handle_nulls_and_slices():
    arr = pa.array([[1, 2], None, [], [3], [4, 5, 6]], pa.list_(pa.int64()))
    ex = Exclusions.from_arrow(pa.concat_arrays([arr.slice(1, 3), arr.slice(4, 1)]))
    assert ex.offsets.tolist() == [0, 0, 0, 1, 4] and ex.values.tolist() == [3, 4, 5, 6]
    assert len(Exclusions.from_lists([None, [7], []])) == 3


@pytest.mark.unit
def test_plan_buckets_cuts_equal_user_ranges():
    users = np.arange(10, 110, dtype=np.int64)  # 100 users
    assert plan_buckets(users, k=10, rows_per_file=1000, parallelism=1).tolist() == []
    assert plan_buckets(users, k=10, rows_per_file=250, parallelism=1).tolist() == [35, 60, 85]
    assert plan_buckets(users, k=10, rows_per_file=400, parallelism=1).tolist() == [44, 78]
    assert plan_buckets(users, k=10, rows_per_file=400, parallelism=2).tolist() == [35, 60, 85]  # whole waves
    assert plan_buckets(np.zeros(0, dtype=np.int64), 10, 1000, 2).tolist() == []


# ---- a world on disk ---------------------------------------------------------------------------


@dataclass
class World:
    cfg: object
    arrays: dict[str, np.ndarray]
    positives: dict[str, dict[int, set[int]]] = field(default_factory=dict)  # day → user → items
    active: list[int] = field(default_factory=list)

    def extra(self, days: list[str]) -> dict[int, set[int]]:
        out: dict[int, set[int]] = {}
        for d in days:
            for u, items in self.positives.get(d, {}).items():
                out.setdefault(u, set()).update(items)
        return out


def write_curated_day(cfg, day: str, rows: list[tuple[int, int, str]], validated: bool = True) -> None:
    """A curated partition in the ingest layout (+ its validation marker)."""
    n = len(rows)
    start = datetime.fromisoformat(day).replace(tzinfo=UTC)
    table = pa.table(
        {
            "event_id": pa.array([f"{day}-{i}" for i in range(n)], pa.string()),
            "user_id": pa.array([r[0] for r in rows], pa.int64()),
            "item_id": pa.array([r[1] for r in rows], pa.int64()),
            "event_type": pa.array([r[2] for r in rows], pa.string()),
            "ts": pa.array([start + timedelta(seconds=i) for i in range(n)], pa.timestamp("us", tz="UTC")),
            "watch_seconds": pa.array([60.0 if r[2] == "play" else None for r in rows], pa.float64()),
            "rating": pa.array([4 if r[2] == "rating" else None for r in rows], pa.int32()),
            "device": pa.array(["tv"] * n, pa.string()),
            "country": pa.array(["DE"] * n, pa.string()),
        }
    )
    part = cfg.storage.partition("curated", day)
    with storage.staged_partition(part) as staging:
        pq.write_table(table, staging / "part-00000.parquet")
        storage.publish(staging, part, {"day": day, "rows": n, "files": ["part-00000.parquet"]})
    storage.write_json_atomic(storage.local_path(part) / "_VALIDATION", {"success": validated, "rows": n})


def build_days(cfg, arrays: dict[str, np.ndarray], seed: int = 5) -> World:
    rng = np.random.default_rng(seed)
    world = World(cfg, arrays)
    users_d = [*KNOWN[:250].tolist(), *UNKNOWN.tolist()]
    for offset in range(6):
        day = (date(2026, 1, 1) + timedelta(days=offset)).isoformat()
        active = users_d if day == D.isoformat() else rng.choice(KNOWN, 120, replace=False).tolist()
        rows = []
        for u in active:
            for _ in range(int(rng.integers(1, 4))):
                rows.append((int(u), int(rng.choice(ITEM_IDS)), str(rng.choice(["impression", *POSITIVE]))))
        if day == D.isoformat():
            rows.append((int(KNOWN[0]), int(ITEM_IDS[0]), "impression"))  # an impression alone excludes nothing
        write_curated_day(cfg, day, rows, validated=day != "2026-01-05")
        pos: dict[int, set[int]] = {}
        for u, i, t in rows:
            if t in POSITIVE:
                pos.setdefault(u, set()).add(i)
        world.positives[day] = pos
        if day == D.isoformat():
            world.active = sorted(set(users_d))
    return world


def log_and_register(cfg, arrays: dict[str, np.ndarray], promote_it: bool) -> dict[str, str]:
    """Log the arrays as the trainer's pyfunc (jobs.train.Tracker), register, optionally promote."""
    import mlflow

    from jobs.core.snapshots import TrainData
    from jobs.registry.aliases import promote
    from jobs.registry.register import register
    from jobs.train.tracking import Tracker

    ptr, idx = arrays["seen_indptr"], arrays["seen_indices"]
    users = np.repeat(np.arange(len(ptr) - 1), np.diff(ptr))
    data = TrainData(
        users=users,
        items=idx.astype(np.int64),
        weights=np.ones(len(idx), np.float32),
        test_users=np.zeros(0, np.int64),
        test_items=np.zeros(0, np.int64),
        user_ids=arrays["user_ids"],
        item_ids=arrays["item_ids"],
        popularity=arrays["popularity"],
        manifest={"day": "2026-01-04"},
        uri="memory://test_score",
    )
    tracker = Tracker(cfg.mlflow.tracking_uri, cfg.mlflow.experiment)
    run_id = tracker.start(None, "score-test")
    info = tracker.log_model(
        {k: arrays[k] for k in ("user_factors", "item_factors", "item_bias")}, data, int(arrays["default_k"])
    )
    mlflow.end_run()
    reg = register(cfg, run_id, {"window_start": WINDOW[0], "window_end": WINDOW[1]}, info.model_uri)
    if promote_it:
        from jobs.core.tracking import CHAMPION, alias_version, client

        current = alias_version(client(cfg), cfg.mlflow.model_name, CHAMPION)
        promote(cfg, reg["version"], current, "test", "test_score")
    return {"version": reg["version"], "run_id": run_id}


def read_partition(cfg, day: str) -> tuple[pa.Table, dict]:
    part = storage.local_path(cfg.storage.partition("recommendations", day))
    manifest = storage.read_manifest(str(part))
    assert manifest is not None, f"no published recommendations for {day}"
    files = sorted(part.glob("part-*.parquet"))
    assert [f.name for f in files] == manifest["files"]
    return pa.concat_tables(pq.read_table(f) for f in files), manifest


# The recommendations contract (jobs.core.schema) pinned by name, type and nullability: a change
# to it is a change for every reader of the zone and must show up here.
EXPECTED_COLUMNS = [
    "user_id: int64 not null", "rank: int32 not null", "item_id: int64 not null",
    "score: float not null", "model_version: string not null", "model_run_id: string not null",
]  # fmt: skip


def run_module(module: str, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    """``python -m module args`` as a task runs it (conftest's helper, not imported: conftest sets state on import)."""
    full_env = {**os.environ, **(env or {}), "PYTHONPATH": f"{REPO}{os.pathsep}{REPO / 'plugins'}"}
    return subprocess.run(
        [sys.executable, "-m", module, *args], cwd=REPO, env=full_env, capture_output=True, text=True, timeout=600
    )


# ---- the Spark job ------------------------------------------------------------------------------


@pytest.mark.integration
def test_scores_every_active_user_excluding_seen_items_with_k_ties_and_unknown_users(
    mlflow_env, cfg, spark, monkeypatch
):
    from jobs.core.config import get_config
    from jobs.score.job import score_day

    monkeypatch.setenv("RECSYS__SCORING__ROWS_PER_FILE", "300")  # 260 users x 5 → 5 files → 6 (whole waves of 2)
    cfg = get_config()
    arrays = make_arrays(seed=11)
    world = build_days(cfg, arrays)
    model = log_and_register(cfg, arrays, promote_it=True)

    result = score_day(cfg, spark, D, model["version"], k=5)

    table, manifest = read_partition(cfg, D.isoformat())
    assert table.schema.remove_metadata().equals(recommendations_schema(), check_metadata=False)
    assert [f"{f.name}: {f.type}{'' if f.nullable else ' not null'}" for f in recommendations_schema()] == (
        EXPECTED_COLUMNS
    )
    excluded_days = ["2026-01-04", D.isoformat()]  # after the window, validated, up to D (01-05 failed validation)
    expected = reference(arrays, world.active, world.extra(excluded_days), k=5)
    got = as_tuples(*(table.column(c).to_pylist() for c in ("user_id", "rank", "item_id", "score")))
    assert got == expected  # ordered by (user_id, rank) across both files
    assert len(manifest["files"]) == 6 == result["partitions"]  # one user range per task
    assert set(table.column("model_version").to_pylist()) == {model["version"]}
    assert set(table.column("model_run_id").to_pylist()) == {model["run_id"]}
    # exclusions were binding: without the post-window days the ranking differs
    assert reference(arrays, world.active, {}, k=5) != expected
    assert reference(arrays, world.active, world.extra([D.isoformat()]), k=5) != expected
    # users active on other days only are not scored; unknown users are
    assert set(table.column("user_id").to_pylist()) == set(world.active)
    assert manifest["unknown_users"] == len(UNKNOWN)
    assert manifest["users"] == len(world.active) == result["users"]
    assert manifest["rows"] == len(expected) == table.num_rows == result["rows"]
    for key in ("day", "model_name", "model_version", "model_run_id", "k", "source_days", "seconds"):
        assert key in manifest
    assert manifest["model_version"] == model["version"] and manifest["k"] == 5
    assert manifest["source_days"] == excluded_days
    assert manifest["skipped_days"] == ["2026-01-05"]
    assert manifest["training_window_end"] == WINDOW[1]
    assert manifest["device"] == ["cpu"]
    assert problems(ScoreResult, result) == []  # exactly the declared contract (jobs.core.results)
    # the model was loaded once per Python worker process, not once per partition or batch
    assert result["model_loads"] == result["worker_processes"] >= 1


@pytest.mark.integration
def test_pinned_version_is_used_not_the_champion_and_a_rerun_is_byte_identical(mlflow_env, cfg, spark):
    from jobs.core.cli import BadArgument, BadInput
    from jobs.core.tracking import CHAMPION, alias_version, client
    from jobs.score.job import score_day

    arrays_v1, arrays_v2 = make_arrays(seed=21), make_arrays(seed=22)
    world = build_days(cfg, arrays_v1)
    v1 = log_and_register(cfg, arrays_v1, promote_it=True)
    v2 = log_and_register(cfg, arrays_v2, promote_it=True)  # promoted after the version was "resolved"
    assert alias_version(client(cfg), cfg.mlflow.model_name, CHAMPION) == v2["version"]

    first = score_day(cfg, spark, D, v1["version"], k=3)
    table, manifest = read_partition(cfg, D.isoformat())
    assert set(table.column("model_version").to_pylist()) == {v1["version"]} == {manifest["model_version"]}
    assert set(table.column("model_run_id").to_pylist()) == {v1["run_id"]} == {manifest["model_run_id"]}
    extra = world.extra(["2026-01-04", D.isoformat()])
    got = as_tuples(*(table.column(c).to_pylist() for c in ("user_id", "rank", "item_id", "score")))
    assert got == reference(arrays_v1, world.active, extra, k=3)
    assert got != reference(arrays_v2, world.active, extra, k=3)

    part = storage.local_path(first["uri"])
    before = {f.name: f.read_bytes() for f in part.glob("part-*.parquet")}
    second = score_day(cfg, spark, D, v1["version"], k=3)
    after = {f.name: f.read_bytes() for f in part.glob("part-*.parquet")}
    assert after == before  # same inputs → the same bytes
    assert second["rows"] == first["rows"]
    # a rerun with another version replaces the day exactly (no file of the old run left)
    score_day(cfg, spark, D, v2["version"], k=2)
    table, manifest = read_partition(cfg, D.isoformat())
    assert set(table.column("model_version").to_pylist()) == {v2["version"]}
    assert table.num_rows == manifest["rows"] <= 2 * len(world.active)
    assert [p.name for p in part.parent.iterdir()] == [part.name]  # no staging/trash leftovers

    with pytest.raises(BadArgument, match="has no version '99'"):
        score_day(cfg, spark, D, "99")
    with pytest.raises(BadInput, match=r"dt=2026-01-05 did not pass validation"):
        score_day(cfg, spark, date(2026, 1, 5), v1["version"])
    with pytest.raises(BadInput, match=r"dt=2026-02-01 is not published"):
        score_day(cfg, spark, date(2026, 2, 1), v1["version"])


@pytest.mark.integration
def test_an_empty_validated_day_publishes_an_empty_recommendations_partition(mlflow_env, cfg, spark):
    """A quiet day of a sparse source (validated, no events): no active user, nothing to serve,
    an empty partition that the monitor reads as such (not a failed run)."""
    from jobs.score.job import score_day

    arrays = make_arrays(seed=51)
    model = log_and_register(cfg, arrays, promote_it=True)
    write_curated_day(cfg, "2026-01-04", [])
    result = score_day(cfg, spark, date(2026, 1, 4), model["version"], k=3)
    assert (result["users"], result["rows"], result["files"]) == (0, 0, [])
    manifest = storage.read_manifest(cfg.storage.partition("recommendations", "2026-01-04"))
    assert (manifest["users"], manifest["rows"], manifest["model_version"]) == (0, 0, model["version"])


@pytest.mark.integration
@pytest.mark.skipif(
    __import__("torch").cuda.is_available(), reason="needs a machine without CUDA to make the workers fail"
)
def test_a_failure_in_the_workers_leaves_the_published_day_untouched(mlflow_env, cfg, spark):
    from jobs.score.job import score_day

    arrays = make_arrays(seed=31)
    build_days(cfg, arrays)
    model = log_and_register(cfg, arrays, promote_it=True)
    score_day(cfg, spark, D, model["version"], k=3)
    part = storage.local_path(cfg.storage.partition("recommendations", D.isoformat()))
    before = {f.name: f.read_bytes() for f in part.iterdir()}
    # scoring.device=cuda on workers without CUDA: every task fails after the staging folder exists
    with pytest.raises(Exception, match="torch sees no CUDA device"):
        score_day(cfg, spark, D, model["version"], k=4, device="cuda")
    assert {f.name: f.read_bytes() for f in part.iterdir()} == before
    assert [p.name for p in part.parent.iterdir()] == [part.name]


@pytest.mark.integration
def test_cli_exit_codes_a_kill_mid_write_and_the_recovery_run(mlflow_env, cfg, spark, tmp_path):
    from jobs.score.job import score_day

    arrays = make_arrays(seed=41)
    build_days(cfg, arrays)
    model = log_and_register(cfg, arrays, promote_it=True)
    env = {"RECSYS__SCORING__K": "4", "RECSYS__SPARK__MASTER": "local[2]"}  # local[2]: the fixture's parallelism

    bad = run_module("jobs.score", "--day", "2026-13-01", "--model-version", model["version"], env=env)
    assert bad.returncode == 2 and "--day" in bad.stderr
    alias = run_module("jobs.score", "--day", D.isoformat(), "--model-version", "champion", env=env)
    assert alias.returncode == 2 and "registered version number" in alias.stderr
    result_file = tmp_path / "result.json"
    refused = run_module(
        "jobs.score", "--day", "2026-01-05", "--model-version", model["version"], "--result-file", str(result_file)
    )
    assert refused.returncode == 3, refused.stderr[-2000:]
    assert "dt=2026-01-05 did not pass validation" in json.loads(result_file.read_text())["message"]
    assert not storage.local_path(cfg.storage.zone("recommendations")).exists()

    first = score_day(cfg, spark, D, model["version"], k=4)
    part = storage.local_path(first["uri"])
    published = {f.name: f.read_bytes() for f in part.iterdir()}

    # Kill a rerun (its process group, SIGKILL) while it writes: the published day stays as it was.
    proc = subprocess.Popen(
        [sys.executable, "-m", "jobs.score", "--day", D.isoformat(), "--model-version", model["version"], "--k", "2"],
        cwd=REPO,
        env={**os.environ, **env, "PYTHONPATH": f"{REPO}{os.pathsep}{REPO / 'plugins'}"},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline and proc.poll() is None:
            if any(p.name.startswith(".staging-dt=") for p in part.parent.iterdir()):
                break
            time.sleep(0.05)
        assert proc.poll() is None, "the job finished before it could be killed mid-write"
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=60)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    assert any(p.name.startswith(".staging-dt=") for p in part.parent.iterdir())  # killed mid-write
    assert {f.name: f.read_bytes() for f in part.iterdir()} == published
    assert storage.published_days(cfg.storage.zone("recommendations")) == [D.isoformat()]

    # The retry (what Airflow would run next) publishes the same bytes and sweeps the leftovers.
    again = run_module(
        "jobs.score", "--day", D.isoformat(), "--model-version", model["version"], "--result-file", str(result_file),
        env=env,
    )  # fmt: skip
    assert again.returncode == 0, again.stderr[-3000:]
    result = json.loads(result_file.read_text())
    assert result["model_version"] == model["version"] and result["k"] == 4  # K from scoring.k
    assert result["rows"] == first["rows"] and result["users"] == first["users"]
    assert f"version {model['version']}" in again.stdout
    assert [p.name for p in part.parent.iterdir()] == [part.name]
    assert {f.name: f.read_bytes() for f in part.glob("part-*")} == {
        k: v for k, v in published.items() if k.startswith("part-")
    }
