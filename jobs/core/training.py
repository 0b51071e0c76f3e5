"""What every torch trainer family shares: devices and torchrun, checkpoint files, test metrics
(the ``recsys.npz`` pyfunc is logged by ``jobs.core.export``).

Moved here from ``jobs.train`` (which re-exports them) so that another family (``jobs.seq``)
uses the same code without importing another stage. torch and MLflow are imported inside the
functions.
"""

from __future__ import annotations

import io
import logging
import os
from dataclasses import dataclass
from typing import Any

import numpy as np

from jobs.core import storage
from jobs.core.cli import BadArgument
from jobs.core.snapshots import TrainData

log = logging.getLogger("jobs.core.training")
CHECKPOINT = "checkpoint.pt"
RESULT = "result.json"


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
