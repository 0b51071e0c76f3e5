"""Partition publishing: a reader sees a day's partition whole or not at all.

Every writer stages its output in a hidden sibling folder (``.staging-dt=D-<token>``), writes a
``_SUCCESS`` marker holding a small JSON manifest last, and then publishes with directory
renames on the same filesystem:

1. ``dt=D`` (if any) is renamed to ``.trash-dt=D-<token>``;
2. the staging folder is renamed to ``dt=D``;
3. the trash is deleted.

Between 1 and 2 the day is briefly absent, never partial. If 2 fails, 1 is undone (the previous
partition is put back) and ``PublishError`` names the path. A crash leaves at worst a staging or
trash folder, which readers ignore (they list ``dt=*`` folders that hold ``_SUCCESS``) and the
next publish of that day cleans up. On object stores the same layout is used with the marker as
the commit point (readers require ``_SUCCESS``); that path cannot be exercised here.

One writer per partition at a time: ``staged_partition`` holds an exclusive lock on the
partition (``flock`` on a file under ``$TMPDIR/recsys-partition-locks/``, named by a hash of
the partition's path, so that the zones hold nothing but data) from staging to publishing. A
task whose process outlived its worker (an orphan) and the retry Airflow started meanwhile
therefore write one after the other, instead of one deleting the other's staging folder as a
"leftover". The kernel releases the lock of a killed writer. The lock covers the writers of one
machine (the local profile); on object stores each writer has its own staging prefix and the
marker decides.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import shutil
import tempfile
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from jobs.core.cli import Retryable

SUCCESS = "_SUCCESS"


class PublishError(Retryable):
    """The output location cannot be written (the message names it).

    Retryable: an operator can lift the fault (free space, fix permissions) and the partition
    is untouched, so the task's retry succeeds without redoing anything by hand.
    """


def local_path(uri: str) -> Path:
    """Path of a local URI (plain path or file://); object-store URIs are rejected."""
    if uri.startswith("file://"):
        return Path(uri[len("file://") :])
    if "://" in uri:
        raise PublishError(f"{uri}: only local paths can be published by this process")
    return Path(uri)


def _check_writable(parent: Path) -> None:
    for folder in (parent, *parent.parents):
        if folder.exists() and not folder.is_dir():
            raise PublishError(f"cannot create output folder {parent}: {folder} is a file, not a folder")
        if folder.exists():
            break
    try:
        parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise PublishError(f"cannot create output folder {parent}: {exc.strerror}") from exc
    if not os.access(parent, os.W_OK | os.X_OK):
        raise PublishError(f"output folder {parent} is not writable")


def check_writable(*uris: str) -> None:
    """Fail before any work when the folder of one of ``uris`` cannot take a new partition."""
    for uri in uris:
        _check_writable(local_path(uri).parent)


@contextmanager
def _partition_lock(final: Path) -> Iterator[None]:
    """Exclusive lock of one partition across the processes of this machine (see the docstring)."""
    folder = Path(tempfile.gettempdir()) / "recsys-partition-locks"
    if not folder.is_dir():
        folder.mkdir(exist_ok=True)
        with contextlib.suppress(OSError):
            folder.chmod(0o1777)  # shared by every user of the machine, like /tmp
    key = hashlib.sha256(str(final.resolve()).encode()).hexdigest()[:32]
    fd = os.open(folder / f"{key}.lock", os.O_RDONLY | os.O_CREAT, 0o666)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


@contextmanager
def staged_partition(final_uri: str) -> Iterator[Path]:
    """Yield a fresh staging folder beside ``final_uri``; removed again if the body raises.

    The partition's lock is held until the block ends (publish inside the block).
    """
    final = local_path(final_uri)
    _check_writable(final.parent)
    with _partition_lock(final):
        staging = final.parent / f".staging-{final.name}-{uuid.uuid4().hex[:12]}"
        try:
            staging.mkdir()
        except OSError as exc:
            raise PublishError(f"cannot stage {final}: {exc.strerror}: {staging}") from exc
        try:
            yield staging
        except BaseException as exc:
            shutil.rmtree(staging, ignore_errors=True)
            if isinstance(exc, OSError):  # e.g. ENOSPC from a writer that does not name its file
                exc.add_note(f"while writing partition {final} (staging removed, previous version untouched)")
            raise


def publish(staging: Path, final_uri: str, manifest: dict[str, Any]) -> None:
    """Write the ``_SUCCESS`` manifest into ``staging`` and swap it in as ``final_uri``."""
    final = local_path(final_uri)
    marker = staging / SUCCESS
    try:
        marker.write_text(json.dumps(manifest, sort_keys=True, default=str))
    except OSError as exc:
        raise PublishError(f"cannot write the manifest of {final}: {exc.strerror}") from exc
    token = uuid.uuid4().hex[:12]
    trash = final.parent / f".trash-{final.name}-{token}"
    moved_aside = False
    try:
        if final.exists():
            os.rename(final, trash)
            moved_aside = True
        os.rename(staging, final)
    except OSError as exc:
        if moved_aside:  # put the previous partition back: the day stays as it was
            with contextlib.suppress(OSError):
                os.rename(trash, final)
        raise PublishError(f"cannot publish {final}: {exc.strerror}") from exc
    shutil.rmtree(trash, ignore_errors=True)
    cleanup_leftovers(final.parent, final.name)


def cleanup_leftovers(parent: Path, name: str) -> None:
    """Remove staging/trash folders that crashed writers left for partition ``name``."""
    for prefix in (".staging-", ".trash-"):
        for leftover in parent.glob(f"{prefix}{name}-*"):
            shutil.rmtree(leftover, ignore_errors=True)


def read_bytes(uri: str) -> bytes | None:
    """The content of a file, or None when it does not exist."""
    if "://" not in uri or uri.startswith("file://"):
        try:
            return local_path(uri).read_bytes()
        except (FileNotFoundError, NotADirectoryError):
            return None
    import pyarrow.fs as pafs

    fs, path = pafs.FileSystem.from_uri(uri)
    try:
        with fs.open_input_stream(path) as fh:
            return fh.read()
    except FileNotFoundError:
        return None


def read_text(uri: str) -> str | None:
    """The UTF-8 text of a file, or None when it does not exist."""
    payload = read_bytes(uri)
    return None if payload is None else payload.decode()


def read_manifest(partition_uri: str) -> dict[str, Any] | None:
    """The manifest of a published partition, or None when the day is not published."""
    text = read_text(f"{partition_uri.rstrip('/')}/{SUCCESS}")
    return None if text is None else json.loads(text)


def published_days(zone_uri: str) -> list[str]:
    """Days (``YYYY-MM-DD``) with a published partition in a zone, sorted."""
    zone = local_path(zone_uri)
    if not zone.is_dir():
        return []
    return sorted(p.name[3:] for p in zone.iterdir() if p.name.startswith("dt=") and (p / SUCCESS).is_file())


def write_bytes_atomic(path: str | Path, payload: bytes) -> None:
    """Write a file via a temporary sibling and a rename (readers see the old or the new file).

    Raises:
        PublishError: naming ``path`` when it cannot be written (read-only or missing folder,
            full disk); the previous file is left as it was and no temporary file remains.
    """
    path = local_path(str(path))
    try:
        _check_writable(path.parent)
    except PublishError as exc:
        raise PublishError(f"cannot write {path}: {exc}") from exc
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}.tmp")
    try:
        tmp.write_bytes(payload)
        os.replace(tmp, path)
    except OSError as exc:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise PublishError(f"cannot write {path}: {exc.strerror}") from exc


def write_text_atomic(path: str | Path, text: str) -> None:
    """``write_bytes_atomic`` of UTF-8 text."""
    write_bytes_atomic(path, text.encode())


def write_json_atomic(path: str | Path, payload: Any) -> None:
    """``write_bytes_atomic`` of indented, key-sorted JSON."""
    write_bytes_atomic(path, json.dumps(payload, indent=2, sort_keys=True, default=str).encode())
