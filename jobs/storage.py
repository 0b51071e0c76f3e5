"""Partition publishing: a reader sees a day's partition whole or not at all.

Every writer stages its output in a hidden sibling folder (``.staging-dt=D-<token>``), writes a
``_SUCCESS`` marker holding a small JSON manifest last, and then publishes with directory
renames on the same filesystem:

1. ``dt=D`` (if any) is renamed to ``.trash-dt=D-<token>``;
2. the staging folder is renamed to ``dt=D``;
3. the trash is deleted.

Between 1 and 2 the day is briefly absent, never partial. A crash leaves at worst a staging or
trash folder, which readers ignore (they list ``dt=*`` folders that hold ``_SUCCESS``) and the
next publish of that day cleans up. On object stores the same layout is used with the marker as
the commit point (readers require ``_SUCCESS``); that path cannot be exercised here.
"""

from __future__ import annotations

import json
import os
import shutil
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

SUCCESS = "_SUCCESS"


class PublishError(RuntimeError):
    """The output location cannot be written."""


def local_path(uri: str) -> Path:
    """Path of a local URI (plain path or file://); object-store URIs are rejected."""
    if uri.startswith("file://"):
        return Path(uri[len("file://") :])
    if "://" in uri:
        raise PublishError(f"{uri}: only local paths can be published by this process")
    return Path(uri)


def _check_writable(parent: Path) -> None:
    try:
        parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise PublishError(f"cannot create output folder {parent}: {exc.strerror}") from exc
    if not os.access(parent, os.W_OK | os.X_OK):
        raise PublishError(f"output folder {parent} is not writable")


@contextmanager
def staged_partition(final_uri: str) -> Iterator[Path]:
    """Yield a fresh staging folder beside ``final_uri``; removed again if the body raises."""
    final = local_path(final_uri)
    _check_writable(final.parent)
    staging = final.parent / f".staging-{final.name}-{uuid.uuid4().hex[:12]}"
    staging.mkdir()
    try:
        yield staging
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise


def publish(staging: Path, final_uri: str, manifest: dict[str, Any]) -> None:
    """Write the ``_SUCCESS`` manifest into ``staging`` and swap it in as ``final_uri``."""
    final = local_path(final_uri)
    marker = staging / SUCCESS
    marker.write_text(json.dumps(manifest, sort_keys=True, default=str))
    token = uuid.uuid4().hex[:12]
    trash = final.parent / f".trash-{final.name}-{token}"
    if final.exists():
        os.rename(final, trash)
    os.rename(staging, final)
    shutil.rmtree(trash, ignore_errors=True)
    cleanup_leftovers(final.parent, final.name)


def cleanup_leftovers(parent: Path, name: str) -> None:
    """Remove staging/trash folders that crashed writers left for partition ``name``."""
    for prefix in (".staging-", ".trash-"):
        for leftover in parent.glob(f"{prefix}{name}-*"):
            shutil.rmtree(leftover, ignore_errors=True)


def read_manifest(partition_uri: str) -> dict[str, Any] | None:
    """The manifest of a published partition, or None when the day is not published."""
    marker = local_path(partition_uri) / SUCCESS
    try:
        return json.loads(marker.read_text())
    except FileNotFoundError:
        return None


def published_days(zone_uri: str) -> list[str]:
    """Days (``YYYY-MM-DD``) with a published partition in a zone, sorted."""
    zone = local_path(zone_uri)
    if not zone.is_dir():
        return []
    return sorted(p.name[3:] for p in zone.iterdir() if p.name.startswith("dt=") and (p / SUCCESS).is_file())


def write_json_atomic(path: Path, payload: Any) -> None:
    """Write a JSON file via a temporary sibling and rename."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}.tmp")
    tmp.write_text(json.dumps(payload, indent=2, sort_keys=True, default=str))
    os.replace(tmp, path)
