"""Train the matrix-factorisation model on one training snapshot and log it to MLflow.

``python -m jobs.train --snapshot DIR [--epochs N --batch-size B --factors F --lr X
--weight-decay X --seed S --negatives N --loss bpr|softmax] [--checkpoint-dir DIR]
[--run-name NAME] [--experiment NAME] [--tracking-uri URI] [--result-file PATH]
[--max-seconds-per-epoch S] [--device auto|cpu|cuda] [--fresh]``

Defaults come from the ``training``, ``mlflow`` and ``gate`` sections of the configuration
(``training.negatives``, ``training.loss``, ...). The model is
``jobs.train.model.MFBPR`` (see that module for the choice).

Input: a snapshot folder (``jobs.snapshot``, read by ``jobs.core.snapshots``): the tables
train (user_idx, item_idx, weight), test (user_idx, item_idx), users and items, each in part
files ``<table>-00000.parquet``, …, and the ``_SUCCESS`` manifest. A missing or unpublished
snapshot, a missing table or column, index out of range or an empty training set exits with
code 3 (bad input) naming the problem.

How it trains (device and bf16, epochs and sampling, ``torchrun`` data parallelism, checkpoints
and exact resume, what is logged to MLflow): ``docs/stages.md``.

Output: ``--result-file`` and, when the folder exists, ``/airflow/xcom/return.json`` (the
KubernetesPodOperator XCom contract; ``RECSYS_XCOM_DIR`` overrides the folder) receive
``{"run_id", "model_uri", "metrics", "epochs_done", "samples_per_s", ...}``.
"""

from __future__ import annotations

import argparse
import logging
import sys
from typing import Any

from jobs.core.cli import BadArgument, run_job
from jobs.core.config import PipelineConfig
from jobs.core.results import TrainResult
from jobs.core.snapshots import load_snapshot
from jobs.core.trainer_protocol import TrainerRun, add_trainer_arguments, main_rank
from jobs.core.training import EpochTrainer, distributed, train_and_log
from jobs.train.model import LOSSES
from jobs.train.tracking import mf_params
from jobs.train.trainer import Hparams, Trainer

JOB = "jobs.train"
CHECKPOINT_FORMAT = 1


def build_parser(cfg: PipelineConfig) -> argparse.ArgumentParser:
    t = cfg.training
    ap = argparse.ArgumentParser(prog="python -m jobs.train", description=__doc__.split("\n\n")[0])
    add_trainer_arguments(ap, cfg, "folder or s3:// prefix; default: <checkpoints zone>/train-<day>-<fingerprint>")
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
    ap.add_argument("--fresh", action="store_true", help="ignore (and overwrite) an existing checkpoint")
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


def run(cfg: PipelineConfig, args: argparse.Namespace) -> TrainResult | None:
    """The CLI's job under the trainer protocol; None on ranks other than 0 (rank 0 reports for the whole run)."""
    check_args(args)
    hp = hparams(args)
    data = load_snapshot(args.snapshot)
    run = TrainerRun.for_epochs(cfg, JOB, data, hp, args.checkpoint_dir, default_dir="train")
    previous = run.reuse(cfg, args)
    if previous is not None:
        return previous if main_rank() else None
    with distributed(args.device) as ctx:

        def params(trainer: EpochTrainer) -> dict[str, Any]:
            return mf_params(data, hp, ctx, {"checkpoint_dir": str(run.result_dir), "k": args.k})

        return train_and_log(cfg, args, run, data, ctx, lambda: Trainer(data, hp, ctx), params, CHECKPOINT_FORMAT)


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    return run_job(
        "training", build_parser, run, argv, ledger=lambda r: f"train/{r['run_id']}" if r.get("run_id") else None
    )
