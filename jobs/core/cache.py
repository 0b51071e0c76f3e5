"""Training caching (TFX/KFP semantics): same inputs, same model — nothing new to register.

A trainer's **cache key** is a hash of everything that determines its model: the snapshot's
content (``content_hash`` of its manifest: the bytes of its tables), the trainer (its module
name and a hash of its code and of ``jobs.core``'s) and every hyper-parameter including the
seed. Registration copies the key from the training run (tag ``recsys.cache_key``) onto the
version (tag ``cache_key``). A trainer that finds a registered version with its key trains
nothing and reports ``cached`` with that version; ``--force-retrain`` trains anyway (the gate
still decides promotion).
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

from jobs.core.config import REPO_ROOT, PipelineConfig

RUN_TAG = "recsys.cache_key"
VERSION_TAG = "cache_key"


def code_version(*packages: str) -> str:
    """Hash of the Python sources of ``jobs.<package>`` for each package (and nothing else)."""
    digest = hashlib.sha256()
    for package in sorted(set(packages)):
        root = REPO_ROOT / "jobs" / package
        for path in sorted(p for p in root.rglob("*.py") if "__pycache__" not in p.parts):
            digest.update(str(path.relative_to(REPO_ROOT)).encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()


def cache_key(snapshot_manifest: dict[str, Any], trainer: str, code: str, hparams: dict[str, Any]) -> str:
    """The key of a training run (see the module docstring)."""
    content = snapshot_manifest.get("content_hash")
    if not content:  # a snapshot from before content hashes: its full manifest stands for it
        content = hashlib.sha256(json.dumps(snapshot_manifest, sort_keys=True, default=str).encode()).hexdigest()
    payload = {"snapshot": content, "trainer": trainer, "code": code, "hparams": hparams}
    return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()


def find_cached(
    cfg: PipelineConfig, model_name: str, key: str, tracking_uri: str | None = None
) -> dict[str, str] | None:
    """The newest registered version of ``model_name`` with cache key ``key``, or None.

    Args:
        tracking_uri: the registry to ask (a trainer's ``--tracking-uri``: the server it would
            log to); default ``mlflow.tracking_uri``.
    """
    from jobs.core.tracking import client, not_found

    if tracking_uri is not None:
        cfg = cfg.model_copy(update={"mlflow": cfg.mlflow.model_copy(update={"tracking_uri": tracking_uri})})
    cl = client(cfg)
    try:
        versions = cl.search_model_versions(f"name='{model_name}'")
    except Exception as exc:
        if not_found(exc):
            return None
        raise
    hits = [v for v in versions if (v.tags or {}).get(VERSION_TAG) == key]
    if not hits:
        return None
    best = max(hits, key=lambda v: int(v.version))
    return {
        "cached_version": str(best.version),
        "run_id": best.run_id or "",
        "model_uri": f"models:/{model_name}/{best.version}",
    }


def as_bool(text: str) -> bool:
    """A command-line boolean (``true``/``false`` as Jinja renders a param)."""
    value = str(text).strip().lower()
    if value not in ("true", "false", "1", "0", "yes", "no"):
        raise ValueError(f"{text!r} is not a boolean (true or false)")
    return value in ("true", "1", "yes")
