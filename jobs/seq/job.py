"""Train the sequential (SASRec) model on one training snapshot and log it to MLflow.

``python -m jobs.seq --snapshot DIR [--epochs N --batch-size B --hidden H --max-len L
--blocks N --heads N --dropout X --lr X --weight-decay X --loss full|sampled --negatives N
--seed S] [--checkpoint-dir DIR] [--run-name NAME] [--experiment NAME] [--tracking-uri URI]
[--result-file PATH] [--max-seconds-per-epoch S] [--device auto|cpu|cuda] [--fresh]``

The trainer contract of ``jobs.train``: the same snapshot input, cache (``jobs.core.cache``:
a registered version with this run's key means nothing is trained), per-epoch checkpoint and
exact resume, idempotent rerun (``result.json`` beside the checkpoint), MLflow params, epoch
metrics, test metrics against popularity and the ``recsys.npz`` pyfunc, and the same result
JSON keys. ``torchrun --nproc-per-node=W -m jobs.seq ...`` trains data-parallel.

Sequences: the order of each user's train pairs comes from the curated days of the window
(``jobs.seq.events``); the model is ``jobs.seq.model.SASRec``; its export scores through
``jobs.core.model`` unchanged (user state · item embedding).
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
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
from jobs.core.training import RESULT, init_distributed, load_checkpoint, save_checkpoint
from jobs.seq.model import LOSSES
from jobs.seq.trainer import Hparams

log = logging.getLogger("jobs.seq")
CHECKPOINT_FORMAT = 1
JOB = "jobs.seq"


def build_parser(cfg: PipelineConfig) -> argparse.ArgumentParser:
    """The job's flags (defaults: ``jobs.seq.trainer.Hparams``; seed, MLflow and k from the configuration)."""
    d, m = Hparams(), cfg.mlflow
    ap = argparse.ArgumentParser(prog="python -m jobs.seq", description=__doc__.split("\n\n")[0])
    ap.add_argument("--snapshot", required=True, help="snapshot folder (train/test/users/items parquet + _SUCCESS)")
    ap.add_argument("--epochs", type=int, default=d.epochs)
    ap.add_argument("--batch-size", type=int, default=d.batch_size, help="sequences per global batch")
    ap.add_argument("--hidden", type=int, default=d.hidden)
    ap.add_argument("--max-len", type=int, default=d.max_len, help="most recent items a sequence keeps")
    ap.add_argument("--blocks", type=int, default=d.blocks)
    ap.add_argument("--heads", type=int, default=d.heads)
    ap.add_argument("--dropout", type=float, default=d.dropout)
    ap.add_argument("--lr", type=float, default=d.lr)
    ap.add_argument("--weight-decay", type=float, default=d.weight_decay, help="AdamW decoupled weight decay")
    ap.add_argument("--loss", choices=LOSSES, default=d.loss, help="full softmax, or sampled over shared negatives")
    ap.add_argument("--negatives", type=int, default=d.negatives, help="uniform negatives per step (--loss sampled)")
    ap.add_argument("--seed", type=int, default=cfg.training.seed)
    ap.add_argument("--init-std", type=float, default=d.init_std, help="std of the initial weights")
    ap.add_argument("--max-seconds-per-epoch", type=float, help="cut an epoch after this many seconds")
    ap.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")
    ap.add_argument("--checkpoint-dir", help="folder or s3:// prefix; default: <checkpoints zone>/seq-<day>-<fp>")
    ap.add_argument("--fresh", action="store_true", help="ignore (and overwrite) an existing checkpoint")
    ap.add_argument("--run-name")
    ap.add_argument("--experiment", default=m.experiment)
    ap.add_argument("--tracking-uri", default=m.tracking_uri)
    ap.add_argument("--k", type=int, default=cfg.gate.k, help="cut-off of the test metrics (gate.k)")
    ap.add_argument("--model-name", default=m.model_name, help="registered model whose versions are the cache")
    ap.add_argument("--force-retrain", type=as_bool, default=False, help="true: train even when cached")
    return ap


def hparams(args: argparse.Namespace) -> Hparams:
    """The checked hyper-parameters of the parsed arguments (``BadArgument`` naming a bad flag)."""
    for name in ("epochs", "batch_size", "hidden", "max_len", "blocks", "heads", "negatives", "k"):
        if getattr(args, name) < 1:
            raise BadArgument(f"--{name.replace('_', '-')} must be at least 1")
    if args.hidden % args.heads:
        raise BadArgument("--hidden must be a multiple of --heads")
    if args.lr <= 0 or args.init_std <= 0 or args.weight_decay < 0 or not 0 <= args.dropout < 1:
        raise BadArgument("--lr and --init-std must be > 0, --weight-decay >= 0 and --dropout in [0, 1)")
    if args.max_seconds_per_epoch is not None and args.max_seconds_per_epoch <= 0:
        raise BadArgument("--max-seconds-per-epoch must be > 0")
    fields = {f.name for f in dataclasses.fields(Hparams)}
    return Hparams(**{name: getattr(args, name) for name in fields})


def fingerprint(data: TrainData, hp: Hparams) -> str:
    payload = {"job": JOB, "snapshot": data.uri, "manifest": data.manifest, "hparams": hp.fingerprint_fields()}
    return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()


