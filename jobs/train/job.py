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
out of range or an empty training set exits with code 3 (bad input) naming the problem.

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
