"""Epoch checkpoints: written atomically by rank 0, resumed only for the same snapshot and hyper-parameters.

The folder is a URI like every data zone's: a local folder, or ``s3://…`` in the cluster shape,
where a restarted pod on another node finds its checkpoint (one PUT replaces it whole).
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
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


def save_checkpoint(folder: str, payload: dict[str, Any]) -> str:
    """Atomically replace ``folder/checkpoint.pt`` (local: temporary file, fsync, rename;
    object store: one PUT)."""
    import torch

    buffer = io.BytesIO()
    torch.save(payload, buffer)
    final = storage.join(str(folder), CHECKPOINT)
    storage.write_bytes_atomic(final, buffer.getvalue())
    return final


def load_checkpoint(folder: str, fp: str) -> dict[str, Any] | None:
    """The checkpoint in ``folder`` if it matches fingerprint ``fp`` (else None, with a warning)."""
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
    if payload.get("format") != CHECKPOINT_FORMAT or payload.get("fingerprint") != fp:
        log.warning("ignoring checkpoint %s: written for another snapshot or other hyper-parameters", path)
        return None
    return payload


def default_checkpoint_dir(cfg: PipelineConfig, data: TrainData, fp: str) -> str:
    """``<checkpoints zone>/train-<day>-<fingerprint>`` (local folder or object-store prefix)."""
    name = f"train-{data.manifest.get('day', 'snapshot')}-{fp[:12]}"
    return storage.join(cfg.storage.zone("checkpoints"), name)