def run(cfg: PipelineConfig, args: argparse.Namespace) -> dict[str, Any] | None:
    """The CLI's job; None on ranks other than 0 (rank 0 reports for the whole run)."""
    hp = hparams(args)
    data = load_snapshot(args.snapshot)
    main_rank = int(os.environ.get("RANK", "0")) == 0
    key = cache_key(data.manifest, JOB, code_version("seq", "core"), dataclasses.asdict(hp))
    if not args.force_retrain and (hit := find_cached(cfg, args.model_name, key)) is not None:
        log.info("cached: version %s has this cache key (%s); nothing trained", hit["cached_version"], key)
        return {"cached": True, "cache_key": key, **hit} if main_rank else None
    fp = fingerprint(data, hp)
    ckpt_dir = args.checkpoint_dir or storage.join(
        cfg.storage.zone("checkpoints"), f"seq-{data.manifest.get('day', 'snapshot')}-{fp[:12]}"
    )
    previous = None if args.fresh else _already_trained(ckpt_dir, fp, hp.epochs)
    if previous is not None:
        return previous if main_rank else None
    from jobs.seq.events import window_events
    from jobs.seq.sequences import build_histories

    hist = build_histories(*window_events(cfg, data), data.n_users)
    ctx = init_distributed(args.device)
    try:
        return _train(cfg, args, hp, data, hist, ctx, fp, key, ckpt_dir)
    finally:
        import torch.distributed as dist

        if dist.is_initialized():
            dist.destroy_process_group()


def _already_trained(ckpt_dir: str, fp: str, epochs: int) -> dict[str, Any] | None:
    text = storage.read_text(storage.join(ckpt_dir, RESULT))
    try:
        previous = json.loads(text) if text is not None else None
    except ValueError:
        return None
    if not previous or previous.get("fingerprint") != fp or previous.get("epochs_done") != epochs:
        return None
    log.info("already trained (%s); re-emitting its result", ckpt_dir)
    return previous


def _train(
    cfg: PipelineConfig, args: argparse.Namespace, hp: Hparams, data, hist, ctx, fp: str, key: str, ckpt_dir: str
) -> dict[str, Any] | None:
    """Resume, train the remaining epochs (checkpoint each), evaluate, log; rank 0's result.

    Long because it is the run's sequence, in the order of ``jobs.train.job._train``.
    """
    import torch
    import torch.distributed as dist

    from jobs.core.training import evaluate_arrays
    from jobs.seq.tracking import Tracker
    from jobs.seq.trainer import Trainer

    if ctx.device.type == "cuda":
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    torch.use_deterministic_algorithms(True, warn_only=True)
    trainer = Trainer(data, hist, hp, ctx)
    ckpt = None if args.fresh else load_checkpoint(ckpt_dir, fp, CHECKPOINT_FORMAT)
    history: list[dict[str, Any]] = []
    if ckpt is not None:
        trainer.load_state(ckpt["state"])
        history = list(ckpt["history"])
        log.info("resuming from %s at epoch %d", ckpt_dir, len(history))
    tracker, run_id = None, None
    if ctx.is_main:
        tracker = Tracker(args.tracking_uri, args.experiment)
        run_id = tracker.start(ckpt.get("run_id") if ckpt else None, args.run_name)
        tracker.log_setup(data, hist, hp, ctx, {"checkpoint_dir": str(ckpt_dir), "k": args.k, "windows": trainer.n})
        tracker.mlflow.set_tag(RUN_TAG, key)
        tracker.log_epochs(history)
    ran = []
    for epoch in range(len(history) + 1, hp.epochs + 1):
        stats = trainer.run_epoch(epoch)
        ran.append(stats)
        history.append(dict(stats))
        if ctx.is_main:
            payload = {"format": CHECKPOINT_FORMAT, "fingerprint": fp, "epoch": epoch, "run_id": run_id}
            save_checkpoint(ckpt_dir, {**payload, "history": history, "state": trainer.state()})
            tracker.log_epochs(history)
            log.info(
                "epoch %d/%d loss=%.5f %.2fs %.0f targets/s",
                epoch,
                hp.epochs,
                stats["loss"],
                stats["seconds"],
                stats["samples_per_s"],
            )
    if ctx.distributed:
        dist.barrier()
    if not ctx.is_main:
        return None
    k = args.k
    arrays = trainer.arrays()
    metrics = evaluate_arrays(arrays, data, k, device=ctx.device)
    done = ran or history
    seconds, samples = sum(s["seconds"] for s in done), sum(s["samples"] for s in done)
    pop_recall = metrics[f"pop_recall_at_{k}"]
    metrics.update(
        {
            "final_loss": history[-1]["loss"] if history else float("nan"),
            "train_seconds": seconds,
            "train_samples_per_s": samples / max(seconds, 1e-9),
            f"lift_recall_at_{k}": metrics[f"recall_at_{k}"] / pop_recall if pop_recall else 0.0,
        }
    )
    info = tracker.log_model(arrays, data, cfg.scoring.k)
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
        "cache_key": key,
    }
    tracker.finish(metrics, result)
    storage.write_json_atomic(storage.join(ckpt_dir, RESULT), result)
    log.info(
        "recall@%d=%.4f ndcg@%d=%.4f (popularity %.4f / %.4f)",
        *(k, metrics[f"recall_at_{k}"], k, metrics[f"ndcg_at_{k}"]),
        *(metrics[f"pop_recall_at_{k}"], metrics[f"pop_ndcg_at_{k}"]),
    )
    return result


def main(argv: list[str] | None = None) -> int:
    """``python -m jobs.seq``: run the job, report through ``jobs.core.cli.run_job``."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    return run_job(
        "sequential training",
        build_parser,
        run,
        argv,
        ledger=lambda r: f"seq/{r['run_id']}" if r.get("run_id") else None,
    )
