"""What every torch trainer family shares: devices and torchrun, checkpoint files, the epoch
loop with resume, test metrics, and ``train_and_log``, the whole run of a torch family under the
trainer protocol (``jobs.core.trainer_protocol``).

``jobs.train`` (MF) and ``jobs.seq`` (SASRec) differ only in their ``EpochTrainer``: how one
epoch runs, what state a checkpoint holds and how the model exports as factors. torch and
MLflow are imported inside the functions.
"""

from __future__ import annotations

import argparse
import io
import logging
import os
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

from jobs.core import storage
from jobs.core.config import PipelineConfig
from jobs.core.errors import BadArgument
from jobs.core.results import TrainResult
from jobs.core.snapshots import TrainData
from jobs.core.trainer_protocol import Tracker, TrainerRun

log = logging.getLogger("jobs.core.training")
CHECKPOINT = "checkpoint.pt"


# ---- devices and torchrun ----------------------------------------------------------------


@dataclass
class DistContext:
    """This process's place in a (possibly one-process) training run."""

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


def pick_device(name: str, local_rank: int = 0) -> Any:
    """The torch device for ``--device`` (auto|cpu|cuda); ``BadArgument`` for cuda without CUDA."""
    import torch

    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda":
        if not torch.cuda.is_available():
            raise BadArgument("--device cuda requested but no CUDA device is available")
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


@contextmanager
def distributed(device_name: str) -> Iterator[DistContext]:
    """``init_distributed`` for the block; the process group (if any) is destroyed after it."""
    ctx = init_distributed(device_name)
    try:
        yield ctx
    finally:
        import torch.distributed as dist

        if dist.is_initialized():
            dist.destroy_process_group()


def deterministic(ctx: DistContext) -> None:
    """Deterministic kernels (warn only where torch has none): what makes resume exact."""
    import torch

    if ctx.device.type == "cuda":
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    torch.use_deterministic_algorithms(True, warn_only=True)


# ---- checkpoint files --------------------------------------------------------------------


def save_checkpoint(folder: str, payload: dict[str, Any]) -> str:
    """Atomically replace ``folder/checkpoint.pt`` (local: temporary file, fsync, rename;
    object store: one PUT)."""
    import torch

    buffer = io.BytesIO()
    torch.save(payload, buffer)
    final = storage.join(str(folder), CHECKPOINT)
    storage.write_bytes_atomic(final, buffer.getvalue())
    return final


def load_checkpoint(folder: str, fp: str, fmt: int) -> dict[str, Any] | None:
    """The checkpoint in ``folder`` if it has format ``fmt`` and fingerprint ``fp`` (else None, with a warning)."""
    import torch

    path = storage.join(str(folder), CHECKPOINT)
    raw = storage.read_bytes(path)
    if raw is None:
        return None
    try:
        payload = torch.load(io.BytesIO(raw), map_location="cpu", weights_only=True)
    except Exception as exc:
        log.warning("ignoring unreadable checkpoint %s: %s", path, exc)
        return None
    if payload.get("format") != fmt or payload.get("fingerprint") != fp:
        log.warning("ignoring checkpoint %s: written for another snapshot or other hyper-parameters", path)
        return None
    return payload


# ---- test metrics ------------------------------------------------------------------------


def evaluate_arrays(arrays: dict[str, np.ndarray], data: TrainData, k: int, device: Any = None) -> dict[str, float]:
    """Test-set metrics of factor arrays (and the popularity baseline) with seen items excluded."""
    import torch

    from jobs.core.model import top_k
    from jobs.core.ranking import evaluate_ranking, popularity_top_k

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


# ---- the epoch loop -----------------------------------------------------------------------


class EpochTrainer(Protocol):
    """What a torch family's trainer offers the shared loop."""

    hp: Any  # its hyper-parameters: at least ``epochs``
    ctx: DistContext

    def run_epoch(self, epoch: int) -> dict[str, Any]:
        """One epoch (1-based): ``epoch``, ``loss``, ``seconds``, ``samples``, ``samples_per_s``, ``cut``."""
        ...

    def state(self) -> dict[str, Any]: ...

    def load_state(self, state: dict[str, Any]) -> None: ...

    def arrays(self) -> dict[str, np.ndarray]:
        """The model as ``recsys.npz`` factors (``user_factors``, ``item_factors``, ``item_bias``)."""
        ...


def time_up(started: float, limit: float | None, ctx: DistContext) -> bool:
    """True when the epoch has run past ``limit`` seconds (the same answer on every rank)."""
    if limit is None:
        return False
    over = time.perf_counter() - started > limit
    if ctx.distributed:  # every rank must stop after the same step
        import torch
        import torch.distributed as dist

        flag = torch.tensor(float(over), device=ctx.device)
        dist.all_reduce(flag, op=dist.ReduceOp.MAX)
        over = bool(flag.item())
    return over


def epoch_stats(epoch: int, loss_sum: Any, samples: int, started: float, cut: bool, ctx: DistContext) -> dict[str, Any]:
    """An epoch's record: ``loss_sum`` (a tensor, summed over ranks here) per sample, timing, ``cut``."""
    import torch
    import torch.distributed as dist

    if ctx.distributed:
        dist.all_reduce(loss_sum)
    if ctx.device.type == "cuda":
        torch.cuda.synchronize(ctx.device)
    seconds = time.perf_counter() - started
    return {
        "epoch": epoch,
        "loss": float(loss_sum.item() / max(samples, 1)),
        "seconds": seconds,
        "samples": samples,
        "samples_per_s": samples / max(seconds, 1e-9),
        "cut": cut,
    }


