"""Train the matrix-factorisation model on one training snapshot and log it to MLflow.

``python -m jobs.train --snapshot DIR [--epochs N --batch-size B --factors F --lr X
--weight-decay X --seed S --negatives N --loss bpr|softmax] [--checkpoint-dir DIR]
[--run-name NAME] [--experiment NAME] [--tracking-uri URI] [--result-file PATH]
[--max-seconds-per-epoch S] [--device auto|cpu|cuda] [--fresh]``

Defaults come from the ``training``, ``mlflow`` and ``gate`` sections of the configuration
(``--negatives`` 4 and ``--loss bpr`` have no configuration key). The model is
``jobs.model.MFBPR`` (see that module for the choice).

Input: a snapshot folder (``jobs/snapshot.py``): ``train.parquet`` (user_idx, item_idx,
weight), ``test.parquet`` (user_idx, item_idx), ``users.parquet``, ``items.parquet`` and the
``_SUCCESS`` manifest. A missing or unpublished snapshot, a missing table or column, index
out of range or an empty training set exits with code 2 and a message naming the problem.

Training
  * Device: CUDA when ``torch.cuda.is_available()`` (``--device`` overrides), with bf16
    autocast around the forward (the score ``bmm``; master weights, loss and optimizer state
    stay fp32); CPU otherwise. Optimizer: Adam (``--lr``; ``--optimizer adagrad`` as an
    alternative); ``--weight-decay`` is the L2 penalty on the rows a sample touches (not a
    decay of every row at every step), so useful values are around 1e-3..1e-2 — the
    configuration's 1e-5 barely regularises (see the report in benchmarks/bench_train.py).
  * ``OMP_WAIT_POLICY`` defaults to PASSIVE (set before torch loads): spinning OpenMP threads
    made CPU steps 10-25x slower on a loaded or CPU-limited host.
  * One epoch = every positive pair once, in an order drawn from a generator seeded by
    ``(seed, epoch)``, each with ``--negatives`` items drawn uniformly from the catalogue by
    the same generator. Pair weights from the snapshot scale each pair's loss (normalised to
    mean 1 over the training set). Nothing depends on state carried between epochs except the
    model and optimizer, which is what makes resume exact.
  * ``--max-seconds-per-epoch`` cuts an epoch short when it runs longer (a wall-clock bound
    for a time-boxed run); a cut run is no longer reproducible, and the cut is logged.

Data parallelism (``torchrun --nproc-per-node=W -m jobs.train ...``)
  When ``WORLD_SIZE`` > 1 the job joins the process group (gloo on CPU, NCCL on CUDA, one GPU
  per local rank) and wraps the model in DistributedDataParallel. Every rank draws the same
  epoch permutation and negatives; global batch ``b`` (``--batch-size`` B, global) is split
  by ``b[rank::W]``, so each rank sees B/W pairs. Each rank's loss is ``W/|b| · Σ_local``; DDP
  averages gradients over ranks, so the update is ``1/|b| · Σ_b`` — the gradient of a
  single-process step over the same global batch. The two runs differ only by floating-point
  summation order (partial sums per rank, then an all-reduce), i.e. relative differences of
  about 1e-7 per step that Adam carries forward; ``tests/integration/test_train.py`` checks
  that the final parameters of a 2-rank run (gloo, CPU) match a single-process run within an
  absolute 1e-4 and that recall/NDCG agree to 1e-3 (observed: max |Δ| = 5e-6 after 12 epochs
  of 31 steps; equal metrics). Only rank 0 talks to MLflow, writes checkpoints and writes the
  result; every rank reads the snapshot and the checkpoint folder, which must be shared (one
  node, or a shared volume: the ranks cross-check the epoch they resume from).

Checkpoints and resume
  After every epoch rank 0 writes ``checkpoint.pt`` in ``--checkpoint-dir`` atomically
  (temporary file, fsync, rename): model, optimizer, torch/CUDA/numpy/python RNG states, the
  epoch count, the per-epoch history and the MLflow run id, plus a fingerprint of the snapshot
  manifest and the hyper-parameters (not ``epochs``). On start the job resumes from a
  checkpoint with the same fingerprint (continuing the same MLflow run and filling in any
  epoch metric the killed process had not logged yet); a checkpoint with a different
  fingerprint is ignored and overwritten. Because an epoch's sampling depends only on
  ``(seed, epoch)``, a run killed at any point and resumed ends with bitwise the same model as
  an uninterrupted run on the same device and thread count. ``--fresh`` ignores checkpoints.
  The default checkpoint folder is ``<checkpoints zone>/train-<day>-<fingerprint>``.
  After success ``result.json`` sits beside the checkpoint; a rerun with the same fingerprint
  and epochs re-emits it instead of training and logging a second model.

MLflow
  Params (hyper-parameters, sizes, device, world size), tags (snapshot URI and day), the
  snapshot manifest as an input dataset, per-epoch ``loss``/``epoch_seconds``/``samples_per_s``
  with ``step=epoch``, final test-set ``recall_at_K``/``ndcg_at_K`` (K = ``gate.k``) and the
  popularity baseline's (``pop_recall_at_K``/``pop_ndcg_at_K``), the snapshot's drift reference
  (``reference/reference_stats.json``, when the snapshot has one), and the model as a pyfunc
  (``jobs.model.RecsysPyfunc``; artifacts in one ``.npz``, this package's ``model.py`` as code).

Output: ``--result-file`` and, when the folder exists, ``/airflow/xcom/return.json`` (the
KubernetesPodOperator XCom contract; ``RECSYS_XCOM_DIR`` overrides the folder) receive
``{"run_id", "model_uri", "metrics", "epochs_done", "samples_per_s", ...}``; stdout ends with
``MLFLOW_RUN_ID=<id>``.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import os
import random
import shutil
import sys
import tempfile
import time
import warnings
from contextlib import nullcontext
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from jobs import storage
from jobs.config import ConfigError, PipelineConfig, get_config

# Idle OpenMP threads sleep instead of spinning. With spinning (libgomp's default), a CPU run on
# a shared or CPU-limited machine (a Kubernetes pod with a CPU limit) loses most of its time in
# barriers whenever a thread is descheduled: 10-25x slower steps were measured on a loaded
# 2-core host. Set before torch is imported; an explicit setting wins.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

log = logging.getLogger("jobs.train")

CHECKPOINT = "checkpoint.pt"
RESULT = "result.json"
CHECKPOINT_FORMAT = 1
LOSSES = ("bpr", "softmax")  # = jobs.model.LOSSES; not imported here so that torch loads only when needed
XCOM_DIR = "/airflow/xcom"


class InputError(Exception):
    """The snapshot (or an argument) cannot be trained on; exit code 2."""


# ---- snapshot -----------------------------------------------------------------------------


@dataclass
class TrainData:
    """A snapshot in memory: index arrays (int64), pair weights and the id maps."""

    users: np.ndarray
    items: np.ndarray
    weights: np.ndarray
    test_users: np.ndarray
    test_items: np.ndarray
    user_ids: np.ndarray
    item_ids: np.ndarray
    popularity: np.ndarray
    manifest: dict[str, Any] = field(default_factory=dict)
    uri: str = ""

    @property
    def n_users(self) -> int:
        return len(self.user_ids)

    @property
    def n_items(self) -> int:
        return len(self.item_ids)

    def seen(self):
        from jobs.model import CSR

        return CSR.from_pairs(self.users, self.items, self.n_users, self.n_items)


def _read_text(uri: str) -> str:
    if "://" not in uri or uri.startswith("file://"):
        return storage.local_path(uri).read_text()
    import pyarrow.fs as pafs

    fs, path = pafs.FileSystem.from_uri(uri)
    with fs.open_input_stream(path) as fh:
        return fh.read().decode()


def _read_table(uri: str, name: str, columns: dict[str, str]):
    import pyarrow.parquet as pq

    path = f"{uri.rstrip('/')}/{name}"
    try:
        table = pq.read_table(path)
    except (FileNotFoundError, OSError) as exc:
        raise InputError(f"snapshot {uri}: cannot read {name}: {exc}") from None
    missing = [c for c in columns if c not in table.column_names]
    if missing:
        raise InputError(
            f"snapshot {uri}: {name} lacks column(s) {', '.join(missing)} (has {', '.join(table.column_names)})"
        )
    out = {}
    for col, dtype in columns.items():
        arr = table.column(col)
        if arr.null_count:
            raise InputError(f"snapshot {uri}: {name}.{col} has {arr.null_count} null value(s)")
        out[col] = arr.to_numpy().astype(dtype, copy=False)
    return out


def load_snapshot(uri: str) -> TrainData:
    """Read and check a snapshot folder; raises InputError naming what is wrong."""
    uri = str(uri).rstrip("/")
    local = "://" not in uri or uri.startswith("file://")
    if local and not storage.local_path(uri).is_dir():
        raise InputError(f"snapshot folder not found: {uri}")
    try:
        manifest = json.loads(_read_text(f"{uri}/{storage.SUCCESS}"))
    except (FileNotFoundError, OSError):
        raise InputError(f"snapshot {uri} is not published: {storage.SUCCESS} manifest missing") from None
    except ValueError as exc:
        raise InputError(f"snapshot {uri}: {storage.SUCCESS} is not JSON: {exc}") from None
    train = _read_table(uri, "train.parquet", {"user_idx": "int64", "item_idx": "int64", "weight": "float32"})
    test = _read_table(uri, "test.parquet", {"user_idx": "int64", "item_idx": "int64"})
    users = _read_table(uri, "users.parquet", {"user_idx": "int64", "user_id": "int64"})
    items = _read_table(uri, "items.parquet", {"item_idx": "int64", "item_id": "int64", "popularity": "int64"})
    if not len(train["user_idx"]):
        raise InputError(f"snapshot {uri}: the training set is empty (train.parquet has 0 rows)")
    n_users, n_items = len(users["user_idx"]), len(items["item_idx"])
    for name, idx, n in (("users", users["user_idx"], n_users), ("items", items["item_idx"], n_items)):
        if not np.array_equal(np.sort(idx), np.arange(n)):
            raise InputError(f"snapshot {uri}: {name}.parquet indices are not 0..{n - 1}")
    for name, table in (("train", train), ("test", test)):
        for col, n in (("user_idx", n_users), ("item_idx", n_items)):
            values = table[col]
            if len(values) and (values.min() < 0 or values.max() >= n):
                raise InputError(f"snapshot {uri}: {name}.parquet {col} out of range 0..{n - 1}")
    weights = train["weight"]
    if not np.isfinite(weights).all() or (weights <= 0).any():
        raise InputError(f"snapshot {uri}: train.parquet weight must be finite and > 0")
    user_ids = np.empty(n_users, np.int64)
    user_ids[users["user_idx"]] = users["user_id"]
    item_ids = np.empty(n_items, np.int64)
    item_ids[items["item_idx"]] = items["item_id"]
    popularity = np.empty(n_items, np.int64)
    popularity[items["item_idx"]] = items["popularity"]
    return TrainData(
        users=train["user_idx"],
        items=train["item_idx"],
        weights=weights,
        test_users=test["user_idx"],
        test_items=test["item_idx"],
        user_ids=user_ids,
        item_ids=item_ids,
        popularity=popularity,
        manifest=manifest,
        uri=uri,
    )


# ---- hyper-parameters and distribution ----------------------------------------------------


@dataclass(frozen=True)
class Hparams:
    epochs: int = 10
    batch_size: int = 4096
    factors: int = 64
    lr: float = 0.05
    weight_decay: float = 1e-5
    seed: int = 42
    negatives: int = 4
    init_std: float = 0.01
    optimizer: str = "adam"
    loss: str = "bpr"
    use_weights: bool = True
    max_seconds_per_epoch: float | None = None

    def fingerprint_fields(self) -> dict[str, Any]:
        """What a checkpoint must share to be resumed (not epochs, not the time bound)."""
        out = asdict(self)
        out.pop("epochs")
        out.pop("max_seconds_per_epoch")
        return out


@dataclass
class DistContext:
    rank: int = 0
    world: int = 1
    local_rank: int = 0
    device: Any = None

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world > 1


def pick_device(name: str, local_rank: int = 0):
    import torch

    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda":
        if not torch.cuda.is_available():
            raise InputError("--device cuda requested but no CUDA device is available")
        torch.cuda.set_device(local_rank)
        return torch.device("cuda", local_rank)
    return torch.device("cpu")


def init_distributed(device_name: str) -> DistContext:
    """Join the torchrun process group when WORLD_SIZE > 1 (gloo on CPU, NCCL on CUDA)."""
    import torch.distributed as dist

    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    device = pick_device(device_name, local_rank)
    if world > 1 and not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    return DistContext(rank, world, local_rank, device)


# ---- the trainer --------------------------------------------------------------------------


def _epoch_seed(seed: int, epoch: int) -> int:
    digest = hashlib.sha256(f"recsys-train:{seed}:{epoch}".encode()).digest()
    return int.from_bytes(digest[:8], "little") & (2**63 - 1)


class Trainer:
    """Model, optimizer and data on one device; ``run_epoch`` is one pass over the positives."""

    def __init__(self, data: TrainData, hp: Hparams, ctx: DistContext | None = None) -> None:
        import torch

        from jobs.model import build_model

        self.data, self.hp = data, hp
        self.ctx = ctx or DistContext(device=torch.device("cpu"))
        dev = self.ctx.device
        self.amp = dev.type == "cuda"
        self.module = build_model(data.n_users, data.n_items, hp.factors, hp.seed, hp.init_std, hp.loss).to(dev)
        if self.ctx.distributed:
            from torch.nn.parallel import DistributedDataParallel as DDP

            ids = [dev.index] if dev.type == "cuda" else None
            self.model = DDP(self.module, device_ids=ids, broadcast_buffers=False)
        else:
            self.model = self.module
        opt_class = {"adam": torch.optim.Adam, "adagrad": torch.optim.Adagrad}[hp.optimizer]
        self.optimizer = opt_class(self.module.parameters(), lr=hp.lr, fused=True)
        self.users = torch.as_tensor(data.users, dtype=torch.int64, device=dev)
        self.items = torch.as_tensor(data.items, dtype=torch.int64, device=dev)
        w = data.weights.astype(np.float64) if hp.use_weights else np.ones(len(data.users))
        self.weights = torch.as_tensor(w / w.mean(), dtype=torch.float32, device=dev)
        self.n = len(data.users)

    def epoch_plan(self, epoch: int):
        """(permutation, negatives) of an epoch: the same on every rank, from ``(seed, epoch)`` only."""
        import torch

        dev = self.ctx.device
        gen = torch.Generator(device=dev)
        gen.manual_seed(_epoch_seed(self.hp.seed, epoch))
        perm = torch.randperm(self.n, generator=gen, device=dev)
        neg = torch.randint(0, self.data.n_items, (self.n, self.hp.negatives), generator=gen, device=dev)
        return perm, neg

    def run_epoch(self, epoch: int) -> dict[str, Any]:
        """Train one epoch (1-based ``epoch``); returns loss, seconds, samples, samples/s, cut."""
        import torch
        import torch.distributed as dist

        hp, ctx = self.hp, self.ctx
        self.model.train()
        started = time.perf_counter()
        perm, neg = self.epoch_plan(epoch)
        # Permute once per epoch: every batch is then a slice (a view), not a gather.
        users, items, weights = self.users[perm], self.items[perm], self.weights[perm]
        loss_sum = torch.zeros((), dtype=torch.float64, device=ctx.device)
        amp = torch.autocast("cuda", dtype=torch.bfloat16) if self.amp else nullcontext()
        processed = 0
        cut = False
        for start in range(0, self.n, hp.batch_size):
            end = min(start + hp.batch_size, self.n)
            part = slice(start + ctx.rank, end, ctx.world)
            u, i, w, j = users[part], items[part], weights[part], neg[part]
            with amp:
                per_sample = self.model(u, i, j, hp.weight_decay)
            weighted = per_sample * w
            loss = weighted.sum() * (ctx.world / (end - start))
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            self.optimizer.step()
            loss_sum += weighted.detach().sum()
            processed = end
            if hp.max_seconds_per_epoch is not None and end < self.n:
                over = time.perf_counter() - started > hp.max_seconds_per_epoch
                if ctx.distributed:  # every rank must stop after the same step
                    flag = torch.tensor(float(over), device=ctx.device)
                    dist.all_reduce(flag, op=dist.ReduceOp.MAX)
                    over = bool(flag.item())
                if over:
                    cut = True
                    break
        if ctx.distributed:
            dist.all_reduce(loss_sum)
        if ctx.device.type == "cuda":
            torch.cuda.synchronize(ctx.device)
        seconds = time.perf_counter() - started
        return {
            "epoch": epoch,
            "loss": float(loss_sum.item() / max(processed, 1)),
            "seconds": seconds,
            "samples": processed,
            "samples_per_s": processed / max(seconds, 1e-9),
            "cut": cut,
        }

    # -- state ---------------------------------------------------------------------------

    def state(self) -> dict[str, Any]:
        import torch

        np_state = np.random.get_state()
        rng = {
            "torch": torch.get_rng_state(),
            "numpy": {
                "keys": torch.from_numpy(np_state[1].astype(np.int64)),
                "pos": int(np_state[2]),
                "has_gauss": int(np_state[3]),
                "cached_gaussian": float(np_state[4]),
            },
            "python": _python_rng_state(),
        }
        if torch.cuda.is_available():
            rng["cuda"] = torch.cuda.get_rng_state_all()
        return {"model": self.module.state_dict(), "optimizer": self.optimizer.state_dict(), "rng": rng}

    def load_state(self, state: dict[str, Any]) -> None:
        import torch

        self.module.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        rng = state["rng"]
        torch.set_rng_state(rng["torch"])
        npst = rng["numpy"]
        np.random.set_state(
            ("MT19937", npst["keys"].numpy().astype(np.uint32), npst["pos"], npst["has_gauss"], npst["cached_gaussian"])
        )
        random.setstate((rng["python"][0], tuple(rng["python"][1]), rng["python"][2]))
        if "cuda" in rng and torch.cuda.is_available() and len(rng["cuda"]) == torch.cuda.device_count():
            torch.cuda.set_rng_state_all(rng["cuda"])

    # -- evaluation ----------------------------------------------------------------------

    def evaluate(self, k: int) -> dict[str, float]:
        """recall/NDCG@k of the model and of the popularity baseline on the snapshot's test pairs."""
        return evaluate_arrays(self.module.arrays(), self.data, k, device=self.ctx.device)


