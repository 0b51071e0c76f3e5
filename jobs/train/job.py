"""Train the matrix-factorisation model on one training snapshot and log it to MLflow.

``python -m jobs.train --snapshot DIR [--epochs N --batch-size B --factors F --lr X
--weight-decay X --seed S --negatives N --loss bpr|softmax] [--checkpoint-dir DIR]
[--run-name NAME] [--experiment NAME] [--tracking-uri URI] [--result-file PATH]
[--max-seconds-per-epoch S] [--device auto|cpu|cuda] [--fresh]``

Defaults come from the ``training``, ``mlflow`` and ``gate`` sections of the configuration
(``--negatives`` 4 and ``--loss bpr`` have no configuration key). The model is
``jobs.train.model.MFBPR`` (see that module for the choice).

Input: a snapshot folder (``jobs.snapshot``): ``train.parquet`` (user_idx, item_idx,
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
  (``jobs.core.model.RecsysPyfunc``; artifacts in one ``.npz``, ``jobs/core/model.py`` as code).

Output: ``--result-file`` and, when the folder exists, ``/airflow/xcom/return.json`` (the
KubernetesPodOperator XCom contract; ``RECSYS_XCOM_DIR`` overrides the folder) receive
``{"run_id", "model_uri", "metrics", "epochs_done", "samples_per_s", ...}``.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import os
import sys
from typing import Any

from jobs.core import storage
from jobs.core.cache import RUN_TAG, as_bool, cache_key, code_version, find_cached
from jobs.core.cli import BadArgument, run_job
from jobs.core.config import PipelineConfig
from jobs.core.snapshots import TrainData, load_snapshot
from jobs.train.checkpoint import (
    CHECKPOINT,
    CHECKPOINT_FORMAT,
    RESULT,
    default_checkpoint_dir,
    fingerprint,
    load_checkpoint,
    save_checkpoint,
)
from jobs.train.model import LOSSES
from jobs.train.tracking import Tracker
from jobs.train.trainer import DistContext, Hparams, Trainer, init_distributed

log = logging.getLogger("jobs.train")


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
    ap.add_argument("--negatives", type=int, default=t.negatives, help="uniform negatives per positive")
    ap.add_argument("--loss", choices=LOSSES, default=t.loss, help="bpr, or sampled softmax over the same negatives")
    ap.add_argument("--optimizer", choices=("adam", "adagrad"), default="adam")
    ap.add_argument("--init-std", type=float, default=0.01)
    ap.add_argument("--no-weights", action="store_true", help="ignore the snapshot's pair weights")
    ap.add_argument("--max-seconds-per-epoch", type=float, help="cut an epoch after this many seconds")
    ap.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")
    ap.add_argument(
        "--checkpoint-dir", help="folder or s3:// prefix; default: <checkpoints zone>/train-<day>-<fingerprint>"
    )
    ap.add_argument("--fresh", action="store_true", help="ignore (and overwrite) an existing checkpoint")
    ap.add_argument("--run-name")
    ap.add_argument("--experiment", default=m.experiment)
    ap.add_argument("--tracking-uri", default=m.tracking_uri)
    ap.add_argument("--k", type=int, default=cfg.gate.k, help="cut-off of the test metrics (gate.k)")
    ap.add_argument("--model-name", default=cfg.mlflow.model_name, help="registered model whose versions are the cache")
    ap.add_argument(
        "--force-retrain",
        type=as_bool,
        default=False,
        help="true: train even when a version with this cache key exists",
    )
    return ap


def check_args(args: argparse.Namespace) -> None:
    """``BadArgument`` naming the first flag out of range."""
    for name in ("epochs", "batch_size", "factors", "negatives", "k"):
        if getattr(args, name) < 1:
            raise BadArgument(f"--{name.replace('_', '-')} must be at least 1")
    if args.lr <= 0 or args.weight_decay < 0 or args.init_std <= 0:
        raise BadArgument("--lr and --init-std must be > 0 and --weight-decay >= 0")
    if args.max_seconds_per_epoch is not None and args.max_seconds_per_epoch <= 0:
        raise BadArgument("--max-seconds-per-epoch must be > 0")


def hparams(args: argparse.Namespace) -> Hparams:
    """The hyper-parameters of the parsed arguments."""
    return Hparams(
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


def run(cfg: PipelineConfig, args: argparse.Namespace) -> dict[str, Any] | None:
    """The CLI's job; None on ranks other than 0 (rank 0 reports for the whole run)."""
    check_args(args)
    hp = hparams(args)
    data = load_snapshot(args.snapshot)
    args.cache_key = cache_key(data.manifest, "jobs.train", code_version("train", "core"), dataclasses.asdict(hp))
    if not args.force_retrain:
        hit = find_cached(cfg, args.model_name, args.cache_key)
        if hit is not None:
            log.info(
                "cached: version %s has this cache key (%s); nothing trained", hit["cached_version"], args.cache_key
            )
            return (
                {"cached": True, "cache_key": args.cache_key, **hit} if int(os.environ.get("RANK", "0")) == 0 else None
            )
    previous = None if args.fresh else _already_trained(cfg, args, hp, data)
    if previous is not None:
        return previous if int(os.environ.get("RANK", "0")) == 0 else None
    ctx = init_distributed(args.device)
    try:
        return _train(cfg, args, hp, data, ctx)
    finally:
        import torch.distributed as dist

        if dist.is_initialized():
            dist.destroy_process_group()


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    return run_job(
        "training", build_parser, run, argv, ledger=lambda r: f"train/{r['run_id']}" if r.get("run_id") else None
    )


