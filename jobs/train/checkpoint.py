"""Epoch checkpoints: written atomically by rank 0, resumed only for the same snapshot and hyper-parameters.

The folder is a URI like every data zone's: a local folder, or ``s3://…`` in the cluster shape,
where a restarted pod on another node finds its checkpoint (one PUT replaces it whole).
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

from jobs.core import storage, training
from jobs.core.config import PipelineConfig
from jobs.core.snapshots import TrainData
from jobs.train.trainer import Hparams

CHECKPOINT = training.CHECKPOINT
RESULT = training.RESULT
CHECKPOINT_FORMAT = 1


def fingerprint(data: TrainData, hp: Hparams) -> str:
    payload = {"snapshot": data.uri, "manifest": data.manifest, "hparams": hp.fingerprint_fields()}
    return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()


def save_checkpoint(folder: str, payload: dict[str, Any]) -> str:
    """Atomically replace ``folder/checkpoint.pt`` (``jobs.core.training.save_checkpoint``)."""
    return training.save_checkpoint(folder, payload)


def load_checkpoint(folder: str, fp: str) -> dict[str, Any] | None:
    """The checkpoint in ``folder`` if it matches fingerprint ``fp`` (else None, with a warning)."""
    return training.load_checkpoint(folder, fp, CHECKPOINT_FORMAT)


def default_checkpoint_dir(cfg: PipelineConfig, data: TrainData, fp: str) -> str:
    """``<checkpoints zone>/train-<day>-<fingerprint>`` (local folder or object-store prefix)."""
    name = f"train-{data.manifest.get('day', 'snapshot')}-{fp[:12]}"
    return storage.join(cfg.storage.zone("checkpoints"), name)
