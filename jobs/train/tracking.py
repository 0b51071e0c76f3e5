"""What an MF training run logs beyond the trainer protocol: its params (``jobs.core.trainer_protocol.Tracker``)."""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

from jobs.core import trainer_protocol
from jobs.core.snapshots import TrainData
from jobs.core.training import DistContext
from jobs.train.trainer import Hparams


def mf_params(data: TrainData, hp: Hparams, ctx: DistContext, extra: dict[str, Any]) -> dict[str, Any]:
    """The MLflow params of an MF run: hyper-parameters, batch split over ranks, device and snapshot sizes."""
    return {
        **{k: v for k, v in asdict(hp).items() if v is not None},
        "world_size": ctx.world,
        "device": ctx.device.type,
        "global_batch_size": hp.batch_size,
        "per_rank_batch_size": -(-hp.batch_size // ctx.world),
        **trainer_protocol.snapshot_params(data),
        **extra,
    }


class Tracker(trainer_protocol.Tracker):
    """The trainers' tracker with MF's params (tests and benchmarks log MF models through it)."""

    def log_setup(self, data: TrainData, hp: Hparams, ctx: DistContext, extra: dict[str, Any]) -> None:
        self.log_inputs(data, "jobs.train", mf_params(data, hp, ctx, extra))
