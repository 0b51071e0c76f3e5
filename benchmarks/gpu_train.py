"""Throughput of the trainer on a CUDA device: ``python benchmarks/gpu_train.py``.

Trains the default-size model (``training.factors`` from the configuration) with a large
global batch (default 65,536 or ``training.batch_size`` if larger) and bf16 autocast, on a
synthetic interaction set built on the device (users uniform, items from a Zipf(1.0) law, as
in the generated world), for a bounded wall time: ``--seconds`` of measured training (default
180) after a short warm-up, the whole command capped at 8 minutes. It runs the trainer's own
code path (``jobs.train.Trainer``: the same model, sampling, optimizer and step).

Prints and writes (``--out``, default ``benchmarks/results/gpu_train.json``) a JSON report:
samples/s (positive pairs per second, each with ``--negatives`` negatives), steps, epochs,
``torch.cuda.max_memory_allocated``, the loss at the start and the end, the device name.

Second section, the sequential family (``jobs.seq.trainer.Trainer``, SASRec, bf16 autocast):
``--seq-seconds`` of measured training on synthetic histories (``--seq-users`` users of up to
2 × ``--seq-len`` Zipf items each), reported under ``seq`` as target positions per second.
It runs only on CUDA (``seq`` says ``skipped`` otherwise, ``--allow-cpu`` included).

On a machine without CUDA it prints "no CUDA device" and exits 0; ``--allow-cpu`` runs the
same code on the CPU for a tiny smoke run (used by the test suite).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

MAX_TOTAL_S = 480.0


def synthetic_data(users: int, items: int, interactions: int, seed: int, device):
    """TrainData of distinct-ish (user, item) pairs drawn on ``device``."""
    import numpy as np
    import torch

    from jobs.core.snapshots import TrainData

    gen = torch.Generator(device=device)
    gen.manual_seed(seed)
    u = torch.randint(0, users, (interactions,), generator=gen, device=device)
    # Zipf(1.0) over item ranks by inverse CDF of the continuous approximation (no multinomial
    # over a large catalogue): rank = items ** U, U uniform in [0, 1).
    r = torch.rand(interactions, generator=gen, device=device)
    i = (torch.pow(float(items), r).long() - 1).clamp_(0, items - 1)
    perm = torch.randperm(items, generator=gen, device=device)
    i = perm[i]
    popularity = torch.bincount(i, minlength=items)
    return TrainData(
        users=u.cpu().numpy(),
        items=i.cpu().numpy(),
        weights=np.ones(interactions, dtype=np.float32),
        test_users=np.zeros(0, dtype=np.int64),
        test_items=np.zeros(0, dtype=np.int64),
        user_ids=np.arange(users, dtype=np.int64),
        item_ids=np.arange(items, dtype=np.int64),
        popularity=popularity.cpu().numpy().astype(np.int64),
        manifest={"synthetic": True},
        uri="synthetic",
    )


def synthetic_histories(users: int, items: int, max_len: int, seed: int):
    """(TrainData, Histories) of ``users`` sequences of 2..2·max_len Zipf(1.0) items (numpy, host)."""
    import numpy as np

    from jobs.core.snapshots import TrainData
    from jobs.seq.sequences import Histories

    rng = np.random.default_rng(seed)
    lengths = rng.integers(2, 2 * max_len + 1, users)
    indptr = np.zeros(users + 1, dtype=np.int64)
    np.cumsum(lengths, out=indptr[1:])
    seq = (np.power(float(items), rng.random(int(indptr[-1]))).astype(np.int64) - 1).clip(0, items - 1)
    seq = rng.permutation(items)[seq]
    owner = np.repeat(np.arange(users, dtype=np.int64), lengths)
    data = TrainData(
        users=owner,
        items=seq,
        weights=np.ones(len(seq), dtype=np.float32),
        test_users=np.zeros(0, dtype=np.int64),
        test_items=np.zeros(0, dtype=np.int64),
        user_ids=np.arange(users, dtype=np.int64),
        item_ids=np.arange(items, dtype=np.int64),
        popularity=np.bincount(seq, minlength=items).astype(np.int64),
        manifest={"synthetic": True},
        uri="synthetic",
    )
    return data, Histories(indptr, seq)


def seq_section(args: argparse.Namespace, device, budget: float) -> dict:
    """Samples/s of the sequential trainer for ``budget`` seconds (CUDA only; else ``skipped``)."""
    import dataclasses

    import torch

    from jobs.core.training import DistContext
    from jobs.seq.trainer import Hparams, Trainer

    if device.type != "cuda":
        return {"skipped": "no CUDA device"}
    if budget < 10:
        return {"skipped": f"no time left ({budget:.0f} s)"}
    started = time.perf_counter()
    data, hist = synthetic_histories(args.seq_users, args.seq_items, args.seq_len, args.seed)
    hp = Hparams(
        epochs=1,
        batch_size=args.seq_batch_size,
        max_len=args.seq_len,
        loss=args.seq_loss,
        negatives=args.seq_negatives,
        seed=args.seed,
        max_seconds_per_epoch=min(args.warmup_seconds, budget / 4),
    )
    trainer = Trainer(data, hist, hp, DistContext(device=device))
    built_s = time.perf_counter() - started
    torch.cuda.reset_peak_memory_stats(device)
    warm = trainer.run_epoch(1)
    left = budget - (time.perf_counter() - started)
    epochs, epoch = [], 2
    while left > 1:
        trainer.hp = dataclasses.replace(hp, max_seconds_per_epoch=left)
        epochs.append(trainer.run_epoch(epoch))
        left -= epochs[-1]["seconds"]
        epoch += 1
    samples, train_s = sum(e["samples"] for e in epochs), sum(e["seconds"] for e in epochs)
    return {
        "model": "sasrec",
        "users": args.seq_users,
        "items": args.seq_items,
        "max_len": args.seq_len,
        "windows": trainer.n,
        "batch_size": args.seq_batch_size,
        "loss": args.seq_loss,
        "negatives": args.seq_negatives if args.seq_loss == "sampled" else None,
        "bf16_autocast": True,
        "data_build_s": round(built_s, 2),
        "warmup": {"samples": warm["samples"], "seconds": round(warm["seconds"], 2), "loss": warm["loss"]},
        "train_seconds": round(train_s, 2),
        "samples": samples,
        "samples_per_s": samples / max(train_s, 1e-9),
        "sequences_per_s": samples / max(train_s, 1e-9) * trainer.n / max(int((trainer.targets > 0).sum()), 1),
        "loss_first": epochs[0]["loss"] if epochs else None,
        "loss_last": epochs[-1]["loss"] if epochs else None,
        "max_memory_allocated_bytes": torch.cuda.max_memory_allocated(device),
    }


def main(argv: list[str] | None = None) -> int:
    """Long because it is one prepared GPU script: set-up, the measured runs and the results file, in order."""
    from jobs.core.config import get_config

    cfg = get_config().training
    ap = argparse.ArgumentParser(prog="python benchmarks/gpu_train.py", description=__doc__.split("\n\n")[0])
    ap.add_argument("--seconds", type=float, default=180.0, help="measured training time (max 420)")
    ap.add_argument("--users", type=int, default=2_000_000)
    ap.add_argument("--items", type=int, default=200_000)
    ap.add_argument("--interactions", type=int, default=100_000_000)
    ap.add_argument("--factors", type=int, default=cfg.factors)
    ap.add_argument("--batch-size", type=int, default=max(65_536, cfg.batch_size))
    ap.add_argument("--negatives", type=int, default=1)
    ap.add_argument("--lr", type=float, default=cfg.learning_rate)
    ap.add_argument("--seed", type=int, default=cfg.seed)
    ap.add_argument("--warmup-seconds", type=float, default=10.0)
    ap.add_argument("--seq-seconds", type=float, default=60.0, help="measured time of the sequential section")
    ap.add_argument("--seq-users", type=int, default=200_000)
    ap.add_argument("--seq-items", type=int, default=50_000)
    ap.add_argument("--seq-len", type=int, default=50)
    ap.add_argument("--seq-batch-size", type=int, default=1024)
    ap.add_argument("--seq-loss", choices=("full", "sampled"), default="sampled")
    ap.add_argument("--seq-negatives", type=int, default=1024)
    ap.add_argument("--allow-cpu", action="store_true", help="run on the CPU when there is no CUDA device (smoke)")
    ap.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results" / "gpu_train.json")
    args = ap.parse_args(argv)
    started = time.perf_counter()

    import torch

    from jobs.core.storage import write_json_atomic
    from jobs.train.trainer import DistContext, Hparams, Trainer

    if torch.cuda.is_available():
        device = torch.device("cuda", 0)
        torch.cuda.set_device(device)
    elif args.allow_cpu:
        device = torch.device("cpu")
    else:
        print("no CUDA device: nothing to measure (use --allow-cpu for a small CPU smoke run)")
        return 0
    seconds = min(args.seconds, 420.0)

    data = synthetic_data(args.users, args.items, args.interactions, args.seed, device)
    built_s = time.perf_counter() - started
    hp = Hparams(
        epochs=1,
        batch_size=args.batch_size,
        factors=args.factors,
        lr=args.lr,
        negatives=args.negatives,
        seed=args.seed,
        use_weights=False,
        max_seconds_per_epoch=args.warmup_seconds,
    )
    trainer = Trainer(data, hp, DistContext(device=device))
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    warm = trainer.run_epoch(1)  # compiles kernels, fills the allocator's cache

    seq_reserve = args.seq_seconds + 30.0 if device.type == "cuda" else 0.0
    budget = min(seconds, MAX_TOTAL_S - (time.perf_counter() - started) - 30.0 - seq_reserve)
    epochs, samples, train_s, losses = [], 0, 0.0, []
    epoch = 2
    while train_s < budget:
        trainer.hp = dataclasses.replace(hp, max_seconds_per_epoch=budget - train_s)
        stats = trainer.run_epoch(epoch)
        epochs.append(stats)
        samples += stats["samples"]
        train_s += stats["seconds"]
        losses.append(stats["loss"])
        epoch += 1
    steps = sum(-(-s["samples"] // hp.batch_size) for s in epochs)
    report = {
        "device": device.type,
        "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
        "torch": torch.__version__,
        "bf16_autocast": device.type == "cuda",
        "users": args.users,
        "items": args.items,
        "interactions": args.interactions,
        "factors": args.factors,
        "batch_size": args.batch_size,
        "negatives": args.negatives,
        "data_build_s": round(built_s, 2),
        "warmup": {"samples": warm["samples"], "seconds": round(warm["seconds"], 2), "loss": warm["loss"]},
        "train_seconds": round(train_s, 2),
        "samples": samples,
        "steps": steps,
        "epochs_started": len(epochs),
        "samples_per_s": samples / max(train_s, 1e-9),
        "loss_first": losses[0] if losses else None,
        "loss_last": losses[-1] if losses else None,
        "max_memory_allocated_bytes": torch.cuda.max_memory_allocated(device) if device.type == "cuda" else None,
    }
    seq_budget = min(args.seq_seconds, MAX_TOTAL_S - (time.perf_counter() - started) - 20.0)
    report["seq"] = seq_section(args, device, seq_budget)
    report["total_seconds"] = round(time.perf_counter() - started, 2)
    write_json_atomic(args.out, report)
    print(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