def _python_rng_state() -> list[Any]:
    version, internal, gauss = random.getstate()
    return [version, list(internal), gauss]


def evaluate_arrays(arrays: dict[str, np.ndarray], data: TrainData, k: int, device: Any = None) -> dict[str, float]:
    """Test-set metrics of factor arrays (and the popularity baseline) with seen items excluded."""
    import torch

    from jobs.metrics import evaluate_ranking, popularity_top_k
    from jobs.model import top_k

    seen = data.seen()
    test_users = np.unique(data.test_users)
    dev = device or torch.device("cpu")
    p = torch.as_tensor(arrays["user_factors"], device=dev)
    ranked, _ = top_k(p, arrays["item_factors"], arrays.get("item_bias"), test_users, k, seen)
    pairs = (data.test_users, data.test_items)
    model = evaluate_ranking(ranked, pairs, users=test_users, k=k)
    pop = evaluate_ranking(popularity_top_k(data.popularity, test_users, k, seen), pairs, users=test_users, k=k)
    return {
        f"recall_at_{k}": model["recall"],
        f"ndcg_at_{k}": model["ndcg"],
        f"pop_recall_at_{k}": pop["recall"],
        f"pop_ndcg_at_{k}": pop["ndcg"],
        "test_users": float(model["users"]),
        "test_pairs": float(len(data.test_users)),
    }


