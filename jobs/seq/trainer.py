"""The sequential model's training loop: hyper-parameters, one epoch, resumable state, export.

One epoch = every training window (``jobs.seq.sequences.training_windows``) once, in an order
drawn from a generator seeded by ``(seed, epoch)``; dropout and sampled negatives draw from
the same per-epoch seed (plus the rank), so an epoch depends only on the model and optimizer
it starts from: a resumed run ends with bitwise the same model as an uninterrupted one (same
device and thread count). On CUDA the forward runs under bf16 autocast (master weights, loss
and optimizer state fp32); with WORLD_SIZE > 1 the model is wrapped in DDP and every rank
takes ``batch[rank::world]`` of the same global batch, its loss scaled by
``world / targets in the global batch`` so that DDP's gradient average is the global mean.
"""

from __future__ import annotations

import hashlib
import time
from contextlib import nullcontext
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from jobs.core.snapshots import TrainData
from jobs.core.training import DistContext, epoch_stats, time_up
from jobs.seq.sequences import Histories, latest, training_windows


@dataclass(frozen=True)
class Hparams:
    epochs: int = 30
    batch_size: int = 128
    hidden: int = 64
    max_len: int = 50
    blocks: int = 2
    heads: int = 1
    dropout: float = 0.2
    lr: float = 1e-3
    weight_decay: float = 0.0
    loss: str = "full"
    negatives: int = 256
    seed: int = 42
    init_std: float = 0.02
    max_seconds_per_epoch: float | None = None

    def fingerprint_fields(self) -> dict[str, Any]:
        """What a checkpoint must share to be resumed (not epochs, not the time bound)."""
        out = asdict(self)
        out.pop("epochs")
        out.pop("max_seconds_per_epoch")
        return out


def epoch_seed(seed: int, epoch: int, rank: int = 0) -> int:
    """A 63-bit seed of (seed, epoch, rank)."""
    digest = hashlib.sha256(f"recsys-seq:{seed}:{epoch}:{rank}".encode()).digest()
    return int.from_bytes(digest[:8], "little") & (2**63 - 1)


class Trainer:
    """Model, optimizer and windows on one device; ``run_epoch`` is one pass over the windows."""

    def __init__(self, data: TrainData, hist: Histories, hp: Hparams, ctx: DistContext | None = None) -> None:
        import torch

        from jobs.seq.model import build_model

        self.data, self.hist, self.hp = data, hist, hp
        self.ctx = ctx or DistContext(device=torch.device("cpu"))
        dev = self.ctx.device
        self.amp = dev.type == "cuda"
        self.module = build_model(
            data.n_items,
            hp.seed,
            hidden=hp.hidden,
            max_len=hp.max_len,
            blocks=hp.blocks,
            heads=hp.heads,
            dropout=hp.dropout,
            init_std=hp.init_std,
        ).to(dev)
        if self.ctx.distributed:
            from torch.nn.parallel import DistributedDataParallel as DDP

            ids = [dev.index] if dev.type == "cuda" else None
            self.model = DDP(self.module, device_ids=ids, broadcast_buffers=False)
        else:
            self.model = self.module
        self.optimizer = torch.optim.AdamW(self.module.parameters(), lr=hp.lr, weight_decay=hp.weight_decay)
        inputs, targets = training_windows(hist, hp.max_len)
        self.inputs = torch.as_tensor(inputs, device=dev)
        self.targets = torch.as_tensor(targets, device=dev)
        self.n = len(inputs)

    def run_epoch(self, epoch: int) -> dict[str, Any]:
        """Train one epoch (1-based); returns loss (mean per target), seconds, samples (targets), samples/s, cut."""
        import torch

        hp, ctx = self.hp, self.ctx
        self.model.train()
        started = time.perf_counter()
        gen = torch.Generator()
        gen.manual_seed(epoch_seed(hp.seed, epoch))
        perm = torch.randperm(self.n, generator=gen).to(ctx.device)
        steps = -(-self.n // hp.batch_size)
        negatives = None
        if hp.loss == "sampled":
            negatives = torch.randint(0, self.data.n_items, (steps, hp.negatives), generator=gen).to(ctx.device)
        torch.manual_seed(epoch_seed(hp.seed, epoch, ctx.rank))  # dropout
        amp = torch.autocast("cuda", dtype=torch.bfloat16) if self.amp else nullcontext()
        loss_sum = torch.zeros((), dtype=torch.float64, device=ctx.device)
        targets_done, cut = 0, False
        for step, start in enumerate(range(0, self.n, hp.batch_size)):
            rows = perm[start : start + hp.batch_size]
            tokens, targets = self.inputs[rows], self.targets[rows]
            count = int((targets > 0).sum())
            mine = slice(ctx.rank, None, ctx.world)
            with amp:
                loss, _ = self.model(tokens[mine], targets[mine], None if negatives is None else negatives[step])
            self.optimizer.zero_grad(set_to_none=True)
            (loss * (ctx.world / count)).backward()
            self.optimizer.step()
            loss_sum += loss.detach().double()
            targets_done += count
            if start + hp.batch_size < self.n and time_up(started, hp.max_seconds_per_epoch, ctx):
                cut = True
                break
        return epoch_stats(epoch, loss_sum, targets_done, started, cut, ctx)

    # -- state ---------------------------------------------------------------------------

    def state(self) -> dict[str, Any]:
        return {"model": self.module.state_dict(), "optimizer": self.optimizer.state_dict()}

    def load_state(self, state: dict[str, Any]) -> None:
        self.module.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])

    # -- export and ranking --------------------------------------------------------------

    def arrays(self, batch_users: int = 1024) -> dict[str, np.ndarray]:
        """The ``recsys.npz`` factors: user states at the last position of their latest history,
        the item embedding matrix and a zero bias (float32, fp32 compute)."""
        import torch

        self.module.eval()
        states = []
        with torch.no_grad():
            for lo in range(0, self.hist.n_users, batch_users):
                users = np.arange(lo, min(lo + batch_users, self.hist.n_users))
                tokens = torch.as_tensor(latest(self.hist, self.hp.max_len, users), device=self.ctx.device)
                states.append(self.module.user_state(tokens).float().cpu())
            item_factors = self.module.item_matrix().detach().float().cpu().numpy().copy()
        hidden = item_factors.shape[1]
        user_factors = torch.cat(states).numpy() if states else np.zeros((0, hidden), np.float32)
        return {
            "user_factors": user_factors,
            "item_factors": item_factors,
            "item_bias": np.zeros(len(item_factors), dtype=np.float32),
        }

    def predict_top_k(self, users: np.ndarray, k: int) -> np.ndarray:
        """The model's own top-``k`` (forward pass over the latest histories), seen items excluded."""
        import torch

        self.module.eval()
        users = np.asarray(users, dtype=np.int64)
        with torch.no_grad():
            tokens = torch.as_tensor(latest(self.hist, self.hp.max_len, users), device=self.ctx.device)
            scores = self.module.scores(tokens).float()
            rows, cols = self.data.seen().gather(users)
            dev = scores.device
            scores[torch.as_tensor(rows, device=dev), torch.as_tensor(cols, device=dev)] = -torch.inf
            return torch.topk(scores, min(k, scores.shape[1]), dim=1).indices.cpu().numpy()
