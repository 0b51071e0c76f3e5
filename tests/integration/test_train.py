"""The trainer (``jobs.train``) end to end: real torch, real torchrun, a real MLflow server.

One small generated world (400 users, 150 items, 7 days of 4,000 events) is turned into a
snapshot folder in the layout of ``jobs/snapshot.py`` (train = positives of days 1-6, test =
new positive pairs of day 7). A module-scoped MLflow tracking server (SQLite store, local
artifact destination) runs in its own process group and is stopped by its process-group id.

The reference run (single process, CPU) is shared: its final checkpoint is what the DDP run
and the killed-and-resumed run are compared with, and its logged pyfunc is loaded in a fresh
interpreter that has neither the repository nor the snapshot on its path.

Tolerances (documented in ``jobs/train.py``):
  * kill + resume vs uninterrupted: bitwise equal parameters (same device and thread count;
    an epoch's sampling depends only on (seed, epoch) and the checkpoint holds the optimizer);
  * 2-rank DDP vs single process with the same global batch: same gradient up to float
    summation order, so max |Δ| of every parameter < 1e-4 and recall/NDCG within 1e-3.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from datetime import date, timedelta
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from jobs import sim as gen
from jobs.core.results import TrainResult, problems

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
START = date(2026, 1, 1)
DAYS = 7
WORLD = gen.WorldParams(users=400, items=150, factors=8, seed=11, events_per_day=4000)
POSITIVE = ("click", "play", "rating")
EPOCHS = 12
# Tuned on this world (see the report of jobs/train.py's tuning): small batches, a strong L2.
TRAIN_ARGS = [
    "--epochs",
    str(EPOCHS),
    "--batch-size",
    "256",
    "--factors",
    "32",
    "--lr",
    "0.01",
    "--weight-decay",
    "0.01",
    "--negatives",
    "4",
    "--seed",
    "3",
    "--device",
    "cpu",
]
K = 10


# ---- snapshot helper --------------------------------------------------------------------


def write_snapshot(folder: Path, events: pd.DataFrame, test_day: date) -> dict:
    """Snapshot folder from event rows (user_id, item_id, event_type, day): train < test_day."""
    pos = events[events["event_type"].isin(POSITIVE)]
    train = pos[pos["day"] < test_day].groupby(["user_id", "item_id"]).size().rename("weight").reset_index()
    user_ids = np.sort(train["user_id"].unique())
    item_ids = np.sort(train["item_id"].unique())
    train["user_idx"] = np.searchsorted(user_ids, train["user_id"]).astype(np.int32)
    train["item_idx"] = np.searchsorted(item_ids, train["item_id"]).astype(np.int32)
    test = pos[pos["day"] == test_day][["user_id", "item_id"]].drop_duplicates()
    test = test[test["user_id"].isin(user_ids) & test["item_id"].isin(item_ids)]
    seen = set(zip(train["user_id"], train["item_id"], strict=True))
    test = test[[pair not in seen for pair in zip(test["user_id"], test["item_id"], strict=True)]]
    popularity = train.groupby("item_idx").size().reindex(range(len(item_ids)), fill_value=0)
    folder.mkdir(parents=True)
    pq.write_table(
        pa.table(
            {
                "user_idx": pa.array(train["user_idx"], pa.int32()),
                "item_idx": pa.array(train["item_idx"], pa.int32()),
                "weight": pa.array(train["weight"].astype(np.float32), pa.float32()),
            }
        ),
        folder / "train.parquet",
    )
    pq.write_table(
        pa.table(
            {
                "user_idx": pa.array(np.searchsorted(user_ids, test["user_id"]), pa.int32()),
                "item_idx": pa.array(np.searchsorted(item_ids, test["item_id"]), pa.int32()),
            }
        ),
        folder / "test.parquet",
    )
    pq.write_table(
        pa.table(
            {"user_idx": pa.array(np.arange(len(user_ids)), pa.int32()), "user_id": pa.array(user_ids, pa.int64())}
        ),
        folder / "users.parquet",
    )
    pq.write_table(
        pa.table(
            {
                "item_idx": pa.array(np.arange(len(item_ids)), pa.int32()),
                "item_id": pa.array(item_ids, pa.int64()),
                "popularity": pa.array(popularity.to_numpy(), pa.int64()),
            }
        ),
        folder / "items.parquet",
    )
    manifest = {
        "day": test_day.isoformat(),
        "window_start": str(events["day"].min()),
        "window_end": (test_day - timedelta(days=1)).isoformat(),
        "n_users": len(user_ids),
        "n_items": len(item_ids),
        "train_rows": len(train),
        "test_rows": len(test),
    }
    (folder / "_SUCCESS").write_text(json.dumps(manifest))
    return manifest


def generated_events() -> pd.DataFrame:
    frames = []
    for offset in range(DAYS):
        day = START + timedelta(days=offset)
        table, _ = gen.generate_day(WORLD, day)
        frame = table.select(["event_id", "user_id", "item_id", "event_type"]).to_pandas()
        frame["day"] = day
        frames.append(frame)
    return pd.concat(frames).drop_duplicates("event_id")  # upstream redeliveries


@pytest.fixture(scope="module")
def snapshot(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("snapshots") / "dt=2026-01-07"
    manifest = write_snapshot(folder, generated_events(), START + timedelta(days=DAYS - 1))
    assert manifest["train_rows"] > 5000 and manifest["test_rows"] > 300
    return folder


# ---- MLflow server ----------------------------------------------------------------------


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _healthy(url: str) -> bool:
    try:
        with urllib.request.urlopen(f"{url}/health", timeout=2) as resp:
            return resp.status == 200
    except OSError:
        return False


@pytest.fixture(scope="module")
def mlflow_server(tmp_path_factory):
    root = tmp_path_factory.mktemp("mlflow")
    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    log = open(root / "server.log", "w")  # noqa: SIM115 - closed below
    proc = subprocess.Popen(
        [
            str(Path(sys.executable).parent / "mlflow"),
            "server",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--backend-store-uri",
            f"sqlite:///{root / 'mlflow.db'}",
            "--artifacts-destination",
            str(root / "artifacts"),
            "--workers",
            "1",
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,  # its own process group: the server and its workers stop together
        env={**os.environ, "NO_PROXY": "127.0.0.1,localhost", "no_proxy": "127.0.0.1,localhost"},
    )
    pgid = os.getpgid(proc.pid)
    try:
        deadline = time.monotonic() + 120
        while not _healthy(url):
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"MLflow server did not start: {(root / 'server.log').read_text()[-3000:]}")
            time.sleep(0.5)
        yield url
    finally:
        for sig, wait in ((signal.SIGTERM, 15), (signal.SIGKILL, 5)):
            try:
                os.killpg(pgid, sig)
            except ProcessLookupError:
                break
            try:
                proc.wait(timeout=wait)
                break
            except subprocess.TimeoutExpired:
                continue
        log.close()


# ---- running the job --------------------------------------------------------------------


def job_env() -> dict[str, str]:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), str(REPO / "plugins")])}
    env["NO_PROXY"] = env["no_proxy"] = "127.0.0.1,localhost"
    env["RECSYS_XCOM_DIR"] = "/nonexistent-xcom"  # keep a developer's /airflow/xcom untouched
    return env


def train_cmd(snapshot: Path, server: str, ckpt: Path, result: Path, *extra: str, ranks: int = 1) -> list[str]:
    launcher = [sys.executable, "-m", "jobs.train"]
    if ranks > 1:
        launcher = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={ranks}"]
        launcher += ["-m", "jobs.train"]
    return [
        *launcher,
        "--snapshot",
        str(snapshot),
        "--tracking-uri",
        server,
        "--experiment",
        "test-train",
        "--checkpoint-dir",
        str(ckpt),
        "--result-file",
        str(result),
        *TRAIN_ARGS,
        *extra,
    ]


def run_train(*args, **kwargs) -> subprocess.CompletedProcess:
    proc = subprocess.run(
        train_cmd(*args, **kwargs), cwd=REPO, env=job_env(), capture_output=True, text=True, timeout=300
    )
    assert proc.returncode == 0, f"train failed ({proc.returncode}):\n{proc.stdout[-2000:]}\n{proc.stderr[-4000:]}"
    return proc


def final_params(ckpt_dir: Path) -> dict[str, np.ndarray]:
    import torch

    payload = torch.load(ckpt_dir / "checkpoint.pt", map_location="cpu", weights_only=True)
    return {name: value.numpy() for name, value in payload["state"]["model"].items()}


@pytest.fixture(scope="module")
def reference(snapshot, mlflow_server, tmp_path_factory) -> dict:
    tmp = tmp_path_factory.mktemp("reference")
    run_train(snapshot, mlflow_server, tmp / "ckpt", tmp / "result.json", "--run-name", "reference")
    result = json.loads((tmp / "result.json").read_text())
    return {"result": result, "ckpt": tmp / "ckpt", "params": final_params(tmp / "ckpt")}


# ---- tests --------------------------------------------------------------------------------


def test_cpu_training_beats_popularity(reference):
    result = reference["result"]
    m = result["metrics"]
    print(
        f"\nmodel recall@{K}={m[f'recall_at_{K}']:.4f} ndcg@{K}={m[f'ndcg_at_{K}']:.4f}; "
        f"popularity recall@{K}={m[f'pop_recall_at_{K}']:.4f} ndcg@{K}={m[f'pop_ndcg_at_{K}']:.4f}; "
        f"{result['samples_per_s']:,.0f} samples/s"
    )
    assert result["epochs_done"] == EPOCHS and result["device"] == "cpu" and result["world_size"] == 1
    assert m["test_users"] > 200
    assert m[f"recall_at_{K}"] >= 1.2 * m[f"pop_recall_at_{K}"]
    assert m[f"ndcg_at_{K}"] >= 1.2 * m[f"pop_ndcg_at_{K}"]
    assert result["model_uri"].startswith("models:/")
    assert problems(TrainResult, result) == []  # the result file is the declared result (cost added)


def test_ddp_two_ranks_match_single_process(snapshot, mlflow_server, reference, tmp_path):
    run_train(snapshot, mlflow_server, tmp_path / "ckpt", tmp_path / "result.json", "--run-name", "ddp", ranks=2)
    result = json.loads((tmp_path / "result.json").read_text())
    assert result["world_size"] == 2 and result["epochs_done"] == EPOCHS
    ddp = final_params(tmp_path / "ckpt")
    ref = reference["params"]
    diffs = {name: float(np.abs(ddp[name] - ref[name]).max()) for name in ref}
    print(f"\nmax |DDP - single| per parameter: {diffs}")
    assert max(diffs.values()) < 1e-4, diffs
    for key in (f"recall_at_{K}", f"ndcg_at_{K}"):
        assert result["metrics"][key] == pytest.approx(reference["result"]["metrics"][key], abs=1e-3)
    assert result["run_id"] != reference["result"]["run_id"]


def test_killed_run_resumes_to_the_same_model(snapshot, mlflow_server, reference, tmp_path):
    ckpt, result_file = tmp_path / "ckpt", tmp_path / "result.json"
    cmd = train_cmd(snapshot, mlflow_server, ckpt, result_file, "--run-name", "killed")
    proc = subprocess.Popen(cmd, cwd=REPO, env=job_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 240
    while not (ckpt / "checkpoint.pt").exists():
        assert proc.poll() is None, f"trainer exited early: {proc.communicate()[1].decode()[-3000:]}"
        assert time.monotonic() < deadline, "no checkpoint appeared"
        time.sleep(0.005)
    proc.send_signal(signal.SIGKILL)
    proc.communicate()
    assert proc.returncode == -signal.SIGKILL
    import torch

    killed = torch.load(ckpt / "checkpoint.pt", map_location="cpu", weights_only=True)
    assert 1 <= killed["epoch"] < EPOCHS, "the kill came too late to test a resume"
    assert not result_file.exists()

    resumed = run_train(snapshot, mlflow_server, ckpt, result_file, "--run-name", "killed")
    assert f"resuming from {ckpt / 'checkpoint.pt'} at epoch {killed['epoch']}" in resumed.stderr
    result = json.loads(result_file.read_text())
    assert result["run_id"] == killed["run_id"]  # the same MLflow run continues
    assert result["epochs_done"] == EPOCHS
    params = final_params(ckpt)
    for name, ref in reference["params"].items():
        assert np.array_equal(params[name], ref), f"{name} differs after resume"
    assert result["metrics"][f"ndcg_at_{K}"] == reference["result"]["metrics"][f"ndcg_at_{K}"]

    import mlflow

    client = mlflow.MlflowClient(tracking_uri=mlflow_server)
    history = client.get_metric_history(result["run_id"], "loss")
    assert sorted(m.step for m in history) == list(range(1, EPOCHS + 1))

    # A rerun after success re-emits the result instead of training and logging again.
    again = run_train(snapshot, mlflow_server, ckpt, tmp_path / "again.json")
    assert "already trained" in again.stderr
    assert json.loads((tmp_path / "again.json").read_text())["model_uri"] == result["model_uri"]
    assert problems(TrainResult, json.loads((tmp_path / "again.json").read_text())) == []


@pytest.mark.parametrize("module", ["jobs.ease", "jobs.popularity"])
def test_every_family_returns_the_declared_result_and_reemits_it(snapshot, mlflow_server, module, tmp_path):
    """The trainer protocol of the CPU families: a trained result, then the same result re-emitted."""
    base = [sys.executable, "-m", module, "--snapshot", str(snapshot), "--tracking-uri", mlflow_server]
    base += ["--experiment", "test-train", "--checkpoint-dir", str(tmp_path / "ckpt"), "--force-retrain", "true"]
    results = []
    for name in ("first", "again"):
        proc = subprocess.run(
            [*base, "--result-file", str(tmp_path / f"{name}.json")],
            cwd=REPO,
            env=job_env(),
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert proc.returncode == 0, proc.stderr[-3000:]
        results.append(json.loads((tmp_path / f"{name}.json").read_text()))
    first, again = results
    assert problems(TrainResult, first) == [] and problems(TrainResult, again) == []
    assert first["cached"] is False and first["snapshot_day"] == "2026-01-07"
    assert again["run_id"] == first["run_id"] and again["fingerprint"] == first["fingerprint"]
    assert (tmp_path / "ckpt" / "result.json").exists()


PREDICT = """
import json, sys
import mlflow, pandas as pd
mlflow.set_tracking_uri(sys.argv[1])
model = mlflow.pyfunc.load_model(sys.argv[2])
ids = json.loads(sys.argv[3])
with_k = model.predict(pd.DataFrame({"user_id": ids, "k": [10] * len(ids)}))
default_k = model.predict(pd.DataFrame({"user_id": ids[:3]}))
print(json.dumps({"with_k": with_k.to_dict(orient="records"), "default_k": default_k.to_dict(orient="records"),
                  "modules": sorted(m for m in sys.modules if m == "jobs" or m.startswith("jobs."))}))
