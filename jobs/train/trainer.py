"""The training loop: hyper-parameters, devices and distribution, one epoch, resumable state.

See ``jobs.train`` for the sampling, DDP and resume contracts this implements.
"""

from __future__ import annotations

import hashlib
import random
import time
from contextlib import nullcontext
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from jobs.core.snapshots import TrainData
from jobs.core.training import DistContext, epoch_stats, evaluate_arrays, init_distributed, pick_device, time_up

__all__ = ["DistContext", "Hparams", "Trainer", "evaluate_arrays", "init_distributed", "pick_device"]


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


def _epoch_seed(seed: int, epoch: int) -> int:
    digest = hashlib.sha256(f"recsys-train:{seed}:{epoch}".encode()).digest()
    return int.from_bytes(digest[:8], "little") & (2**63 - 1)


class Trainer:
    """Model, optimizer and data on one device; ``run_epoch`` is one pass over the positives."""

    def __init__(self, data: TrainData, hp: Hparams, ctx: DistContext | None = None) -> None:
        import torch

        from jobs.train.model import build_model

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
            if end < self.n and time_up(started, hp.max_seconds_per_epoch, ctx):
                cut = True
                break
        return epoch_stats(epoch, loss_sum, processed, started, cut, ctx)

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

    def arrays(self) -> dict[str, np.ndarray]:
        """The model as ``recsys.npz`` factors."""
        return self.module.arrays()

    def evaluate(self, k: int) -> dict[str, float]:
        """recall/NDCG@k of the model and of the popularity baseline on the snapshot's test pairs."""
        return evaluate_arrays(self.arrays(), self.data, k, device=self.ctx.device)


def _python_rng_state() -> list[Any]:
    version, internal, gauss = random.getstate()
    return [version, list(internal), gauss]
