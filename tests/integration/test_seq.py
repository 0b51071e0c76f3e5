"""The sequential family (``jobs.seq``) on a tiny generated world: learning, determinism, the
scoring contract, and the CLI with its cache. The same curated window serves the recent
popularity that the gate ranks by and EASE's recency prior adds (``jobs.core.recency``).

Four curated days (published as ``jobs.ingest`` would, ``tests/curated.py``) and a snapshot
of days 1-3 (train) and day 4 (test) in ``jobs.snapshot``'s layout, with ``train_days`` in
its manifest: the trainer reads the order of each user's pairs from those curated days.
"""

from __future__ import annotations

import itertools
import json
import os
import subprocess
import sys
import time
from datetime import date, timedelta
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest

from jobs import sim as gen
from jobs.core import storage
from jobs.core.results import TrainResult, problems
from tests.curated import curate

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
START = date(2026, 3, 1)
DAYS = 4
WORLD = gen.WorldParams(users=150, items=60, factors=4, seed=5, events_per_day=1500)
SMALL = {"hidden": 16, "max_len": 12, "blocks": 2, "heads": 2, "dropout": 0.1, "batch_size": 32, "lr": 3e-3}
POSITIVE = ["click", "play", "rating"]


def _write_snapshot(folder: Path, tables: dict[date, pa.Table], test_day: date) -> None:
    """Train = positive pairs before ``test_day`` (weight = events), test = its new pairs of known users/items."""
    pos = {d: t.filter(pc.is_in(t.column("event_type"), pa.array(POSITIVE))) for d, t in tables.items()}
    train = pa.concat_tables([t.select(["user_id", "item_id"]) for d, t in pos.items() if d < test_day])
    keys, counts = np.unique(
        np.stack([train.column("user_id").to_numpy(), train.column("item_id").to_numpy()], 1),
        axis=0,
        return_counts=True,
    )
    user_ids, item_ids = np.unique(keys[:, 0]), np.unique(keys[:, 1])
    u, i = np.searchsorted(user_ids, keys[:, 0]), np.searchsorted(item_ids, keys[:, 1])
    test = pos[test_day]
    tu, ti = test.column("user_id").to_numpy(), test.column("item_id").to_numpy()
    known = np.isin(tu, user_ids) & np.isin(ti, item_ids)
    tk = np.unique(np.searchsorted(user_ids, tu[known]) * len(item_ids) + np.searchsorted(item_ids, ti[known]))
    tk = tk[~np.isin(tk, u * len(item_ids) + i)]
    folder.mkdir(parents=True)
    idx = pa.int64()
    pq.write_table(
        pa.table({"user_idx": u, "item_idx": i, "weight": counts.astype(np.float32)}), folder / "train.parquet"
    )
    pq.write_table(pa.table({"user_idx": tk // len(item_ids), "item_idx": tk % len(item_ids)}), folder / "test.parquet")
    pq.write_table(
        pa.table({"user_idx": pa.array(np.arange(len(user_ids)), idx), "user_id": user_ids}), folder / "users.parquet"
    )
    popularity = np.bincount(i, minlength=len(item_ids))
    items = {"item_idx": pa.array(np.arange(len(item_ids)), idx), "item_id": item_ids, "popularity": popularity}
    pq.write_table(pa.table(items), folder / "items.parquet")
    train_days = sorted(d.isoformat() for d in tables if d < test_day)
    manifest = {"day": test_day.isoformat(), "train_days": train_days, "content_hash": f"seq-test-{WORLD.seed}"}
    (folder / "_SUCCESS").write_text(json.dumps(manifest))


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """(data root, snapshot folder): four curated days and the snapshot of the last one."""
    root = tmp_path_factory.mktemp("seq") / "data"
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("RECSYS__STORAGE__ROOT", str(root))
        from jobs.core.config import get_config

        cfg = get_config()
        tables = {START + timedelta(days=k): curate(cfg, WORLD, START + timedelta(days=k)) for k in range(DAYS)}
        snapshot = Path(storage.local_path(cfg.storage.zone("training"))) / "dt=test"
        _write_snapshot(snapshot, tables, START + timedelta(days=DAYS - 1))
    return root, snapshot


@pytest.fixture
def loaded(world, monkeypatch):
    """(config, snapshot data, histories) of the world."""
    from jobs.core.config import get_config
    from jobs.core.snapshots import load_snapshot
    from jobs.seq.events import window_events
    from jobs.seq.sequences import build_histories

    monkeypatch.setenv("RECSYS__STORAGE__ROOT", str(world[0]))
    cfg = get_config()
    data = load_snapshot(str(world[1]))
    return cfg, data, build_histories(*window_events(cfg, data), data.n_users)


def _trainer(data, hist, epochs: int, seed: int = 7, **extra):
    import torch

    from jobs.seq.trainer import Hparams, Trainer

    torch.set_num_threads(1)  # the thread count is part of CPU determinism
    return Trainer(data, hist, Hparams(epochs=epochs, seed=seed, **{**SMALL, **extra}))


def test_recent_popularity_and_the_ease_prior_count_the_window_s_last_days(world, monkeypatch):
    """Distinct users per snapshot item over the last N train days, counted here from the curated
    files with pandas; EASE's prior is α × that over its maximum, α fixed or chosen on the window's
    last day; no train_days → no prior."""
    import dataclasses

    import pandas as pd

    from jobs.core.config import get_config
    from jobs.core.ids import IdIndex
    from jobs.core.recency import recent_item_counts
    from jobs.core.snapshots import load_snapshot
    from jobs.ease.job import prior
    from jobs.ease.model import choose_recent_weight, interaction_matrix

    monkeypatch.setenv("RECSYS__STORAGE__ROOT", str(world[0]))
    cfg, data = get_config(), load_snapshot(str(world[1]))
    last = data.manifest["train_days"][-2:]
    parts = [storage.local_path(cfg.storage.partition("curated", d)) for d in last]
    frame = pa.concat_tables([pq.read_table(part / "part-00000.parquet") for part in parts]).to_pandas()
    frame = frame[
        frame.event_type.isin(POSITIVE) & frame.user_id.isin(data.user_ids) & frame.item_id.isin(data.item_ids)
    ]
    expected = frame.groupby("item_id").user_id.nunique().reindex(data.item_ids, fill_value=0).to_numpy()
    counts = recent_item_counts(cfg, data, 2)
    assert counts.tolist() == expected.tolist() and counts.sum() > 100
    assert not np.array_equal(counts, recent_item_counts(cfg, data, 3))  # the window's length matters
    bias, note = prior(cfg, data, [2.0], 2, 10, 1)(50.0)
    assert np.allclose(bias, 2.0 * expected / expected.max()) and bias.max() == 2.0
    assert note == "α=2 (fixed) over the last 2 train day(s)"
    assert prior(cfg, data, [0.0], 2, 10, 1)(50.0) == (None, "off (weight 0)")
    bare = dataclasses.replace(data, manifest={k: v for k, v in data.manifest.items() if k != "train_days"})
    assert prior(cfg, bare, [2.0], 2, 10, 1)(50.0) == (None, "off: the snapshot's manifest lists no train_days")
    # α chosen on the window's last day: the last day's pairs and the counts as of the day before,
    # read here with pandas, give the same choice through the pure function
    bias, note = prior(cfg, data, [0.0, 1.0, 4.0], 2, 10, 1)(50.0)
    days = data.manifest["train_days"]
    tables = {
        d: pq.read_table(storage.local_path(cfg.storage.partition("curated", d)) / "part-00000.parquet") for d in days
    }
    pos = {d: t.to_pandas().query("event_type in @POSITIVE") for d, t in tables.items()}
    last = pos[days[-1]]
    users, items = IdIndex(data.user_ids)(last.user_id.to_numpy()), IdIndex(data.item_ids)(last.item_id.to_numpy())
    earlier = pd.concat([pos[d] for d in days[:-1]])
    eu, ei = IdIndex(data.user_ids)(earlier.user_id.to_numpy()), IdIndex(data.item_ids)(earlier.item_id.to_numpy())
    known = (eu >= 0) & (ei >= 0)
    x_before = interaction_matrix(eu[known], ei[known], data.n_users, data.n_items)
    before = pd.concat([pos[d] for d in days[-3:-1]])
    before = before[before.user_id.isin(data.user_ids) & before.item_id.isin(data.item_ids)]
    counts = before.groupby("item_id").user_id.nunique().reindex(data.item_ids, fill_value=0).to_numpy()
    keep = (users >= 0) & (items >= 0)
    chosen = choose_recent_weight(x_before, users[keep], items[keep], counts, [0.0, 1.0, 4.0], 50.0, 10)
    assert chosen["users"] > 20 and {f"ndcg@{a:g}" for a in (0, 1, 4)} <= set(chosen)
    if chosen["alpha"] == 0:
        assert bias is None and note.startswith("off: α=0 chosen (")
    else:
        assert np.allclose(bias, chosen["alpha"] * expected / expected.max())
        assert note.startswith(f"α={chosen['alpha']:g} (") and note.endswith(") over the last 2 train day(s)")
    evidence = note[note.index("(") + 1 :].removesuffix(") over the last 2 train day(s)").removesuffix(")")
    assert json.loads(evidence) == chosen


def test_every_train_pair_is_in_a_sequence_in_time_order(loaded):
    _, data, hist = loaded
    assert hist.lengths().sum() == len(data.users)  # each distinct pair once
    pairs = np.sort(np.repeat(np.arange(hist.n_users), hist.lengths()) * data.n_items + hist.items)
    assert np.array_equal(pairs, np.sort(data.users * data.n_items + data.items))


@pytest.mark.parametrize("loss", ["full", "sampled"])
def test_loss_falls_and_the_artifact_ranks_like_the_model(loaded, tmp_path, loss):
    from jobs.core.model import Recommender, save_artifact

    _, data, hist = loaded
    trainer = _trainer(data, hist, 4, loss=loss, negatives=20)
    losses = [trainer.run_epoch(e)["loss"] for e in range(1, 5)]
    assert all(b < a for a, b in itertools.pairwise(losses)) and losses[-1] < losses[0] - 0.1, losses
    arrays = trainer.arrays()
    assert arrays["user_factors"].shape == (data.n_users, SMALL["hidden"])
    assert arrays["item_factors"].shape == (data.n_items, SMALL["hidden"])
    npz = tmp_path / "recsys.npz"
    save_artifact(str(npz), **arrays, user_ids=data.user_ids, item_ids=data.item_ids, popularity=data.popularity,
                  seen=data.seen(), default_k=10)  # fmt: skip
    users = np.arange(data.n_users)
    served = Recommender.load(str(npz)).recommend(data.user_ids[users], 10)
    own = trainer.predict_top_k(users, 10)
    assert [row["item_ids"] for row in served] == [data.item_ids[r].tolist() for r in own]


def test_same_seed_same_artifact_and_resume_is_exact(loaded):
    _, data, hist = loaded
    a, b = _trainer(data, hist, 3), _trainer(data, hist, 3)
    for e in (1, 2):
        a.run_epoch(e)
        b.run_epoch(e)
    resumed = _trainer(data, hist, 3)
    resumed.load_state(b.state())
    for t in (a, resumed):
        t.run_epoch(3)
    arrays = [t.arrays() for t in (a, resumed)]
    for key in arrays[0]:
        assert arrays[0][key].tobytes() == arrays[1][key].tobytes(), key
    other = _trainer(data, hist, 1, seed=8)
    other.run_epoch(1)
    assert other.arrays()["item_factors"].tobytes() != arrays[0]["item_factors"].tobytes()


def test_a_position_never_sees_a_later_item():
    import torch

    from jobs.seq.model import build_model

    model = build_model(30, 0, hidden=16, max_len=8, blocks=2, heads=2, dropout=0.0).eval()
    rows = torch.tensor([[0, 0, 3, 5, 7, 9, 11, 13]])
    changed = rows.clone()
    changed[0, -1] = 29
    with torch.no_grad():
        h, h2 = model.encode(rows), model.encode(changed)
    assert torch.equal(h[0, :-1], h2[0, :-1]) and not torch.equal(h[0, -1], h2[0, -1])
    assert torch.isfinite(h).all()  # padding rows are not fully masked


def _run(world, tmp_path: Path, ckpt: str, *extra: str) -> dict:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), str(REPO / "plugins")])}
    env.pop("MLFLOW_TRACKING_URI", None)
    env |= {
        "RECSYS__STORAGE__ROOT": str(world[0]),
        "RECSYS__MLFLOW__TRACKING_URI": f"sqlite:///{tmp_path / 'mlflow.db'}",
        "RECSYS_XCOM_DIR": "/nonexistent-xcom",
        "OMP_NUM_THREADS": "1",
    }
    result = tmp_path / f"{ckpt}.json"
    args = ["--snapshot", str(world[1]), "--run-name", ckpt, "--checkpoint-dir", str(tmp_path / ckpt)]
    args += ["--result-file", str(result), "--device", "cpu", "--epochs", "2", "--model-name", "recsys-seq-test"]
    args += ["--hidden", "16", "--max-len", "12", "--batch-size", "64", *extra]
    proc = subprocess.run(
        [sys.executable, "-m", "jobs.seq", *args], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(result.read_text())


def test_cli_writes_the_result_and_a_second_run_hits_the_cache(world, tmp_path):
    import mlflow

    started = time.perf_counter()
    first = _run(world, tmp_path, "first")
    train_keys = {"run_id", "model_uri", "run_model_uri", "experiment_id", "metrics", "k", "epochs_done",
                  "epochs_cut", "samples_per_s", "world_size", "device", "snapshot", "snapshot_day",
                  "checkpoint_dir", "fingerprint", "cached", "cache_key", "cost"}  # fmt: skip
    assert train_keys <= set(first) and first["cached"] is False and first["epochs_done"] == 2
    k = first["k"]
    assert {f"ndcg_at_{k}", f"pop_ndcg_at_{k}", "final_loss"} <= set(first["metrics"])
    assert (tmp_path / "first" / "checkpoint.pt").exists()
    previous = mlflow.get_tracking_uri()
    mlflow.set_tracking_uri(f"sqlite:///{tmp_path / 'mlflow.db'}")
    try:  # as registration does: a version carrying the run's cache key
        version = mlflow.register_model(first["model_uri"], "recsys-seq-test").version
        mlflow.MlflowClient().set_model_version_tag("recsys-seq-test", version, "cache_key", first["cache_key"])
    finally:
        mlflow.set_tracking_uri(previous)
    second = _run(world, tmp_path, "second")
    assert second["cached"] is True and second["cache_key"] == first["cache_key"]
    assert second["cached_version"] == str(version)
    assert problems(TrainResult, first) == [] and problems(TrainResult, second) == []
    assert not (tmp_path / "second").exists()  # nothing trained
    assert time.perf_counter() - started < 120