# ---- checkpoints --------------------------------------------------------------------------


def fingerprint(data: TrainData, hp: Hparams) -> str:
    payload = {"snapshot": data.uri, "manifest": data.manifest, "hparams": hp.fingerprint_fields()}
    return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()


def save_checkpoint(folder: Path, payload: dict[str, Any]) -> Path:
    """Atomically replace ``folder/checkpoint.pt`` (temporary file, fsync, rename)."""
    import torch

    folder.mkdir(parents=True, exist_ok=True)
    final = folder / CHECKPOINT
    tmp = folder / f".{CHECKPOINT}.{os.getpid()}.tmp"
    with open(tmp, "wb") as fh:
        torch.save(payload, fh)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, final)
    return final


def load_checkpoint(folder: Path, fp: str) -> dict[str, Any] | None:
    """The checkpoint in ``folder`` if it matches fingerprint ``fp`` (else None, with a warning)."""
    import torch

    path = folder / CHECKPOINT
    if not path.is_file():
        return None
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        log.warning("ignoring unreadable checkpoint %s: %s", path, exc)
        return None
    if payload.get("format") != CHECKPOINT_FORMAT or payload.get("fingerprint") != fp:
        log.warning("ignoring checkpoint %s: written for another snapshot or other hyper-parameters", path)
        return None
    return payload