"""


def test_logged_pyfunc_serves_unseen_top_k_without_the_repository(snapshot, mlflow_server, reference, tmp_path):
    import mlflow

    result = reference["result"]
    train = pq.read_table(snapshot / "train.parquet").to_pandas()
    users = pq.read_table(snapshot / "users.parquet").to_pandas().set_index("user_idx")["user_id"]
    items = pq.read_table(snapshot / "items.parquet").to_pandas().set_index("item_idx")
    seen = {
        (int(users[u]), int(items.loc[i, "item_id"])) for u, i in zip(train["user_idx"], train["item_idx"], strict=True)
    }
    known = [int(u) for u in users.iloc[:25]]
    unknown = 10**12
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH",)}
    env["NO_PROXY"] = env["no_proxy"] = "127.0.0.1,localhost"
    proc = subprocess.run(
        [sys.executable, "-c", PREDICT, mlflow_server, result["model_uri"], json.dumps([*known, unknown])],
        cwd=tmp_path,  # neither the repository nor the snapshot is importable or referenced
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out["modules"] == [
        "jobs",
        "jobs.core",
        "jobs.core.ids",
        "jobs.core.model",
    ]  # loaded from the model's own code folder
    rows = {row["user_id"]: row for row in out["with_k"]}
    assert set(rows) == {*known, unknown}
    for uid in known:
        row = rows[uid]
        assert len(row["item_ids"]) == 10 == len(set(row["item_ids"])) == len(row["scores"])
        assert not any((uid, item) in seen for item in row["item_ids"]), f"user {uid} got a seen item"
        assert row["scores"] == sorted(row["scores"], reverse=True)
    most_popular = items.sort_values(["popularity", "item_idx"], ascending=[False, True])["item_id"].tolist()[:10]
    assert rows[unknown]["item_ids"] == most_popular
    assert all(len(row["item_ids"]) == 20 for row in out["default_k"])  # scoring.k

    client = mlflow.MlflowClient(tracking_uri=mlflow_server)
    run = client.get_run(result["run_id"])
    assert len(client.get_metric_history(result["run_id"], "loss")) == EPOCHS
    assert run.data.params["batch_size"] == "256" and run.data.params["negatives"] == "4"
    assert run.data.tags["snapshot_uri"] == str(snapshot)
    assert run.data.metrics[f"ndcg_at_{K}"] == pytest.approx(result["metrics"][f"ndcg_at_{K}"])
    (dataset,) = run.inputs.dataset_inputs
    assert dataset.dataset.name == "snapshot-2026-01-07"
    assert json.loads(dataset.dataset.source)["uri"].endswith("dt=2026-01-07")


def test_bad_snapshots_exit_3_with_a_message(snapshot, tmp_path):
    """A missing or empty snapshot is bad input data (``SnapshotError``, exit 3), not a bad argument."""
    missing = tmp_path / "nope"
    proc = subprocess.run(
        [sys.executable, "-m", "jobs.train", "--snapshot", str(missing), "--tracking-uri", "sqlite:///unused.db"],
        cwd=REPO,
        env=job_env(),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 3
    assert f"snapshot folder not found: {missing}" in proc.stderr

    empty = tmp_path / "empty"
    empty.mkdir()
    for name in ("test", "users", "items"):
        (empty / f"{name}.parquet").write_bytes((snapshot / f"{name}.parquet").read_bytes())
    pq.write_table(
        pa.table(
            {
                "user_idx": pa.array([], pa.int32()),
                "item_idx": pa.array([], pa.int32()),
                "weight": pa.array([], pa.float32()),
            }
        ),
        empty / "train.parquet",
    )
    (empty / "_SUCCESS").write_text(json.dumps({"day": "2026-01-07"}))
    proc = subprocess.run(
        [sys.executable, "-m", "jobs.train", "--snapshot", str(empty)],
        cwd=REPO,
        env=job_env(),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 3
    assert "training set is empty" in proc.stderr

    (empty / "_SUCCESS").unlink()
    proc = subprocess.run(
        [sys.executable, "-m", "jobs.train", "--snapshot", str(empty)],
        cwd=REPO,
        env=job_env(),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 3
    assert "is not published" in proc.stderr


def test_gpu_script_exits_cleanly_without_cuda_and_smokes_on_cpu(tmp_path):
    """The GPU benchmark is not a test: on every host (a CUDA one too) the test hides the devices."""
    script = REPO / "benchmarks" / "gpu_train.py"
    env = {**job_env(), "CUDA_VISIBLE_DEVICES": ""}
    proc = subprocess.run([sys.executable, str(script)], cwd=REPO, env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0 and "no CUDA device" in proc.stdout + proc.stderr
    out = tmp_path / "gpu.json"
    proc = subprocess.run(
        [
            sys.executable,
            str(script),
            "--allow-cpu",
            "--users",
            "2000",
            "--items",
            "500",
            "--interactions",
            "50000",
            "--batch-size",
            "8192",
            "--factors",
            "16",
            "--seconds",
            "3",
            "--warmup-seconds",
            "1",
            "--out",
            str(out),
        ],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads(out.read_text())
    assert report["device"] == "cpu" and report["samples_per_s"] > 0 and report["steps"] > 0
    assert report["max_memory_allocated_bytes"] is None


@pytest.mark.parametrize("loss", ["bpr", "softmax"])
@pytest.mark.parametrize("negatives", [1, 4])
def test_fused_cpu_loss_matches_autograd(loss, negatives):
    import torch

    from jobs.train.model import FusedRankingLoss, build_model

    model = build_model(50, 30, 8, seed=1, init_std=0.3, loss=loss).double()
    gen = torch.Generator().manual_seed(5)
    users = torch.randint(0, 50, (64,), generator=gen)
    items = torch.randint(0, 30, (64, 1 + negatives), generator=gen)
    weights = torch.rand(64, generator=gen, dtype=torch.float64)
    results = []
    for fused in (True, False):
        model.zero_grad()
        pu, q, b = model.user(users), model.item(items), model.item_bias(items).squeeze(-1)
        value = FusedRankingLoss.apply(pu, q, b, 0.01, loss) if fused else model._loss_autograd(pu, q, b, 0.01)
        (value * weights).sum().backward()
        results.append((value.detach(), [p.grad.clone() for p in model.parameters()]))
    (v1, g1), (v2, g2) = results
    # the autograd path casts its L2 term to float32: agreement to float32 precision
    assert torch.allclose(v1, v2, rtol=1e-6, atol=1e-7)
    for a, b in zip(g1, g2, strict=True):
        assert torch.allclose(a, b, rtol=1e-6, atol=1e-7)


def test_ranking_helpers_match_brute_force():
    from jobs.core.model import CSR, top_k
    from jobs.core.ranking import evaluate_ranking, popularity_top_k

    rng = np.random.default_rng(0)
    n_users, n_items, k = 50, 30, 5
    seen = CSR.from_pairs(rng.integers(0, n_users, 300), rng.integers(0, n_items, 300), n_users, n_items)
    users = np.arange(n_users)

    def seen_of(u):
        return set(seen.indices[seen.indptr[u] : seen.indptr[u + 1]].tolist())

    popularity = rng.integers(0, 10, n_items)
    order = sorted(range(n_items), key=lambda i: (-popularity[i], i))
    got = popularity_top_k(popularity, users, k, seen)
    for u in users:
        expected = [i for i in order if i not in seen_of(u)][:k]
        assert got[u].tolist() == expected + [-1] * (k - len(expected))

    p = rng.normal(size=(n_users, 4)).astype(np.float32)
    q = rng.normal(size=(n_items, 4)).astype(np.float32)
    b = rng.normal(size=n_items).astype(np.float32)
    items, _ = top_k(p, q, b, users, k, seen, batch_users=7)
    for u in users:
        scores = p[u] @ q.T + b
        scores[list(seen_of(u))] = -np.inf
        assert items[u].tolist() == np.argsort(-scores, kind="stable")[:k].tolist()

    test_users, test_items = rng.integers(0, n_users, 100), rng.integers(0, n_items, 100)
    ranked = rng.integers(-1, n_items, (n_users, k))
    relevant: dict[int, set[int]] = {}
    for u, i in zip(test_users, test_items, strict=True):
        relevant.setdefault(int(u), set()).add(int(i))
    recalls, ndcgs = [], []
    for u, rel in relevant.items():
        hits = [1.0 if r >= 0 and r in rel else 0.0 for r in ranked[u]]
        recalls.append(sum(hits) / len(rel))
        idcg = sum(1 / np.log2(j + 2) for j in range(min(k, len(rel))))
        ndcgs.append(sum(h / np.log2(j + 2) for j, h in enumerate(hits)) / idcg)
    m = evaluate_ranking(ranked, (test_users, test_items))
    assert m["users"] == len(relevant)
    assert m["recall"] == pytest.approx(np.mean(recalls)) and m["ndcg"] == pytest.approx(np.mean(ndcgs))