def resume(trainer: EpochTrainer, ckpt: dict[str, Any] | None, ckpt_dir: str) -> list[dict[str, Any]]:
    """Load the checkpoint into the trainer (if any); the epoch history so far. Every rank must
    resume from the same epoch (a checkpoint folder not shared by all ranks is an error)."""
    import torch
    import torch.distributed as dist

    ctx = trainer.ctx
    history: list[dict[str, Any]] = []
    if ckpt is not None:
        trainer.load_state(ckpt["state"])
        history = list(ckpt["history"])
        log.info("resuming from %s at epoch %d", storage.join(ckpt_dir, CHECKPOINT), int(ckpt["epoch"]))
    if ctx.distributed:
        start = len(history)
        epochs = torch.tensor([start, -start], dtype=torch.int64, device=ctx.device)
        dist.all_reduce(epochs, op=dist.ReduceOp.MAX)
        if int(epochs[0]) != -int(epochs[1]):
            raise RuntimeError(f"ranks found different checkpoints in {ckpt_dir}: it must be shared by all ranks")
    return history


def run_epochs(
    trainer: EpochTrainer, history: list[dict[str, Any]], run: TrainerRun, fmt: int, tracker: Tracker | None
) -> list[dict[str, Any]]:
    """Run the remaining epochs; rank 0 checkpoints (format ``fmt``) and logs each. Returns the epochs run now."""
    hp, ctx = trainer.hp, trainer.ctx
    ran: list[dict[str, Any]] = []
    for epoch in range(len(history) + 1, hp.epochs + 1):
        stats = trainer.run_epoch(epoch)
        ran.append(stats)
        history.append(dict(stats))
        if not ctx.is_main or tracker is None:
            continue
        payload = {"format": fmt, "fingerprint": run.fingerprint, "epoch": epoch, "run_id": tracker.run_id}
        save_checkpoint(str(run.result_dir), {**payload, "history": history, "state": trainer.state()})
        tracker.log_epochs(history)
        log.info(
            "epoch %d/%d loss=%.5f %.2fs %.0f samples/s%s",
            *(epoch, hp.epochs, stats["loss"], stats["seconds"], stats["samples_per_s"]),
            " (cut by --max-seconds-per-epoch)" if stats["cut"] else "",
        )
    return ran


def final_metrics(
    metrics: dict[str, float], history: list[dict[str, Any]], ran: list[dict[str, Any]], k: int
) -> dict[str, float]:
    """Test metrics plus the run's final loss, training time and throughput, and the lift over popularity."""
    done = ran or history
    seconds, samples = sum(s["seconds"] for s in done), sum(s["samples"] for s in done)
    pop_recall = metrics[f"pop_recall_at_{k}"]
    return {
        **metrics,
        "final_loss": history[-1]["loss"] if history else float("nan"),
        "train_seconds": seconds,
        "train_samples_per_s": samples / max(seconds, 1e-9),
        f"lift_recall_at_{k}": metrics[f"recall_at_{k}"] / pop_recall if pop_recall else 0.0,
    }


def train_and_log(
    cfg: PipelineConfig,
    args: argparse.Namespace,
    run: TrainerRun,
    data: TrainData,
    ctx: DistContext,
    build: Callable[[], EpochTrainer],
    params: Callable[[EpochTrainer], dict[str, Any]],
    fmt: int,
) -> TrainResult | None:
    """A torch family's run: resume from ``run``'s checkpoint, train the remaining epochs
    (checkpointing each), evaluate, log the model and write the result; rank 0's result, None
    on other ranks.

    Args:
        build: the family's trainer (called after the deterministic switches).
        params: the MLflow params of the run, given the trainer.
        fmt: the family's checkpoint format (a checkpoint of another format is ignored).
    """
    import torch.distributed as dist

    deterministic(ctx)
    ckpt_dir = str(run.result_dir)
    ckpt = None if args.fresh else load_checkpoint(ckpt_dir, run.fingerprint, fmt)
    trainer = build()
    history = resume(trainer, ckpt, ckpt_dir)
    tracker = None
    if ctx.is_main:
        tracker = Tracker(args.tracking_uri, args.experiment)
        tracker.start(ckpt.get("run_id") if ckpt else None, args.run_name)
        tracker.log_inputs(data, run.job, params(trainer), run.key)
        tracker.log_epochs(history)
        log.info(
            "training %d pairs (%d users x %d items) on %s, world size %d, MLflow run %s",
            *(len(data.users), data.n_users, data.n_items, ctx.device, ctx.world, tracker.run_id),
        )
    ran = run_epochs(trainer, history, run, fmt, tracker)
    if ctx.distributed:
        dist.barrier()
    if tracker is None:
        return None
    k = args.k
    arrays = trainer.arrays()
    metrics = final_metrics(evaluate_arrays(arrays, data, k, device=ctx.device), history, ran, k)
    info = tracker.log_model(arrays, data, cfg.scoring.k)
    result = run.result(
        tracker,
        info.model_uri,
        metrics,
        k,
        data,
        epochs_done=len(history),
        epochs_cut=sum(1 for s in history if s.get("cut")),
        samples_per_s=metrics["train_samples_per_s"],
        world_size=ctx.world,
        device=ctx.device.type,
        checkpoint_dir=ckpt_dir,
    )
    run.finish(tracker, metrics, result)
    log.info(
        "recall@%d=%.4f ndcg@%d=%.4f (popularity %.4f / %.4f)",
        *(k, metrics[f"recall_at_{k}"], k, metrics[f"ndcg_at_{k}"]),
        *(metrics[f"pop_recall_at_{k}"], metrics[f"pop_ndcg_at_{k}"]),
    )
    return result