# ---- MLflow -------------------------------------------------------------------------------


class Tracker:
    """Everything rank 0 sends to MLflow."""

    def __init__(self, tracking_uri: str, experiment: str) -> None:
        import mlflow

        self.mlflow = mlflow
        mlflow.set_tracking_uri(tracking_uri)
        self.experiment_id = mlflow.set_experiment(experiment).experiment_id
        self.client = mlflow.MlflowClient()
        self.run_id: str | None = None
        self._logged: set[int] | None = None

    def start(self, run_id: str | None, run_name: str | None) -> str:
        mlflow = self.mlflow
        if run_id:
            try:
                run = mlflow.start_run(run_id=run_id)
                log.info("resuming MLflow run %s", run_id)
                self.run_id = run.info.run_id
                return self.run_id
            except Exception as exc:
                log.warning("cannot resume MLflow run %s (%s); starting a new run", run_id, exc)
        run = mlflow.start_run(experiment_id=self.experiment_id, run_name=run_name)
        self.run_id = run.info.run_id
        return self.run_id

    def log_setup(self, data: TrainData, hp: Hparams, ctx: DistContext, extra: dict[str, Any]) -> None:
        mlflow = self.mlflow
        params = {
            **{k: v for k, v in asdict(hp).items() if v is not None},
            "world_size": ctx.world,
            "device": ctx.device.type,
            "global_batch_size": hp.batch_size,
            "per_rank_batch_size": -(-hp.batch_size // ctx.world),
            "n_users": data.n_users,
            "n_items": data.n_items,
            "train_rows": len(data.users),
            "test_rows": len(data.test_users),
            "snapshot": data.uri,
            **extra,
        }
        existing = self.client.get_run(self.run_id).data.params
        fresh = {k: str(v) for k, v in params.items() if k not in existing}
        changed = {k: str(v) for k, v in params.items() if k in existing and existing[k] != str(v)}
        if fresh:
            mlflow.log_params(fresh)
        for k, v in changed.items():  # params are immutable in MLflow: record the override as a tag
            mlflow.set_tag(f"resumed.{k}", v)
        mlflow.set_tags(
            {
                "snapshot_uri": data.uri,
                "snapshot_day": str(data.manifest.get("day", "")),
                "recsys.job": "jobs.train",
            }
        )
        if not self.client.get_run(self.run_id).inputs.dataset_inputs:
            import pandas as pd

            frame = pd.DataFrame([{k: str(v) for k, v in data.manifest.items()}])
            with warnings.catch_warnings():  # "source can be interpreted in multiple ways": a local path
                warnings.simplefilter("ignore", UserWarning)
                dataset = mlflow.data.from_pandas(
                    frame, source=data.uri, name=f"snapshot-{data.manifest.get('day', 'unknown')}"
                )
            mlflow.log_input(dataset, context="training")
        reference = data.manifest.get("reference_stats")
        if reference:  # the drift reference travels with the model (jobs/drift_metrics.py)
            mlflow.log_text(_read_text(f"{data.uri}/{reference}"), "reference/reference_stats.json")

    def log_epochs(self, history: list[dict[str, Any]]) -> None:
        """Log the epochs of ``history`` that the run does not have yet (step = epoch).

        The run's logged steps are read once (a resumed run may lack the epochs its killed
        predecessor checkpointed but did not log), then tracked here.
        """
        if self._logged is None:
            self._logged = {m.step for m in self.client.get_metric_history(self.run_id, "loss")}
        for row in history:
            if row["epoch"] in self._logged:
                continue
            self.mlflow.log_metrics(
                {"loss": row["loss"], "epoch_seconds": row["seconds"], "samples_per_s": row["samples_per_s"]},
                step=row["epoch"],
            )
            self._logged.add(row["epoch"])

    def log_model(self, arrays: dict[str, np.ndarray], data: TrainData, default_k: int):
        import pandas as pd
        import torch
        from mlflow.models import ModelSignature
        from mlflow.types.schema import Array, ColSpec, Schema

        from jobs import model as model_module

        signature = ModelSignature(
            inputs=Schema([ColSpec("long", "user_id"), ColSpec("long", "k", required=False)]),
            outputs=Schema(
                [ColSpec("long", "user_id"), ColSpec(Array("long"), "item_ids"), ColSpec(Array("double"), "scores")]
            ),
        )
        example = pd.DataFrame({"user_id": data.user_ids[: min(3, data.n_users)].astype(np.int64)})
        requirements = [
            f"mlflow-skinny=={self.mlflow.__version__}",
            f"numpy=={np.__version__}",
            f"pandas=={pd.__version__}",
            f"torch=={torch.__version__.split('+')[0]}",
        ]
        with tempfile.TemporaryDirectory(prefix="recsys-model-") as tmp:
            npz = Path(tmp) / "recsys.npz"
            model_module.save_artifact(
                str(npz),
                **arrays,
                user_ids=data.user_ids,
                item_ids=data.item_ids,
                popularity=data.popularity,
                seen=data.seen(),
                default_k=default_k,
            )
            code = Path(tmp) / "code" / "jobs"
            code.mkdir(parents=True)
            shutil.copy2(Path(model_module.__file__), code / "model.py")
            shutil.copy2(Path(model_module.__file__).with_name("ids.py"), code / "ids.py")  # model.py imports it
            return self.mlflow.pyfunc.log_model(
                name="model",
                python_model=model_module.RecsysPyfunc(),
                artifacts={model_module.ARTIFACT_KEY: str(npz)},
                code_paths=[str(code)],
                signature=signature,
                input_example=example,
                pip_requirements=requirements,
            )

    def finish(self, metrics: dict[str, float], result: dict[str, Any]) -> None:
        self.mlflow.log_metrics(metrics)
        self.mlflow.log_dict(result, "result.json")
        self.mlflow.end_run()


# ---- CLI ----------------------------------------------------------------------------------


def build_parser(cfg: PipelineConfig) -> argparse.ArgumentParser:
    t, m = cfg.training, cfg.mlflow
    ap = argparse.ArgumentParser(prog="python -m jobs.train", description=__doc__.split("\n\n")[0])
    ap.add_argument("--snapshot", required=True, help="snapshot folder (train/test/users/items parquet + _SUCCESS)")
    ap.add_argument("--epochs", type=int, default=t.epochs)
    ap.add_argument("--batch-size", type=int, default=t.batch_size, help="global batch (split over ranks)")
    ap.add_argument("--factors", type=int, default=t.factors)
    ap.add_argument("--lr", type=float, default=t.learning_rate)
    ap.add_argument("--weight-decay", type=float, default=t.weight_decay)
    ap.add_argument("--seed", type=int, default=t.seed)
    ap.add_argument("--negatives", type=int, default=4, help="uniform negatives per positive")
    ap.add_argument("--loss", choices=LOSSES, default="bpr", help="bpr, or sampled softmax over the same negatives")
    ap.add_argument("--optimizer", choices=("adam", "adagrad"), default="adam")
    ap.add_argument("--init-std", type=float, default=0.01)
    ap.add_argument("--no-weights", action="store_true", help="ignore the snapshot's pair weights")
    ap.add_argument("--max-seconds-per-epoch", type=float, help="cut an epoch after this many seconds")
    ap.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")
    ap.add_argument("--checkpoint-dir", type=Path, help="default: <checkpoints zone>/train-<day>-<fingerprint>")
    ap.add_argument("--fresh", action="store_true", help="ignore (and overwrite) an existing checkpoint")
    ap.add_argument("--run-name")
    ap.add_argument("--experiment", default=m.experiment)
    ap.add_argument("--tracking-uri", default=m.tracking_uri)
    ap.add_argument("--k", type=int, default=cfg.gate.k, help="cut-off of the test metrics (gate.k)")
    ap.add_argument("--result-file", type=Path)
    return ap


def _check_args(ap: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    for name in ("epochs", "batch_size", "factors", "negatives", "k"):
        if getattr(args, name) < 1:
            ap.error(f"--{name.replace('_', '-')} must be at least 1")
    if args.lr <= 0 or args.weight_decay < 0 or args.init_std <= 0:
        ap.error("--lr and --init-std must be > 0 and --weight-decay >= 0")
    if args.max_seconds_per_epoch is not None and args.max_seconds_per_epoch <= 0:
        ap.error("--max-seconds-per-epoch must be > 0")


def default_checkpoint_dir(cfg: PipelineConfig, data: TrainData, fp: str) -> Path:
    name = f"train-{data.manifest.get('day', 'snapshot')}-{fp[:12]}"
    if cfg.storage.is_local:
        return storage.local_path(cfg.storage.zone("checkpoints")) / name
    return Path(tempfile.gettempdir()) / "recsys-checkpoints" / name


def emit_result(result: dict[str, Any], result_file: Path | None) -> None:
    if result_file:
        storage.write_json_atomic(result_file, result)
    xcom = Path(os.environ.get("RECSYS_XCOM_DIR", XCOM_DIR))
    if xcom.is_dir():
        storage.write_json_atomic(xcom / "return.json", result)
    print(f"MLFLOW_RUN_ID={result['run_id']}", flush=True)


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    try:
        cfg = get_config()
    except ConfigError as exc:
        print(exc, file=sys.stderr)
        return 2
    ap = build_parser(cfg)
    args = ap.parse_args(argv)
    _check_args(ap, args)
    hp = Hparams(
        epochs=args.epochs,
        batch_size=args.batch_size,
        factors=args.factors,
        lr=args.lr,
        weight_decay=args.weight_decay,
        seed=args.seed,
        negatives=args.negatives,
        init_std=args.init_std,
        optimizer=args.optimizer,
        loss=args.loss,
        use_weights=not args.no_weights,
        max_seconds_per_epoch=args.max_seconds_per_epoch,
    )
    try:
        data = load_snapshot(args.snapshot)
    except InputError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if not args.fresh and _already_trained(cfg, args, hp, data):
        return 0
    try:
        ctx = init_distributed(args.device)
    except InputError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    from jobs.registry import tracking_errors, tracking_exit

    try:
        return _train(cfg, args, hp, data, ctx)
    except tracking_errors() as exc:  # server down, timeout, 5xx: exit 1 = retried; the checkpoint stays
        return tracking_exit(cfg, exc, "training failed", args.result_file)
    finally:
        import torch.distributed as dist

        if dist.is_initialized():
            dist.destroy_process_group()


def _already_trained(cfg: PipelineConfig, args: argparse.Namespace, hp: Hparams, data: TrainData) -> bool:
    """Re-emit the result of a finished run with the same fingerprint and epochs (before torch loads).

    Every rank decides the same way: all ranks see the checkpoint folder (one node or a shared
    volume); only rank 0 emits.
    """
    fp = fingerprint(data, hp)
    done = (args.checkpoint_dir or default_checkpoint_dir(cfg, data, fp)) / RESULT
    if not done.is_file():
        return False
    try:
        previous = json.loads(done.read_text())
    except ValueError:
        return False
    if previous.get("fingerprint") != fp or previous.get("epochs_done") != hp.epochs:
        return False
    if int(os.environ.get("RANK", "0")) == 0:
        log.info("already trained (%s); re-emitting its result", done)
        emit_result(previous, args.result_file)
    return True


def _train(cfg: PipelineConfig, args: argparse.Namespace, hp: Hparams, data: TrainData, ctx: DistContext) -> int:
    import torch
    import torch.distributed as dist

    fp = fingerprint(data, hp)
    ckpt_dir = args.checkpoint_dir or default_checkpoint_dir(cfg, data, fp)
    k = args.k
    if ctx.device.type == "cuda":
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    torch.use_deterministic_algorithms(True, warn_only=True)

    ckpt = None if args.fresh else load_checkpoint(ckpt_dir, fp)
    trainer = Trainer(data, hp, ctx)
    history: list[dict[str, Any]] = []
    start_epoch = 0
    if ckpt is not None:
        trainer.load_state(ckpt["state"])
        history = list(ckpt["history"])
        start_epoch = int(ckpt["epoch"])
        log.info("resuming from %s at epoch %d", ckpt_dir / CHECKPOINT, start_epoch)
    if ctx.distributed:
        epochs = torch.tensor([start_epoch, -start_epoch], dtype=torch.int64, device=ctx.device)
        dist.all_reduce(epochs, op=dist.ReduceOp.MAX)
        if int(epochs[0]) != -int(epochs[1]):
            raise RuntimeError(f"ranks found different checkpoints in {ckpt_dir}: it must be shared by all ranks")

    tracker = None
    run_id = None
    if ctx.is_main:
        tracker = Tracker(args.tracking_uri, args.experiment)
        run_id = tracker.start(ckpt.get("run_id") if ckpt else None, args.run_name)
        tracker.log_setup(data, hp, ctx, {"checkpoint_dir": str(ckpt_dir), "k": k})
        tracker.log_epochs(history)
        log.info(
            "training %d pairs (%d users x %d items) on %s, world size %d, MLflow run %s",
            len(data.users),
            data.n_users,
            data.n_items,
            ctx.device,
            ctx.world,
            run_id,
        )

    ran: list[dict[str, Any]] = []
    for epoch in range(start_epoch + 1, hp.epochs + 1):
        stats = trainer.run_epoch(epoch)
        ran.append(stats)
        history.append({k_: v for k_, v in stats.items()})
        if ctx.is_main:
            payload = {
                "format": CHECKPOINT_FORMAT,
                "fingerprint": fp,
                "epoch": epoch,
                "run_id": run_id,
                "history": history,
                "state": trainer.state(),
            }
            save_checkpoint(ckpt_dir, payload)
            tracker.log_epochs(history)
            log.info(
                "epoch %d/%d loss=%.5f %.2fs %.0f samples/s%s",
                epoch,
                hp.epochs,
                stats["loss"],
                stats["seconds"],
                stats["samples_per_s"],
                " (cut by --max-seconds-per-epoch)" if stats["cut"] else "",
            )
    if ctx.distributed:
        dist.barrier()
    if not ctx.is_main:
        return 0

    metrics = trainer.evaluate(k)
    seconds = sum(s["seconds"] for s in ran) or sum(s["seconds"] for s in history)
    samples = sum(s["samples"] for s in ran) or sum(s["samples"] for s in history)
    samples_per_s = samples / max(seconds, 1e-9)
    metrics.update(
        {
            "final_loss": history[-1]["loss"] if history else float("nan"),
            "train_seconds": seconds,
            "train_samples_per_s": samples_per_s,
            f"lift_recall_at_{k}": metrics[f"recall_at_{k}"] / metrics[f"pop_recall_at_{k}"]
            if metrics[f"pop_recall_at_{k}"]
            else 0.0,
        }
    )
    info = tracker.log_model(trainer.module.arrays(), data, cfg.scoring.k)
    result = {
        "run_id": run_id,
        "model_uri": info.model_uri,
        "run_model_uri": f"runs:/{run_id}/model",
        "experiment_id": tracker.experiment_id,
        "metrics": metrics,
        "k": k,
        "epochs_done": len(history),
        "epochs_cut": sum(1 for s in history if s.get("cut")),
        "samples_per_s": samples_per_s,
        "world_size": ctx.world,
        "device": ctx.device.type,
        "snapshot": data.uri,
        "snapshot_day": data.manifest.get("day"),
        "checkpoint_dir": str(ckpt_dir),
        "fingerprint": fp,
    }
    tracker.finish(metrics, result)
    storage.write_json_atomic(ckpt_dir / RESULT, result)
    log.info(
        "recall@%d=%.4f ndcg@%d=%.4f (popularity %.4f / %.4f)",
        k,
        metrics[f"recall_at_{k}"],
        k,
        metrics[f"ndcg_at_{k}"],
        metrics[f"pop_recall_at_{k}"],
        metrics[f"pop_ndcg_at_{k}"],
    )
    emit_result(result, args.result_file)
    return 0


if __name__ == "__main__":
    sys.exit(main())
