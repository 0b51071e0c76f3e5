"""Train the sequential (SASRec) model on one training snapshot and log it to MLflow.

``python -m jobs.seq --snapshot DIR [--epochs N --batch-size B --hidden H --max-len L
--blocks N --heads N --dropout X --lr X --weight-decay X --loss full|sampled --negatives N
--seed S] [--checkpoint-dir DIR] [--run-name NAME] [--experiment NAME] [--tracking-uri URI]
[--result-file PATH] [--max-seconds-per-epoch S] [--device auto|cpu|cuda] [--fresh]``

The trainer protocol (``jobs.core.trainer_protocol``) and the torch run of ``jobs.train``
(``jobs.core.training.train_and_log``): the same snapshot input, cache, per-epoch checkpoint and
exact resume, idempotent rerun, MLflow run, test metrics against popularity, the ``recsys.npz``
pyfunc and the declared ``TrainResult``. ``torchrun --nproc-per-node=W -m jobs.seq ...`` trains data-parallel.

Sequences: the order of each user's train pairs comes from the curated days of the window
(``jobs.seq.events``); the model is ``jobs.seq.model.SASRec``; its export scores through
``jobs.core.model`` unchanged (user state · item embedding).
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import sys
from typing import Any

import numpy as np

from jobs.core.cli import BadArgument, run_job
from jobs.core.config import PipelineConfig
from jobs.core.results import TrainResult
from jobs.core.snapshots import TrainData, load_snapshot
from jobs.core.trainer_protocol import TrainerRun, add_trainer_arguments, main_rank, snapshot_params
from jobs.core.training import DistContext, distributed, train_and_log
from jobs.seq.model import LOSSES
from jobs.seq.sequences import Histories
from jobs.seq.trainer import Hparams

CHECKPOINT_FORMAT = 1
JOB = "jobs.seq"


def build_parser(cfg: PipelineConfig) -> argparse.ArgumentParser:
    """The job's flags (defaults: ``jobs.seq.trainer.Hparams``; seed, MLflow and k from the configuration)."""
    d = Hparams()
    ap = argparse.ArgumentParser(prog="python -m jobs.seq", description=__doc__.split("\n\n")[0])
    add_trainer_arguments(ap, cfg, "folder or s3:// prefix; default: <checkpoints zone>/seq-<day>-<fp>")
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
    ap.add_argument("--fresh", action="store_true", help="ignore (and overwrite) an existing checkpoint")
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


def seq_params(data: TrainData, hist: Histories, hp: Hparams, ctx: DistContext, extra: dict[str, Any]) -> dict:
    """The MLflow params of a SASRec run: hyper-parameters, device, snapshot and sequence sizes."""
    lengths = hist.lengths()
    return {
        "model": "sasrec",
        **{k: v for k, v in dataclasses.asdict(hp).items() if v is not None},
        "world_size": ctx.world,
        "device": ctx.device.type,
        **snapshot_params(data),
        "sequence_items": int(lengths.sum()),
        "median_sequence_length": float(np.median(lengths)) if len(lengths) else 0.0,
        **extra,
    }


def run(cfg: PipelineConfig, args: argparse.Namespace) -> TrainResult | None:
    """The CLI's job under the trainer protocol; None on ranks other than 0 (rank 0 reports for the whole run)."""
    hp = hparams(args)
    data = load_snapshot(args.snapshot)
    run = TrainerRun.for_epochs(cfg, JOB, data, hp, args.checkpoint_dir, default_dir="seq")
    previous = run.reuse(cfg, args)
    if previous is not None:
        return previous if main_rank() else None
    from jobs.seq.events import window_events
    from jobs.seq.sequences import build_histories
    from jobs.seq.trainer import Trainer

    hist = build_histories(*window_events(cfg, data), data.n_users)
    with distributed(args.device) as ctx:

        def params(trainer: Any) -> dict[str, Any]:
            extra = {"checkpoint_dir": str(run.result_dir), "k": args.k, "windows": trainer.n}
            return seq_params(data, hist, hp, ctx, extra)

        return train_and_log(cfg, args, run, data, ctx, lambda: Trainer(data, hist, hp, ctx), params, CHECKPOINT_FORMAT)


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