def _already_trained(
    cfg: PipelineConfig, args: argparse.Namespace, hp: Hparams, data: TrainData
) -> dict[str, Any] | None:
    """The result of a finished run with the same fingerprint and epochs (checked before torch loads).

    Every rank decides the same way: all ranks see the checkpoint folder (one node or a shared
    volume).
    """
    fp = fingerprint(data, hp)
    done = storage.join(args.checkpoint_dir or default_checkpoint_dir(cfg, data, fp), RESULT)
    text = storage.read_text(done)
    if text is None:
        return None
    try:
        previous = json.loads(text)
    except ValueError:
        return None
    if previous.get("fingerprint") != fp or previous.get("epochs_done") != hp.epochs:
        return None
    log.info("already trained (%s); re-emitting its result", done)
    return previous


def _resume(trainer: Trainer, ckpt: dict[str, Any] | None, ckpt_dir: str, ctx: DistContext) -> list[dict[str, Any]]:
    """Load the checkpoint into the trainer (if any); the epoch history so far. Every rank must
    resume from the same epoch (a checkpoint folder not shared by all ranks is an error)."""
    import torch
    import torch.distributed as dist

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


def _epochs(
    trainer: Trainer, history: list[dict[str, Any]], fp: str, run_id: str | None, ckpt_dir: str, tracker: Any
) -> list[dict[str, Any]]:
    """Run the remaining epochs; rank 0 checkpoints and logs each. Returns the epochs run now."""
    hp, ctx = trainer.hp, trainer.ctx
    ran: list[dict[str, Any]] = []
    for epoch in range(len(history) + 1, hp.epochs + 1):
        stats = trainer.run_epoch(epoch)
        ran.append(stats)
        history.append(dict(stats))
        if not ctx.is_main:
            continue
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
    return ran


def _final_metrics(trainer: Trainer, history: list[dict[str, Any]], ran: list[dict[str, Any]], k: int) -> dict:
    metrics = trainer.evaluate(k)
    seconds = sum(s["seconds"] for s in ran) or sum(s["seconds"] for s in history)
    samples = sum(s["samples"] for s in ran) or sum(s["samples"] for s in history)
    pop_recall = metrics[f"pop_recall_at_{k}"]
    metrics.update(
        {
            "final_loss": history[-1]["loss"] if history else float("nan"),
            "train_seconds": seconds,
            "train_samples_per_s": samples / max(seconds, 1e-9),
            f"lift_recall_at_{k}": metrics[f"recall_at_{k}"] / pop_recall if pop_recall else 0.0,
        }
    )
    return metrics


def _train(
    cfg: PipelineConfig, args: argparse.Namespace, hp: Hparams, data: TrainData, ctx: DistContext
) -> dict[str, Any] | None:
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
    history = _resume(trainer, ckpt, ckpt_dir, ctx)
    tracker, run_id = None, None
    if ctx.is_main:
        tracker = Tracker(args.tracking_uri, args.experiment)
        run_id = tracker.start(ckpt.get("run_id") if ckpt else None, args.run_name)
        tracker.log_setup(data, hp, ctx, {"checkpoint_dir": str(ckpt_dir), "k": k})
        tracker.mlflow.set_tag(RUN_TAG, args.cache_key)
        tracker.log_epochs(history)
        log.info(
            "training %d pairs (%d users x %d items) on %s, world size %d, MLflow run %s",
            *(len(data.users), data.n_users, data.n_items, ctx.device, ctx.world, run_id),
        )
    ran = _epochs(trainer, history, fp, run_id, ckpt_dir, tracker)
    if ctx.distributed:
        dist.barrier()
    if not ctx.is_main:
        return None
    metrics = _final_metrics(trainer, history, ran, k)
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
        "samples_per_s": metrics["train_samples_per_s"],
        "world_size": ctx.world,
        "device": ctx.device.type,
        "snapshot": data.uri,
        "snapshot_day": data.manifest.get("day"),
        "checkpoint_dir": str(ckpt_dir),
        "fingerprint": fp,
        "cached": False,
        "cache_key": args.cache_key,
    }
    tracker.finish(metrics, result)
    storage.write_json_atomic(storage.join(ckpt_dir, RESULT), result)
    log.info(
        "recall@%d=%.4f ndcg@%d=%.4f (popularity %.4f / %.4f)",
        *(k, metrics[f"recall_at_{k}"], k, metrics[f"ndcg_at_{k}"]),
        *(metrics[f"pop_recall_at_{k}"], metrics[f"pop_ndcg_at_{k}"]),
    )
    return result
