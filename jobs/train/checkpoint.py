"""Epoch checkpoints: written atomically by rank 0, resumed only for the same snapshot and hyper-parameters."""

from __future__ import annotations

import hashlib
import json
import logging
import os
import tempfile
from pathlib import Path
from typing import Any

from jobs.core import storage
from jobs.core.config import PipelineConfig
from jobs.core.snapshots import TrainData
from jobs.train.trainer import Hparams

log = logging.getLogger("jobs.train")
CHECKPOINT = "checkpoint.pt"
RESULT = "result.json"
CHECKPOINT_FORMAT = 1


def fingerprint(data: TrainData, hp: Hparams) -> str:
    payload = {"snapshot": data.uri, "manifest": data.manifest, "hparams": hp.fingerprint_fields()}
    return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()


def save_checkpoint(folder: Path, payload: dict[str, Any]) -> Path:
    """Atomically replace ``folder/checkpoint.pt`` (temporary file, fsync, rename)."""
    import torch

    folder.mkdir(parents=True, exist_ok=True)
    final = folder / CHECKPOINT
    tmp = folder / f".{CHECKPOINT}.{os.getpid()}.tmp"
    with open(tmp, "wb") as fh:
        torch.save(payload, fh)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, final)
    return final


def load_checkpoint(folder: Path, fp: str) -> dict[str, Any] | None:
    """The checkpoint in ``folder`` if it matches fingerprint ``fp`` (else None, with a warning)."""
    import torch

    path = folder / CHECKPOINT
    if not path.is_file():
        return None
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        log.warning("ignoring unreadable checkpoint %s: %s", path, exc)
        return None
    if payload.get("format") != CHECKPOINT_FORMAT or payload.get("fingerprint") != fp:
        log.warning("ignoring checkpoint %s: written for another snapshot or other hyper-parameters", path)
        return None
    return payload


def default_checkpoint_dir(cfg: PipelineConfig, data: TrainData, fp: str) -> Path:
    name = f"train-{data.manifest.get('day', 'snapshot')}-{fp[:12]}"
    if cfg.storage.is_local:
        return storage.local_path(cfg.storage.zone("checkpoints")) / name
    return Path(tempfile.gettempdir()) / "recsys-checkpoints" / name
