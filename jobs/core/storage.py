"""Partition publishing: a reader sees a day's partition whole or not at all, on a local folder
or on an object store (``s3://bucket/prefix``), through one set of functions.

Local folders (the embedded default). Every writer stages its output in a hidden sibling folder
(``.staging-dt=D-<token>``), writes a ``_SUCCESS`` marker holding a small JSON manifest last, and
then publishes with directory renames on the same filesystem:

1. ``dt=D`` (if any) is renamed to ``.trash-dt=D-<token>``;
2. the staging folder is renamed to ``dt=D``;
3. the trash is deleted.

Between 1 and 2 the day is briefly absent, never partial. If 2 fails, 1 is undone (the previous
partition is put back) and ``PublishError`` names the path. A crash leaves at worst a staging or
trash folder, which readers ignore (they list ``dt=*`` folders that hold ``_SUCCESS``) and the
next publish of that day cleans up.

One writer per partition at a time: ``staged_partition`` holds an exclusive lock on the
partition (``flock`` on a file under ``$TMPDIR/recsys-partition-locks/``, named by a hash of
the partition's path, so that the zones hold nothing but data) from staging to publishing. A
task whose process outlived its worker (an orphan) and the retry Airflow started meanwhile
therefore write one after the other, instead of one deleting the other's staging folder as a
"leftover". The kernel releases the lock of a killed writer.

Object stores (S3 and compatibles), where a rename is a copy and nothing spans two keys
atomically. **The manifest is the commit**: a writer puts its files under a prefix of its own
inside the partition (``dt=D/.attempt-<token>/…``), then writes ``dt=D/_SUCCESS`` (one PUT,
atomic) listing them by their path relative to the partition. Readers trust only the manifest
and the files it lists (``catalog.files_of``), so a killed writer's files are invisible and two
writers of one day never mix: the last manifest wins whole. After its commit a writer deletes
the attempt it replaced and every other unreferenced attempt whose newest file is older than
``ORPHAN_GRACE_S`` (an hour: longer than a writer of one day goes without writing a file here; a
dead writer's leftovers go with the next publish of the day, or with ``vacuum`` / ``vacuum_root``). A marker written into a published partition afterwards (``_VALIDATION``) carries
the digest of the manifest it is about, so a re-publish makes it stale without a second write.

Paths: a plain path or ``file://`` is local; ``s3://`` goes through ``pyarrow.fs``, which takes
the endpoint (``AWS_ENDPOINT_URL``) and credentials from the environment, never from config.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import shutil
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from jobs.core.fs import (  # noqa: F401 - re-exported: callers reach files through storage
    PublishError,
    check_folder_writable,
    delete_objects,
    exists,
    file_size,
    filesystem,
    is_dir,
    is_local,
    join,
    list_files,
    local_path,
    open_input,
    read_bytes,
    read_text,
    remote_error,
    remove_tree,
    write_bytes_atomic,
    write_json_atomic,
    write_text_atomic,
)

SUCCESS = "_SUCCESS"
ATTEMPT = ".attempt-"
ORPHAN_GRACE_S = 3600.0  # an unreferenced attempt older than this is a dead writer's: deleted


def check_writable(*uris: str) -> None:
    """Fail before any work when the folder of one of ``uris`` cannot take a new partition
    (locally: the folder; on an object store: the bucket answers)."""
    for uri in uris:
        if is_local(uri):
            check_folder_writable(local_path(uri).parent)
            continue
        fs, path = filesystem(uri)
        try:
            fs.get_file_info(path.split("/", 1)[0])
        except OSError as exc:
            raise remote_error("write", uri, exc) from exc


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


class ObjectStaging:
    """A writer's own prefix inside an object-store partition (``dt=D/.attempt-<token>``).

    ``staging / name`` is the URI of a file in it; ``publish`` lists the files as
    ``.attempt-<token>/<name>`` in the partition's manifest.
    """

    def __init__(self, final_uri: str, flat: bool = False) -> None:
        self.final = final_uri.rstrip("/")
        self.token = f"{time.strftime('%Y%m%dT%H%M%S', time.gmtime())}-{uuid.uuid4().hex[:12]}"
        self.flat = flat
        self.name = "" if flat else f"{ATTEMPT}{self.token}"
        self.uri = self.final if flat else f"{self.final}/{self.name}"

    def __truediv__(self, name: str) -> str:
        return f"{self.uri}/{name}"

    def __str__(self) -> str:
        return self.uri

    def __fspath__(self) -> str:  # writers that take a path get the URI
        return self.uri


Staging = Path | ObjectStaging


@contextmanager
def staged_partition(final_uri: str, flat: bool = False) -> Iterator[Staging]:
    """Yield a fresh staging folder beside ``final_uri`` (locally) or a writer's own prefix inside
    it (object store); removed again if the body raises.

    Locally the partition's lock is held until the block ends (publish inside the block).

    Args:
        flat: object store only, for partitions whose files must keep fixed addresses (reports
            linked from the UI): files are written in place, each one PUT (readers see a file's
            old or new bytes), and the manifest last; a failed writer leaves the files it
            replaced and the old manifest.
    """
    if not is_local(final_uri):
        check_writable(final_uri)
        staging = ObjectStaging(final_uri, flat=flat)
        try:
            yield staging
        except BaseException:
            if not flat:  # best effort: with the store down the attempt stays, unreferenced (vacuum)
                with contextlib.suppress(PublishError):
                    remove_tree(staging.uri)
            raise
        return
    final = local_path(final_uri)
    check_folder_writable(final.parent)
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


def staged_files(staging: Staging) -> list[str]:
    """Names of the files written into a staging folder or prefix so far, sorted."""
    return list_files(staging.uri if isinstance(staging, ObjectStaging) else staging)


def rename_staged(staging: Staging, old: str, new: str) -> None:
    """Rename a file inside a staging folder/prefix (a copy and a delete on an object store:
    the prefix is the writer's own, so nobody sees the file under either name meanwhile)."""
    if isinstance(staging, Path):
        (staging / old).rename(staging / new)
        return
    fs, path = filesystem(staging.uri)
    try:
        fs.copy_file(f"{path}/{old}", f"{path}/{new}")  # server-side copy
    except OSError as exc:
        raise remote_error("stage", staging / new, exc) from exc
    delete_objects(staging / old)


def publish(staging: Staging, final_uri: str, manifest: dict[str, Any]) -> None:
    """Write the ``_SUCCESS`` manifest into ``staging`` and swap it in as ``final_uri``
    (object store: write the partition's manifest, listing the attempt's files; see the module
    docstring)."""
    if isinstance(staging, ObjectStaging):
        _publish_object(staging, manifest)
        return
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


def _publish_object(staging: ObjectStaging, manifest: dict[str, Any]) -> None:
    """The object-store commit: the manifest (one PUT) names the attempt's files; then the
    attempt it replaced and dead writers' attempts are deleted."""
    previous = read_manifest(staging.final)
    prefix = f"{staging.name}/" if staging.name else ""
    committed = {**manifest, "files": [f"{prefix}{name}" for name in manifest.get("files", [])]}
    missing = [f for f in committed["files"] if not exists(join(staging.final, f))]
    if missing:
        raise PublishError(f"cannot publish {staging.final}: staged file(s) missing: {', '.join(missing[:5])}")
    write_bytes_atomic(join(staging.final, SUCCESS), json.dumps(committed, sort_keys=True, default=str).encode())
    if staging.flat:
        return
    replaced = {f.split("/", 1)[0] for f in (previous or {}).get("files", []) if f.startswith(ATTEMPT)}
    vacuum(staging.final, also=replaced - {staging.name})


def vacuum(
    partition_uri: str, grace_s: float = ORPHAN_GRACE_S, also: set[str] | frozenset[str] = frozenset()
) -> list[str]:
    """Delete the attempts of an object-store partition that its manifest does not list and that
    are older than ``grace_s`` (or named in ``also``: the attempt a commit just replaced);
    returns the attempt names deleted. Locally, staging/trash leftovers are cleaned by publish."""
    if is_local(partition_uri):
        return []
    import pyarrow.fs as pafs

    fs, path = filesystem(partition_uri)
    live = {f.split("/", 1)[0] for f in (read_manifest(partition_uri) or {}).get("files", [])}
    infos = fs.get_file_info(pafs.FileSelector(path, recursive=True, allow_not_found=True))
    newest: dict[str, float] = {}
    for info in infos:
        rel = info.path[len(path) + 1 :]
        name = rel.split("/", 1)[0]
        if name.startswith(ATTEMPT) and info.type == pafs.FileType.File:
            newest[name] = max(newest.get(name, 0.0), info.mtime.timestamp() if info.mtime else 0.0)
    now = time.time()
    dead = sorted(n for n, t in newest.items() if n not in live and (n in also or now - t >= grace_s))
    for name in dead:
        remove_tree(join(partition_uri, name))
    return dead


def vacuum_root(root_uri: str, grace_s: float = ORPHAN_GRACE_S) -> dict[str, list[str]]:
    """``vacuum`` every partition under an object-store root that holds an unreferenced attempt:
    what an operator runs after an outage or a crash storm, when no later publish of those days
    will come. Returns ``{partition URI: attempts deleted}`` (only partitions that lost one);
    locally nothing to do (publish cleans staging leftovers)."""
    if is_local(root_uri):
        return {}
    import pyarrow.fs as pafs

    fs, path = filesystem(root_uri)
    base = root_uri.rstrip("/")
    partitions = set()
    for info in fs.get_file_info(pafs.FileSelector(path, recursive=True, allow_not_found=True)):
        parts = info.path[len(path) + 1 :].split("/")
        at = next((i for i, p in enumerate(parts) if p.startswith(ATTEMPT)), None)
        if at and parts[at - 1].startswith("dt="):
            partitions.add("/".join(parts[:at]))
    deleted = {}
    for partition in sorted(partitions):
        if gone := vacuum(f"{base}/{partition}", grace_s=grace_s):
            deleted[f"{base}/{partition}"] = gone
    return deleted


def cleanup_leftovers(parent: Path, name: str) -> None:
    """Remove staging/trash folders that crashed writers left for partition ``name``."""
    for prefix in (".staging-", ".trash-"):
        for leftover in parent.glob(f"{prefix}{name}-*"):
            shutil.rmtree(leftover, ignore_errors=True)


def read_manifest(partition_uri: str) -> dict[str, Any] | None:
    """The manifest of a published partition, or None when the day is not published."""
    text = read_text(f"{partition_uri.rstrip('/')}/{SUCCESS}")
    return None if text is None else json.loads(text)


def partition_file(partition_uri: str, manifest: dict[str, Any], name: str) -> str:
    """The URI of file ``name`` of a published partition: through its manifest's ``files`` (on an
    object store they sit in the committed attempt's prefix), else directly in the folder."""
    for entry in manifest.get("files", []):
        if entry == name or entry.endswith(f"/{name}"):
            return join(partition_uri, entry)
    return join(partition_uri, name)


def manifest_digest(partition_uri: str) -> str | None:
    """sha256 of a published partition's manifest bytes (what a later marker is about), or None."""
    payload = read_bytes(f"{str(partition_uri).rstrip('/')}/{SUCCESS}")
    return None if payload is None else hashlib.sha256(payload).hexdigest()


def published_days(zone_uri: str) -> list[str]:
    """Days (``YYYY-MM-DD``) with a published partition in a zone, sorted."""
    if is_local(zone_uri):
        zone = local_path(zone_uri)
        if not zone.is_dir():
            return []
        return sorted(p.name[3:] for p in zone.iterdir() if p.name.startswith("dt=") and (p / SUCCESS).is_file())
    import pyarrow.fs as pafs

    fs, path = filesystem(zone_uri)
    try:
        infos = fs.get_file_info(pafs.FileSelector(path, allow_not_found=True))
    except OSError as exc:
        raise remote_error("list", zone_uri, exc) from exc
    parts = [i.base_name for i in infos if i.type == pafs.FileType.Directory and i.base_name.startswith("dt=")]
    markers = fs.get_file_info([f"{path}/{p}/{SUCCESS}" for p in parts]) if parts else []
    return sorted(p[3:] for p, m in zip(parts, markers, strict=True) if m.type == pafs.FileType.File)
